"""The server's memory against its bounds, measured on a real ``trioflow serve`` process.

    python -m benchmarks.server_bounds [--only stalled|h2|large|result] [--clients 200]
        [--requests 30]

- ``stalled``: 200 clients (two runs, 100 each, under ``max_clients_per_run``) ask for a run's
  event stream over raw sockets and never read, while the runs stream 10 KB events.
- ``h2``: one client asks for such a stream over h2c with a flow-control window it never opens
  (`benchmarks._http2_stalled` follows that one second by second).
- ``large``: 30 requests of almost 1 MiB each (a topic of 1,000,000 characters) to the bundled
  research example, which echoes its topic into many events; a client reads each run's stream
  to its end. Also the size of ``GET /runs?limit=500`` afterwards.
- ``result``: 200 clients ask for the status of a run with a 5 MB result
  (``GET /runs/{id}``) and never read.

Each reports the server's resident memory when idle and once it has settled (no growth over
2 s, polled every 0.25 s), with the server's default bounds. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable

import httpx
import trio

from benchmarks._http2_stalled import stall_h2
from benchmarks._http_common import MIB, python, rss, server_process

ARGV = python("-m", "trioflow", "serve", "benchmarks._bounds_app:WORKFLOWS", "--port", "0")
#: Events of this many bytes, without end (the emitter's n).
SIZE, ENDLESS = 10_000, 10**9


async def settled_rss(pid: int, *, quiet: float = 2.0, limit: float = 60.0) -> int:
    """RSS once it has not grown for ``quiet`` seconds (at most ``limit`` seconds)."""
    peak, since = rss(pid), trio.current_time()
    with trio.move_on_after(limit):
        while trio.current_time() - since < quiet:
            await trio.sleep(0.25)
            if (now := rss(pid)) > peak:
                peak, since = now, trio.current_time()
    return peak


async def stalled(client: httpx.AsyncClient, pid: int, clients: int) -> str:
    """``clients`` sockets that ask for a stream and never read."""
    idle = await settled_rss(pid)
    runs = [await _start(client, "emit", {"n": ENDLESS, "size": SIZE}) for _ in range(2)]
    host, port = _address(client)
    async with trio.open_nursery() as nursery:
        for i in range(clients):
            stream = await trio.open_tcp_stream(host, port)
            request = f"GET /runs/{runs[i % 2]}/events HTTP/1.1\r\nHost: {host}\r\n\r\n"
            await stream.send_all(request.encode())
            nursery.start_soon(_hold, stream)
        loaded = await settled_rss(pid)
        nursery.cancel_scope.cancel()
    return (
        f"{clients} stalled clients on two runs of {SIZE:,}-byte events: server RSS "
        f"{idle / MIB:.0f} MiB idle, {loaded / MIB:.0f} MiB stalled"
    )


async def h2(client: httpx.AsyncClient, pid: int) -> str:
    """One h2c client whose flow-control window stays shut."""
    idle = await settled_rss(pid)
    run_id = await _start(client, "emit", {"n": ENDLESS, "size": SIZE})
    async with (
        await trio.open_tcp_stream(*_address(client)) as stream,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(stall_h2, stream, f"/runs/{run_id}/events")
        loaded = await settled_rss(pid)
        seq = (await client.get(f"/runs/{run_id}")).json()["seq"]
        nursery.cancel_scope.cancel()
    return (
        f"an h2c client that never opens its window, {SIZE:,}-byte events: server RSS "
        f"{idle / MIB:.0f} MiB idle, {loaded / MIB:.0f} MiB stalled (the run held at seq {seq:,})"
    )


async def large(client: httpx.AsyncClient, pid: int, requests: int) -> str:
    """``requests`` runs of the research example with a topic of 1,000,000 characters."""
    idle = await settled_rss(pid)
    for _ in range(requests):
        run_id = await _start(client, "research", {"topic": "x" * 1_000_000, "pace": 0})
        async with client.stream("GET", f"/runs/{run_id}/events") as events:
            async for _chunk in events.aiter_raw():
                pass
    loaded = await settled_rss(pid)
    listed = len((await client.get("/runs", params={"limit": 500})).content)
    return (
        f"{requests} requests of ~1 MiB to the research example: server RSS "
        f"{idle / MIB:.0f} MiB idle, {loaded / MIB:.0f} MiB after; "
        f"GET /runs?limit=500 is {listed / 1024:,.0f} KiB"
    )


async def result(client: httpx.AsyncClient, pid: int, clients: int) -> str:
    """``clients`` sockets that ask for a run's 5 MB result and never read."""
    idle = await settled_rss(pid)
    run_id = await _start(client, "big", {})
    while (await client.get(f"/runs/{run_id}")).json()["status"] == "running":
        await trio.sleep(0.05)
    host, port = _address(client)
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(f"GET /runs/{run_id} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            nursery.start_soon(_hold, stream)
        loaded = await settled_rss(pid)
        nursery.cancel_scope.cancel()
    return (
        f"{clients} clients that never read a run's 5 MB result: server RSS "
        f"{idle / MIB:.0f} MiB idle, {loaded / MIB:.0f} MiB stalled"
    )


async def _start(client: httpx.AsyncClient, workflow: str, fields: dict[str, object]) -> str:
    response = await client.post(f"/workflows/{workflow}/runs", content=json.dumps(fields))
    response.raise_for_status()
    run_id: str = response.json()["run_id"]
    return run_id


async def _hold(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()


def _address(client: httpx.AsyncClient) -> tuple[str, int]:
    url = client.base_url
    assert url.port is not None
    return url.host, url.port


async def _measure(
    scenario: Callable[[httpx.AsyncClient, int], Awaitable[str]], url: str, pid: int
) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await scenario(client, pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["stalled", "h2", "large", "result"], action="append")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    scenarios: dict[str, Callable[[httpx.AsyncClient, int], Awaitable[str]]] = {
        "stalled": lambda client, pid: stalled(client, pid, args.clients),
        "h2": h2,
        "large": lambda client, pid: large(client, pid, args.requests),
        "result": lambda client, pid: result(client, pid, args.clients),
    }
    for name in args.only or list(scenarios):
        began = time.monotonic()
        with server_process(ARGV, "dashboard at") as server:
            found = trio.run(_measure, scenarios[name], server.url, server.process.pid)
            print(f"{found}  ({time.monotonic() - began:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
