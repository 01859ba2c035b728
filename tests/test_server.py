"""The HTTP server, for real: hypercorn on 127.0.0.1 port 0 and httpx reading streams in chunks."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _http import (
    FLOWS,
    CountFlow,
    ForeverFlow,
    Lingering,
    Stuck,
    served,
    sse_messages,
    wait_for,
    wait_until,
)

import trioflow

# -- workflows and the graph --


async def test_lists_and_describes_workflows() -> None:
    """GET /workflows names them; GET /workflows/{name} gives steps and event types."""
    async with served() as server:
        response = await server.client.get("/workflows")
        assert response.json() == {"workflows": ["count", "gate", "fail", "forever", "slow"]}
        graph = (await server.client.get("/workflows/count")).json()
        assert graph["name"] == "count"
        assert graph["start_event"] == "Count"
        assert [s["name"] for s in graph["steps"]] == ["count"]
        assert {f["name"] for f in graph["input"]} == {"n", "size"}


async def test_a_single_workflow_is_served_under_its_class_name() -> None:
    """serve(SomeFlow()) names the workflow after its class."""
    async with served(CountFlow()) as server:
        assert (await server.client.get("/workflows")).json() == {"workflows": ["CountFlow"]}


# -- a run over HTTP --


async def test_run_to_completion_and_read_its_stream() -> None:
    """POST starts a run (201, Location); its SSE stream carries every event, then the result."""
    async with served() as server:
        response = await server.client.post("/workflows/count/runs", json={"n": 3})
        assert response.status_code == 201
        run_id = response.json()["run_id"]
        assert response.headers["location"] == f"/runs/{run_id}"
        events = await server.events(run_id)
        assert [e["event"] for e in events] == ["Tick", "Tick", "Tick", "StopEvent"]
        assert [e["id"] for e in events] == ["1", "2", "3", "4"]
        first = events[0]["data"]
        assert first == {
            "seq": 1,
            "type": "Tick",
            "qualified_name": "_http.Tick",
            "time": first["time"],
            "data": {"n": 1, "payload": ""},
        }
        # Each event's time is when it entered the stream: in order, and a replay has the same.
        times = [e["data"]["time"] for e in events]
        assert times == sorted(times)
        assert [e["data"]["time"] for e in await server.events(run_id)] == times
        status = await server.wait_status(run_id, "completed")
        assert status["result"] == {"counted": 3}
        assert status["workflow"] == "count"
        assert status["seq"] == 4


async def test_sse_headers_retry_hint_and_framing() -> None:
    """The stream is text/event-stream, never cached or buffered; retry: comes in the first
    event's block, so that every block is an event with data (none is a lone retry:)."""
    async with served(retry_ms=1500) as server:
        run_id = await server.start("count", {"n": 1})
        async with server.client.stream("GET", f"/runs/{run_id}/events") as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["x-accel-buffering"] == "no"
            assert "content-encoding" not in response.headers
            body = (await response.aread()).decode()
        assert body.startswith("retry: 1500\nid: 1\nevent: Tick\ndata: {")
        assert body.endswith("\n\n")
        blocks = body.removesuffix("\n\n").split("\n\n")
        assert len(blocks) == 2
        assert all("\ndata: {" in block for block in blocks)
        assert body.count("retry:") == 1


async def test_named_zero_leaves_out_the_event_field() -> None:
    """?named=0 sends every event as a plain message (for EventSource.onmessage)."""
    async with served() as server:
        run_id = await server.start("count", {"n": 1})
        events = await server.events(run_id, named="0")
        assert [e.get("event") for e in events] == [None, None]
        assert [e["data"]["type"] for e in events] == ["Tick", "StopEvent"]


async def test_ndjson_stream() -> None:
    """Accept: application/x-ndjson gives one envelope per line, ending with the terminal."""
    async with served() as server:
        run_id = await server.start("count", {"n": 2})
        headers = {"accept": "application/x-ndjson"}
        async with server.client.stream(
            "GET", f"/runs/{run_id}/events", headers=headers
        ) as response:
            assert response.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) async for line in response.aiter_lines() if line]
        assert [(e["seq"], e["type"]) for e in lines] == [
            (1, "Tick"),
            (2, "Tick"),
            (3, "StopEvent"),
        ]


