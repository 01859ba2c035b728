"""Durable fan-out shapes resumed from every prefix of their journals: retries (of the fan-out
step and of its members), Take(n) with slow members, handlers with failures_of, joins with
several workers, a join inside a stream, an empty fan-out then another."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Annotated, Any

import pytest
import trio
import trio.lowlevel
from test_durable import Recorder, _terminal, run_durably
from test_durable_fanout import RAN, Chunk, Done, Go, Split, _check

from trioflow import (
    Context,
    Event,
    RetryPolicy,
    StepFailedEvent,
    StopEvent,
    Workflow,
    step,
)
from trioflow.collect import Take

#: set by the test: the next execution of the fan-out step in this "process" fails once
FLAKY_AFTER_RESUME = {"on": False}
CALLS: collections.Counter[Any] = collections.Counter()


class RetrySplit(Split):
    @step(retry=RetryPolicy(max_attempts=3, delay=0.0))
    async def split(self, ev: Go) -> list[Chunk]:
        RAN["split", ev.n] += 1
        if FLAKY_AFTER_RESUME["on"]:
            FLAKY_AFTER_RESUME["on"] = False
            raise ConnectionError("transient, after a restart")
        return [Chunk(i=i) for i in range(ev.n)]


class RetryMembers(Split):
    """Each member fails its first attempt (per process) and is retried."""

    @step(num_workers=2, retry=RetryPolicy(max_attempts=3, delay=0.0))
    async def work(self, ev: Chunk) -> Done:
        RAN["work", ev.i] += 1
        CALLS["work", ev.i] += 1
        await trio.lowlevel.checkpoint()
        if CALLS["work", ev.i] == 1:
            raise ConnectionError(ev.i)
        return Done(i=ev.i)


class SlowTake(Split):
    @step(num_workers=4)
    async def work(self, ev: Chunk) -> Done:
        RAN["work", ev.i] += 1
        for _ in range(ev.i * 3):
            await trio.lowlevel.checkpoint()
        return Done(i=ev.i)

    @step
    async def join(self, done: Annotated[list[Done], Take(2)]) -> StopEvent:
        RAN["join", None] += 1
        return StopEvent(result=sorted(d.i for d in done))


class FailuresOf(Split):
    @step(num_workers=2)
    async def work(self, ev: Chunk) -> Done:
        RAN["work", ev.i] += 1
        await trio.lowlevel.checkpoint()
        if ev.i % 2:
            raise ValueError(ev.i)
        return Done(i=ev.i)

    @step(failures_of=["work"])
    async def rescue(self, ev: StepFailedEvent) -> Done:
        assert isinstance(ev.input_event, Chunk)
        RAN["rescue", ev.input_event.i] += 1
        return Done(i=100 + ev.input_event.i)


class L(Event):
    n: int


class R(Event):
    n: int


class Pair(Event):
    a: int
    b: int


class JoinWorkers(Workflow):
    @step
    async def begin(self, ctx: Context, ev: Go) -> L | R | None:
        RAN["begin", None] += 1
        for n in range(ev.n):
            ctx.send_event(L(n=n))
            ctx.send_event(R(n=n))
        return None

    @step(num_workers=3)
    async def join(self, left: L, ctx: Context, right: R) -> StopEvent | None:
        RAN["join", (left.n, right.n)] += 1
        await trio.lowlevel.checkpoint()
        async with ctx.store.edit_state() as state:
            pairs = state["pairs"] = [*state.get("pairs", []), [left.n, right.n]]
        return StopEvent(result=sorted(map(tuple, pairs))) if len(pairs) == 4 else None


class NestedJoin(Workflow):
    """A fan-out whose members make L or R, joined in the stream, the pairs collected."""

    @step
    async def split(self, ev: Go) -> list[Chunk]:
        RAN["split", None] += 1
        return [Chunk(i=i) for i in range(ev.n)]

    @step(num_workers=2)
    async def work(self, ev: Chunk) -> L | R:
        RAN["work", ev.i] += 1
        await trio.lowlevel.checkpoint()
        return L(n=ev.i) if ev.i % 2 == 0 else R(n=ev.i)

    @step
    async def pair(self, left: L, right: R) -> Pair:
        RAN["pair", (left.n, right.n)] += 1
        return Pair(a=left.n, b=right.n)

    @step
    async def pairs(self, got: list[Pair]) -> StopEvent:
        RAN["pairs", None] += 1
        return StopEvent(result=sorted((p.a, p.b) for p in got))


class Go2(Event):
    n: int


class Chunk2(Event):
    i: int


class Done2(Event):
    i: int


class ZeroThenMore(Workflow):
    @step
    async def split(self, ev: Go) -> list[Chunk]:
        RAN["split", None] += 1
        return []

    @step
    async def work(self, ev: Chunk) -> Done:
        RAN["work", ev.i] += 1
        return Done(i=ev.i)

    @step
    async def none(self, done: list[Done]) -> Go2:
        RAN["none", len(done)] += 1
        return Go2(n=3)

    @step
    async def split2(self, ev: Go2) -> list[Chunk2]:
        RAN["split2", None] += 1
        return [Chunk2(i=i) for i in range(ev.n)]

    @step(num_workers=2)
    async def work2(self, ev: Chunk2) -> Done2:
        RAN["work2", ev.i] += 1
        await trio.lowlevel.checkpoint()
        return Done2(i=ev.i)

    @step
    async def all2(self, done: list[Done2]) -> StopEvent:
        RAN["all2", None] += 1
        return StopEvent(result=sorted(d.i for d in done))


CASES: dict[str, tuple[Callable[[], Workflow], Go]] = {
    "retry members": (lambda: RetryMembers(timeout=None), Go(n=3)),
    "slow take": (lambda: SlowTake(timeout=None), Go(n=4)),
    "failures_of": (lambda: FailuresOf(timeout=None), Go(n=4)),
    "join workers": (lambda: JoinWorkers(timeout=None), Go(n=4)),
    "nested join": (lambda: NestedJoin(timeout=None), Go(n=4)),
    "zero then more": (lambda: ZeroThenMore(timeout=None), Go(n=0)),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_shapes_from_every_prefix(case: str) -> None:
    make, start = CASES[case]
    CALLS.clear()
    expected = await make().run(start)
    CALLS.clear()
    RAN.clear()
    crashed = Recorder()
    norm = (
        (lambda r: (sorted(a for a, _ in r), sorted(b for _, b in r)))
        if "join" in case
        else (lambda r: r)
    )
    assert norm(await run_durably(make(), start, crashed)) == norm(expected)
    failures = []
    for cut in range(_terminal(crashed) + 1):
        kept = Recorder(crashed.ops[:cut])
        resumed = Recorder(kept.ops)
        RAN.clear()
        CALLS.clear()
        try:
            got = await run_durably(make(), start, resumed, kept=kept)
            assert norm(got) == norm(expected), (cut, got, expected)
            if case != "retry members":  # retries start again (not per-task journaled)
                _check(kept, resumed, RAN)
        except BaseException as e:
            failures.append((cut, repr(e)[:160]))
    assert not failures, failures


async def test_a_fan_out_retried_after_a_resume_routes_each_member_once() -> None:
    """The fan-out step's lost attempt routed some members; after the resume its first
    attempt fails transiently, and the retry routes only the members still missing."""
    start = Go(n=4)
    FLAKY_AFTER_RESUME["on"] = False
    expected = await RetrySplit(timeout=None).run(start)
    crashed = Recorder()
    assert await run_durably(RetrySplit(timeout=None), start, crashed) == expected
    recs = crashed.records()
    # cut right after the second member's route (the split task not done yet)
    idx = [i for i, op in enumerate(crashed.ops) if getattr(op, "kind", "") == "route"]
    cut = idx[2] + 1  # start route, member 0, member 1
    kept = Recorder(crashed.ops[:cut])
    resumed = Recorder(kept.ops)
    FLAKY_AFTER_RESUME["on"] = True
    RAN.clear()
    got = await run_durably(RetrySplit(timeout=None), start, resumed, kept=kept)
    assert got == expected, (got, expected, recs[:4])


def _by_sides(result: Any) -> Any:
    """A join's pairs as the multisets of each side: which events pair depends on scheduling
    (with several workers), in memory as after a resume."""
    return sorted(a for a, _ in result), sorted(b for _, b in result)


def _as_is(result: Any) -> Any:
    return result
