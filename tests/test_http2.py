"""Event streams over HTTP/2 (h2c, with prior knowledge): backpressure holds as over HTTP/1.1.

The client is the `h2` package's state machine (hypercorn's own dependency) on a raw socket, so
the test decides when the client opens its flow-control window: a client library would open
it as it reads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
import trio
import trio.testing
from _http import served

from trioflow._server._asgi import HttpError, Request
from trioflow._server._http2 import flow_control


class H2Client:
    """One HTTP/2 connection, read by a background task that never opens a flow-control window
    unless told to (`open_window`)."""

    def __init__(self, stream: trio.SocketStream, window: int) -> None:
        self.stream = stream
        self.connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.connection.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.connection.initiate_connection()
        self.status: dict[int, int] = {}
        self.bodies: dict[int, bytearray] = {}
        self.ended: dict[int, trio.Event] = {}
        self.reading = False  # acknowledge what arrives, which opens the window again
        self.received = trio.Event()  # set (and replaced) whenever data arrives

    async def get(self, path: str) -> int:
        stream_id = self.connection.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http")]
        self.connection.send_headers(
            stream_id, [*headers, (":authority", "127.0.0.1")], end_stream=True
        )
        self.bodies[stream_id] = bytearray()
        self.ended[stream_id] = trio.Event()
        await self.flush()
        return stream_id

    async def open_window(self, stream_id: int) -> None:
        """Read from now on, as a client does: acknowledge all that arrived and arrives."""
        self.reading = True
        received = len(self.bodies[stream_id])
        if received:
            self.connection.acknowledge_received_data(received, stream_id)
        self.connection.increment_flow_control_window(1 << 20, stream_id)
        await self.flush()

    async def flush(self) -> None:
        if data := self.connection.data_to_send():
            await self.stream.send_all(data)

    async def read(self) -> None:
        """Take what the server sends (the TCP connection never stalls) until it closes."""
        while data := await self.stream.receive_some(1 << 16):
            for event in self.connection.receive_data(data):
                self._take(event)
            await self.flush()

    def _take(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.status[event.stream_id] = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.bodies[event.stream_id] += event.data
            if self.reading:
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
            self.received.set()
            self.received = trio.Event()
        elif isinstance(event, h2.events.StreamEnded):
            self.ended[event.stream_id].set()


@asynccontextmanager
async def h2_client(url: str, *, window: int) -> AsyncIterator[H2Client]:
    """An HTTP/2 connection with prior knowledge to ``url``, whose streams start with a
    flow-control window of ``window`` bytes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        client = H2Client(stream, window)
        await client.flush()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read)
            yield client
            nursery.cancel_scope.cancel()


async def test_a_stalled_http2_client_holds_the_run_back() -> None:
    """An HTTP/2 client that never opens its flow-control window holds its run back as a TCP
    client that reads nothing does: the step waits, the history is full, and the server has
    handed hypercorn at most one batch, however long the run; once the client reads, every
    event arrives, in order."""
    total = 3000
    async with served(retain=16) as server:
        run_id = await server.start("count", {"n": total, "size": 1000})
        record: Any = server.app._registry.get(run_id)  # type: ignore[union-attr]
        async with h2_client(server.url, window=0) as client:
            stream_id = await client.get(f"/runs/{run_id}/events")
            with trio.fail_after(10):
                stalled_at = -1
                while record.feed.last_seq != stalled_at:
                    stalled_at = record.feed.last_seq
                    # Held back long before the end: the history, the run's stream buffer
                    # and one batch, not the 3,000 events a window-blind server would send.
                    assert stalled_at < 16 + 256 + 256 + 2, "the run was not held back"
                    await trio.testing.wait_all_tasks_blocked(cushion=0.1)
            assert client.status[stream_id] == 200
            statistics = record.handler.statistics()
            assert statistics.writers_waiting == 1  # the step waits in write_event_to_stream
            assert len(record.feed._entries) == 16
            assert len(client.bodies[stream_id]) == 0  # the window let nothing through
            await client.open_window(stream_id)
            with trio.fail_after(10):
                await client.ended[stream_id].wait()
        body = bytes(client.bodies[stream_id])
        ids = [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]
        assert ids == list(range(1, total + 2))
        assert body.count(b"event: StopEvent\n") == 1