async def test_events_arrive_while_the_run_still_waits() -> None:
    """Incremental delivery: the first event is read while its run is blocked on input."""
    async with served() as server:
        run_id = await server.start("gate")
        async with server.client.stream("GET", f"/runs/{run_id}/events") as response:
            messages = sse_messages(response)
            seen = []
            async for message in messages:
                if "data" not in message:
                    continue
                seen.append(message["event"])
                if message["event"] == "Asking":
                    break
            assert seen == ["Tick", "Asking"]
            status = await server.status(run_id)
            assert (status["status"], status["waiting_for_input"]) == ("running", True)
            # The list says so too (the dashboard shows such a run as waiting for input).
            listed = (await server.client.get("/runs")).json()["runs"]
            assert [(r["run_id"], r["waiting_for_input"]) for r in listed] == [(run_id, True)]
            answer = await server.client.post(
                f"/runs/{run_id}/events", json={"type": "Go", "data": {"count": 2}}
            )
            assert answer.status_code == 202
            rest = [m["event"] async for m in messages if "data" in m]
        assert rest == ["Tick", "Tick", "StopEvent"]
        status = await server.wait_status(run_id, "completed")
        assert (status["result"], status["waiting_for_input"]) == (2, False)


async def test_lifecycle_events_after_a_request_leave_the_run_waiting() -> None:
    """With lifecycle events recorded, those after an input request (the workflow going idle)
    do not count as the run moving on: it still waits for input."""
    async with served() as server:
        run_id = await server.start("gate", lifecycle="1")
        params = {"types": "LifecycleEvent,Asking"}
        async with server.client.stream("GET", f"/runs/{run_id}/events", params=params) as response:
            seen = []
            async with aclosing(sse_messages(response)) as messages:
                async for message in messages:
                    if "data" not in message:
                        continue
                    seen.append(message["event"])
                    if "Asking" in seen[:-1]:  # a lifecycle event after the request
                        break
        assert seen.index("Asking") < len(seen) - 1
        status = await server.status(run_id)
        assert (status["status"], status["waiting_for_input"]) == ("running", True)
        answer = await server.client.post(
            f"/runs/{run_id}/events", json={"type": "Go", "data": {"count": 1}}
        )
        assert answer.status_code == 202
        status = await server.wait_status(run_id, "completed")
        assert status["waiting_for_input"] is False


async def test_resume_with_last_event_id_or_after() -> None:
    """A client resumes after the seq it names; Last-Event-ID wins over ?after=."""
    async with served() as server:
        run_id = await server.start("count", {"n": 5})
        await server.wait_status(run_id, "completed")
        resumed = await server.events(run_id, after=3)
        assert [e["id"] for e in resumed] == ["4", "5", "6"]
        async with server.client.stream(
            "GET", f"/runs/{run_id}/events?after=1", headers={"last-event-id": "5"}
        ) as response:
            ids = [m["id"] async for m in sse_messages(response) if "data" in m]
        assert ids == ["6"]


async def test_resume_after_the_terminal_event_is_204() -> None:
    """Asking for what follows the terminal event answers 204 (EventSource stops there)."""
    async with served() as server:
        run_id = await server.start("count", {"n": 1})
        await server.wait_status(run_id, "completed")
        response = await server.client.get(f"/runs/{run_id}/events", params={"after": 2})
        assert response.status_code == 204


async def test_resume_beyond_retention_is_an_explicit_error() -> None:
    """Events no longer retained give 410 naming the oldest kept, never a silent gap."""
    async with served(retain=4, hold_for_first_client=0) as server:
        run_id = await server.start("count", {"n": 10})
        await server.wait_status(run_id, "completed")
        response = await server.client.get(f"/runs/{run_id}/events")
        assert response.status_code == 410
        error = response.json()["error"]
        assert error["code"] == "events_expired"
        assert "oldest kept is seq 8" in error["message"]
        kept = await server.events(run_id, after=7)
        assert [e["id"] for e in kept] == ["8", "9", "10", "11"]


