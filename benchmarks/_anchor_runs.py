"""The anchor: what a run costs, in llama-index-workflows (asyncio). The same programs as
``_trioflow_runs`` (read its docstring for what is measured), with these differences, each the
anchor's own way of doing the thing:

- **chain**: ``tasks_per_run`` counts the asyncio tasks created per run (a task factory on the
  loop that counts, then makes the task as the loop would). The anchor checks its graph when
  a run starts, not when the workflow is built, so that cost is in ``run_ms``.
- **parked**: ``wf.run()`` returns a handler (a future) at once; ``n`` of them are started
  without a task of ours each. Its ``ctx.wait_for_event`` does not suspend the step: the step
  raises to the runtime, which replays it when the event arrives; so the run is parked once
  its step has entered and the loop is quiet (the number of asyncio tasks has not changed over
  a 20 ms sleep). ``tasks_per_run``: asyncio tasks alive per run. All runs are cancelled with
  ``handler.cancel_run()`` (its documented way), all at once (``asyncio.gather``);
  ``cancel_ms`` is the time until every handler is done.
- **fanin**: the first step sends ``n`` events with ``ctx.send_event``; the collecting step is
  called once per event and calls ``ctx.collect_events(ev, [Item] * n)`` until it returns them
  all (the anchor's way to collect; it has no ``list[E]`` returns).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Generator
from typing import Any

from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from benchmarks._common import (
    Metrics,
    Params,
    chain_metrics,
    fanin_metrics,
    memory_now,
    parked_metrics,
)


# The workflows here mirror those in _trioflow_runs.py line for line on purpose: the same
# program written against each library is what makes the comparison fair.
class Tiny(Workflow):
    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.i)


async def _tiny(n: int) -> Metrics:
    wf = Tiny(timeout=None)
    await wf.run(i=-1)  # untimed
    start = time.perf_counter()
    for i in range(n):
        result = await wf.run(i=i)
        assert result == i, (result, i)
    elapsed = time.perf_counter() - start
    return {"runs": n, "seconds": elapsed, "rate": n / elapsed, "us_per_run": elapsed / n * 1e6}


def tiny(p: Params) -> Metrics:
    return asyncio.run(_tiny(p.n))


def chain_workflow(n: int) -> type[Workflow]:
    """A workflow class of ``n`` steps ``s0 ... s{n-1}``, step ``k`` taking event ``E{k-1}`` (the
    StartEvent for ``s0``) and returning ``E{k}`` (the StopEvent for the last)."""
    events = [type(f"E{k}", (Event,), {"__module__": __name__}) for k in range(n - 1)]

    def make(k: int) -> Any:
        source = StartEvent if k == 0 else events[k - 1]
        if k == n - 1:

            async def last(self: Workflow, ev: Event) -> StopEvent:
                return StopEvent(result=n)

            fn: Any = last
            returns: type[Event] = StopEvent
        else:
            returns = events[k]

            async def middle(self: Workflow, ev: Event) -> Event:
                return returns()

            fn = middle
        fn.__name__ = f"s{k}"
        fn.__qualname__ = f"Chain.s{k}"  # the anchor's @step wants a method's qualified name
        fn.__annotations__ = {"ev": source, "return": returns}
        return step(fn)

    namespace = {f"s{k}": make(k) for k in range(n)}
    chain: type[Workflow] = type("Chain", (Workflow,), {"__module__": __name__, **namespace})
    return chain


class _Counted:
    """A task factory that counts the tasks it makes."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        self.count += 1
        return asyncio.Task(coro, loop=loop, **kwargs)


async def _chain(n: int, runs: int, wf: Workflow) -> Metrics:
    counted = _Counted()
    asyncio.get_running_loop().set_task_factory(counted)
    times: list[float] = []
    tasks: list[int] = []
    for _ in range(runs):
        before = counted.count
        start = time.perf_counter()
        result = await wf.run()
        times.append(time.perf_counter() - start)
        tasks.append(counted.count - before)
        assert result == n, (result, n)
    return chain_metrics(n, times, tasks)


def chain(p: Params) -> Metrics:
    start = time.perf_counter()
    wf = chain_workflow(p.n)(timeout=None)
    build = time.perf_counter() - start
    return {"build_s": build, **asyncio.run(_chain(p.n, p.runs, wf))}


class Never(Event):
    """What a parked run waits for: nobody sends it."""


_entered = 0


class Parked(Workflow):
    @step
    async def wait(self, ctx: Context, ev: StartEvent) -> StopEvent:
        global _entered
        _entered += 1
        await ctx.wait_for_event(Never)
        return StopEvent(result="never")


async def _quiet() -> None:
    """Until the number of asyncio tasks stays the same over a 20 ms sleep."""
    count = -1
    while count != len(asyncio.all_tasks()):
        count = len(asyncio.all_tasks())
        await asyncio.sleep(0.02)


async def _park(wf: Workflow, n: int) -> tuple[tuple[int, int], tuple[int, int], int, float, float]:
    global _entered
    _entered = 0
    tasks_before = len(asyncio.all_tasks())
    before = memory_now()
    start = time.perf_counter()
    handlers = [wf.run() for _ in range(n)]
    while _entered < n:
        await asyncio.sleep(0.001)
    await _quiet()
    started = time.perf_counter() - start
    tasks = len(asyncio.all_tasks()) - tasks_before
    after = memory_now()
    cancelled_at = time.perf_counter()
    await asyncio.gather(*(handler.cancel_run() for handler in handlers))
    while not all(handler.done() for handler in handlers):
        await asyncio.sleep(0.001)
    cancelled = time.perf_counter() - cancelled_at
    return before, after, tasks, started, cancelled


async def _parked(n: int) -> Metrics:
    wf = Parked(timeout=None)
    await _park(wf, 1)  # untimed, as in _trioflow_runs
    before, after, tasks, started, cancelled = await _park(wf, n)
    return parked_metrics(n, before, after, tasks, started, cancelled)


def parked(p: Params) -> Metrics:
    return asyncio.run(_parked(p.n))


class Item(Event):
    i: int


class CollectEvents(Workflow):
    @step
    async def split(self, ctx: Context, ev: StartEvent) -> Item | None:
        for i in range(ev.n):
            ctx.send_event(Item(i=i))
        return None

    @step
    async def join(self, ctx: Context, ev: Item) -> StopEvent | None:
        items = ctx.collect_events(ev, [Item] * _fan_n)
        if items is None:
            return None
        return StopEvent(result=len(items))


#: How many events ``CollectEvents.join`` waits for (a class-level constant in a real program).
_fan_n = 0


async def _fanin(n: int, runs: int, wf: Workflow) -> Metrics:
    global _fan_n
    _fan_n = n
    times: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        result = await wf.run(n=n)
        times.append(time.perf_counter() - start)
        assert result == n, (result, n)
    return fanin_metrics(n, times)


def fanin(p: Params) -> Metrics:
    return asyncio.run(_fanin(p.n, p.runs, CollectEvents(timeout=None)))
