"""Connections, timeouts and shutdown, against a real server on 127.0.0.1 with raw sockets:
what a client library would hide (how a response ends, when a connection closes, a client that
stops reading, pipelining) is what these tests pin."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio.testing
from _http import FLOWS, serve_process, served, wait_until

import trioflow
from trioflow._server._record import RunRecord

HOST = "Host: 127.0.0.1\r\n"


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[trio.SocketStream]:
    """A raw TCP connection to the server at ``url``, closed when the block exits."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        yield stream


async def read_until(stream: trio.SocketStream, marker: bytes, data: bytes = b"") -> bytes:
    """Read until ``marker`` has arrived; everything read so far."""
    while marker not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, f"the server closed the connection before {marker!r}: {data[-300:]!r}"
        data += chunk
    return data


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


def record_of(app: trioflow.WorkflowApp, run_id: str) -> RunRecord:
    """The server's record of a run (its feed, its handler)."""
    assert app._registry is not None
    record = app._registry.get(run_id)
    assert record is not None
    return record


# -- how a stream ends --


@pytest.mark.parametrize(
    "head", ["GET {path} HTTP/1.0\r\n", "GET {path} HTTP/1.1\r\nConnection: close\r\n"]
)
async def test_a_stream_ends_and_closes_the_connection_when_the_client_asked(head: str) -> None:
    """HTTP/1.0 or Connection: close: after the terminal event the response ends and the
    server closes the connection."""
    async with served() as server:
        run_id = await server.start("count", {"n": 3})
        async with connected(server.url) as stream:
            path = f"/runs/{run_id}/events"
            await stream.send_all((head.format(path=path) + HOST + "\r\n").encode())
            with trio.fail_after(5):
                response = await read_until_closed(stream)
        assert response.startswith(b"HTTP/1.1 200")
        assert response.count(b"event: Tick\n") == 3
        assert b"event: StopEvent\n" in response


async def test_a_kept_alive_connection_serves_the_next_request_after_a_stream() -> None:
    """HTTP/1.1 keeps the connection once a stream has ended: the next request on it is
    answered, and once idle for keep_alive_timeout the server closes it."""
    async with served(keep_alive_timeout=0.3) as server:
        run_id = await server.start("count", {"n": 3})
        async with connected(server.url) as stream:
            await stream.send_all(f"GET /runs/{run_id}/events HTTP/1.1\r\n{HOST}\r\n".encode())
            with trio.fail_after(5):
                response = await read_until(stream, b"\r\n0\r\n\r\n")  # the body's end
                assert b"event: StopEvent\n" in response
                await stream.send_all(f"GET /workflows HTTP/1.1\r\n{HOST}\r\n".encode())
                answer = await read_until(stream, b'"workflows"')
                assert answer.startswith(b"HTTP/1.1 200")
            began = trio.current_time()
            with trio.fail_after(5):
                assert await read_until_closed(stream) == b""
            assert trio.current_time() - began >= 0.25  # kept for about keep_alive_timeout


async def test_a_request_head_that_never_completes_is_closed_after_keep_alive_timeout() -> None:
    """A connection whose request head is still arriving counts as idle: keep_alive_timeout
    closes it (no read timeout is needed, which would also end quiet event streams)."""
    async with served(keep_alive_timeout=0.2) as server, connected(server.url) as stream:
        await stream.send_all(f"GET /workflows HTTP/1.1\r\n{HOST}X-Slow: ".encode())
        with trio.fail_after(5):
            assert await read_until_closed(stream) == b""


# -- bodies and the number of connections --


