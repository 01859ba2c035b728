"""trioflow: what a run costs: tiny runs, a long chain, many parked runs, a fan-in.
``_anchor_runs`` mirrors this module; ``_floor_runs`` is bare trio.

- **tiny**: a one-step workflow (``StartEvent -> StopEvent``) run to completion ``n`` times,
  one after another (``await wf.run(i=...)``), after one untimed run. ``rate``: runs per second.
- **chain**: a workflow of ``n`` steps, each taking the previous one's event (``StartEvent ->
  E0 -> E1 -> ... -> StopEvent``), its classes made at run time (`chain_workflow`).
  ``build_s``: the seconds to make the class and an instance (trioflow checks the graph when
  the workflow is built). Then ``runs`` runs one after another: ``run_ms`` is their median,
  ``first_run_ms`` the first; ``tasks_per_run`` the trio tasks spawned per run (a trio
  `Instrument` counting ``task_spawned``).
- **parked**: ``n`` runs at once, each in a nursery task (``await wf.run()``), whose one step
  waits in ``ctx.wait_for_event`` for an event that never comes. Once every step is waiting
  (each counted as it entered, then `trio.testing.wait_all_tasks_blocked`), RSS and the number
  of objects the garbage collector tracks (``len(gc.get_objects())``, after ``gc.collect()``)
  are taken again, against their values before the runs started: ``rss_kib_per_run`` and
  ``objects_per_run``; ``tasks_per_run`` is the trio tasks alive per run. Then the nursery is
  cancelled, all runs at once: ``cancel_ms`` is the time until the nursery has exited (every
  run over, every task gone), ``start_ms`` the time from the first start to every step
  waiting. One parked run started and cancelled first, untimed, so that what trioflow starts
  once per ``trio.run`` is not counted.
- **fanin**: a step returns ``n`` events (``-> list[Item]``), and a step that takes
  ``list[Item]`` collects them all (`trioflow.collect.Collect`, the default) and stops the run;
  variant ``collect_events``: the LlamaIndex way, the first step sends each with
  ``ctx.send_event`` and the collecting step takes one ``Item`` per call, calling
  ``ctx.collect_events(ev, [Item] * n)`` until it returns the ``n`` events. ``runs`` runs one
  after another: ``run_ms`` is their median, ``rate`` events per second over it.
"""

from __future__ import annotations

import time
from typing import Any

import trio
import trio.testing

from benchmarks._common import (
    Metrics,
    Params,
    chain_metrics,
    fanin_metrics,
    memory_now,
    parked_metrics,
)
from trioflow import Context, Event, StartEvent, StopEvent, Workflow, step


# The workflows here mirror those in _anchor_runs.py line for line on purpose: the same program
# written against each library is what makes the comparison fair.
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
    return trio.run(_tiny, p.n)


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
        fn.__qualname__ = f"Chain.s{k}"
        fn.__annotations__ = {"ev": source, "return": returns}
        return step(fn)

    namespace = {f"s{k}": make(k) for k in range(n)}
    return type("Chain", (Workflow,), {"__module__": __name__, **namespace})


class _Spawned(trio.abc.Instrument):
    def __init__(self) -> None:
        self.count = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.count += 1


async def _chain(n: int, runs: int, wf: Workflow) -> Metrics:
    spawned = _Spawned()
    trio.lowlevel.add_instrument(spawned)
    times: list[float] = []
    tasks: list[int] = []
    for _ in range(runs):
        before = spawned.count
        start = time.perf_counter()
        result = await wf.run()
        times.append(time.perf_counter() - start)
        tasks.append(spawned.count - before)
        assert result == n, (result, n)
    trio.lowlevel.remove_instrument(spawned)
    return chain_metrics(n, times, tasks)


def chain(p: Params) -> Metrics:
    start = time.perf_counter()
    wf = chain_workflow(p.n)(timeout=None)
    build = time.perf_counter() - start
    return {"build_s": build, **trio.run(_chain, p.n, p.runs, wf)}


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


def _alive() -> int:
    """Tasks alive in this trio run."""
    count, pending = 0, [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is not None:
            count += 1
            pending += [child for nursery in task.child_nurseries for child in nursery.child_tasks]
    return count


async def _park(wf: Workflow, n: int) -> tuple[tuple[int, int], tuple[int, int], int, float, float]:
    global _entered
    _entered = 0
    tasks_before = _alive()
    before = memory_now()
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(wf.run)
        while _entered < n:
            await trio.sleep(0.001)
        await trio.testing.wait_all_tasks_blocked()
        started = time.perf_counter() - start
        tasks = _alive() - tasks_before
        after = memory_now()
        cancelled_at = time.perf_counter()
        nursery.cancel_scope.cancel()
    return before, after, tasks, started, time.perf_counter() - cancelled_at


async def _parked(n: int) -> Metrics:
    wf = Parked(timeout=None)
    await _park(wf, 1)  # untimed: see the module's docstring
    before, after, tasks, started, cancelled = await _park(wf, n)
    return parked_metrics(n, before, after, tasks, started, cancelled)


def parked(p: Params) -> Metrics:
    return trio.run(_parked, p.n)


class Item(Event):
    i: int


class FanIn(Workflow):
    @step
    async def split(self, ev: StartEvent) -> list[Item]:
        return [Item(i=i) for i in range(ev.n)]

    @step
    async def join(self, items: list[Item]) -> StopEvent:
        return StopEvent(result=len(items))


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
    if p.variant not in ("", "collect_events"):
        raise ValueError(
            f"trioflow fanin variant must be '' or 'collect_events', not {p.variant!r}"
        )
    wf = CollectEvents(timeout=None) if p.variant else FanIn(timeout=None)
    return trio.run(_fanin, p.n, p.runs, wf)
