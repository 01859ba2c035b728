"""`trioflow.client.Client` against a real server: hypercorn on 127.0.0.1 port 0, through a
TCP proxy that cuts connections where a test needs a dropped stream; under trio, and once
under asyncio. What no real server does on demand (a stream that ends with ``event: expired``,
a gateway's 502, the timing of reconnections) is played by httpx's MockTransport, on trio's
autojump clock."""

from __future__ import annotations

import asyncio
import itertools
import json
import pickle
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx
import pytest
import sniffio
import trio
import trio.testing
from _http import FLOWS, Count, CountFlow, Go, Server, Tick, served, wait_for, wait_until
from hypothesis import given
from hypothesis import strategies as st

import trioflow
from trioflow import (
    Context,
    RunStatus,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowApp,
    step,
)
from trioflow._client._sse import Message, SseParser
from trioflow.client import (
    Client,
    Envelope,
    EventsExpiredError,
    ResponseError,
    RunError,
    RunEvents,
)

# -- a proxy that cuts connections --


@attrs.define(eq=False)
class Proxy:
    """A TCP proxy in front of the server at ``port``: it counts connections, cuts each one
    after ``cut_after`` bytes from the server, cuts them all on `cut`, holds new ones from
    `hold` until `open` is set, and closes new ones at once while `refuse` is set."""

    port: int
    cut_after: int | None = None
    refuse: bool = False
    url: str = ""
    connections: int = 0
    #: New connections wait for this to be set before they reach the server.
    open: trio.Event = attrs.field(factory=trio.Event)
    _scopes: set[trio.CancelScope] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        self.open.set()

    def hold(self) -> None:
        self.open = trio.Event()

    def cut(self) -> None:
        for scope in self._scopes:
            scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, downstream: trio.SocketStream) -> None:
        self.connections += 1
        async with downstream:
            if self.refuse:
                return
            await self.open.wait()
            upstream = await trio.open_tcp_stream("127.0.0.1", self.port)
            async with upstream, trio.open_nursery() as nursery:
                self._scopes.add(nursery.cancel_scope)
                nursery.start_soon(_forward, downstream, upstream, None, nursery.cancel_scope)
                nursery.start_soon(
                    _forward, upstream, downstream, self.cut_after, nursery.cancel_scope
                )
            self._scopes.discard(nursery.cancel_scope)


async def _forward(
    source: trio.SocketStream, sink: trio.SocketStream, limit: int | None, scope: trio.CancelScope
) -> None:
    """Copy ``source`` to ``sink``, at most ``limit`` bytes; then cut both directions."""
    sent = 0
    try:
        async for data in source:
            if limit is not None and sent + len(data) >= limit:
                await sink.send_all(data[: limit - sent])
                break
            await sink.send_all(data)
            sent += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()


