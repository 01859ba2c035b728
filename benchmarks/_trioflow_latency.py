"""trioflow: write-to-receipt latency and cancellation; ``_anchor_latency`` mirrors this module.

**latency**: a step writes ``n`` events with ``await ctx.write_event_to_stream(...)`` and awaits
``trio.sleep(0)`` after each, as a writer does that has other async work between events (the
realistic case); ``--variant burst`` writes back to back instead, so the figures are mostly
time spent queueing in the stream's buffer. Each event's write time is taken just before the
write, after the event is built (a table indexed by the event's number, so neither library pays
for building its events); the consumer (``handler.stream_events()``) notes its clock as soon as
it receives an event. Reports p50, p99 and max of receipt minus write, in microseconds.

**cancel**: ``n`` rounds, each one run of a workflow with six steps running at once: four
workers of a fan-out sleeping in ``trio.sleep_forever()``, one step in ``ctx.wait_for_event`` for
an event that never comes, and a plain ``def`` step in a worker thread that blocks in 1 ms slices
(``time.sleep``, as a synchronous client waits) and writes an event to the stream between slices.
Every step writes ``Started`` once it runs and notes the time in a ``finally``. Once the consumer
has seen all six ``Started``, ``handler.cancel()`` is called inside ``async with wf.start()``.
Medians over the rounds, in milliseconds, of the time from ``cancel()`` to the last step's exit
(``cancel_ms``; a thread can only notice at its next ``ctx`` call, so this includes the rest of
the thread's slice), to the last async step's exit (``async_ms``) and to the exit of the
``async with`` block (``exit_ms``). After each block: ``tasks_left``, the tasks alive that were
not before the rounds began, and ``threads_left``, thread steps whose code is still running
(entered, no ``finally`` yet); the largest counts after any round. Idle worker threads that trio
caches for reuse run no step code, so they do not count. One untimed round comes first, so that
what trioflow starts once per ``trio.run`` (its loop-blocking detector: a system task and a
thread, both stopped when ``trio.run`` returns) is part of the baseline rather than counted as
left behind.
"""

from __future__ import annotations

import math
import time

import trio

from benchmarks._common import Metrics, Params
from benchmarks._floor_latency import cancel_metrics, check_variant, latency_metrics
from trioflow import Context, Event, StartEvent, StopEvent, SyncContext, Workflow, step


# The workflows here mirror those in _anchor_latency.py line for line on purpose: the same
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
            await ctx.write_event_to_stream(stamp)
            if pause:
                await trio.sleep(0)
        return StopEvent(result=n)


async def _latency(n: int, pause: bool) -> Metrics:
    _written_at[:] = [0.0] * n
    wf = Stamper(timeout=None)
    latencies: list[float] = []
    async with wf.start(n=n, pause=pause) as handler:
        async for ev in handler.stream_events():
            now = time.perf_counter()
            if isinstance(ev, Stamp):
                latencies.append(now - _written_at[ev.i])
            elif isinstance(ev, StopEvent):
                break
        await handler.result()
    assert len(latencies) == n, (len(latencies), n)
    return latency_metrics(latencies)


def latency(p: Params) -> Metrics:
    return trio.run(_latency, p.n, check_variant(p.variant))


WORKERS = 4
STEPS = WORKERS + 2  # the fan-out's workers, the waiter and the thread step
SLICE = 0.001  # seconds a thread step blocks between two calls into its run


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

    The thread step counts in counters of its own, which no other thread writes: ``+=`` is
    not atomic across threads (``list.append`` is).
    """

    def __init__(self) -> None:
        self.tasks_entered = 0
        self.threads_entered = 0
        self.thread_exits = 0
        self.exits: list[float] = []
        self.thread_exits_at: list[float] = []

    @property
    def entered(self) -> int:
        return self.tasks_entered + self.threads_entered

    @property
    def running(self) -> int:
        """Step code still running: async steps and thread steps that have not left yet."""
        return self.tasks_entered - len(self.exits) + self.threads_entered - self.thread_exits


_round = _Round()


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
            await ctx.write_event_to_stream(Started(step=f"work {ev.i}"))
            await trio.sleep_forever()
        finally:
            _round.exits.append(time.perf_counter())

    @step
    async def wait(self, ctx: Context, ev: Wait) -> StopEvent:
        _round.tasks_entered += 1
        try:
            await ctx.write_event_to_stream(Started(step="wait"))
            await ctx.wait_for_event(Never)
            return StopEvent(result="never")
        finally:
            _round.exits.append(time.perf_counter())

    @step
    def grind(self, ctx: SyncContext, ev: Grind) -> StopEvent:
        _round.threads_entered += 1
        try:
            ctx.write_event_to_stream(Started(step="grind"))
            while True:
                time.sleep(SLICE)
                ctx.write_event_to_stream(Beat())
        finally:
            _round.thread_exits_at.append(time.perf_counter())
            _round.thread_exits += 1


def _all_tasks() -> set[trio.lowlevel.Task]:
    found: set[trio.lowlevel.Task] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is not None:
            found.add(task)
            pending += [child for nursery in task.child_nurseries for child in nursery.child_tasks]
    return found


async def _cancel_once() -> tuple[float, float, float]:
    """One round: start, wait until every step runs, cancel. Returns the seconds from
    ``cancel()`` to the last async step's exit, to the last step's exit (the thread step
    included) and to the exit of the ``async with`` block."""
    global _round
    _round = _Round()
    wf = Stuck(timeout=None)
    started = 0
    async with wf.start() as handler:
        async for ev in handler.stream_events():
            if isinstance(ev, Started):
                started += 1
                if started == STEPS:
                    break
        cancelled_at = time.perf_counter()
        handler.cancel()
    over_at = time.perf_counter()
    assert _round.entered == STEPS, (_round.entered, STEPS)
    last_exit = math.inf if _round.running else max(_round.exits + _round.thread_exits_at)
    async_exit = math.inf if _round.tasks_entered > len(_round.exits) else max(_round.exits)
    return async_exit - cancelled_at, last_exit - cancelled_at, over_at - cancelled_at


async def _cancel(rounds: int) -> Metrics:
    await _cancel_once()  # untimed: see the module's docstring
    baseline = _all_tasks()
    to_last_async: list[float] = []
    to_last_step: list[float] = []
    to_run_over: list[float] = []
    tasks_left = threads_left = 0
    for _ in range(rounds):
        async_exit, step_exit, run_over = await _cancel_once()
        to_last_async.append(async_exit)
        to_last_step.append(step_exit)
        to_run_over.append(run_over)
        tasks_left = max(tasks_left, len(_all_tasks() - baseline))
        threads_left = max(threads_left, _round.threads_entered - _round.thread_exits)
    return cancel_metrics(STEPS, to_last_async, to_last_step, to_run_over, tasks_left, threads_left)


def cancel(p: Params) -> Metrics:
    return trio.run(_cancel, p.n)
