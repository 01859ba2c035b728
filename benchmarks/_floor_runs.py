"""The floor of what a run costs: bare trio, a run being what structured concurrency needs at
least (read ``_trioflow_runs`` for what is measured):

- **tiny**: a run is a nursery with one task that computes the result and puts it where the
  caller reads it; ``n`` of them one after another.
- **chain**: ``n`` tasks, one per step, started in one nursery; each parks
  (`trio.lowlevel.wait_task_rescheduled`) until the one before hands it the value
  (`trio.lowlevel.reschedule`), hands ``value + 1`` to the next and ends. ``run_ms``: from the
  nursery's opening to its exit; ``tasks_per_run``: spawned per run, counted as for trioflow.
  There is nothing to build (``build_s`` is 0).
- **parked**: ``n`` tasks in one nursery, each in ``trio.sleep_forever()``; the memory per
  parked task, and the time for the nursery to exit once cancelled.

There is no floor for the fan-in: the events a step makes are a list, in bare trio, that the
collecting code reads; there is nothing in between to measure.
"""

from __future__ import annotations

import time

import trio
import trio.testing
from outcome import Value
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from benchmarks._common import Metrics, Params, chain_metrics, memory_now, parked_metrics


async def _one(box: list[int], i: int) -> None:
    box.append(i)


async def _tiny(n: int) -> Metrics:
    start = time.perf_counter()
    for i in range(n):
        box: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_one, box, i)
        assert box == [i], (box, i)
    elapsed = time.perf_counter() - start
    return {"runs": n, "seconds": elapsed, "rate": n / elapsed, "us_per_run": elapsed / n * 1e6}


def tiny(p: Params) -> Metrics:
    return trio.run(_tiny, p.n)


def _abort(_: object) -> Abort:
    return Abort.SUCCEEDED


class _Spawned(trio.abc.Instrument):
    def __init__(self) -> None:
        self.count = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.count += 1


async def _chain_once(n: int) -> int:
    tasks: list[Task | None] = [None] * n
    result: list[int] = []

    async def link(k: int) -> None:
        tasks[k] = current_task()
        value: int = await wait_task_rescheduled(_abort)
        if k == n - 1:
            result.append(value + 1)
            return
        following = tasks[k + 1]
        assert following is not None
        reschedule(following, Value(value + 1))

    async with trio.open_nursery() as nursery:
        for k in range(n):
            nursery.start_soon(link, k)
        while tasks[0] is None or tasks[n - 1] is None:  # every task runs in the first batch
            await trio.lowlevel.checkpoint()
        first = tasks[0]
        assert first is not None
        reschedule(first, Value(0))
    return result[0]


async def _chain(n: int, runs: int) -> Metrics:
    spawned = _Spawned()
    trio.lowlevel.add_instrument(spawned)
    times: list[float] = []
    tasks: list[int] = []
    for _ in range(runs):
        before = spawned.count
        start = time.perf_counter()
        result = await _chain_once(n)
        times.append(time.perf_counter() - start)
        tasks.append(spawned.count - before)
        assert result == n, (result, n)
    trio.lowlevel.remove_instrument(spawned)
    return chain_metrics(n, times, tasks)


def chain(p: Params) -> Metrics:
    return {"build_s": 0.0, **trio.run(_chain, p.n, p.runs)}


async def _parked(n: int) -> Metrics:
    before = memory_now()
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(trio.sleep_forever)
        await trio.testing.wait_all_tasks_blocked()
        started = time.perf_counter() - start
        after = memory_now()
        cancelled_at = time.perf_counter()
        nursery.cancel_scope.cancel()
    return parked_metrics(n, before, after, n, started, time.perf_counter() - cancelled_at)


def parked(p: Params) -> Metrics:
    return trio.run(_parked, p.n)