@asynccontextmanager
async def proxied(server: Server, **options: Any) -> AsyncIterator[Proxy]:
    port = int(server.url.rpartition(":")[2])
    proxy = Proxy(port, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        yield proxy
        nursery.cancel_scope.cancel()


async def collect(events: RunEvents) -> list[Envelope]:
    async with events:
        return [envelope async for envelope in events]


# -- starting, following and ending runs --


async def test_start_events_status_and_result() -> None:
    """start() returns the run id; events() delivers every envelope up to the terminal one;
    status() and result() report the outcome."""
    async with served() as server, Client(server.url) as client:
        run_id = await client.start("count", n=3)
        envelopes = await collect(client.events(run_id))
        assert [(e.seq, e.type) for e in envelopes] == [
            (1, "Tick"),
            (2, "Tick"),
            (3, "Tick"),
            (4, "StopEvent"),
        ]
        first = envelopes[0]
        assert first == Envelope(1, "Tick", "_http.Tick", {"n": 1, "payload": ""}, time=first.time)
        assert isinstance(first.time, float)
        assert [e.time for e in envelopes] == sorted(e.time or 0.0 for e in envelopes)
        info = await client.status(run_id)
        assert (info.run_id, info.workflow, info.status, info.seq) == (
            run_id,
            "count",
            RunStatus.COMPLETED,
            4,
        )
        assert info.result == {"counted": 3}
        assert info.json["status"] == "completed"
        assert await client.result(run_id) == {"counted": 3}


async def test_start_takes_a_start_event() -> None:
    """start(name, StartEvent) sends the event's fields, as Workflow.run(start_event) takes
    it; start(name, mapping) the mapping's."""
    async with served() as server, Client(server.url) as client:
        run_id = await client.start("count", Count(n=2))
        assert await client.result(run_id) == {"counted": 2}
        run_id = await client.start("count", {"n": 4})
        assert await client.result(run_id) == {"counted": 4}
        with pytest.raises(TypeError, match="not both"):
            await client.start("count", Count(n=2), n=3)


async def test_events_after_resumes_there() -> None:
    """events(after=seq) starts with the next envelope; after the terminal one it ends at
    once (the server's 204)."""
    async with served() as server, Client(server.url) as client:
        run_id = await client.start("count", n=3)
        assert await client.result(run_id) == {"counted": 3}
        assert [e.seq for e in await collect(client.events(run_id, after=2))] == [3, 4]
        assert await collect(client.events(run_id, after=4)) == []


async def test_result_waits_for_the_end() -> None:
    """result() of a running run waits until it ends, here for the input it asked for."""
    async with served() as server, Client(server.url) as client:
        run_id = await client.start("gate")
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def wait_result() -> None:
                results.append(await client.result(run_id))

            nursery.start_soon(wait_result)
            await server.wait_status(run_id, "running")
            await wait_for(lambda: server.status(run_id), lambda s: s["watchers"] == 1)
            assert results == []
            await client.send(run_id, Go(count=2))
        assert results == [2]


async def test_result_of_a_run_with_all_the_clients_it_may_have() -> None:
    """result() of a run that has max_clients_per_run clients (429) asks for its status until
    it has ended."""
    async with served(max_clients_per_run=1) as server:
        statuses: list[int] = []

        async def record(response: httpx.Response) -> None:
            statuses.append(response.status_code)

        async with (
            httpx.AsyncClient(event_hooks={"response": [record]}) as http,
            Client(server.url, http=http) as client,
        ):
            run_id = await client.start("gate")
            async with client.events(run_id) as events, trio.open_nursery() as nursery:
                assert [(await anext(events)).seq for _ in range(2)] == [1, 2]
                results: list[Any] = []

                async def wait_result() -> None:
                    results.append(await client.result(run_id))

                nursery.start_soon(wait_result)
                await wait_until(lambda: 429 in statuses)
                await client.send(run_id, Go(count=1))
                assert [e.seq async for e in events] == [3, 4]
            assert results == [1]


async def test_send_an_event_or_a_dict() -> None:
    """send() takes an Event instance or {"type", "data"}; the run receives it."""
    async with served() as server, Client(server.url) as client:
        first = await client.start("gate")
        second = await client.start("gate")
        async with client.events(first) as events:
            assert [(await anext(events)).type for _ in range(2)] == ["Tick", "Asking"]
            await client.send(first, Go(count=1))
            assert [e.type async for e in events] == ["Tick", "StopEvent"]
        await wait_for(lambda: server.status(second), lambda s: s["seq"] == 2)
        await client.send(second, {"type": "Go", "data": {"count": 3}})
        assert await client.result(first) == 1
        assert await client.result(second) == 3


async def test_cancel() -> None:
    """cancel() is True while the run runs (its stream ends with WorkflowCancelledEvent and
    result() raises RunError), False once its outcome is decided."""
    async with served() as server, Client(server.url) as client:
        run_id = await client.start("forever")
        async with client.events(run_id) as events:
            assert (await anext(events)).type == "Tick"
            assert await client.cancel(run_id) is True
            assert [e.type async for e in events] == ["WorkflowCancelledEvent"]
        with pytest.raises(RunError) as raised:
            await client.result(run_id)
        assert raised.value.status is RunStatus.CANCELLED
        assert raised.value.type == "WorkflowCancelledError"
        assert await client.cancel(run_id) is False


async def test_result_raises_the_runs_error() -> None:
    """result() of a failed run raises RunError with the server's type, message and step; of a
    timed-out one, with status TIMED_OUT."""
    async with served() as server, Client(server.url) as client:
        with pytest.raises(RunError) as raised:
            await client.result(await client.start("fail"))
        error = raised.value
        assert (error.status, error.type, error.message, error.step) == (
            RunStatus.FAILED,
            "Boom",
            "kaboom",
            "explode",
        )
        assert str(error) == f"run {error.run_id} failed in step 'explode': Boom: kaboom"
        assert pickle.loads(pickle.dumps(error)).step == "explode"
        assert isinstance(error, trioflow.TrioflowError)
        with pytest.raises(RunError) as raised:
            await client.result(await client.start("slow"))
        assert raised.value.status is RunStatus.TIMED_OUT
        assert raised.value.type == "WorkflowTimeoutError"


async def test_errors_carry_status_code_and_message() -> None:
    """An error answer raises ResponseError with the server's status, code and message."""
    async with served() as server, Client(server.url) as client:
        cases = [
            (client.start("nope"), 404, "unknown_workflow"),
            (client.start("count", n="three"), 422, "invalid_fields"),
            (client.status("no-such-run"), 404, "unknown_run"),
            (client.send("no-such-run", Go(count=1)), 404, "unknown_run"),
            (client.cancel("no-such-run"), 404, "unknown_run"),
        ]
        for call, status, code in cases:
            with pytest.raises(ResponseError) as raised:
                await call
            assert (raised.value.status, raised.value.code) == (status, code)
        with pytest.raises(ResponseError) as raised:
            await client.start("count", n="three")
        assert "field 'n'" in raised.value.message
        assert str(raised.value).endswith("(422 invalid_fields)")
        copy = pickle.loads(pickle.dumps(raised.value))
        assert (copy.status, copy.code, copy.message) == (
            422,
            "invalid_fields",
            raised.value.message,
        )
        run_id = await client.start("count", n=1)
        await client.result(run_id)
        with pytest.raises(ResponseError) as raised:
            await client.send(run_id, Go(count=1))
        assert (raised.value.status, raised.value.code) == (409, "run_ended")
        gate = await client.start("gate")
        with pytest.raises(ResponseError) as raised:
            await client.send(gate, {"type": "Nope", "data": {}})
        assert (raised.value.status, raised.value.code) == (422, "invalid_event")
        with pytest.raises(ResponseError) as raised:
            await collect(client.events("no-such-run"))
        assert (raised.value.status, raised.value.code) == (404, "unknown_run")
        await client.cancel(gate)


async def test_token() -> None:
    """With token= every request carries it (Authorization: Bearer); without it the server's
    401 is raised."""
    async with served(token="s3cret") as server:
        async with Client(server.url, token="s3cret") as client:
            run_id = await client.start("count", n=2)
            assert [e.seq for e in await collect(client.events(run_id))] == [1, 2, 3]
            assert await client.result(run_id) == {"counted": 2}
        for token in (None, "wrong"):
            async with Client(server.url, token=token) as client:
                with pytest.raises(ResponseError) as raised:
                    await client.status(run_id)
                assert (raised.value.status, raised.value.code) == (401, "unauthorized")
                with pytest.raises(ResponseError) as raised:
                    await collect(client.events(run_id))
                assert raised.value.status == 401


class Mounted(WorkflowApp):
    """The app mounted at /flows, as a framework's Mount serves it: it sees the path below
    the prefix, and nothing outside it."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if not scope["path"].startswith("/flows/"):
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            scope = {**scope, "path": scope["path"].removeprefix("/flows"), "root_path": "/flows"}
        await super().__call__(scope, receive, send)


async def test_base_url_with_a_path_prefix() -> None:
    """A base URL with a path (a mounted app) keeps every request below it."""
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(trioflow.serve, Mounted(FLOWS, retry_ms=1), port=0))
        async with Client(binds[0] + "/flows/") as client:
            assert client.base_url == binds[0] + "/flows"
            run_id = await client.start("gate")
            async with client.events(run_id) as events:
                assert [(await anext(events)).type for _ in range(2)] == ["Tick", "Asking"]
                await client.send(run_id, Go(count=1))
                assert [e.type async for e in events] == ["Tick", "StopEvent"]
            assert (await client.status(run_id)).status is RunStatus.COMPLETED
            assert await client.result(run_id) == 1
            assert await client.cancel(run_id) is False
        async with Client(binds[0]) as unmounted:
            with pytest.raises(ResponseError) as raised:
                await unmounted.status(run_id)
            assert (raised.value.status, raised.value.code) == (404, "not_found")
        nursery.cancel_scope.cancel()


async def test_a_callers_httpx_client_is_used_and_left_open() -> None:
    """http= sends every request through the caller's client, to base_url whatever its own
    base_url, and closing the Client leaves it open; a Client's own httpx client is closed."""
    async with served() as server:
        sent: list[str] = []

        async def record(request: httpx.Request) -> None:
            sent.append(f"{request.method} {request.url.path}")

        hooks = {"request": [record]}
        async with httpx.AsyncClient(base_url="http://example.invalid", event_hooks=hooks) as http:
            async with Client(server.url, http=http) as client:
                run_id = await client.start("count", n=1)
                await collect(client.events(run_id))
            assert not http.is_closed
            assert sent == ["POST /workflows/count/runs", f"GET /runs/{run_id}/events"]
        own = Client(server.url)
        await own.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await own.status(run_id)


# -- decoding --


class Done(StopEvent):
    total: int


class Summing(StartEvent):
    values: tuple[int, ...]


class SumFlow(Workflow):
    """Streams each value as a Tick, then stops with its own stop event."""

    @step
    async def add(self, ctx: Context, ev: Summing) -> Done:
        for value in ev.values:
            await ctx.write_event_to_stream(Tick(n=value))
        return Done(total=sum(ev.values))


async def test_decode_builds_the_events() -> None:
    """decode= a workflow (class or instance) or event classes builds each envelope's event
    with the wire decoder; envelopes of other classes keep event=None."""
    flows = {"count": CountFlow(), "sum": SumFlow()}
    async with served(flows) as server, Client(server.url) as client:
        run_id = await client.start("count", n=2)
        for decode in (CountFlow, CountFlow(), [Tick], Tick):
            events = [e.event for e in await collect(client.events(run_id, decode=decode))]
            assert events == [Tick(n=1), Tick(n=2), StopEvent(result={"counted": 2})]
        plain = await collect(client.events(run_id, decode=[StopEvent]))
        assert [e.event for e in plain] == [None, None, StopEvent(result={"counted": 2})]
        summed = await client.start("sum", values=[1, 2])
        envelopes = await collect(client.events(summed, decode=SumFlow))
        assert [e.event for e in envelopes] == [Tick(n=1), Tick(n=2), Done(total=3)]
        with pytest.raises(TypeError, match="decode= takes"):
            client.events(run_id, decode=[int])  # type: ignore[list-item]


async def test_a_workflows_own_stop_event_ends_the_stream() -> None:
    """A stream ends after a workflow's own stop event: at once when decode= names it, else
    after one more request, which the server answers 204."""
    async with served({"sum": SumFlow()}) as server:
        gets: list[str] = []

        async def record(request: httpx.Request) -> None:
            if request.method == "GET":
                gets.append(request.headers.get("last-event-id", "0"))

        async with (
            httpx.AsyncClient(event_hooks={"request": [record]}) as http,
            Client(server.url, http=http) as client,
        ):
            run_id = await client.start("sum", values=[5])
            assert [e.type for e in await collect(client.events(run_id))] == ["Tick", "Done"]
            assert gets == ["0", "2"]
            gets.clear()
            decoded = await collect(client.events(run_id, decode=SumFlow))
            assert decoded[-1].event == Done(total=5)
            assert gets == ["0"]


async def test_an_event_that_does_not_fit_its_class_raises() -> None:
    """An envelope whose data do not fit the class named by decode= raises WireError naming
    the seq; iterating again goes on after it."""

    class Tick(trioflow.Event):  # the same name, another version: n is a string here
        n: str
        payload: str = ""

    async with served() as server, Client(server.url) as client:
        run_id = await client.start("count", n=2)
        async with client.events(run_id, decode=[Tick]) as events:
            with pytest.raises(trioflow.TrioflowError) as raised:
                await anext(events)
            assert str(raised.value).startswith("field 'data.n': expected str")
            assert any("seq 1" in note for note in raised.value.__notes__)
            with pytest.raises(trioflow.TrioflowError):
                await anext(events)
            assert (await anext(events)).type == "StopEvent"


# -- dropped connections --


async def test_resumes_through_a_proxy_that_cuts_the_stream() -> None:
    """A proxy cuts every connection after 700 bytes of the answer, mid-event: the client
    reconnects each time (Last-Event-ID) and delivers every event once, in order, up to the
    terminal one."""
    async with served(retry_ms=1) as server, proxied(server, cut_after=700) as proxy:
        run_id = await server.start("count", {"n": 30, "size": 100})
        async with Client(proxy.url) as client:
            with trio.fail_after(20):
                events = client.events(run_id, decode=CountFlow)
                envelopes = await collect(events)
    assert [e.seq for e in envelopes] == list(range(1, 32))
    assert [e.event.n for e in envelopes[:-1]] == list(range(1, 31))  # type: ignore[union-attr]
    assert envelopes[-1].event == StopEvent(result={"counted": 30})
    assert proxy.connections == events.reconnects + 1
    assert proxy.connections >= 10


async def test_a_gap_while_away_raises_events_expired() -> None:
    """Events evicted while the client was disconnected raise EventsExpiredError on its
    reconnection, naming the lost seqs and the after= that accepts the gap."""
    async with served(retain=2, retry_ms=1) as server, proxied(server) as proxy:
        run_id = await server.start("gate")
        async with Client(proxy.url) as client, client.events(run_id) as events:
            assert [(await anext(events)).seq for _ in range(2)] == [1, 2]
            proxy.hold()
            proxy.cut()
            await wait_for(lambda: server.status(run_id), lambda s: s["watchers"] == 0)
            async with Client(server.url) as direct:
                await direct.send(run_id, Go(count=10))
            await wait_for(lambda: server.status(run_id), lambda s: s["seq"] == 13)
            proxy.open.set()
            with trio.fail_after(20), pytest.raises(EventsExpiredError) as raised:
                await anext(events)
            error = raised.value
            assert (error.status, error.code, error.after, error.oldest) == (
                410,
                "events_expired",
                2,
                12,
            )
            assert error.lost == range(3, 12)
            assert error.resume_after == 11
            assert str(error) == (
                f"run {run_id}: events 3 to 11 are lost: the server no longer retains them "
                f"(the oldest it keeps is seq 12); to accept the gap, continue with "
                f"events({run_id!r}, after=11)"
            )
            assert [e.seq async for e in events] == []  # the iteration has ended
            accepted = await collect(client.events(run_id, after=error.resume_after))
            assert [e.seq for e in accepted] == [12, 13]


async def test_events_expired_before_the_first_event() -> None:
    """A run that went on alone past its retention: events(after=0) raises at once, naming
    the gap."""
    async with served(retain=2, hold_for_first_client=0) as server:
        run_id = await server.start("count", {"n": 5})
        await wait_for(lambda: server.status(run_id), lambda s: s["seq"] == 6)
        async with Client(server.url) as client:
            with pytest.raises(EventsExpiredError) as raised:
                await collect(client.events(run_id))
            assert raised.value.lost == range(1, 5)
            assert [e.seq for e in await collect(client.events(run_id, after=4))] == [5, 6]


async def test_gives_up_after_reconnect_attempts() -> None:
    """Once reconnect_attempts attempts in a row have failed, the last error is raised, with
    a note saying where to resume."""
    async with served(retry_ms=1) as server, proxied(server) as proxy:
        run_id = await server.start("gate")
        client = Client(proxy.url, reconnect_attempts=3)
        async with client, client.events(run_id) as events:
            assert (await anext(events)).seq == 1
            assert (await anext(events)).seq == 2
            proxy.refuse = True
            proxy.cut()
            with trio.fail_after(20), pytest.raises(httpx.TransportError) as raised:
                await anext(events)
        assert proxy.connections == 1 + 3
        assert any("after=2" in note for note in raised.value.__notes__)
        async with Client(server.url) as direct:
            assert await direct.cancel(run_id)


async def test_a_stream_that_cannot_be_opened_raises_at_once() -> None:
    """The first request of events() is not retried: a server that is not there raises. A
    base URL must be http(s)."""
    for url in ("localhost:8000", "http://127.0.0.1:8000/?token=secret"):
        with pytest.raises(ValueError, match="http"):
            Client(url)
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    async with Client(f"http://127.0.0.1:{port}") as client:
        with trio.fail_after(20), pytest.raises(httpx.ConnectError):
            await collect(client.events("some-run"))


async def test_a_cancelled_read_loses_nothing() -> None:
    """Cancelling a waiting __anext__ closes its connection; the next call reconnects after
    the last envelope delivered."""
    async with served(retry_ms=1) as server, Client(server.url) as client:
        run_id = await server.start("gate")
        async with client.events(run_id) as events:
            assert [(await anext(events)).seq for _ in range(2)] == [1, 2]
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(anext, events)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            assert scope.cancelled_caught
            await client.send(run_id, Go(count=2))
            assert [e.seq async for e in events] == [3, 4, 5]
            assert events.reconnects == 1


# -- asyncio --


async def test_under_asyncio() -> None:
    """The same client runs under asyncio (here in a thread, against the trio server)."""
    async with served() as server:

        async def main() -> tuple[str, list[int], Any]:
            async with Client(server.url) as client:
                run_id = await client.start("gate")
                async with client.events(run_id) as events:
                    seqs = [(await anext(events)).seq for _ in range(2)]
                    await client.send(run_id, Go(count=2))
                    seqs += [e.seq async for e in events]
                return sniffio.current_async_library(), seqs, await client.result(run_id)

        with trio.fail_after(20):
            outcome = await trio.to_thread.run_sync(
                lambda: asyncio.run(main()), abandon_on_cancel=True
            )
    assert outcome == ("asyncio", [1, 2, 3, 4, 5], 2)


# -- what no real server does on demand: MockTransport, on the autojump clock --


def sse(*envelopes: dict[str, Any], retry: int | None = None) -> bytes:
    head = b"retry: %d\n" % retry if retry is not None else b""
    return head + b"".join(
        b"id: %d\nevent: %s\ndata: %s\n\n" % (e["seq"], e["type"].encode(), json.dumps(e).encode())
        for e in envelopes
    )


def tick(seq: int) -> dict[str, Any]:
    return {"seq": seq, "type": "Tick", "qualified_name": "_http.Tick", "data": {"n": seq}}


STOP = {"seq": 0, "type": "StopEvent", "qualified_name": "trioflow.StopEvent", "data": {}}
SSE = {"content-type": "text/event-stream; charset=utf-8"}


@asynccontextmanager
async def mocked(answer: Callable[[httpx.Request], Any], **options: Any) -> AsyncIterator[Client]:
    """A client whose requests ``answer`` answers."""
    transport = httpx.MockTransport(answer)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        Client("http://trioflow.test", http=http, **options) as client,
    ):
        yield client


