"""LlamaIndex clients against trioflow: ``--llama-compat`` serves llama-agents-server's routes.

The client is llama-agents-client's own ``WorkflowClient`` (asyncio), run in a worker thread
with its own event loop while the server runs on trio in the test's; the raw HTTP checks use
httpx on trio. Events the client sends are instances of LlamaIndex's own event classes where
the client serializes them itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import httpx
import pytest
import trio
from _http import (
    TESTS,
    FailFlow,
    GateFlow,
    serve_process,
    served,
    sse_messages,
    sse_text_messages,
    wait_for,
    wait_until,
)
from llama_agents.client import WorkflowClient
from workflows import events as llama_events

import trioflow
from trioflow import Context, Event, StopEvent, Workflow, WorkflowApp, step

T = TypeVar("T")


class Go(llama_events.HumanResponseEvent):
    """LlamaIndex's twin of `_http.Go`: the client sends it as ``{"type": "Go", ...}``."""

    count: int


class Verdict(StopEvent):
    """A workflow's own stop event: a run's result is the event itself."""

    score: int


class Note(Event):
    text: str


class ScoreFlow(Workflow):
    """Writes a note, then ends with its own stop event."""

    @step
    async def score(self, ctx: Context, ev: trioflow.StartEvent) -> Verdict:
        await ctx.write_event_to_stream(Note(text=str(ev.get("text", ""))))
        return Verdict(score=len(str(ev.get("text", ""))))


class WaitFlow(Workflow):
    """Writes a note, then waits until cancelled."""

    @step
    async def wait(self, ctx: Context, ev: trioflow.StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Note(text="waiting"))
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class Payload(trioflow.StartEvent):
    data: dict[str, int]


class EchoFlow(Workflow):
    """Ends with its start event's one field, which is called ``data``."""

    @step
    async def echo(self, ev: Payload) -> StopEvent:
        return StopEvent(result=ev.data)


class HoldingFlow(Workflow):
    """Waits until cancelled, then holds its unwinding until `release` is set."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.release = trio.Event()

    @step
    async def hold(self, ev: trioflow.StartEvent) -> StopEvent:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self.release.wait()
        raise AssertionError("unreachable")


def flows() -> dict[str, Workflow]:
    return {
        "score": ScoreFlow(timeout=None),
        "gate": GateFlow(timeout=None),
        "fail": FailFlow(),
        "wait": WaitFlow(timeout=None),
        "echo": EchoFlow(timeout=None),
    }


async def with_llama(
    url: str, use: Callable[[WorkflowClient], Awaitable[T]], *, limit: float = 30
) -> T:
    """Run ``use(client)`` with LlamaIndex's client on asyncio, in a thread of its own."""

    async def main() -> T:
        return await asyncio.wait_for(use(WorkflowClient(base_url=url)), limit)

    return await trio.to_thread.run_sync(asyncio.run, main())


async def collect(client: WorkflowClient, handler_id: str, **options: Any) -> list[Any]:
    stream = client.get_workflow_events(handler_id, **options)
    return [(stream.last_sequence, event) async for event in stream]


# -- LlamaIndex's client, end to end --


