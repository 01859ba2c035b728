"""`?types=` on a run's event stream, and lifecycle events over HTTP on request
(`POST .../runs?lifecycle=1`, then `?types=LifecycleEvent` or `?lifecycle=1` on the stream)."""

from __future__ import annotations

import json

import trio
from _http import served

from trioflow import Context, Event, StartEvent, StopEvent, Workflow, step


class Token(Event):
    text: str


class Note(Event):
    text: str


class Talk(Workflow):
    """Two steps; the second writes tokens and notes, alternately."""

    @step
    async def think(self, ev: StartEvent) -> Note:
        return Note(text="go")

    @step
    async def say(self, ctx: Context, ev: Note) -> StopEvent:
        for i in range(3):
            await ctx.write_event_to_stream(Token(text=f"t{i}"))
            await ctx.write_event_to_stream(Note(text=f"n{i}"))
        return StopEvent(result="said")


async def _types(server: object, run_id: str, **params: str) -> list[str]:
    client = server.client  # type: ignore[attr-defined]
    with trio.fail_after(10):
        response = await client.get(f"/runs/{run_id}/events", params={"format": "ndjson", **params})
    assert response.status_code == 200, response.text
    return [json.loads(line)["type"] for line in response.text.splitlines() if line.strip()]


async def test_types_filters_a_stream_and_the_terminal_event_always_comes() -> None:
    async with served({"talk": Talk()}) as server:
        run_id = await server.start("talk")
        await server.wait_status(run_id, "completed")
        assert await _types(server, run_id) == ["Token", "Note"] * 3 + ["StopEvent"]
        assert await _types(server, run_id, types="Token") == ["Token"] * 3 + ["StopEvent"]
        qualified = f"{Token.__module__}.{Token.__qualname__}"
        assert await _types(server, run_id, types=qualified) == ["Token"] * 3 + ["StopEvent"]
        assert await _types(server, run_id, types="Nothing") == ["StopEvent"]
        bad = await server.client.get(f"/runs/{run_id}/events", params={"types": ","})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")


async def test_lifecycle_events_over_http_on_request() -> None:
    """A run started with ?lifecycle=1 records its lifecycle events: a stream gets them when
    it names them (or LifecycleEvent), never by default; a run started without has none."""
    async with served({"talk": Talk()}) as server:
        run_id = await server.start("talk", lifecycle=1)
        await server.wait_status(run_id, "completed")
        assert await _types(server, run_id) == ["Token", "Note"] * 3 + ["StopEvent"]
        lifecycle = await _types(server, run_id, types="LifecycleEvent")
        assert lifecycle == ["StepStartedEvent", "StepFinishedEvent"] * 2 + ["StopEvent"]
        started = await _types(server, run_id, types="StepStartedEvent,Token")
        assert started == ["StepStartedEvent", "StepStartedEvent"] + ["Token"] * 3 + ["StopEvent"]

        # ?lifecycle=1 on the stream: every event and the lifecycle ones, in the run's order.
        everything = await _types(server, run_id, lifecycle="1")
        assert everything == [
            "StepStartedEvent",
            "StepFinishedEvent",
            "StepStartedEvent",
            *["Token", "Note"] * 3,
            "StepFinishedEvent",
            "StopEvent",
        ]
        with_tokens = await _types(server, run_id, lifecycle="1", types="Token")
        assert with_tokens == [*everything[:3], "Token", "Token", "Token", *everything[-2:]]

        plain = await server.start("talk")
        await server.wait_status(plain, "completed")
        assert await _types(server, plain, types="LifecycleEvent") == ["StopEvent"]
        assert await _types(server, plain, lifecycle="yes") == ["Token", "Note"] * 3 + ["StopEvent"]
        bad = await server.client.get(f"/runs/{plain}/events", params={"lifecycle": "all"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")
        bad = await server.client.post("/workflows/talk/runs", params={"lifecycle": "maybe"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")
