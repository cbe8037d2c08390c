"""Serving the app with uvicorn: one process, or several workers that each listen on a socket
of their own bound with SO_REUSEPORT, so that the kernel shares the connections out.

uvicorn's own `--workers` shares one listening socket: the worker that wakes first accepts
every pending connection, and with keep-alive clients (an EHR's CDS Hooks and FHIR calls, a
load balancer) one worker can end up with all the work while the others idle. With a socket
per worker the kernel spreads new connections evenly over them.

The parent only supervises: it starts the workers, restarts one that dies, and on SIGTERM or
SIGINT stops them all (each finishes its requests in flight, as uvicorn does)."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from types import FrameType
from typing import Any

import uvicorn

APP = "alemwatch.api.app:app_from_env"
BACKLOG = 2048  # uvicorn's default
START_FAILURE_SECONDS = 10.0  # a worker that exits this soon after it started could not start: give up
STOP_TIMEOUT_SECONDS = 30.0
log = logging.getLogger("alemwatch.server")


def serve(host: str, port: int, workers: int) -> int:
    """Serve until stopped; the exit status (0: stopped, 1: a worker could not start)."""
    if workers <= 1:
        uvicorn.run(APP, factory=True, host=host, port=port, log_level="info", access_log=False)
        return 0
    _listening_socket(host, port).close()  # the address is usable (else the error is raised here, once)
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start(n: int) -> tuple[Any, float]:
        process = context.Process(target=_worker, args=(host, port), name=f"alemwatch-worker-{n}")
        process.start()
        return process, time.monotonic()

    running = [start(n) for n in range(workers)]
    log.info("serving on http://%s:%d with %d workers (a socket each, SO_REUSEPORT)", host, port, workers)
    status = 0
    while not stopping:
        time.sleep(0.2)
        for n, (process, started) in enumerate(running):
            if process.is_alive() or stopping:
                continue
            if time.monotonic() - started < START_FAILURE_SECONDS:
                log.error("worker %d exited with %s at start; stopping", n, process.exitcode)
                stopping, status = True, 1
                break
            log.warning("worker %d exited with %s; starting another", n, process.exitcode)
            running[n] = start(n)
    for process, _ in running:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for process, _ in running:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    return status


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


def _worker(host: str, port: int) -> None:
    """One worker process: its own socket on the shared port, one uvicorn server on it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sock = _listening_socket(host, port)
    config = uvicorn.Config(APP, factory=True, log_level="info", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