async def test_the_llama_client_runs_a_workflow_and_streams_its_events() -> None:
    """run_workflow_nowait with LlamaIndex's StartEvent, the event stream with sequences and
    envelopes, then the handler with its result; run_workflow waits for one."""
    async with served(flows(), llama_compat=True) as server:

        async def use(client: WorkflowClient) -> Any:
            healthy = await client.is_healthy()
            listed = await client.list_workflows()
            started = await client.run_workflow_nowait(
                # LlamaIndex's StartEvent takes any field (a dict-like model)
                "score",
                start_event=llama_events.StartEvent(text="hello"),  # type: ignore[call-arg]
            )
            events = await collect(client, started.handler_id)
            handler = await client.get_handler(started.handler_id)
            waited = await client.run_workflow("score", start_event={"text": "four"})
            return healthy, listed, started, events, handler, waited

        healthy, listed, started, events, handler, waited = await with_llama(server.url, use)
    assert healthy.status == "healthy"
    assert listed.workflows == ["score", "gate", "fail", "wait", "echo"]
    assert started.handler_id == started.run_id
    assert started.workflow_name == "score"
    # Sequences count the run's internal events too (0 and 2 here), as LlamaIndex's do.
    assert [(seq, e.type) for seq, e in events] == [(1, "Note"), (3, "Verdict")]
    note, verdict = (event for _, event in events)
    assert note.value == {"text": "hello"}
    assert note.types is None
    assert note.qualified_name == f"{__name__}.Note"
    assert verdict.value == {"result": None, "score": 5}
    assert verdict.types == ["StopEvent"]
    assert handler.status == "completed"
    assert handler.completed_at is not None
    assert handler.result is not None
    assert handler.result.type == "Verdict"
    assert handler.result.value == {"result": None, "score": 5}
    assert waited.status == "completed"
    assert waited.result is not None
    assert waited.result.value["score"] == 4


async def test_the_llama_client_answers_an_input_request_with_its_own_event_class() -> None:
    """An InputRequiredEvent is recognizable by its ``types``; LlamaIndex's own Go instance
    answers it, and the run goes on to its result."""
    async with served(flows(), llama_compat=True) as server:

        async def use(client: WorkflowClient) -> Any:
            started = await client.run_workflow_nowait("gate")
            seen = []
            stream = client.get_workflow_events(started.handler_id)
            async for event in stream:
                seen.append((event.type, event.types))
                if "InputRequiredEvent" in (event.types or []):
                    sent = await client.send_event(started.handler_id, Go(count=2))
                    assert sent.status == "sent"
            return seen, await client.get_handler(started.handler_id)

        seen, handler = await with_llama(server.url, use)
    assert seen == [
        ("Tick", None),
        ("Asking", ["InputRequiredEvent"]),
        ("Tick", None),
        ("Tick", None),
        ("StopEvent", None),
    ]
    assert handler.status == "completed"
    assert handler.result is not None
    assert handler.result.value == {"result": 2}


async def test_the_llama_client_reads_schemas_and_the_graph() -> None:
    """The schema, event schemas and graph parse into the client's own models."""
    async with served(flows(), llama_compat=True) as server:

        async def use(client: WorkflowClient) -> Any:
            return (
                await client.get_workflow_schema("score"),
                await client.get_workflow_events_schema("gate"),
                await client.get_workflow_graph("gate"),
            )

        schema, event_schemas, graph = await with_llama(server.url, use)
    assert schema.start["title"] == "StartEvent"
    assert schema.stop["title"] == "Verdict"
    assert "score" in schema.stop["properties"]
    titles = [event["title"] for event in event_schemas.events]
    assert {"StartEvent", "StopEvent", "Tick", "Asking", "Go"} <= set(titles)
    assert graph.graph.name == "GateFlow"
    kinds = {node.id: node.node_type for node in graph.graph.nodes}
    assert kinds["gate"] == "step"
    assert kinds["Asking"] == "event"
    assert kinds["external_step"] == "external"
    edges = {(edge.source, edge.target) for edge in graph.graph.edges}
    assert {("StartEvent", "gate"), ("gate", "Asking"), ("Asking", "external_step")} <= edges
    assert {("external_step", "Go"), ("Go", "gate"), ("gate", "StopEvent")} <= edges


async def test_the_llama_client_resumes_after_a_sequence() -> None:
    """after_sequence=N streams what follows N; after the last event of a finished run the
    server answers 204 and the client's stream ends at once."""
    async with served(flows(), llama_compat=True) as server:

        async def use(client: WorkflowClient) -> Any:
            done = await client.run_workflow("score", start_event={"text": "x"})
            return (
                await collect(client, done.handler_id, after_sequence=1),
                await collect(client, done.handler_id, after_sequence=3),
                await collect(client, done.handler_id, after_sequence="now"),
            )

        after_first, after_last, now = await with_llama(server.url, use)
    assert [(seq, event.type) for seq, event in after_first] == [(3, "Verdict")]
    assert after_last == []
    assert now == []


