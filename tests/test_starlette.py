"""`trioflow.starlette.EventStreamResponse` in Starlette and FastAPI apps, for real: hypercorn's
trio worker on 127.0.0.1 port 0, an httpx client reading the stream chunk by chunk."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
import trio.testing
from _http import sse_messages
from fastapi import BackgroundTasks, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from test_http2 import h2_client

from trioflow import (
    Context,
    Event,
    NotInTrioError,
    StartEvent,
    StepStartedEvent,
    StopEvent,
    Workflow,
    step,
)
from trioflow.starlette import EventStreamResponse

# -- workflows --


class Token(Event):
    text: str


class Progress(Event):
    value: float


class Blob(Event):
    n: int
    payload: str


class Ask(StartEvent):
    q: str
    n: int = 3


class Boom(Exception):
    pass


class Gate:
    """Lets a step go on one stage at a time, when the test says so."""

    def __init__(self) -> None:
        self.opened = 0
        self._changed = trio.Event()

    def open(self) -> None:
        self.opened += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, stage: int) -> None:
        while self.opened < stage:
            await self._changed.wait()


class ChatFlow(Workflow):
    """Streams n tokens with a progress event after each; after token i (and before the
    first with ``held``), waits until the test opens the gate for stage i."""

    def __init__(self, *, held: bool = False) -> None:
        super().__init__(timeout=None)
        self.gate = Gate()
        self.held = held
        self.finished = False

    @step
    async def talk(self, ctx: Context, ev: Ask) -> StopEvent:
        if self.held:
            await self.gate.wait(1)
        for i in range(1, ev.n + 1):
            await ctx.write_event_to_stream(Token(text=f"{ev.q}-{i}"))
            await ctx.write_event_to_stream(Progress(value=i / ev.n))
            await self.gate.wait(i + self.held)
        self.finished = True
        return StopEvent(result=f"answered {ev.q}")


class EndlessFlow(Workflow):
    """Streams one token, then waits until cancelled."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.cancelled = False
        self.ended = trio.Event()

    @step
    async def talk(self, ctx: Context, ev: StartEvent) -> StopEvent:
        try:
            await ctx.write_event_to_stream(Token(text="first"))
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled = True
            raise
        finally:
            self.ended.set()


class FailingFlow(Workflow):
    @step
    async def talk(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Token(text="before"))
        raise Boom("the model is down")


class FloodFlow(Workflow):
    """Streams ``n`` events of 10 kB, counting what it has written."""

    def __init__(self) -> None:
        super().__init__(timeout=None, stream_buffer=4)
        self.written = 0
        self.ended = trio.Event()

    @step
    async def flood(self, ctx: Context, ev: Ask) -> StopEvent:
        payload = "x" * 10_000
        try:
            for i in range(1, ev.n + 1):
                await ctx.write_event_to_stream(Blob(n=i, payload=payload))
                self.written = i
        finally:
            self.ended.set()
        return StopEvent(result=ev.n)


async def wait_stalled(flow: FloodFlow) -> int:
    """Wait until the step has written nothing more while every task was blocked (the
    client reads nothing); return how many events it had written."""
    with trio.fail_after(20):
        stalled_at = -1
        while flow.written != stalled_at:
            stalled_at = flow.written
            await trio.testing.wait_all_tasks_blocked(cushion=0.1)
    return stalled_at


