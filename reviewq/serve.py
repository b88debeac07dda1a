"""Serve the web tier as several uvicorn processes, each on its own SO_REUSEPORT socket.

    .venv/bin/python -m reviewq.serve --workers 2 [--host 127.0.0.1] [--port 8000]

Why not ``uvicorn --workers N``: its processes share one listening socket, and the one that wakes
first takes the connections that are waiting. With a few long-lived keep-alive connections (an
agent fleet's HTTP pool, a load generator) one process can end up serving nearly all of them
while the others idle: on 2 cores, intake measured 256/s with the CPU 59 % busy on such runs
against 384-397/s at 85 % when the connections happened to spread (bench/gateway_overhead.py).
With one socket per process, bound with SO_REUSEPORT, the kernel spreads new connections across
the processes by a hash of their addresses.

A process that dies is started again on its socket (after a pause if it died within seconds of
starting); SIGINT or SIGTERM stops them all.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing.connection
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn
from uvicorn._subprocess import get_subprocess

logger = logging.getLogger("reviewq.serve")
APPLICATION = "reviewq.asgi:application"
QUICK_EXIT_SECONDS = 5.0  # a process that exits sooner than this after its start...
RESTART_PAUSE_SECONDS = 2.0  # ...is started again only after this pause


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
        self.stopping = threading.Event()

    def _start(self, index: int) -> None:
        process = get_subprocess(self.config, uvicorn.Server(self.config).run, [self.sockets[index]])
        process.start()
        if index < len(self.processes):
            self.processes[index], self.started_at[index] = process, time.monotonic()
        else:
            self.processes.append(process)
            self.started_at.append(time.monotonic())

    def run(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop)
        for index in range(len(self.sockets)):
            self._start(index)
        host, port = self.sockets[0].getsockname()[:2]
        logger.info("serving on http://%s:%s with %d processes", host, port, len(self.processes))
        try:
            while not self.stopping.is_set():
                multiprocessing.connection.wait([p.sentinel for p in self.processes], timeout=0.5)
                for index, process in enumerate(self.processes):
                    if process.is_alive() or self.stopping.is_set():
                        continue
                    logger.warning("process %s exited (%s); starting another", process.pid, process.exitcode)
                    if time.monotonic() - self.started_at[index] < QUICK_EXIT_SECONDS:
                        # It died while starting (a bad setting, the database down): pause
                        # rather than start processes in a tight loop.
                        self.stopping.wait(RESTART_PAUSE_SECONDS)
                    if not self.stopping.is_set():
                        self._start(index)
        finally:
            for process in self.processes:
                process.terminate()  # uvicorn finishes its in-flight requests on SIGTERM
            for process in self.processes:
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()
            for sock in self.sockets:
                sock.close()

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping.set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    config = uvicorn.Config(APPLICATION, lifespan="on", access_log=not args.no_access_log)
    Supervisor(config, listening_sockets(args.host, args.port, args.workers, config.backlog)).run()


if __name__ == "__main__":
    main()