async def test_the_llama_client_cancels_and_purges_handlers() -> None:
    """cancel_handler cancels a running run (its status then ``cancelled``, in the list by
    that status); a second cancel is 404, as there; purge forgets a run."""
    async with served(flows(), llama_compat=True) as server:

        async def use(client: WorkflowClient) -> Any:
            started = await client.run_workflow_nowait("wait")
            cancelled = await client.cancel_handler(started.handler_id)
            listed = await client.get_handlers(status=["cancelled"], workflow_name=["wait"])
            with pytest.raises(httpx.HTTPStatusError) as again:
                await client.cancel_handler(started.handler_id)
            with pytest.raises(httpx.HTTPStatusError) as status:
                await client.get_handler(started.handler_id)  # 500 once cancelled, as there
            purged = await client.cancel_handler(started.handler_id, purge=True)
            with pytest.raises(httpx.HTTPStatusError) as gone:
                await client.get_handler(started.handler_id)
            return started, cancelled, listed, again, status, purged, gone

        started, cancelled, listed, again, status, purged, gone = await with_llama(server.url, use)
    assert cancelled.status == "cancelled"
    assert [h.handler_id for h in listed.handlers] == [started.handler_id]
    assert again.value.response.status_code == 404
    assert "has ended (cancelled)" in again.value.response.json()["detail"]
    assert status.value.response.status_code == 500
    assert status.value.response.json()["status"] == "cancelled"
    assert purged.status == "deleted"
    assert gone.value.response.status_code == 404


async def test_a_failed_run_is_a_500_with_its_error() -> None:
    """run_workflow of a failing workflow: 500 with the handler failed and its error."""
    async with served(flows(), llama_compat=True) as server:

        async def use(client: WorkflowClient) -> Any:
            with pytest.raises(httpx.HTTPStatusError) as failed:
                await client.run_workflow("fail")
            return failed.value.response

        response = await with_llama(server.url, use)
    assert response.status_code == 500
    handler = response.json()
    assert handler["status"] == "failed"
    assert handler["result"] is None
    assert handler["error"] == "Boom: kaboom"


# -- the payloads, over raw HTTP --


async def test_start_event_forms_and_refusals() -> None:
    """A start event as bare fields, as LlamaIndex's ``_data``, as an envelope or its JSON
    text starts a run; what trioflow does not do is a 400 with a ``detail``."""
    async with served(flows(), llama_compat=True) as server:
        client = server.client
        accepted = [
            {"start_event": {"text": "ab"}},
            {"start_event": {"_data": {"text": "ab"}}},
            {"start_event": {"value": {"_data": {"text": "ab"}}, "type": "StartEvent"}},
            {"start_event": json.dumps({"value": {"text": "ab"}, "type": "StartEvent"})},
            {"kwargs": {"text": "ab"}},
        ]
        for body in accepted:
            response = await client.post("/workflows/score/run", json=body)
            assert response.status_code == 200, (body, response.text)
            assert response.json()["result"]["value"]["score"] == 2
        refused = {
            "context": {"start_event": {}, "context": {"state": {}}},
            "handler_id": {"handler_id": "mine"},
            "starts with": {"start_event": {"value": {}, "type": "Note"}},
            "not valid JSON": {"start_event": "{oops"},
        }
        for expected, body in refused.items():
            response = await client.post("/workflows/score/run-nowait", json=body)
            assert response.status_code == 400, body
            assert expected in response.json()["detail"]
        unknown = await client.post("/workflows/nope/run", json={})
        assert unknown.status_code == 404
        assert "nope" in unknown.json()["detail"]


