"""The anchor over HTTP: the ``Emitter`` workflow of ``_trioflow_serving`` in
llama-index-workflows, served by the anchor's own server (``WorkflowServer`` from
llama-agents-server, a Starlette app over its in-memory workflow store) on hypercorn's asyncio
worker (`_http_anchor_app`), with its defaults.

Runs start with ``POST /workflows/emit/run-nowait``; each client streams
``GET /events/{handler_id}?after_sequence=-1`` (SSE, from the run's first event: the store keeps
every event, and several clients may stream one run). As in ``_anchor``, the step's
``ctx.write_event_to_stream`` is a plain function: nothing leaves the step until it yields.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx
from workflows import Context, Workflow, step
from workflows.events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent

from benchmarks import _http_scenarios as http
from benchmarks._common import Metrics, Params
from benchmarks._http_common import blob, python
from benchmarks._http_scenarios import Target


# The workflow here mirrors the one in _trioflow_serving.py line for line on purpose: the same
# program written against each library is what makes the comparison fair.
class Emit(StartEvent):
    n: int
    size: int = 0
    interval: float = 0.0
    gated: bool = False


class Tick(Event):
    i: int
    at: float  # the server's perf_counter() just before the write
    data: str = ""


class Ready(InputRequiredEvent):
    pass


class Go(HumanResponseEvent):
    pass


class Emitter(Workflow):
    @step
    async def go(self, ctx: Context, ev: Emit) -> StopEvent:
        if ev.gated:
            await ctx.wait_for_event(Go, waiter_event=Ready())
        for i in range(ev.n):
            ctx.write_event_to_stream(Tick(i=i, at=time.perf_counter(), data=blob(ev.size)))
            if ev.interval:
                await asyncio.sleep(ev.interval)
        return StopEvent(result=ev.n)


async def _start(client: httpx.AsyncClient, fields: Mapping[str, Any]) -> str:
    response = await client.post("/workflows/emit/run-nowait", json={"start_event": dict(fields)})
    response.raise_for_status()
    handler_id: str = response.json()["handler_id"]
    return handler_id


def _events_path(handler_id: str) -> str:
    return f"/events/{handler_id}?after_sequence=-1"


async def _answer(client: httpx.AsyncClient, handler_id: str) -> None:
    response = await client.post(
        f"/events/{handler_id}", json={"event": {"type": "Go", "value": {}}}
    )
    response.raise_for_status()


TARGET = Target(
    argv=tuple(python("-m", "benchmarks._http_anchor_app")),
    marker="anchor: serving at",
    start=_start,
    events_path=_events_path,
    answer=_answer,
)


def serve(p: Params) -> Metrics:
    return http.serve(TARGET, p)


def serve_fanout(p: Params) -> Metrics:
    return http.serve_fanout(TARGET, p)


def sse_latency(p: Params) -> Metrics:
    return http.sse_latency(TARGET, p)


def http_backpressure(p: Params) -> Metrics:
    return http.http_backpressure(TARGET, p)