# -- serving --


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No test leaves an error in any log: no "Cancel scope stack corrupted", no exception in
    the ASGI app, nothing raised into Starlette."""
    caplog.set_level(logging.WARNING)
    yield
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` on hypercorn's trio worker at 127.0.0.1 port 0, and a client of it; shut down
    gracefully when the block exits."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait, mode="asgi")
        )
        try:
            async with httpx.AsyncClient(base_url=binds[0], timeout=30) as client:
                yield client
        finally:
            stop.set()


def starlette_app(
    respond: Callable[[Request], Response], middleware: list[Middleware] | None = None
) -> Starlette:
    """A Starlette app answering ``GET /`` with ``respond(request)``."""

    async def endpoint(request: Request) -> Response:
        return respond(request)

    return Starlette(routes=[Route("/", endpoint)], middleware=middleware)


def ndjson_lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


# -- streaming --


async def test_events_arrive_one_by_one_while_the_step_runs() -> None:
    """Each event reaches the client while the step that wrote it is still running: the
    step waits for the test, which lets it go on only after the event has arrived."""
    flow = ChatFlow()
    app = starlette_app(lambda r: EventStreamResponse(flow, q="hi", n=3, format="ndjson"))
    async with serving(app) as client, client.stream("GET", "/") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = response.aiter_lines()
        with trio.fail_after(10):
            for i in range(1, 4):
                token = json.loads(await anext(lines))
                assert (token["type"], token["data"]) == ("Token", {"text": f"hi-{i}"})
                progress = json.loads(await anext(lines))
                assert progress["type"] == "Progress"
                assert not flow.finished  # the step waits for this test to open the gate
                assert flow.gate.opened == i - 1
                flow.gate.open()
            stop = json.loads(await anext(lines))
        assert stop["type"] == "StopEvent"
        assert stop["data"] == {"result": "answered hi"}
        assert flow.finished


async def test_sse_framing_ids_retry_and_headers() -> None:
    """SSE as trioflow's server frames it: per event ``id`` (seq from 1), ``event`` and
    ``data`` (the envelope), ``retry`` in the first event's block only, the stream headers,
    and the stream ends after the terminal event."""
    flow = ChatFlow()
    for _ in range(2):
        flow.gate.open()
    app = starlette_app(lambda r: EventStreamResponse(flow, Ask(q="sse", n=2)))
    async with serving(app) as client, client.stream("GET", "/") as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        with trio.fail_after(10):
            body = await response.aread()
    blocks = body.decode().split("\n\n")
    assert blocks[-1] == ""
    assert blocks[0].startswith("retry: 2000\nid: 1\nevent: Token\ndata: ")
    assert all("retry:" not in block for block in blocks[1:])
    messages = [m async for m in sse_messages(_replay(body))]
    assert [m["id"] for m in messages if "id" in m] == ["1", "2", "3", "4", "5"]
    assert [m["event"] for m in messages] == ["Token", "Progress", "Token", "Progress", "StopEvent"]
    envelopes = [m["data"] for m in messages]
    assert [e["seq"] for e in envelopes] == [1, 2, 3, 4, 5]
    assert envelopes[0]["qualified_name"] == f"{__name__}.Token"


def _replay(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body)


async def test_ndjson_framing() -> None:
    """NDJSON: one envelope per line, seq from 1, the terminal event last."""
    flow = ChatFlow()
    for _ in range(2):
        flow.gate.open()
    app = starlette_app(lambda r: EventStreamResponse(flow, q="x", n=2, format="ndjson"))
    async with serving(app) as client:
        with trio.fail_after(10):
            response = await client.get("/")
    assert not response.content.startswith(b"retry")
    envelopes = ndjson_lines(response.content)
    assert [e["seq"] for e in envelopes] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in envelopes][-1] == "StopEvent"


async def test_the_type_filter_keeps_the_named_types_and_the_terminal_event() -> None:
    """``types=(Token,)``: only tokens and the terminal event, numbered from 1 without gaps;
    lifecycle events come only when named."""
    flow = ChatFlow()
    for _ in range(3):
        flow.gate.open()

    def respond(request: Request) -> Response:
        named = request.query_params.get("lifecycle") == "1"
        types = (Token, StepStartedEvent) if named else (Token,)
        return EventStreamResponse(flow, q="f", n=3, format="ndjson", types=types)

    async with serving(starlette_app(respond)) as client:
        with trio.fail_after(10):
            plain = ndjson_lines((await client.get("/")).content)
            flow.gate = Gate()
            for _ in range(3):
                flow.gate.open()
            named = ndjson_lines((await client.get("/", params={"lifecycle": "1"})).content)
    assert [e["type"] for e in plain] == ["Token", "Token", "Token", "StopEvent"]
    assert [e["seq"] for e in plain] == [1, 2, 3, 4]
    assert [e["type"] for e in named] == ["StepStartedEvent", *["Token"] * 3, "StopEvent"]


async def test_an_idle_stream_carries_keep_alives() -> None:
    """While the step is idle, SSE carries ``: ping`` comments (the first event's block still
    carries ``retry``) and NDJSON single spaces, every line still valid JSON."""
    flows = {"sse": ChatFlow(held=True), "ndjson": ChatFlow(held=True)}

    def respond(request: Request) -> Response:
        format = request.query_params["format"]
        response = EventStreamResponse(flows[format], q="p", n=1, format=format)  # type: ignore[arg-type]
        response.ping_interval = 0.02
        return response

    async with serving(starlette_app(respond)) as client:
        for format, keep_alive in (("sse", b": ping\n\n"), ("ndjson", b" ")):
            flow = flows[format]
            with trio.fail_after(10):
                async with client.stream("GET", "/", params={"format": format}) as response:
                    chunks = response.aiter_raw()
                    for _ in range(2):  # keep-alives, before any event
                        assert await anext(chunks) == keep_alive
                    for _ in range(2):
                        flow.gate.open()
                    rest = b"".join([chunk async for chunk in chunks])
            events = rest.replace(keep_alive, b"")
            if format == "sse":
                assert events.startswith(b"retry: 2000\nid: 1\nevent: Token\n")
            else:
                assert [e["type"] for e in ndjson_lines(rest)][-1] == "StopEvent"


# -- the client, its pace and its leaving --


async def test_a_client_that_leaves_cancels_the_run() -> None:
    """Closing the connection mid-stream cancels the run: the step is cancelled and its
    ``finally`` runs; nothing is logged as an error (no corrupted cancel scope)."""
    flow = EndlessFlow()
    app = starlette_app(lambda r: EventStreamResponse(flow, format="ndjson"))
    async with serving(app) as client:
        with trio.fail_after(10):
            async with client.stream("GET", "/") as response:
                first = json.loads(await anext(response.aiter_lines()))
                assert first["data"] == {"text": "first"}
                assert not flow.ended.is_set()
            await flow.ended.wait()
    assert flow.cancelled


async def test_a_client_that_stops_reading_holds_the_step_back() -> None:
    """Backpressure end to end: a client that reads nothing makes the step wait long before
    the end of its 3,000 events of 10 kB; once it reads, every event arrives, in order."""
    total = 3000
    flow = FloodFlow()
    app = starlette_app(lambda r: EventStreamResponse(flow, q="", n=total, format="ndjson"))
    async with serving(app) as client, client.stream("GET", "/") as response:
        assert response.status_code == 200
        stalled_at = await wait_stalled(flow)
        # What the sockets hold (at most a few MB on loopback), the run's stream buffer (4),
        # one batch of 64 KiB waiting to be sent, one event in hand: far from the 30 MB of
        # the whole run.
        assert 0 < stalled_at < total // 2, stalled_at
        with trio.fail_after(20):
            seqs = [json.loads(line)["seq"] async for line in response.aiter_lines() if line]
    assert seqs == list(range(1, total + 2))
    assert flow.written == total


async def test_a_client_that_leaves_while_holding_the_step_back_cancels_the_run() -> None:
    """A client that stopped reading, then leaves: the step, waiting for room on the run's
    stream, is cancelled."""
    flow = FloodFlow()
    app = starlette_app(lambda r: EventStreamResponse(flow, q="", n=3000))
    async with serving(app) as client:
        async with client.stream("GET", "/") as response:
            assert response.status_code == 200
            stalled_at = await wait_stalled(flow)
        with trio.fail_after(10):
            await flow.ended.wait()
    assert stalled_at <= flow.written < 3000  # it ended early: cancelled


async def test_a_failing_step_ends_the_stream_with_workflow_failed() -> None:
    """A step's exception ends the stream with its ``WorkflowFailedEvent`` (the body ends
    normally); the traceback goes to the log as a warning, and nothing is raised into
    Starlette."""
    app = starlette_app(lambda r: EventStreamResponse(FailingFlow(), format="ndjson"))
    async with serving(app) as client:
        with trio.fail_after(10):
            response = await client.get("/")
    assert response.status_code == 200
    envelopes = ndjson_lines(response.content)
    assert [e["type"] for e in envelopes] == ["Token", "StepFailedEvent", "WorkflowFailedEvent"]
    failed = envelopes[-1]["data"]
    assert failed["step_name"] == "talk"
    assert failed["exception"] == {"type": "Boom", "message": "the model is down"}


async def test_a_failed_run_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """The failure's traceback, which the client does not get, is logged once on
    ``trioflow.starlette``, at WARNING, from the step's frame."""
    app = starlette_app(lambda r: EventStreamResponse(FailingFlow()))
    async with serving(app) as client:
        with trio.fail_after(10):
            await client.get("/")
    records = [r for r in caplog.records if r.name == "trioflow.starlette"]
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.WARNING
    assert "failed in step 'talk': Boom: the model is down" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)


