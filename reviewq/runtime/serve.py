"""Serve the web tier as several uvicorn processes, each on its own SO_REUSEPORT socket.

    .venv/bin/python -m reviewq.runtime.serve --workers 2 [--host 127.0.0.1] [--port 8000]

Why not ``uvicorn --workers N``: its processes share one listening socket, and the one that wakes
first takes the connections that are waiting. With a few long-lived keep-alive connections (an
agent fleet's HTTP pool, a load generator) one process can end up serving all of them while the
others idle (``bench/gateway_overhead.py --shared-socket`` shows it; the README has the figures).
With one socket per process, bound with SO_REUSEPORT, the kernel spreads new connections across
the processes by a hash of their addresses.

A process that dies is started again on its socket (after a pause if it died within seconds of
starting); SIGINT or SIGTERM stops them all, and the processes stop if the supervisor is killed.
Several processes need the services mode (REDIS_URL): in the embedded mode run one (make run).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import logging
import multiprocessing.connection
import os
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn
from uvicorn._subprocess import get_subprocess

logger = logging.getLogger("reviewq.runtime.serve")
APPLICATION = "reviewq.asgi:application"
QUICK_EXIT_SECONDS = 5.0  # a process that exits sooner than this after its start...
RESTART_PAUSE_SECONDS = 2.0  # ...is started again only after this pause
STOP_SECONDS = 30.0  # how long a process may take to finish its requests before it is killed
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def listening_sockets(host: str, port: int, count: int, backlog: int = 2048) -> list[socket.socket]:
    """``count`` sockets listening on one address, each bound with SO_REUSEPORT.

    Port 0 picks a free port for the first and binds the others to the same one.
    """
    sockets: list[socket.socket] = []
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.set_inheritable(True)
        port = sock.getsockname()[1]
        sockets.append(sock)
    return sockets


class Supervisor:
    """Runs one uvicorn process per socket, restarts any that exits, stops all on a signal."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.processes: list[BaseProcess] = []
        self.started_at: list[float] = []
        self.stopping = False
        # The signal handler only sets a flag and writes here; the loop waits on this pipe too.
        # (A threading.Event set from a handler can deadlock on the lock its wait() holds.)
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)

    def _start(self, index: int) -> None:
        target = functools.partial(_serve, self.config, os.getpid())
        process = get_subprocess(self.config, target, [self.sockets[index]])
        process.start()
        if index < len(self.processes):
            self.processes[index], self.started_at[index] = process, time.monotonic()
        else:
            self.processes.append(process)
            self.started_at.append(time.monotonic())

    def _wait(self, handles: list[Any], timeout: float) -> None:
        """Until one of ``handles`` is ready, a stop is asked for, or ``timeout`` passes."""
        multiprocessing.connection.wait([*handles, self._wake_read], timeout=timeout)

    def run(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop)
        for index in range(len(self.sockets)):
            self._start(index)
        host, port = self.sockets[0].getsockname()[:2]
        logger.info("serving on http://%s:%s with %d processes", host, port, len(self.processes))
        try:
            while not self.stopping:
                self._wait([p.sentinel for p in self.processes], timeout=5)
                for index, process in enumerate(self.processes):
                    if process.is_alive() or self.stopping:
                        continue
                    logger.warning("process %s exited (%s); starting another", process.pid, process.exitcode)
                    if time.monotonic() - self.started_at[index] < QUICK_EXIT_SECONDS:
                        # It died while starting (a bad setting, the database down): pause
                        # rather than start processes in a tight loop.
                        self._wait([], timeout=RESTART_PAUSE_SECONDS)
                    if not self.stopping:
                        self._start(index)
        finally:
            for process in self.processes:
                process.terminate()  # uvicorn finishes its in-flight requests on SIGTERM
            for process in self.processes:
                process.join(timeout=STOP_SECONDS)
                if process.is_alive():
                    process.kill()
            for sock in self.sockets:
                sock.close()
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):  # the pipe is full: the loop is awake anyway
            os.write(self._wake_write, b"x")


def _serve(config: uvicorn.Config, supervisor_pid: int, sockets: list[socket.socket]) -> None:
    """A server process: serves on its socket, and stops if the supervisor dies (a supervisor
    killed with SIGKILL would otherwise leave processes serving old code on the shared port)."""
    _stop_with_parent(supervisor_pid)
    uvicorn.Server(config).run(sockets=sockets)


def _stop_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere, nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and not os.environ.get("REDIS_URL"):
        # Without Redis each process would push reviewers' updates and wake API waiters only
        # for its own requests, and would run its own scheduler and load its own models.
        parser.error(
            "several processes need the services mode (REDIS_URL, and DATABASE_URL for PostgreSQL); "
            "for the embedded mode run one process: make run"
        )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    config = uvicorn.Config(APPLICATION, lifespan="on", access_log=not args.no_access_log)
    Supervisor(config, listening_sockets(args.host, args.port, args.workers, config.backlog)).run()


if __name__ == "__main__":
    main()