async def test_bad_resume_positions() -> None:
    """A seq that is no number, or beyond the last event, is a 400."""
    async with served() as server:
        run_id = await server.start("count", {"n": 1})
        await server.wait_status(run_id, "completed")
        for after in ("x", "-1", "99"):
            response = await server.client.get(f"/runs/{run_id}/events", params={"after": after})
            assert response.status_code == 400, after
            assert response.json()["error"]["code"] == "bad_request"


async def test_keep_alive_pings_on_an_idle_stream() -> None:
    """An idle SSE stream carries ': ping' comments at the configured interval."""
    async with served(ping_interval=0.01) as server:
        run_id = await server.start("forever")
        async with (
            server.client.stream("GET", f"/runs/{run_id}/events") as response,
            aclosing(sse_messages(response)) as messages,
        ):
            kinds = []
            async for message in messages:
                kinds.append(message.get("comment") or message.get("event"))
                if kinds.count("ping") == 2:
                    break
        assert kinds[0] == "Tick"
        assert kinds[1:] == ["ping", "ping"]


async def test_a_hundred_clients_each_receive_every_event() -> None:
    """100 clients on one run: each gets every event, in order, and the terminal last."""
    async with served() as server:
        run_id = await server.start("gate")
        record = server.app._registry.get(run_id)  # type: ignore[union-attr]
        assert record is not None
        received: dict[int, list[str]] = {}

        async def watch(client_no: int) -> None:
            received[client_no] = [e["id"] for e in await server.events(run_id)]

        async with trio.open_nursery() as nursery:
            for client_no in range(100):
                nursery.start_soon(watch, client_no)
            await wait_until(lambda: record.feed.watchers == 100)
            go = {"type": "Go", "data": {"count": 200}}
            assert (await server.client.post(f"/runs/{run_id}/events", json=go)).status_code == 202
        expected = [str(seq) for seq in range(1, 204)]  # Tick, Asking, 200 Ticks, StopEvent
        assert len(received) == 100
        assert all(ids == expected for ids in received.values())


async def test_a_client_that_stops_reading_makes_the_producer_wait() -> None:
    """Backpressure through TCP: with a client that reads nothing, the step stops writing
    long before its 20,000 events of 4 KiB; server-side buffers stay at their bounds; once
    the client reads again, every event arrives in order."""
    total = 20_000
    async with served(retain=64) as server:
        run_id = await server.start("count", {"n": total, "size": 4096})
        record = server.app._registry.get(run_id)  # type: ignore[union-attr]
        assert record is not None
        async with server.client.stream("GET", f"/runs/{run_id}/events") as response:
            # Read nothing, and wait until the producer makes no more progress.
            stalled_at = -1
            while record.feed.last_seq != stalled_at:
                stalled_at = record.feed.last_seq
                await trio.testing.wait_all_tasks_blocked(cushion=0.1)
            statistics = record.handler.statistics()
            assert statistics.writers_waiting == 1  # the step waits in write_event_to_stream
            assert statistics.buffered == statistics.capacity
            assert len(record.feed._entries) == 64
            # What is in flight is bounded by the socket buffers, not by the run's length.
            assert record.feed.last_seq < total // 4
            seqs = [int(m["id"]) async for m in sse_messages(response) if "data" in m]
        assert seqs == list(range(1, total + 2))


async def test_disconnect_is_detected_and_can_cancel_the_run() -> None:
    """A client that leaves is detached; with abandon_after=0 its run is then cancelled."""
    async with served() as server:
        kept = await server.start("forever")
        dropped = await server.start("forever", abandon_after=0)
        for run_id in (kept, dropped):
            async with (
                server.client.stream("GET", f"/runs/{run_id}/events") as response,
                aclosing(sse_messages(response)) as messages,
            ):
                async for message in messages:
                    assert "retry" in message or message["event"] == "Tick"
                    if message.get("event") == "Tick":
                        break
            await wait_for(partial(server.status, run_id), lambda s: s["watchers"] == 0)
        status = await server.wait_status(dropped, "cancelled")
        assert status["error"]["type"] == "WorkflowCancelledError"
        events = await server.events(dropped)
        assert events[-1]["event"] == "WorkflowCancelledEvent"
        assert (await server.status(kept))["status"] == "running"


