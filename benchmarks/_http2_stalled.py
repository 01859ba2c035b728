"""Server memory with a client that stalls its stream, over HTTP/2 or HTTP/1.1.

    python -m benchmarks._http2_stalled [--protocol h2|h1] [--seconds 10] [--size 10000]

Starts ``trioflow serve benchmarks._trioflow_serving:WORKFLOWS`` in a child process (the
server's defaults: ``retain`` 1,024 events and 4 MiB per run), starts an `Emitter` run of
endless events of ``--size`` bytes, and follows its stream with a client that never lets it
advance: over h2c (prior knowledge) with a flow-control window of 0 bytes that it never
opens, while it reads the TCP connection itself all along (``h2``), or over HTTP/1.1 without
reading the socket at all (``h1``). Every second it prints the server's RSS and how far the
run got (``seq``). A server that holds the run back stays flat at its retention limit; one
that does not grows until the machine says no.

Not one of the suite's comparisons (the anchor serves no HTTP/2 here): a check of one bound,
run by hand. Linux only (the RSS comes from /proc).
"""

from __future__ import annotations

import argparse
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import trio

from benchmarks._http_common import MIB, python, rss, server_process

ARGV = python("-m", "trioflow", "serve", "benchmarks._trioflow_serving:WORKFLOWS", "--port", "0")


async def stall_h2(stream: trio.SocketStream, path: str) -> None:
    """Ask for ``path`` over HTTP/2 with a window of 0 bytes; read the connection forever,
    never acknowledging what the stream sends (nothing can come: the window stays shut)."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.local_settings = h2.settings.Settings(
        client=True,
        initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        },
    )
    connection.initiate_connection()
    headers = [(":method", "GET"), (":path", path), (":scheme", "http")]
    connection.send_headers(1, [*headers, (":authority", "127.0.0.1")], end_stream=True)
    await stream.send_all(connection.data_to_send())
    while data := await stream.receive_some(1 << 16):
        connection.receive_data(data)
        if reply := connection.data_to_send():  # settings and ping acknowledgements
            await stream.send_all(reply)


async def stall_h1(stream: trio.SocketStream, path: str) -> None:
    """Ask for ``path`` over HTTP/1.1 and read nothing."""
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await trio.sleep_forever()


async def measure(url: str, pid: int, protocol: str, seconds: int, size: int) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        started = await client.post("/workflows/emit/runs", json={"n": 10**9, "size": size})
        run_id = started.json()["run_id"]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        before = rss(pid)
        print(f"{protocol}, events of {size:,} bytes; server RSS before: {before / MIB:.0f} MiB")
        async with (
            await trio.open_tcp_stream(host, int(port)) as stream,
            trio.open_nursery() as nursery,
        ):
            stall = stall_h2 if protocol == "h2" else stall_h1
            nursery.start_soon(stall, stream, f"/runs/{run_id}/events")
            began = time.monotonic()
            for second in range(1, seconds + 1):
                await trio.sleep(began + second - time.monotonic())
                seq = (await client.get(f"/runs/{run_id}")).json()["seq"]
                growth = (rss(pid) - before) / MIB
                print(f"{second:3d} s  RSS {growth:+8.1f} MiB  seq {seq:,}", flush=True)
            nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=["h2", "h1"], default="h2")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--size", type=int, default=10_000)
    args = parser.parse_args()
    with server_process(ARGV, "dashboard at") as server:
        trio.run(measure, server.url, server.process.pid, args.protocol, args.seconds, args.size)


if __name__ == "__main__":
    main()