class Huge(Event):
    n: int


class HugeFlow(Workflow):
    @step
    async def talk(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Huge(n=10**5000))
        await trio.sleep_forever()


class StuckFlow(Workflow):
    @step
    async def talk(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Token(text="thinking"))
        await trio.sleep_forever()


async def test_an_event_that_cannot_be_encoded_fails_the_run() -> None:
    """An int too long to write goes out marked, and the run fails with an EncodeError naming
    it, as on the server: the stream ends with WorkflowFailedEvent."""
    app = starlette_app(lambda r: EventStreamResponse(HugeFlow(), format="ndjson"))
    async with serving(app) as client:
        with trio.fail_after(10):
            envelopes = ndjson_lines((await client.get("/")).content)
    assert [e["type"] for e in envelopes] == ["Huge", "WorkflowFailedEvent"]
    assert "too long to encode" in envelopes[0]["data"]["n"]
    assert envelopes[1]["data"]["exception"]["type"] == "EncodeError"


async def test_a_run_that_times_out_ends_the_stream_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The workflow's timeout ends the stream with WorkflowTimedOutEvent; the response logs
    nothing (a timeout is no step's failure)."""
    app = starlette_app(lambda r: EventStreamResponse(StuckFlow(timeout=0.05), format="ndjson"))
    async with serving(app) as client:
        with trio.fail_after(10):
            envelopes = ndjson_lines((await client.get("/")).content)
    assert [e["type"] for e in envelopes] == ["Token", "WorkflowTimedOutEvent"]
    assert [r for r in caplog.records if r.name == "trioflow.starlette"] == []


async def test_each_request_has_its_own_run() -> None:
    """Concurrent requests to one endpoint run one workflow instance side by side, each
    stream carrying its own run's events."""
    flow = ChatFlow()
    for _ in range(3):
        flow.gate.open()

    def respond(request: Request) -> Response:
        return EventStreamResponse(flow, q=request.query_params["q"], n=2, format="ndjson")

    results: dict[str, list[str]] = {}

    async def ask(client: httpx.AsyncClient, q: str) -> None:
        lines = ndjson_lines((await client.get("/", params={"q": q})).content)
        results[q] = [e["data"]["text"] for e in lines if e["type"] == "Token"]

    async with serving(starlette_app(respond)) as client:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(ask, client, f"q{i}")
    assert results == {f"q{i}": [f"q{i}-1", f"q{i}-2"] for i in range(10)}


# -- requests that start no run --


async def test_a_reconnect_with_last_event_id_gets_204_and_starts_no_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An EventSource reconnecting (``Last-Event-ID``) gets 204, which stops it, rather than a
    second run from the start; HEAD gets the headers and starts no run either."""
    started: list[int] = []

    def respond(request: Request) -> Response:
        started.append(1)
        return EventStreamResponse(FailingFlow())

    async with serving(starlette_app(respond)) as client:
        with trio.fail_after(10):
            reconnect = await client.get("/", headers={"last-event-id": "3"})
            head = await client.head("/")
    assert (reconnect.status_code, reconnect.content) == (204, b"")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert len(started) == 2  # the endpoint ran; no run did: a FailingFlow run would log
    assert [r for r in caplog.records if r.name == "trioflow.starlette"] == []


# -- construction and the event loop --


def test_the_start_fields_are_checked_when_the_response_is_made() -> None:
    """A field that does not fit, a bad format or type filter raises at once, in the
    endpoint, which can still answer 422 itself."""
    with pytest.raises(TypeError, match="cannot make the start event Ask"):
        EventStreamResponse(ChatFlow(), q="x", bogus=1)
    with pytest.raises(TypeError, match="cannot make the start event Ask"):
        EventStreamResponse(ChatFlow())
    with pytest.raises(TypeError, match="either a start event or its fields"):
        EventStreamResponse(ChatFlow(), Ask(q="x"), q="y")
    with pytest.raises(ValueError, match="format must be 'sse' or 'ndjson'"):
        EventStreamResponse(ChatFlow(), q="x", format="json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status_code must be a status with a body"):
        EventStreamResponse(ChatFlow(), q="x", status_code=204)
    with pytest.raises(TypeError, match="types takes"):
        EventStreamResponse(ChatFlow(), q="x", types=Token)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="types takes Event subclasses"):
        EventStreamResponse(ChatFlow(), q="x", types=(str,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="runs a Workflow instance"):
        EventStreamResponse(ChatFlow, q="x")  # type: ignore[arg-type]
    response = EventStreamResponse(ChatFlow(), q="x", types=[Token])
    assert response.start_event == Ask(q="x")
    assert response.types == (Token,)
    assert response.media_type == "text/event-stream"


def test_under_asyncio_the_request_fails_with_not_in_trio_before_any_response() -> None:
    """Starlette's TestClient runs the app on asyncio by default: the request fails with
    NotInTrioError, which says how to serve the app on trio, and the client gets 500."""
    app = starlette_app(lambda r: EventStreamResponse(ChatFlow(), q="x"))
    with TestClient(app) as client, pytest.raises(NotInTrioError, match="under asyncio") as err:
        client.get("/")
    assert "EventStreamResponse needs trio" in str(err.value)
    assert "hypercorn --worker-class trio" in str(err.value)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/").status_code == 500


def test_under_test_client_on_trio() -> None:
    """``TestClient(app, backend="trio")`` runs the response on trio (the whole body at once:
    TestClient buffers it)."""
    flow = ChatFlow()
    for _ in range(2):
        flow.gate.open()
    app = starlette_app(lambda r: EventStreamResponse(flow, q="t", n=2, format="ndjson"))
    with TestClient(app, backend="trio") as client:
        envelopes = ndjson_lines(client.get("/").content)
    assert [e["type"] for e in envelopes] == ["Token", "Progress"] * 2 + ["StopEvent"]


# -- FastAPI --


async def test_a_fastapi_app_streams_with_background_tasks_and_openapi() -> None:
    """Under FastAPI: an async endpoint and a ``def`` one (made in a worker thread) return the
    response as is, with ``response_class`` for the docs; FastAPI's background tasks run once
    the stream has ended; a bad field can be answered 422 by the endpoint."""
    flow = ChatFlow()
    for _ in range(10):
        flow.gate.open()
    after: list[str] = []
    app = FastAPI()

    @app.get("/chat", response_class=EventStreamResponse)
    async def chat(q: str, background: BackgroundTasks) -> EventStreamResponse:
        background.add_task(after.append, q)
        response = EventStreamResponse(flow, q=q, n=2, types=(Token,))
        response.headers["x-conversation"] = q
        return response

    @app.get("/sync")
    def chat_sync(q: str) -> EventStreamResponse:
        return EventStreamResponse(flow, q=q, n=1, format="ndjson")

    @app.get("/checked")
    async def checked(request: Request) -> Response:
        try:
            fields: dict[str, Any] = dict(request.query_params)
            return EventStreamResponse(flow, **fields)
        except TypeError as error:
            return JSONResponse({"error": str(error)}, status_code=422)

    async with serving(app) as client:
        with trio.fail_after(10):
            async with client.stream("GET", "/chat", params={"q": "fast"}) as response:
                assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
                assert response.headers["x-conversation"] == "fast"
                messages = [m async for m in sse_messages(response)]
            sync = ndjson_lines((await client.get("/sync", params={"q": "s"})).content)
            refused = await client.get("/checked", params={"q": "c", "bogus": "1"})
            docs = (await client.get("/openapi.json")).json()
    assert [m["event"] for m in messages] == ["Token", "Token", "StopEvent"]
    assert messages[1]["data"]["data"] == {"text": "fast-2"}
    assert after == ["fast"]
    assert [e["type"] for e in sync] == ["Token", "Progress", "StopEvent"]
    assert refused.status_code == 422
    assert "bogus" in refused.json()["error"]
    assert "text/event-stream" in docs["paths"]["/chat"]["get"]["responses"]["200"]["content"]


# -- HTTP/2 --


def fastapi_app(respond: Callable[[Request], Response]) -> FastAPI:
    """A FastAPI app answering ``GET /`` with ``respond(request)``."""
    app = FastAPI()

    @app.get("/", response_class=EventStreamResponse)
    async def endpoint(request: Request) -> Response:
        return respond(request)

    return app


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
async def test_over_http2_a_stalled_client_holds_the_step_back(
    make_app: Callable[[Callable[[Request], Response]], Any],
) -> None:
    """Over HTTP/2 (h2c) hypercorn's send() does not wait for the client; the response finds
    the stream's buffer behind Starlette's (and FastAPI's) middleware and waits on it, so a
    client that never opens its flow-control window holds the step back; once it does,
    everything arrives."""
    total = 2000
    flow = FloodFlow()
    app = make_app(lambda r: EventStreamResponse(flow, q="", n=total, format="ndjson"))
    async with serving(app) as client:
        url = str(client.base_url).rstrip("/")
        async with h2_client(url, window=0) as h2:
            stream_id = await h2.get("/")
            stalled_at = await wait_stalled(flow)
            assert h2.status[stream_id] == 200
            # The run's stream buffer (4), one batch of 64 KiB (6 events) waiting to be
            # sent and one in hypercorn, one event in hand: not the 2,000 of a blind send().
            assert 0 < stalled_at <= 4 + 6 + 6 + 1, stalled_at
            await h2.open_window(stream_id)
            with trio.fail_after(20):
                await h2.ended[stream_id].wait()
        seqs = [e["seq"] for e in ndjson_lines(bytes(h2.bodies[stream_id]))]
    assert seqs == list(range(1, total + 2))


async def test_over_http2_behind_a_buffering_middleware_the_stream_is_refused() -> None:
    """Behind ``BaseHTTPMiddleware`` (which passes the body on through a buffer of its own)
    hypercorn's stream cannot be waited on: over HTTP/2 the response answers 505 rather than
    let the run fill memory; over HTTP/1.1 it streams."""

    async def passing(request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)

    flow = ChatFlow()
    for _ in range(10):
        flow.gate.open()
    app = starlette_app(
        lambda r: EventStreamResponse(flow, q="m", n=1, format="ndjson"),
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=passing)],
    )
    async with serving(app) as client:
        url = str(client.base_url).rstrip("/")
        with trio.fail_after(10):
            async with h2_client(url, window=1 << 20) as h2:
                h2.reading = True
                stream_id = await h2.get("/")
                await h2.ended[stream_id].wait()
            plain = await client.get("/")
    assert h2.status[stream_id] == 505
    assert json.loads(h2.bodies[stream_id])["error"]["code"] == "http2_not_supported"
    assert [e["type"] for e in ndjson_lines(plain.content)][-1] == "StopEvent"


# -- the README's example --

#: The README's "Use it from FastAPI" example (app.py).
README_APP = re.findall(
    r"```python\n(# app.py\n.*?)```",
    (Path(__file__).resolve().parent.parent / "README.md").read_text(),
    re.DOTALL,
)[0]


async def test_the_readme_example_streams_tokens() -> None:
    """The README's chat endpoint streams its tokens as SSE, then the stop event."""
    namespace: dict[str, Any] = {"__name__": "app"}
    exec(README_APP, namespace)
    async with serving(namespace["app"]) as client:
        with trio.fail_after(10):
            async with client.stream("GET", "/chat", params={"q": "trio"}) as response:
                messages = [m async for m in sse_messages(response)]
    assert [m["event"] for m in messages] == ["Token"] * 4 + ["StopEvent"]
    assert [m["data"]["data"]["text"] for m in messages[:4]] == ["you", "asked", "about", "trio"]
    assert messages[0]["data"]["qualified_name"] == "app.Token"
    assert messages[-1]["data"]["data"] == {"result": "you asked about trio"}
