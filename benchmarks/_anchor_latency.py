"""The anchor: write-to-receipt latency and cancellation in llama-index-workflows (asyncio).

The same workflows as ``_trioflow_latency`` (read its docstring for what is measured), with
these differences, each the anchor's own way of doing the thing:

- **latency**: ``ctx.write_event_to_stream`` is a plain function that schedules a task per
  event, so an event can reach the consumer only once the writer yields; the writer awaits
  ``asyncio.sleep(0)`` after each write (``--variant burst``: never, so nothing arrives before
  the writer's loop has ended).
- **cancel**: the anchor has no thread steps. Its equivalent of a ``def`` step is an async step
  that runs each 1 ms blocking slice in ``asyncio.to_thread`` and writes an event between
  slices; the slice's own ``finally`` (in the thread) counts as that step's exit, so
  ``cancel_ms`` also waits for the thread code. Its ``ctx.wait_for_event`` does not suspend the
  step: it raises to the runtime and replays the whole step when the event arrives, so the
  waiting step has already exited when the run is cancelled (it still counts among the
  steps). The run is cancelled with ``await handler.cancel_run()``, the handler's documented
  way (its ``cancel()`` is deprecated): it queues a cancel tick for the control loop, which
  cancels the steps' asyncio tasks and waits for them (up to 0.5 s), but cannot stop a thread
  that ``to_thread`` started.
  The run is over when ``cancel_run()`` returns (``exit_ms``), and that is when ``tasks_left``
  (``asyncio.all_tasks()`` that were not alive before the rounds began) and ``threads_left``
  (slices still running in their thread) are counted. When a step has not exited by then,
  the round waits for it up to ``GRACE`` seconds; one that never exits makes ``cancel_ms``
  infinite.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from benchmarks._common import Metrics, Params
from benchmarks._floor_latency import cancel_metrics, check_variant, latency_metrics


# The workflows here mirror those in _trioflow_latency.py line for line on purpose: the same
# program written against each library is what makes the comparison fair.
class Stamp(Event):
    i: int


# Set by the writing step just before each write: event i was written at _written_at[i].
_written_at: list[float] = []


class Stamper(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n: int = ev.n
        pause: bool = ev.pause
        for i in range(n):
            stamp = Stamp(i=i)
            _written_at[i] = time.perf_counter()
            ctx.write_event_to_stream(stamp)
            if pause:
                await asyncio.sleep(0)
        return StopEvent(result=n)


async def _latency(n: int, pause: bool) -> Metrics:
    _written_at[:] = [0.0] * n
    wf = Stamper(timeout=None)
    latencies: list[float] = []
    handler = wf.run(n=n, pause=pause)
    ev: Any
    async for ev in handler.stream_events():
        now = time.perf_counter()
        if isinstance(ev, Stamp):
            latencies.append(now - _written_at[ev.i])
        elif isinstance(ev, StopEvent):
            break
    await handler
    assert len(latencies) == n, (len(latencies), n)
    return latency_metrics(latencies)


def latency(p: Params) -> Metrics:
    return asyncio.run(_latency(p.n, check_variant(p.variant)))


WORKERS = 4
STEPS = WORKERS + 2  # the fan-out's workers, the waiter and the thread step
SLICE = 0.001  # seconds a thread step blocks between two calls into its run
GRACE = 1.0  # seconds a round waits for steps that are still running once the run is over


class Job(Event):
    i: int


class Wait(Event):
    pass


class Grind(Event):
    pass


class Never(Event):
    """What the waiting step waits for: nobody sends it."""


class Started(Event):
    step: str


class Beat(Event):
    pass


class _Round:
    """What the steps of one round note: how many entered, and when each left.

    The slices count in counters of their own, which no other thread writes: ``+=`` is not
    atomic across threads (``list.append`` is). One slice runs at a time.
    """

    def __init__(self) -> None:
        self.tasks_entered = 0
        self.threads_entered = 0
        self.thread_exits = 0
        self.exits: list[float] = []
        self.thread_exits_at: list[float] = []

    @property
    def running(self) -> int:
        """Step code still running: async steps and slices that have not left yet."""
        return self.tasks_entered - len(self.exits) + self.threads_entered - self.thread_exits


_round = _Round()


def _block(seconds: float) -> None:
    _round.threads_entered += 1
    try:
        time.sleep(seconds)
    finally:
        _round.thread_exits_at.append(time.perf_counter())
        _round.thread_exits += 1


class Stuck(Workflow):
    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Job | Wait | Grind | None:
        for i in range(WORKERS):
            ctx.send_event(Job(i=i))
        ctx.send_event(Wait())
        ctx.send_event(Grind())
        return None

    @step(num_workers=WORKERS)
    async def work(self, ctx: Context, ev: Job) -> None:
        _round.tasks_entered += 1
        try:
            ctx.write_event_to_stream(Started(step=f"work {ev.i}"))
            await asyncio.sleep(math.inf)
        finally:
            _round.exits.append(time.perf_counter())

    @step
    async def wait(self, ctx: Context, ev: Wait) -> StopEvent:
        _round.tasks_entered += 1
        try:
            ctx.write_event_to_stream(Started(step="wait"))
            await ctx.wait_for_event(Never)
            return StopEvent(result="never")
        finally:
            _round.exits.append(time.perf_counter())

    @step
    async def grind(self, ctx: Context, ev: Grind) -> StopEvent:
        _round.tasks_entered += 1
        try:
            ctx.write_event_to_stream(Started(step="grind"))
            while True:
                await asyncio.to_thread(_block, SLICE)
                ctx.write_event_to_stream(Beat())
        finally:
            _round.exits.append(time.perf_counter())


async def _cancel_once() -> tuple[float, float, float, set[asyncio.Task[Any]], int]:
    """One round: start, wait until every step runs, cancel. Returns the seconds from
    cancelling to the last async step's exit, to the last step's exit (the thread's code
    included) and to the run being over, and the tasks alive and slices running then."""
    global _round
    _round = _Round()
    wf = Stuck(timeout=None)
    handler = wf.run()
    started = 0
    ev: Any
    async for ev in handler.stream_events():
        if isinstance(ev, Started):
            started += 1
            if started == STEPS:
                break
    cancelled_at = time.perf_counter()
    await handler.cancel_run()
    over_at = time.perf_counter()
    tasks = asyncio.all_tasks()
    threads_left = _round.threads_entered - _round.thread_exits
    deadline = over_at + GRACE
    while _round.running and time.perf_counter() < deadline:
        await asyncio.sleep(0.001)
    last_exit = math.inf if _round.running else max(_round.exits + _round.thread_exits_at)
    async_exit = math.inf if _round.tasks_entered > len(_round.exits) else max(_round.exits)
    return (
        async_exit - cancelled_at,
        last_exit - cancelled_at,
        over_at - cancelled_at,
        tasks,
        threads_left,
    )


async def _cancel(rounds: int) -> Metrics:
    await _cancel_once()  # untimed, as in _trioflow_latency
    baseline = asyncio.all_tasks()
    to_last_async: list[float] = []
    to_last_step: list[float] = []
    to_run_over: list[float] = []
    tasks_left = threads_left = 0
    for _ in range(rounds):
        async_exit, step_exit, run_over, tasks, threads = await _cancel_once()
        to_last_async.append(async_exit)
        to_last_step.append(step_exit)
        to_run_over.append(run_over)
        tasks_left = max(tasks_left, len(tasks - baseline))
        threads_left = max(threads_left, threads)
    return cancel_metrics(STEPS, to_last_async, to_last_step, to_run_over, tasks_left, threads_left)


def cancel(p: Params) -> Metrics:
    return asyncio.run(_cancel(p.n))