async def test_send_event_forms_and_refusals() -> None:
    """An event goes in as an envelope (or its JSON text, or LlamaIndex's older ``data``);
    an unknown type, a step that does not exist and a finished run are refused clearly."""
    async with served(flows(), llama_compat=True) as server:
        client = server.client
        handler = (await client.post("/workflows/gate/run-nowait", json={})).json()
        url = f"/events/{handler['handler_id']}"
        for body, status, expected in [
            ({"event": {"type": "Nope", "value": {}}}, 400, "unknown event type 'Nope'"),
            ({"event": {"type": "Go", "value": {"count": "x"}}}, 400, "count"),
            ({"event": {"type": "Go", "value": {"count": 1}}, "step": "nope"}, 400, "nope"),
            ({}, 400, "event"),
        ]:
            response = await client.post(url, json=body)
            assert response.status_code == status, body
            assert expected in response.json()["detail"], response.text
        text = json.dumps({"type": "Go", "data": {"count": 1}})
        sent = await client.post(url, json={"event": text})
        assert sent.status_code == 200
        assert sent.json() == {"status": "sent"}
        async with client.stream("GET", url, params={"after_sequence": "-1"}) as response:
            types = [m["data"]["type"] async for m in sse_messages(response) if "data" in m]
        assert types[-1] == "StopEvent"
        late = await client.post(url, json={"event": {"type": "Go", "value": {"count": 1}}})
        assert late.status_code == 409
        assert "has ended (completed)" in late.json()["detail"]


async def test_stream_options() -> None:
    """NDJSON (sse=false), internal events on request (trioflow's lifecycle events), no
    qualified names on request, Last-Event-ID over after_sequence, and bad positions."""
    async with served(flows(), llama_compat=True) as server:
        client = server.client
        handler = (await client.post("/workflows/score/run", json={})).json()
        url = f"/events/{handler['handler_id']}"

        async def lines(**params: str) -> list[dict[str, Any]]:
            params = {"sse": "false", "after_sequence": "-1", **params}
            async with client.stream("GET", url, params=params) as response:
                assert response.headers["content-type"] == "application/x-ndjson"
                return [json.loads(line) async for line in response.aiter_lines() if line.strip()]

        plain = await lines()
        assert [e["type"] for e in plain] == ["Note", "Verdict"]
        internal = await lines(include_internal="true")
        assert [e["type"] for e in internal] == [
            "StepStartedEvent",
            "Note",
            "StepFinishedEvent",
            "Verdict",
        ]
        assert internal[0]["types"] == ["LifecycleEvent"]
        assert {e["qualified_name"] for e in await lines(include_qualified_name="false")} == {None}
        resumed = await client.get(
            url, headers={"last-event-id": "2"}, params={"after_sequence": "-1"}
        )
        assert [m["id"] for m in sse_text_messages(resumed.text)] == ["3"]
        for after in ("abc", "-2", "99"):
            bad = await client.get(url, params={"after_sequence": after})
            assert bad.status_code == 400
            assert "sequence" in bad.json()["detail"]
        missing = await client.get("/events/nope")
        assert missing.status_code == 404
        assert "Handler not found" in missing.json()["detail"]


async def test_handlers_lists_and_filters() -> None:
    """GET /handlers lists every run with its data, filtered by repeated parameters."""
    async with served(flows(), llama_compat=True) as server:
        client = server.client
        done = (await client.post("/workflows/score/run", json={})).json()
        waiting = (await client.post("/workflows/wait/run-nowait", json={})).json()
        every = (await client.get("/handlers")).json()["handlers"]
        assert {h["handler_id"] for h in every} == {done["handler_id"], waiting["handler_id"]}
        running = await client.get("/handlers", params={"status": ["running", "failed"]})
        assert [h["handler_id"] for h in running.json()["handlers"]] == [waiting["handler_id"]]
        by_name = await client.get("/handlers", params={"workflow_name": "score"})
        assert [h["handler_id"] for h in by_name.json()["handlers"]] == [done["handler_id"]]
        assert (await client.get(f"/handlers/{waiting['handler_id']}")).status_code == 202
        assert (await client.get(f"/results/{done['handler_id']}")).status_code == 200
        bad = await client.get("/handlers", params={"status": "lost"})
        assert bad.status_code == 400
        assert "lost" in bad.json()["detail"]


