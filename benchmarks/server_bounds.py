"""The server's memory against its bounds, measured on a real ``trioflow serve`` process.

    python -m benchmarks.server_bounds [--only stalled|large] [--clients 200] [--requests 30]

- ``stalled``: 200 clients (two runs, 100 each, under ``max_clients_per_run``) open a run's
  event stream over raw sockets and never read, while the runs stream 10 KB events.
- ``large``: 30 requests of almost 1 MiB each (a topic of 1,000,000 characters) to the bundled
  research example, which echoes its topic into many events; a client reads each run's stream
  to its end.

Each reports the server's resident memory (``VmRSS`` of ``/proc/<pid>/status``) when idle and
once it has settled (no growth over 2 s, polled every 0.25 s), against the bound that the
server's options set. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def rss(pid: int) -> int:
    """The process's resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def settled_rss(pid: int, *, quiet: float = 2.0, limit: float = 60.0) -> int:
    """RSS once it has not grown for ``quiet`` seconds (at most ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    peak, since = rss(pid), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.25)
        now = rss(pid)
        if now > peak:
            peak, since = now, time.monotonic()
    return peak


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def server(*flags: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``trioflow serve`` of the bundled examples plus `benchmarks._bounds_app`'s stream."""
    port = free_port()
    command = [sys.executable, "-m", "trioflow", "serve", "benchmarks._bounds_app:WORKFLOWS"]
    process = subprocess.Popen(
        [*command, "--port", str(port), *flags],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.05)
        yield process, port
    finally:
        process.kill()
        process.wait()


def request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request on its own connection; the status and the body."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    status = int(response.split(b" ", 2)[1])
    return status, response.partition(b"\r\n\r\n")[2]


def read_stream(port: int, path: str) -> int:
    """Read a run's whole event stream (to the end of its chunked body); its length."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = bytearray()
        while not received.endswith(b"\r\n0\r\n\r\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("the stream ended early")
            received += chunk
    return len(received)


def start(port: int, workflow: str, fields: dict[str, object]) -> str:
    status, body = request(port, "POST", f"/workflows/{workflow}/runs", json.dumps(fields).encode())
    if status != 201:
        raise RuntimeError(f"start answered {status}: {body[:200]!r}")
    run_id: str = json.loads(body)["run_id"]
    return run_id


def stalled(clients: int) -> dict[str, float]:
    """``clients`` sockets that ask for a stream and never read."""
    with server() as (process, port):
        idle = settled_rss(process.pid)
        runs = [start(port, "stream", {"size": 10_000}) for _ in range(2)]
        sockets = []
        for i in range(clients):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            path = f"/runs/{runs[i % 2]}/events"
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            sockets.append(sock)
        loaded = settled_rss(process.pid)
        for sock in sockets:
            sock.close()
    return {"idle_mib": idle / MiB, "stalled_mib": loaded / MiB}


def large(requests: int) -> dict[str, float]:
    """``requests`` runs of the research example with a topic of 1,000,000 characters."""
    with server() as (process, port):
        idle = settled_rss(process.pid)
        for _ in range(requests):
            run_id = start(port, "research", {"topic": "x" * 1_000_000, "pace": 0})
            read_stream(port, f"/runs/{run_id}/events")
        loaded = settled_rss(process.pid)
        listed = len(request(port, "GET", "/runs?limit=500")[1])
    return {"idle_mib": idle / MiB, "after_mib": loaded / MiB, "list_body_kib": listed / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["stalled", "large"], action="append")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    chosen = args.only or ["stalled", "large"]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if "stalled" in chosen:
        found = stalled(args.clients)
        print(
            f"{args.clients} stalled clients on two runs of 10 KB events: server RSS "
            f"{found['idle_mib']:.0f} MiB idle, {found['stalled_mib']:.0f} MiB stalled"
        )
    if "large" in chosen:
        found = large(args.requests)
        print(
            f"{args.requests} requests of ~1 MiB to the research example: server RSS "
            f"{found['idle_mib']:.0f} MiB idle, {found['after_mib']:.0f} MiB after; "
            f"GET /runs?limit=500 is {found['list_body_kib']:.0f} KiB"
        )


if __name__ == "__main__":
    main()