async def test_a_body_that_does_not_arrive_is_answered_408() -> None:
    """A request head whose body does not come within body_timeout is answered 408
    body_timeout, and the connection is closed."""
    async with served(body_timeout=0.2) as server:
        async with connected(server.url) as stream:
            head = f"POST /workflows/count/runs HTTP/1.1\r\n{HOST}Content-Length: 100\r\n\r\n"
            await stream.send_all(head.encode() + b'{"n": 1')
            with trio.fail_after(5):
                response = await read_until_closed(stream)
        assert response.startswith(b"HTTP/1.1 408")
        error = json.loads(response.partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == "body_timeout"
        assert (await server.app._registry.page(10))[0] == []  # type: ignore[union-attr]


async def test_connections_beyond_max_connections_wait_until_one_closes() -> None:
    """With max_connections open, a new connection waits in the backlog, unanswered, and is
    served as soon as one of the others closes."""
    async with (
        served(max_connections=2, keep_alive_timeout=30) as server,
        connected(server.url) as first,
        connected(server.url) as second,
    ):
        await first.send_all(f"GET /workflows HTTP/1.1\r\n{HOST}\r\n".encode())
        with trio.fail_after(5):
            await read_until(first, b'"workflows"')
        async with connected(server.url) as waiting:
            await waiting.send_all(f"GET /workflows HTTP/1.1\r\n{HOST}\r\n".encode())
            with trio.move_on_after(0.3):
                early = await waiting.receive_some(65536)
                raise AssertionError(f"answered beyond max_connections: {early!r}")
            await second.aclose()
            with trio.fail_after(5):
                answer = await read_until(waiting, b'"workflows"')
        assert answer.startswith(b"HTTP/1.1 200")


# -- clients that leave --


@pytest.mark.parametrize("form", ["sse", "ndjson"])
async def test_a_client_that_pipelined_a_request_and_left_is_noticed(form: str) -> None:
    """hypercorn reads nothing while a pipelined request waits behind a stream; the keep-alive
    written on the idle stream (SSE ': ping', NDJSON a space) is how the server notices that
    the client has gone (within a ping interval: two keep-alives; the deadline here only
    turns a hang into a failure)."""
    async with served(ping_interval=0.2) as server:
        run_id = await server.start("forever")
        record = record_of(server.app, run_id)
        async with connected(server.url) as stream:
            query = "?format=ndjson" if form == "ndjson" else ""
            await stream.send_all(
                f"GET /runs/{run_id}/events{query} HTTP/1.1\r\n{HOST}\r\n"
                f"GET /workflows HTTP/1.1\r\n{HOST}\r\n".encode()
            )
            with trio.fail_after(5):
                await read_until(stream, b'"Tick"')
            assert record.feed.watchers == 1
        with trio.fail_after(5):
            await wait_until(lambda: record.feed.watchers == 0)


async def test_a_connection_whose_client_left_behind_a_pipelined_request_is_closed() -> None:
    """Once a write has failed, the server closes the connection rather than wait forever
    to read the pipelined request: with max_connections=1, the next connection is served."""
    async with served(ping_interval=0.1, max_connections=1, keep_alive_timeout=0.1) as server:
        run_id = await server.start("forever")
        record = record_of(server.app, run_id)
        await server.client.aclose()  # its kept-alive connection would hold the slot
        async with connected(server.url) as stream:
            await stream.send_all(
                f"GET /runs/{run_id}/events?format=ndjson HTTP/1.1\r\n{HOST}\r\n"
                f"GET /workflows HTTP/1.1\r\n{HOST}\r\n".encode()
            )
            with trio.fail_after(5):
                await read_until(stream, b'"Tick"')
        with trio.fail_after(5):
            await wait_until(lambda: record.feed.watchers == 0)
            async with connected(server.url) as after:
                await after.send_all(f"GET /workflows HTTP/1.1\r\n{HOST}\r\n".encode())
                answer = await read_until(after, b'"workflows"')
        assert answer.startswith(b"HTTP/1.1 200")


# -- the SSE framing --


async def test_retry_comes_in_the_first_events_block_and_never_alone() -> None:
    """Pings before the first event are bare comments; retry: comes with the first event,
    never in a block of its own (which some clients take for an event without data)."""
    async with served(ping_interval=0.02, retry_ms=1500) as server:
        run_id = await server.start("forever")
        record = record_of(server.app, run_id)
        await wait_until(lambda: record.feed.last_seq == 1)
        body = b""
        async with server.client.stream("GET", f"/runs/{run_id}/events?after=1") as response:
            async for chunk in response.aiter_raw():
                body += chunk
                if body.count(b": ping\n\n") >= 2:
                    record.handler.cancel()  # the terminal event follows the pings
        terminal = rb"retry: 1500\nid: 2\nevent: WorkflowCancelledEvent\ndata: \{.*\}\n\n"
        assert re.fullmatch(rb"(: ping\n\n){2,}" + terminal, body), body


async def test_events_expired_mid_stream_are_an_expired_event_not_error() -> None:
    """When shutdown stops waiting for a slow client, the events it has not taken are gone;
    its stream then ends with an `expired` event (not `error`, which EventSource fires on its
    own), after what it still had."""
    stop = trio.Event()
    app = trioflow.WorkflowApp(FLOWS, retain=4, shutdown_grace=0.5)
    async with serving(app, stop) as (url, _):
        run_id = await start_large_run(url)
        record = record_of(app, run_id)
        async with connected(url) as stream:
            await stream.send_all(f"GET /runs/{run_id}/events HTTP/1.1\r\n{HOST}\r\n".encode())
            await wait_until_stalled(record)
            stop.set()
            with trio.fail_after(5):
                await wait_until(lambda: record.feed.finished)
                body = await read_until(stream, b"\r\n0\r\n\r\n")
    assert b"\nevent: expired\ndata: {" in body
    assert b'"code":"events_expired"' in body
    assert b"event: error" not in body


# -- shutdown --


async def test_shutdown_ends_within_its_grace_with_a_client_that_reads_nothing() -> None:
    """A client that stopped reading a stream of large events holds neither the run nor the
    connection beyond the grace: serve() returns once shutdown_grace is over."""
    grace = 0.3
    stop = trio.Event()
    app = trioflow.WorkflowApp(FLOWS, shutdown_grace=grace)
    async with serving(app, stop) as (url, done):
        run_id = await start_large_run(url)
        async with connected(url) as stream:  # closing it ends an old server's wait too
            await stream.send_all(f"GET /runs/{run_id}/events HTTP/1.1\r\n{HOST}\r\n".encode())
            await wait_until_stalled(record_of(app, run_id))
            stop.set()
            began = trio.current_time()
            with trio.move_on_after(grace + 1.5):
                await done.wait()
            took = trio.current_time() - began
        assert done.is_set(), "serve() did not return: a client that reads nothing held it"
        assert took >= grace  # the run's end waited for the client, then the connection


@asynccontextmanager
async def serving(
    app: trioflow.WorkflowApp, stop: trio.Event
) -> AsyncIterator[tuple[str, trio.Event]]:
    """serve(app) on port 0 until ``stop`` is set: its URL, and an event set once serve()
    has returned."""
    done = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        await trioflow.serve(app, port=0, shutdown_trigger=stop.wait, task_status=task_status)
        done.set()

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(run)
        yield binds[0], done


async def start_large_run(url: str) -> str:
    """Start a run of a million events of 10 kB: far more than any buffer holds."""
    async with httpx.AsyncClient(base_url=url) as client:
        started = await client.post("/workflows/count/runs", json={"n": 10**6, "size": 10**4})
    run_id: str = started.json()["run_id"]
    return run_id


async def wait_until_stalled(record: RunRecord) -> None:
    """Wait until the run's producer makes no more progress (its client reads nothing)."""
    with trio.fail_after(10):
        stalled_at = -1
        while record.feed.last_seq != stalled_at:
            stalled_at = record.feed.last_seq
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)


def test_sigterm_ends_serve_within_its_grace_with_a_client_that_reads_nothing() -> None:
    """`trioflow serve --shutdown-grace 0.3` exits soon after SIGTERM although a client
    stopped reading a stream of large events."""
    with (
        serve_process("_http:FLOWS", "--shutdown-grace", "0.3") as (process, url),
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        started = client.post("/workflows/count/runs", json={"n": 10**6, "size": 10**4})
        run_id = started.json()["run_id"]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as reader:
            reader.sendall(f"GET /runs/{run_id}/events HTTP/1.1\r\n{HOST}\r\n".encode())
            # Wait until the server's writes to this client wait: the run stops advancing.
            seq, previous = 0, -1
            while seq != previous:
                time.sleep(0.1)
                seq, previous = client.get(f"/runs/{run_id}").json()["seq"], seq
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=0.3 + 5)
    assert process.returncode == 0