async def test_the_routes_are_served_only_when_asked_for() -> None:
    """Without llama_compat the LlamaIndex routes are 404 and /health answers in trioflow's
    words; with it /health answers in LlamaIndex's, and trioflow's own routes still work."""
    async with served(flows()) as server:
        assert (await server.client.get("/handlers")).status_code == 404
        assert (await server.client.get("/health")).json()["status"] == "ok"
    async with served(flows(), llama_compat=True) as server:
        health = (await server.client.get("/health")).json()
        assert health == {"status": "healthy", "state": "ok", "running": 0, "max_runs": 64}
        run_id = await server.start("score", {"text": "own"})
        assert (await server.wait_status(run_id, "completed"))["result"]["score"] == 3
        assert (await server.client.get(f"/handlers/{run_id}")).json()["status"] == "completed"


async def test_openapi_documents_the_routes_when_served() -> None:
    """/openapi.json has LlamaIndex's routes (and validates) only when they are served; HEAD
    on a stream answers its headers without attaching."""
    from openapi_spec_validator import validate

    async with served(flows(), llama_compat=True, token="secret") as server:
        headers = {"authorization": "Bearer secret"}
        document = (await server.client.get("/openapi.json", headers=headers)).json()
        validate(document)
        assert {"/handlers", "/events/{handler_id}", "/workflows/{name}/run-nowait"} <= set(
            document["paths"]
        )
        assert "401" not in document["paths"]["/health"]["get"]["responses"]
        assert "401" in document["paths"]["/handlers"]["get"]["responses"]
        run = await server.client.post("/workflows/score/run", json={}, headers=headers)
        url = f"/events/{run.json()['handler_id']}"
        head = await server.client.head(url, params={"after_sequence": "-1"}, headers=headers)
        assert head.status_code == 200
        assert head.headers["content-type"].startswith("text/event-stream")
        ended = await server.client.head(url, headers=headers)
        assert ended.status_code == 204
        assert (await server.client.get("/handlers")).status_code == 401
    plain = WorkflowApp(flows()).openapi()
    assert "/handlers" not in plain["paths"]


async def test_review_findings() -> None:
    """Sequences are ASCII digits (a bad Last-Event-ID is ignored, as there); a start field
    called ``data`` is a field; /results answers the bare result; a decided run has its
    completed_at; every error of the app carries ``detail``; /health keeps its counters."""
    async with served(flows(), llama_compat=True) as server:
        client = server.client
        done = (await client.post("/workflows/score/run", json={})).json()
        url = f"/events/{done['handler_id']}"
        for after in ("--5", "\u00b2", "\u0663", "1" * 19):
            bad = await client.get(url, params={"after_sequence": after})
            assert bad.status_code == 400, after
        ignored = await client.get(
            url, headers={"last-event-id": "--5"}, params={"after_sequence": "2"}
        )
        assert [m["id"] for m in sse_text_messages(ignored.text)] == ["3"]
        echoed = await client.post("/workflows/echo/run", json={"start_event": {"data": {"x": 1}}})
        assert echoed.json()["result"]["value"] == {"result": {"x": 1}}
        bare = (await client.get(f"/results/{echoed.json()['handler_id']}")).json()
        assert bare["result"] == {"x": 1}
        started = (await client.post("/workflows/score/run-nowait", json={})).json()
        assert (started["status"] == "running") == (started["completed_at"] is None)
        assert done["completed_at"] is not None
        assert done["updated_at"] == done["completed_at"]
        for response in (
            await client.get("/workflows/score/run"),  # 405
            await client.get("/nowhere"),  # 404
        ):
            assert response.json()["detail"] == response.json()["error"]["message"]
        health = (await client.get("/health")).json()
        assert health["status"] == "healthy"
        assert health["state"] == "ok"
        assert health["max_runs"] == 64


