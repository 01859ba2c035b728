"""trioflow over HTTP: the ``Emitter`` workflow of ``_anchor_serving``, served by ``trioflow
serve`` (hypercorn's trio worker) exactly as a user would run it::

    python -m trioflow serve benchmarks._trioflow_serving:WORKFLOWS --port 0

with the server's defaults (``retain`` 1,024 events per run, the workflow's ``stream_buffer``).
The scenarios and the client are shared with the anchor (`_http_scenarios`); see there for what
each one measures.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx
import trio

from benchmarks import _http_scenarios as http
from benchmarks._common import Metrics, Params
from benchmarks._http_common import blob, python
from benchmarks._http_scenarios import Target
from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


# The workflow here mirrors the one in _anchor_serving.py line for line on purpose: the same
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
            await ctx.write_event_to_stream(Tick(i=i, at=time.perf_counter(), data=blob(ev.size)))
            if ev.interval:
                await trio.sleep(ev.interval)
        return StopEvent(result=ev.n)


#: What ``trioflow serve benchmarks._trioflow_serving:WORKFLOWS`` serves.
WORKFLOWS: dict[str, Workflow] = {"emit": Emitter(timeout=None)}


async def _start(client: httpx.AsyncClient, fields: Mapping[str, Any]) -> str:
    response = await client.post("/workflows/emit/runs", json=dict(fields))
    response.raise_for_status()
    run_id: str = response.json()["run_id"]
    return run_id


def _events_path(run_id: str) -> str:
    return f"/runs/{run_id}/events"


async def _answer(client: httpx.AsyncClient, run_id: str) -> None:
    response = await client.post(f"/runs/{run_id}/events", json={"type": "Go", "data": {}})
    response.raise_for_status()


async def _watchers(client: httpx.AsyncClient, run_id: str) -> int:
    response = await client.get(f"/runs/{run_id}")
    response.raise_for_status()
    watchers: int = response.json()["watchers"]
    return watchers


TARGET = Target(
    argv=tuple(
        python("-m", "trioflow", "serve", "benchmarks._trioflow_serving:WORKFLOWS", "--port", "0")
    ),
    marker="dashboard at",
    start=_start,
    events_path=_events_path,
    answer=_answer,
    watchers=_watchers,
)


def serve(p: Params) -> Metrics:
    return http.serve(TARGET, p)


def serve_fanout(p: Params) -> Metrics:
    return http.serve_fanout(TARGET, p)


def sse_latency(p: Params) -> Metrics:
    return http.sse_latency(TARGET, p)


def http_backpressure(p: Params) -> Metrics:
    return http.http_backpressure(TARGET, p)