async def test_an_http2_stream_delivers_events_live() -> None:
    """Over HTTP/2 with an open window, events arrive while the run still runs, and the
    stream ends with the terminal event."""
    async with served() as server:
        run_id = await server.start("gate")
        async with h2_client(server.url, window=1 << 20) as client:
            client.reading = True
            stream_id = await client.get(f"/runs/{run_id}/events?format=ndjson")
            with trio.fail_after(5):
                while b'"Asking"' not in client.bodies[stream_id]:
                    await client.received.wait()
            assert not client.ended[stream_id].is_set()  # the run waits for its input
            response = await server.client.post(
                f"/runs/{run_id}/events", json={"type": "Go", "data": {"count": 2}}
            )
            assert response.status_code == 202
            with trio.fail_after(5):
                await client.ended[stream_id].wait()
        lines = bytes(client.bodies[stream_id]).splitlines()
        envelopes = [json.loads(line) for line in lines if line.strip()]
        assert [e["seq"] for e in envelopes] == list(range(1, len(envelopes) + 1))
        assert envelopes[-1]["type"] == "StopEvent"
        assert envelopes[-1]["data"]["result"] == 2


def test_an_event_stream_over_http2_without_known_flow_control_is_refused() -> None:
    """An HTTP/2 request whose send is not hypercorn's (whose buffering is unknown) gets 505
    rather than a stream that could buffer without bound."""

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent")

    async def receive() -> Any:
        raise AssertionError("nothing is read")

    request = Request("GET", "/runs/x/events", {}, {}, receive, send, http_version="2")
    with pytest.raises(HttpError) as refused:
        flow_control(request)
    assert (refused.value.status, refused.value.code) == (505, "http2_not_supported")
    assert flow_control(Request("GET", "/", {}, {}, receive, send)) is None


async def _answered(url: str) -> int:
    """The status of a plain GET /workflows on a new HTTP/1.1 connection."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return (await client.get("/workflows")).status_code


async def test_a_frame_for_a_closed_stream_ends_its_connection_not_the_server() -> None:
    """A DATA frame on a stream the server has answered (hypercorn raises KeyError there)
    ends that one connection; the server goes on serving."""
    async with served() as server, h2_client(server.url, window=1 << 20) as client:
        client.reading = True
        connection = client.connection
        headers = [(":method", "POST"), (":path", "/runs/nope/cancel"), (":scheme", "http")]
        connection.send_headers(1, [*headers, (":authority", "127.0.0.1")])  # a body follows
        client.bodies[1], client.ended[1] = bytearray(), trio.Event()
        await client.flush()
        with trio.fail_after(5):
            await client.ended[1].wait()
        assert client.status[1] == 404
        connection.send_data(1, b"{}", end_stream=True)
        await client.flush()
        with trio.fail_after(5):
            assert await _answered(server.url) == 200


@pytest.mark.parametrize("what", ["preface only", "a response it cannot receive, then gone"])
async def test_http2_connections_that_idle_or_left_free_their_slot(what: str) -> None:
    """With max_connections=1: an h2 connection that sends only its preface is closed after
    keep_alive_timeout (hypercorn's own timer never starts on it), and one that asked for a
    response with a window of 0 and left is ended too (its response would wait for the window
    forever); either way the next client is served."""
    async with served(max_connections=1, keep_alive_timeout=0.2) as server:
        await server.client.aclose()  # its kept-alive connection would hold the slot
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            client = H2Client(stream, window=0)
            await client.flush()
            if what != "preface only":
                await client.get("/workflows")
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                await stream.aclose()
            with trio.fail_after(5):
                assert await _answered(server.url) == 200