async def test_a_purged_run_is_gone_at_once_while_it_unwinds() -> None:
    """purge=true on a running run: it is found no more (404, not listed, a second purge
    404) while its steps still unwind, as llama-agents-server deletes its row at once."""
    holding = HoldingFlow()
    async with served({"hold": holding}, llama_compat=True) as server:
        try:
            await check_purged_while_unwinding(server.client, server.app, holding)
        finally:
            holding.release.set()  # a failed check must not leave the run holding on


async def check_purged_while_unwinding(
    client: httpx.AsyncClient, app: WorkflowApp, holding: HoldingFlow
) -> None:
    handler_id = (await client.post("/workflows/hold/run-nowait", json={})).json()["handler_id"]
    purged = await client.post(f"/handlers/{handler_id}/cancel", params={"purge": "true"})
    assert purged.json() == {"status": "deleted"}
    assert (await client.get(f"/handlers/{handler_id}")).status_code == 404
    assert (await client.get("/handlers")).json() == {"handlers": []}
    again = await client.post(f"/handlers/{handler_id}/cancel", params={"purge": "true"})
    assert again.status_code == 404
    assert (await client.get(f"/runs/{handler_id}")).status_code == 404
    registry = app._registry
    assert registry is not None
    assert registry.running == 1  # still unwinding: it counts against max_runs
    holding.release.set()
    await wait_until(lambda: registry.running == 0)
    assert registry._records == {}


async def test_events_no_longer_kept_are_a_410_in_llama_terms() -> None:
    """A run keeps its last `retain` events: asking for older ones is a 410 that says which
    after_sequence goes on, never a silent gap."""
    async with served(flows(), llama_compat=True, retain=2) as server:
        client = server.client
        done = (await client.post("/workflows/gate/run-nowait", json={"start_event": {}})).json()
        url = f"/events/{done['handler_id']}"
        await wait_until_asking(client, done["handler_id"])
        await client.post(url, json={"event": {"type": "Go", "value": {"count": 5}}})
        await wait_for(
            lambda: client.get(f"/handlers/{done['handler_id']}"),
            lambda response: response.json()["status"] == "completed",
        )
        expired = await client.get(url, params={"after_sequence": "-1"})
        assert expired.status_code == 410
        detail = expired.json()["detail"]
        assert "no longer kept" in detail
        oldest = int(detail.split("after_sequence=")[1].split()[0])
        resumed = await client.get(url, params={"after_sequence": str(oldest)})
        assert resumed.status_code == 200
        assert sse_text_messages(resumed.text)[-1]["data"].startswith('{"value":{"result":5}')


async def wait_until_asking(client: httpx.AsyncClient, handler_id: str) -> None:
    """Wait until the gate run has asked its question (read as a client would)."""
    url = f"/events/{handler_id}"
    async with (
        client.stream("GET", url, params={"after_sequence": "-1"}) as response,
        aclosing(sse_messages(response)) as messages,
    ):
        async for message in messages:
            if "InputRequiredEvent" in (message.get("data", {}).get("types") or []):
                return


def test_trioflow_serve_llama_compat_serves_the_llama_client() -> None:
    """``trioflow serve --llama-compat``, for real: LlamaIndex's client runs a workflow."""
    help_text = subprocess.run(
        [sys.executable, "-m", "trioflow", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=TESTS,
        check=True,
    ).stdout
    assert "--llama-compat" in help_text
    with serve_process("_http:FLOWS", "--llama-compat") as (_, url):

        async def use(client: WorkflowClient) -> Any:
            return await client.run_workflow("count", start_event={"n": 2})

        async def main() -> Any:
            return await asyncio.wait_for(use(WorkflowClient(base_url=url)), 30)

        handler = asyncio.run(main())
    assert handler.status == "completed"
    assert handler.result is not None
    assert handler.result.value == {"result": {"counted": 2}}
