"""``python -m reviewq.runtime.serve``: web processes on their own SO_REUSEPORT sockets, supervised."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from reviewq.runtime.serve import listening_sockets
from reviewq.runtime.serve import main as serve_main
from tests.conftest import require_services
from tests.live import running_server


def test_the_sockets_share_one_port_and_the_kernel_spreads_connections_across_them() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 2)
    clients = []
    try:
        assert sockets[0].getsockname() == sockets[1].getsockname()
        port = sockets[0].getsockname()[1]
        for _ in range(32):
            client = socket.create_connection(("127.0.0.1", port))
            clients.append(client)  # each from its own source port, so hashed independently
        accepted = [0, 0]
        deadline = time.monotonic() + 5
        while sum(accepted) < len(clients) and time.monotonic() < deadline:
            ready, _, _ = select.select(sockets, [], [], 0.5)
            for sock in ready:
                connection, _ = sock.accept()
                connection.close()
                accepted[sockets.index(sock)] += 1
        assert sum(accepted) == 32
        # With one shared socket, whichever process woke first could take all 32.
        assert min(accepted) > 0, accepted
    finally:
        for sock in [*sockets, *clients]:
            sock.close()


def _children(pid: int) -> set[int]:
    """The supervisor's server processes (not multiprocessing's resource tracker)."""
    children = set()
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                children.add(int(child))
        except OSError:
            continue  # it has just exited
    return children


def _supervisor_pid(port: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"reviewq.runtime.serve" in argv and str(port).encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no reviewq.runtime.serve process on port {port}")


def _wait_until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


@pytest.mark.django_db(transaction=True)
def test_serve_runs_each_process_and_starts_another_when_one_dies() -> None:
    require_services()  # several processes are refused without Redis (see the next test)
    with running_server(workers=2) as url:
        supervisor = _supervisor_pid(urllib.parse.urlsplit(url).port or 0)
        first = _children(supervisor)
        assert len(first) == 2

        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        _wait_until(lambda: len(_children(supervisor)) == 2 and killed not in _children(supervisor))

        replaced = _children(supervisor)
        # 20 connections from 20 source ports: both sockets get some (all on one: 2 ** -19), and a
        # connection waits in the new process's backlog until it serves it.
        for _ in range(20):
            assert urllib.request.urlopen(f"{url}/healthz", timeout=10).status == 200
    # running_server sent SIGTERM: the supervisor stops its processes before it exits.
    _wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in replaced), timeout=30)


@pytest.mark.django_db(transaction=True)
def test_the_processes_stop_when_the_supervisor_is_killed() -> None:
    require_services()
    with running_server(workers=2) as url:
        supervisor = _supervisor_pid(urllib.parse.urlsplit(url).port or 0)
        children = _children(supervisor)
        assert len(children) == 2
        os.kill(supervisor, signal.SIGKILL)  # no chance to stop them itself
        _wait_until(lambda: not any(_alive(pid) for pid in children), timeout=30)


def test_several_processes_without_redis_are_refused(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--workers", "2", "--port", "0"])
    assert exit_info.value.code == 2
    assert "several processes need the services mode" in capsys.readouterr().err


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False
