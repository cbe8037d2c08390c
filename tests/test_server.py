"""`alemwatch serve --workers N`: the real command in a subprocess, on a migrated SQLite file.

Each worker listens on a socket of its own (SO_REUSEPORT): the test holds many connections
open at once and reads from /proc which worker holds each, so a server that left them all to
one worker fails. A worker that dies is replaced; SIGTERM stops every worker."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alemwatch.store.db import upgrade
from tests.e2e.conftest import free_port, wait_until_up

CLI = Path(sys.executable).parent / "alemwatch"
CONNECTIONS = 96  # opened at once; under a quarter on one of two workers by chance: p < 1e-6


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def workers(self) -> list[int]:
        """The pids of the supervisor's worker processes (its spawned children that are alive)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid and fields[0] != "Z" and b"spawn_main" in command:
                found.append(int(entry.name))
        return sorted(found)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    upgrade(url)
    port = free_port()
    env = {
        **os.environ,
        "ALEMWATCH_DATABASE_URL": url,
        "ALEMWATCH_ENVIRONMENT": "test",
        "ALEMWATCH_SECRET_KEY": "serve-secret-" + "x" * 32,
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        command = [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until_up(process, f"http://127.0.0.1:{port}", log)
            yield Served(process, port, log)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def _established_inodes(port: int) -> set[str]:
    """Socket inodes of the server's side of the established connections to `port`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(fields[9])
    return inodes


def _sockets_of(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _health(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/api/health")
    response = connection.getresponse()
    response.read()
    return response.status


def test_the_workers_share_the_connections(served: Served) -> None:
    _wait_for(lambda: len(served.workers()) == 2)
    connections = [http.client.HTTPConnection("127.0.0.1", served.port, timeout=10) for _ in range(CONNECTIONS)]
    try:
        for connection in connections:  # all pending at once: a shared socket's first waker takes them all
            connection.connect()
        time.sleep(0.5)
        assert all(_health(c) == 200 for c in connections)  # each held open (keep-alive)
        established = _established_inodes(served.port)
        per_worker = {pid: len(_sockets_of(pid) & established) for pid in served.workers()}
        assert sum(per_worker.values()) == CONNECTIONS, per_worker
        assert all(count >= CONNECTIONS // 4 for count in per_worker.values()), f"connections per worker: {per_worker}"
    finally:
        for connection in connections:
            connection.close()


def test_a_worker_that_dies_is_replaced_and_sigterm_stops_all(served: Served) -> None:
    _wait_for(lambda: len(served.workers()) == 2)
    first, second = served.workers()
    time.sleep(11)  # past the start-up window, in which a worker's exit stops the server
    os.kill(first, signal.SIGKILL)
    _wait_for(lambda: len(served.workers()) == 2 and first not in served.workers())
    assert second in served.workers()
    for _ in range(10):  # served whichever worker takes the connection
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        assert _health(connection) == 200
        connection.close()
    workers = served.workers()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=40) == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived the server"


def test_a_port_in_use_is_an_error_naming_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    upgrade(url)
    env = {**os.environ, "ALEMWATCH_DATABASE_URL": url, "ALEMWATCH_ENVIRONMENT": "test"}
    env["ALEMWATCH_SECRET_KEY"] = "serve-secret-" + "x" * 32
    with socket.socket() as holder:  # a plain socket (no SO_REUSEPORT) holds the port
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        command = [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "--host/--port" in result.stderr and str(port) in result.stderr
    assert "Traceback" not in result.stderr