# -- control --


async def test_cancel_a_run() -> None:
    """POST /runs/{id}/cancel: 202, the stream ends with WorkflowCancelledEvent; again: 409."""
    async with served() as server:
        run_id = await server.start("forever")
        response = await server.client.post(f"/runs/{run_id}/cancel")
        assert response.status_code == 202
        events = await server.events(run_id)
        assert [e["event"] for e in events] == ["Tick", "WorkflowCancelledEvent"]
        await server.wait_status(run_id, "cancelled")
        again = await server.client.post(f"/runs/{run_id}/cancel")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "run_ended"


async def test_failed_and_timed_out_runs_report_their_error() -> None:
    """A failed run's status names the exception and the step; a timed-out run says so."""
    async with served() as server:
        failed = await server.start("fail")
        status = await server.wait_status(failed, "failed")
        assert status["error"] == {"type": "Boom", "message": "kaboom", "step": "explode"}
        events = await server.events(failed)
        assert [e["event"] for e in events] == ["StepFailedEvent", "WorkflowFailedEvent"]
        exception = events[0]["data"]["data"]["exception"]
        assert (exception["type"], exception["message"]) == ("Boom", "kaboom")
        # The traceback text, notes included (the step it was raised in): for the dashboard.
        assert exception["traceback"].startswith("Traceback (most recent call last):")
        assert "Boom: kaboom" in exception["traceback"]
        assert "trioflow: raised in step 'explode'" in exception["traceback"]
        final = events[1]["data"]["data"]["exception"]
        assert "raise Boom" in final["traceback"]
        slow = await server.start("slow")
        status = await server.wait_status(slow, "timed_out")
        assert status["error"]["type"] == "WorkflowTimeoutError"
        assert (await server.events(slow))[-1]["event"] == "WorkflowTimedOutEvent"


@pytest.mark.parametrize("store", ["memory:", "sqlite"])
async def test_a_public_server_hides_tracebacks(store: str, tmp_path: Path) -> None:
    """hide_tracebacks: failures go out as their type and message only, also as stored."""
    url = store if store == "memory:" else f"sqlite:///{tmp_path}/runs.db"
    async with served(hide_tracebacks=True, store=url) as server:
        failed = await server.start("fail")
        await server.wait_status(failed, "failed")
        events = await server.events(failed)
        assert [e["data"]["data"]["exception"] for e in events] == [
            {"type": "Boom", "message": "kaboom"}
        ] * 2


async def test_sending_events_into_a_run() -> None:
    """POST /runs/{id}/events: 202 routes it; unknown type and bad fields 422; ended run 409."""
    async with served() as server:
        run_id = await server.start("gate")
        post = server.client.post
        unknown = await post(f"/runs/{run_id}/events", json={"type": "Nope", "data": {}})
        assert unknown.status_code == 422
        assert "Nope" in unknown.json()["error"]["message"]
        bad = await post(f"/runs/{run_id}/events", json={"type": "Go", "data": {"count": "x"}})
        assert bad.status_code == 422
        assert "count" in bad.json()["error"]["message"]
        malformed = await post(f"/runs/{run_id}/events", content=b"{nope")
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == "bad_json"
        await wait_for(lambda: server.status(run_id), lambda s: s["seq"] == 2)  # now waiting
        ok = await post(f"/runs/{run_id}/events", json={"type": "Go", "data": {"count": 0}})
        assert ok.status_code == 202
        await server.wait_status(run_id, "completed")
        ended = await post(f"/runs/{run_id}/events", json={"type": "Go", "data": {"count": 0}})
        assert ended.status_code == 409