async def cut_after(body: bytes) -> AsyncIterator[bytes]:
    yield body
    raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


async def test_retry_hint_is_the_reconnection_delay(autojump_clock: trio.abc.Clock) -> None:
    """A dropped stream is reopened after the server's retry: delay; a failed attempt (a
    gateway's 502) doubles it; each request resumes after the last envelope delivered."""
    requests: list[tuple[float, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append((trio.current_time(), request.headers.get("last-event-id")))
        if len(requests) == 1:
            return httpx.Response(200, headers=SSE, content=cut_after(sse(tick(1), retry=1500)))
        if len(requests) == 2:
            return httpx.Response(502, text="<html>Bad Gateway</html>")
        return httpx.Response(200, headers=SSE, content=sse(tick(2), {**STOP, "seq": 3}))

    start = trio.current_time()
    async with mocked(answer) as client:
        assert [e.seq for e in await collect(client.events("r"))] == [1, 2, 3]
    assert [(t - start, last) for t, last in requests] == [(0, None), (1.5, "1"), (4.5, "1")]


async def test_an_envelope_without_a_time_or_with_a_bad_one_has_none() -> None:
    """A server that does not say when an event entered its stream (an older one) gives
    envelopes with ``time=None``; a time that is no number is not taken for one."""

    def answer(request: httpx.Request) -> httpx.Response:
        odd = {**tick(2), "time": "noon"}
        return httpx.Response(200, headers=SSE, content=sse(tick(1), odd, {**STOP, "seq": 3}))

    async with mocked(answer) as client:
        envelopes = await collect(client.events("r"))
    assert [(e.seq, e.time) for e in envelopes] == [(1, None), (2, None), (3, None)]


async def test_a_stream_that_keeps_ending_empty_is_given_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A stream that ends cleanly without an event is a failed attempt, so a server that
    only ever does that is given up on, never asked in an endless loop."""
    answers: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        answers.append(request)
        return httpx.Response(200, headers=SSE, content=b": ping\n\n")

    async with mocked(answer, reconnect_attempts=3) as client:
        with pytest.raises(ResponseError) as raised:
            await collect(client.events("r"))
    assert (raised.value.status, raised.value.code) == (200, "unexpected_response")
    assert len(answers) == 3


async def test_a_gateway_error_is_a_response_error() -> None:
    """An answer that is no trioflow error (a proxy's 502 page) raises ResponseError named
    after its status."""
    async with mocked(lambda request: httpx.Response(502, text="<html>oops</html>")) as client:
        with pytest.raises(ResponseError) as raised:
            await client.status("r")
    assert (raised.value.status, raised.value.code) == (502, "bad_gateway")
    assert "<html>oops</html>" in raised.value.message


async def test_a_stream_ended_with_expired_raises() -> None:
    """A stream the server ends with `event: expired` (a shutdown that could not wait) raises
    EventsExpiredError after the events before it."""
    message = (
        "events after seq 1 are no longer retained: the oldest kept is seq 4; ask for "
        "?after=3 to continue from there"
    )
    expired = (
        b"event: expired\ndata: %s\n\n"
        % json.dumps({"error": {"code": "events_expired", "message": message}}).encode()
    )
    body = sse(tick(1), retry=5) + expired
    async with mocked(lambda request: httpx.Response(200, headers=SSE, content=body)) as client:
        events = client.events("r")
        assert (await anext(events)).seq == 1
        with pytest.raises(EventsExpiredError) as raised:
            await anext(events)
    assert (raised.value.status, raised.value.lost, raised.value.resume_after) == (
        200,
        range(2, 4),
        3,
    )


async def test_every_async_method_is_a_cancel_point() -> None:
    """In a cancelled scope every async method raises Cancelled before sending anything, and
    an envelope already received is still delivered through a checkpoint."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, headers=SSE, content=sse(tick(1), tick(2), {**STOP, "seq": 3}))

    async with mocked(answer) as client:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: client.start("count"),
            lambda: client.status("r"),
            lambda: client.result("r"),
            lambda: client.send("r", Go(count=1)),
            lambda: client.cancel("r"),
            lambda: anext(client.events("r")),
        ]
        for call in calls:
            with trio.CancelScope() as scope:
                scope.cancel()
                await call()
            assert scope.cancelled_caught
        assert sent == []
        async with client.events("r") as events:
            assert (await anext(events)).seq == 1
            with trio.testing.assert_checkpoints():
                assert (await anext(events)).seq == 2


# -- reading Server-Sent Events --

BODY = (
    b'retry: 25\r\nid: 1\r\nevent: Tick\r\ndata: {"n": 1}\r\n\r\n'
    b": ping\n\n"
    b"data: a\rdata: b\r\r"
    b"event: cut\ndata: never dispatched\n"
)


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=8))
def test_sse_parsing_does_not_depend_on_how_bytes_are_split(cuts: list[int]) -> None:
    """However the bytes are split, the same messages come out: CRLF, CR and LF line ends,
    comments skipped, multi-line data joined, an unfinished message never dispatched."""
    parser = SseParser()
    bounds = [0, *sorted(cuts), len(BODY)]
    messages = [m for a, b in itertools.pairwise(bounds) for m in parser.feed(BODY[a:b])]
    assert messages == [Message("Tick", '{"n": 1}'), Message("message", "a\nb")]
    assert parser.retry_ms == 25