async def test_a_decided_run_has_ended_for_every_request_while_its_steps_unwind() -> None:
    """Once a run's outcome is decided (a step returned the stop event) while a `def` step is
    still in its thread: GET says completed with the result, cancel and send answer 409
    run_ended; the stream ends with the stop event once the thread has returned."""
    flow = Lingering()
    async with served({"linger": flow}) as server:
        run_id = await server.start("linger")
        try:
            status = await server.wait_status(run_id, "completed")
            assert not flow.release.is_set()  # the def step is still in its thread
            assert status["result"] == "decided"
            cancel = await server.client.post(f"/runs/{run_id}/cancel")
            assert (cancel.status_code, cancel.json()["error"]["code"]) == (409, "run_ended")
            go = {"type": "Go", "data": {"count": 1}}
            send = await server.client.post(f"/runs/{run_id}/events", json=go)
            assert (send.status_code, send.json()["error"]["code"]) == (409, "run_ended")
            assert (await server.status(run_id))["status"] == "completed"
        finally:
            flow.release.set()
        events = await server.events(run_id)
        assert [e["event"] for e in events] == ["StopEvent"]


async def test_an_error_of_the_servers_own_is_logged_and_harms_no_other_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in the server's part of a run (here, encoding its events) is logged with
    its traceback, never dropped, and the server goes on starting and serving runs."""
    from trioflow._server import _pump

    def broken(seq: int, event: object, **options: object) -> object:
        raise RuntimeError("encoder broke")

    async with served() as server:
        with monkeypatch.context() as patched:
            patched.setattr(_pump, "encode_envelope", broken)
            run_id = await server.start("forever")
            await server.wait_status(run_id, "cancelled")  # leaving its start() cancelled it
            await wait_until(
                lambda: any(
                    "error following run" in r.message and "encoder broke" in str(r.exc_info)
                    for r in caplog.records
                )
            )
        other = await server.start("count", {"n": 2})
        assert [e["event"] for e in await server.events(other)] == ["Tick", "Tick", "StopEvent"]


# -- bad input and limits --


async def test_start_errors() -> None:
    """Unknown workflow 404, bad JSON 400, fields that do not fit 422 naming the field."""
    async with served() as server:
        post = server.client.post
        unknown = await post("/workflows/nope/runs", json={})
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_workflow")
        bad_json = await post("/workflows/count/runs", content=b'{"n": ')
        assert (bad_json.status_code, bad_json.json()["error"]["code"]) == (400, "bad_json")
        wrong = await post("/workflows/count/runs", json={"n": "three"})
        assert wrong.status_code == 422
        assert "n" in wrong.json()["error"]["message"]
        extra = await post("/workflows/count/runs", json={"n": 1, "colour": "red"})
        assert extra.status_code == 422
        assert "colour" in extra.json()["error"]["message"]
        not_object = await post("/workflows/count/runs", json=[1, 2])
        assert not_object.status_code == 422


async def test_unknown_things_and_wrong_methods() -> None:
    """Unknown runs and paths are 404; a wrong method is 405 with Allow."""
    async with served() as server:
        get = server.client.get
        assert (await get("/runs/nope")).json()["error"]["code"] == "unknown_run"
        assert (await get("/runs/nope/events")).status_code == 404
        assert (await server.client.post("/runs/nope/cancel")).status_code == 404
        assert (await get("/nowhere")).status_code == 404
        wrong = await server.client.delete("/workflows")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "HEAD, GET"
        assert wrong.json()["error"]["code"] == "method_not_allowed"
        assert (await get("/workflows/count/runs")).headers["allow"] == "POST"


async def test_body_over_the_limit_is_413() -> None:
    """A body over max_body is refused, whether its length is declared or streamed."""
    async with served(max_body=1000) as server:
        big = {"n": 1, "pad": "x" * 2000}
        declared = await server.client.post("/workflows/count/runs", json=big)
        assert declared.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b" " * 400

        streamed = await server.client.post("/workflows/count/runs", content=chunks())
        assert streamed.status_code == 413
        assert streamed.json()["error"]["code"] == "payload_too_large"


async def test_a_full_server_answers_429() -> None:
    """Beyond max_runs running runs, a start is 429 with Retry-After; finished runs free a slot."""
    async with served(max_runs=2) as server:
        first = await server.start("forever")
        await server.start("forever")
        full = await server.client.post("/workflows/forever/runs", json={})
        assert full.status_code == 429
        assert full.headers["retry-after"] == "1"
        await server.client.post(f"/runs/{first}/cancel")
        await server.wait_status(first, "cancelled")
        assert (await server.client.post("/workflows/forever/runs", json={})).status_code == 201


async def test_bad_requests_do_not_disturb_other_runs() -> None:
    """A volley of bad requests leaves a run in progress and the server unharmed."""
    async with served(max_body=100) as server:
        run_id = await server.start("gate")
        for content in (b"{", b"[]", b"null", b'"x"', b"\xff\xfe", b"{" * 500):
            await server.client.post("/workflows/count/runs", content=content)
            await server.client.post(f"/runs/{run_id}/events", content=content)
        await server.client.get("/runs/%00/events")
        go = {"type": "Go", "data": {"count": 1}}
        assert (await server.client.post(f"/runs/{run_id}/events", json=go)).status_code == 202
        assert [e["event"] for e in await server.events(run_id)][-1] == "StopEvent"


async def test_token_is_required_on_every_endpoint() -> None:
    """With a token, requests without it are 401; a bearer header or ?token= passes."""
    async with served(token="s3cret") as server:
        for method, path in (("GET", "/"), ("GET", "/workflows"), ("POST", "/workflows/count/runs"),
                             ("GET", "/runs/x"), ("GET", "/runs/x/events")):  # fmt: skip
            response = await server.client.request(method, path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = await server.client.get("/workflows", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await server.client.get("/workflows", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert (await server.client.get("/workflows?token=s3cret")).status_code == 200


async def test_no_cors_unless_origins_are_configured() -> None:
    """No CORS headers by default; configured origins get them, and preflights succeed."""
    origin = {"origin": "http://app.example"}
    async with served() as server:
        response = await server.client.get("/workflows", headers=origin)
        assert "access-control-allow-origin" not in response.headers
        preflight = await server.client.options("/workflows", headers=origin)
        assert preflight.status_code == 403  # a foreign origin, and no CORS to allow it
        assert (await server.client.options("/workflows")).status_code == 405
    async with served(cors_origins=["http://app.example"]) as server:
        response = await server.client.get("/workflows", headers=origin)
        assert response.headers["access-control-allow-origin"] == "http://app.example"
        other = await server.client.get("/workflows", headers={"origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = await server.client.options(
            "/workflows/count/runs",
            headers={**origin, "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 204
        assert "POST" in preflight.headers["access-control-allow-methods"]


async def test_dashboard_is_served_at_the_root() -> None:
    """GET / is the dashboard page, self-contained (a CSP allows nothing from outside)."""
    async with served() as server:
        response = await server.client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "<html" in response.text.lower()


# -- shutdown --


async def test_shutdown_cancels_runs_and_ends_open_streams() -> None:
    """On shutdown, open streams end with WorkflowCancelledEvent and serve() returns."""
    stop = trio.Event()
    flows = {"forever": ForeverFlow(timeout=None)}
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(trioflow.serve, flows, port=0, shutdown_trigger=stop.wait)
        )
        async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
            run_id = (await client.post("/workflows/forever/runs", json={})).json()["run_id"]
            async with client.stream("GET", f"/runs/{run_id}/events") as response:
                seen = []
                async for message in sse_messages(response):
                    if "data" in message:
                        seen.append(message["event"])
                        if len(seen) == 1:
                            stop.set()
        assert seen == ["Tick", "WorkflowCancelledEvent"]
    # serve() returned by itself: the nursery exited without being cancelled.
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=binds[0], timeout=5) as client:
            await client.get("/workflows")


async def _serve_and_catch(
    flows: Mapping[str, trioflow.Workflow],
    raised: list[BaseException],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """serve() until it returns, keeping what it raises (outside of any nursery's group)."""
    try:
        await trioflow.serve(flows, port=0, shutdown_grace=30, task_status=task_status)
    except BaseException as exc:
        raised.append(exc)


async def _stream_types(client: httpx.AsyncClient, run_id: str, into: list[str]) -> None:
    async with client.stream("GET", f"/runs/{run_id}/events") as response:
        into += [m["event"] async for m in sse_messages(response) if "data" in m]


@pytest.mark.parametrize("error", [partial(SystemExit, 3), KeyboardInterrupt])
@pytest.mark.parametrize("status_first", [False, True])
async def test_a_steps_system_exit_stops_the_server_as_a_signal_would(
    error: Callable[[], BaseException], status_first: bool
) -> None:
    """A step's SystemExit or KeyboardInterrupt: the server starts no more runs (503), cancels
    the others (their open streams end with WorkflowCancelledEvent; the run's own ends with
    its WorkflowFailedEvent), stops, and then serve() raises that exception as itself; also
    when a status request was told of it first."""
    fatal, stuck = Lingering(error), Stuck()
    flows = {"fatal": fatal, "stuck": stuck, "forever": ForeverFlow(timeout=None)}
    raised: list[BaseException] = []
    streams: dict[str, list[str]] = {"forever": [], "stuck": [], "fatal": []}
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(_serve_and_catch, flows, raised)
        try:
            async with (
                httpx.AsyncClient(base_url=binds[0], timeout=30) as client,
                trio.open_nursery() as reading,
            ):
                post, get = client.post, client.get
                runs = {
                    name: (await post(f"/workflows/{name}/runs", json={})).json()["run_id"]
                    for name in ("forever", "stuck", "fatal")
                }
                for name, seen in streams.items():
                    reading.start_soon(_stream_types, client, runs[name], seen)
                if status_first:  # decided, while its def step is still in its thread
                    status = await wait_for(
                        lambda: get(f"/runs/{runs['fatal']}"),
                        lambda r: r.json()["status"] == "failed",
                    )
                    assert status.json()["error"]["type"] == type(error()).__name__
                fatal.release.set()  # the fatal run unwinds: the exception leaves start()
                await wait_for(
                    lambda: get(f"/runs/{runs['forever']}"),
                    lambda r: r.json()["status"] == "cancelled",
                )
                # The stuck run's thread holds the shutdown up: the server still answers.
                refused = await post("/workflows/forever/runs", json={})
                assert refused.status_code == 503
                assert refused.json()["error"]["code"] == "shutting_down"
                assert (await get(f"/runs/{runs['stuck']}")).json()["status"] == "cancelled"
                stuck.release.set()  # now the shutdown goes on, and the streams end
        finally:
            fatal.release.set()
            stuck.release.set()
    assert streams["forever"] == ["Tick", "WorkflowCancelledEvent"]
    assert streams["stuck"] == ["WorkflowCancelledEvent"]
    assert streams["fatal"] == ["WorkflowFailedEvent"]  # its own stream ends too
    assert [type(exc) for exc in raised] == [type(error())]
    if isinstance(raised[0], SystemExit):
        assert raised[0].code == 3


@pytest.mark.parametrize("with_trigger", [False, True])
async def test_serve_leaves_the_programs_signals_alone(with_trigger: bool) -> None:
    """serve() is a library function: while it runs, SIGINT and SIGTERM keep the handlers the
    program had (the CLI installs its own)."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    trigger = trio.sleep_forever if with_trigger else None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(trioflow.serve, CountFlow(), port=0, shutdown_trigger=trigger)
        )
        async with httpx.AsyncClient(base_url=binds[0]) as client:
            assert (await client.get("/workflows")).status_code == 200
        assert {signum: signal.getsignal(signum) for signum in before} == before
        nursery.cancel_scope.cancel()


async def test_requests_for_another_host_are_refused() -> None:
    """DNS rebinding: a Host that is not this server's name gets 403; loopback names pass."""
    async with served() as server:
        port = server.url.rsplit(":", 1)[1]
        for host, status in ((f"evil.example:{port}", 403), (f"localhost:{port}", 200),
                             (f"[::1]:{port}", 200), (f"127.0.0.1:{port}", 200)):  # fmt: skip
            response = await server.client.get("/workflows", headers={"host": host})
            assert response.status_code == status, host
        refused = await server.client.get("/workflows", headers={"host": "evil.example"})
        assert refused.json()["error"]["code"] == "forbidden_host"
    async with served(allowed_hosts=["*"]) as server:
        response = await server.client.get("/workflows", headers={"host": "any.example"})
        assert response.status_code == 200


async def test_cross_site_requests_cannot_change_runs() -> None:
    """A POST from another origin (a page the user visits) is refused unless CORS allows it;
    same-origin POSTs and clients that send no Origin (curl, programs) pass."""
    async with served() as server:
        evil = {"origin": "https://evil.example", "content-type": "text/plain"}
        refused = await server.client.post(
            "/workflows/count/runs", content=b'{"n": 1}', headers=evil
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden_origin"
        same = {"origin": server.url}
        assert (
            await server.client.post("/workflows/count/runs", json={"n": 1}, headers=same)
        ).status_code == 201
        assert (await server.client.post("/workflows/count/runs", json={"n": 1})).status_code == 201
    async with served(cors_origins=["https://app.example"]) as server:
        allowed = {"origin": "https://app.example"}
        response = await server.client.post("/workflows/count/runs", json={"n": 1}, headers=allowed)
        assert response.status_code == 201


async def test_concurrent_starts_respect_the_limit() -> None:
    """max_runs holds when many starts arrive at once."""
    async with served(max_runs=2) as server:
        statuses: list[int] = []

        async def start() -> None:
            response = await server.client.post("/workflows/forever/runs", json={})
            statuses.append(response.status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(start)
        assert sorted(statuses) == [201, 201] + [429] * 8
        running = [
            r for r in (await server.client.get("/runs")).json()["runs"] if r["status"] == "running"
        ]
        assert len(running) == 2


async def test_an_integer_too_long_for_python_is_refused() -> None:
    """An integer of over 4,300 digits is valid JSON no run could send back out: a 422 naming
    the field, not a 500."""
    async with served() as server:
        body = b'{"n": ' + b"9" * 5000 + b"}"
        response = await server.client.post("/workflows/count/runs", content=body)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "unsupported_value"
        assert error["message"].startswith("field 'n' is an integer of 5000 digits")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ping_interval": 0}, "ping_interval must be a number > 0"),
        ({"token": ""}, "token must be a non-empty string"),
        ({"token": " padded "}, "without surrounding whitespace"),
        ({"retain": 0}, "retain must be an int >= 1"),
    ],
)
def test_options_out_of_range_are_refused(options: dict[str, Any], message: str) -> None:
    """ServerOptions refuses values that would make the server misbehave."""
    with pytest.raises(ValueError, match=message):
        trioflow.WorkflowApp(ForeverFlow(), **options)


async def test_a_run_reports_the_node_running_it_while_it_runs() -> None:
    """GET /runs/{id} and GET /runs report the node id of the process running a run (host
    and pid unless node_id names it), and null once no process runs it."""
    async with served(FLOWS) as server:
        run_id = await server.start("gate")
        registry = server.app._registry
        assert registry is not None
        host, _, pid = registry.node.rpartition(":")
        assert host
        assert pid == str(os.getpid())
        assert (await server.status(run_id))["node"] == registry.node
    async with served(FLOWS, node_id="node-a") as server:
        run_id = await server.start("gate")
        assert (await server.status(run_id))["node"] == "node-a"
        listed = (await server.client.get("/runs")).json()["runs"]
        assert [run["node"] for run in listed] == ["node-a"]
        go = {"type": "Go", "data": {"count": 0}}
        assert (await server.client.post(f"/runs/{run_id}/events", json=go)).status_code == 202
        await server.wait_status(run_id, "completed")
        registry = server.app._registry
        assert registry is not None
        await registry._records[run_id].done.wait()
        assert (await server.status(run_id))["node"] is None


@pytest.mark.parametrize("bad", ["", " padded ", "line\nbreak", "x" * 201])
def test_a_node_id_is_a_printable_name(bad: str) -> None:
    with pytest.raises(ValueError, match="node_id must be a printable name"):
        trioflow.WorkflowApp(FLOWS, node_id=bad)
