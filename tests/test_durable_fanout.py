"""Durable runs of workflows that fan out, collect or join: the same results as in memory, and
runs resumed from every prefix of their journal (`test_durable`'s method) that end the same
without running a finished step again."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
import trio
import trio.lowlevel
from test_durable import PartConsent, Recorder, _terminal, run_durably

from trioflow import (
    CollectedEvents,
    Context,
    Event,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowRuntimeError,
    open_store,
    step,
)
from trioflow._durable import WorkerLost, codec_for, fingerprint, fold
from trioflow.collect import Take

#: Step executions, by (step, what it ran on): reset by each test's runs.
RAN: collections.Counter[tuple[str, object]] = collections.Counter()


class Go(StartEvent):
    n: int = 4


class Chunk(Event):
    i: int


class Done(Event):
    i: int


class Split(Workflow):
    @step
    async def split(self, ev: Go) -> list[Chunk]:
        RAN["split", ev.n] += 1
        return [Chunk(i=i) for i in range(ev.n)]

    @step(num_workers=3)
    async def work(self, ev: Chunk) -> Done:
        RAN["work", ev.i] += 1
        await trio.lowlevel.checkpoint()
        return Done(i=ev.i)

    @step
    async def join(self, done: list[Done]) -> StopEvent:
        RAN["join", None] += 1
        return StopEvent(result=sorted(d.i for d in done))


class First(Split):
    @step
    async def join(self, done: Annotated[list[Done], Take(2)]) -> StopEvent:
        RAN["join", None] += 1
        return StopEvent(result=len(done))


class Doc(Event):
    d: int


class Page(Event):
    d: int
    p: int


class Read(Event):
    d: int
    p: int


class DocRead(Event):
    d: int
    pages: list[int]


class Library(Workflow):
    @step
    async def docs(self, ev: Go) -> list[Doc]:
        RAN["docs", None] += 1
        return [Doc(d=d) for d in range(ev.n)]

    @step
    async def pages(self, ev: Doc) -> list[Page]:
        RAN["pages", ev.d] += 1
        return [Page(d=ev.d, p=p) for p in range(ev.d)]  # document 0 has none

    @step(num_workers=4)
    async def read(self, ev: Page) -> Read:
        RAN["read", (ev.d, ev.p)] += 1
        await trio.lowlevel.checkpoint()
        return Read(d=ev.d, p=ev.p)

    @step
    async def doc_read(self, reads: list[Read]) -> DocRead:
        RAN["doc_read", tuple(sorted((r.d, r.p) for r in reads))] += 1
        assert len({r.d for r in reads}) <= 1
        return DocRead(d=reads[0].d if reads else -1, pages=sorted(r.p for r in reads))

    @step
    async def all_read(self, docs: list[DocRead]) -> StopEvent:
        RAN["all_read", None] += 1
        return StopEvent(result=sorted((d.d, d.pages) for d in docs))


class Left(Event):
    n: int


class Right(Event):
    n: int


class Joined(Workflow):
    @step
    async def begin(self, ctx: Context, ev: Go) -> Left | Right | None:
        RAN["begin", None] += 1
        for n in range(ev.n):
            ctx.send_event(Right(n=n))
            ctx.send_event(Left(n=n))
        return None

    @step(num_workers=1)
    async def join(self, left: Left, ctx: Context, right: Right) -> StopEvent | None:
        RAN["join", (left.n, right.n)] += 1
        async with ctx.store.edit_state() as state:  # (run again on what it began from)
            pairs = state["pairs"] = [*state.get("pairs", []), [left.n, right.n]]
        return StopEvent(result=sorted(map(tuple, pairs))) if len(pairs) == 4 else None


class Ok(Event):
    i: int


class Rescued(Event):
    i: int


class Tally(Event):
    n: list[int]


class Lost(Event):
    items: list[int]


class Handled(Workflow):
    """Odd chunks fail; the error handler runs in the stream, and what it returns is collected
    with the rest."""

    @step
    async def split(self, ev: Go) -> list[Chunk]:
        RAN["split", None] += 1
        return [Chunk(i=i) for i in range(ev.n)]

    @step(num_workers=2)
    async def work(self, ev: Chunk) -> Ok:
        RAN["work", ev.i] += 1
        if ev.i % 2:
            raise ValueError(ev.i)
        return Ok(i=ev.i)

    @step
    async def rescue(self, ev: StepFailedEvent) -> Rescued:
        assert isinstance(ev.input_event, Chunk)
        RAN["rescue", ev.input_event.i] += 1
        return Rescued(i=ev.input_event.i)

    @step
    async def oks(self, oks: list[Ok]) -> Tally:
        RAN["oks", None] += 1
        return Tally(n=sorted(e.i for e in oks))

    @step
    async def rescued(self, rescued: list[Rescued]) -> Lost:
        RAN["rescued", None] += 1
        return Lost(items=sorted(e.i for e in rescued))

    @step
    async def report(self, tally: Tally, lost: Lost) -> StopEvent:
        RAN["report", None] += 1
        return StopEvent(result=(tally.n, lost.items))


class Fixed(Event):
    got: list[int]


class Recovered(Split):
    """The collector fails once per run; its error handler gets what it ran on (a
    `CollectedEvents`, journaled with the failure) and ends the run with it."""

    @step
    async def join(self, done: list[Done]) -> StopEvent:
        RAN["join", None] += 1
        raise RuntimeError("cannot join")

    @step
    async def fix(self, ev: StepFailedEvent) -> StopEvent:
        RAN["fix", None] += 1
        assert isinstance(ev.input_event, CollectedEvents)
        return StopEvent(result=sorted(e.i for e in ev.input_event.events))  # type: ignore[attr-defined]


class AskPart(InputRequiredEvent):
    part: int


class Review(Split):
    """Each member waits for its own answer (`run_durably` answers: even parts yes)."""

    @step(num_workers=4)
    async def work(self, ctx: Context, ev: Chunk) -> Done | None:  # type: ignore[override]
        RAN["work", ev.i] += 1
        answer = await ctx.wait_for_event(
            PartConsent, waiter_event=AskPart(part=ev.i), requirements={"part": ev.i}
        )
        return Done(i=ev.i) if answer.ok else None


CASES: dict[str, tuple[Callable[[], Workflow], Go]] = {
    "collect": (lambda: Split(timeout=None), Go(n=4)),
    "take": (lambda: First(timeout=None), Go(n=4)),
    "empty": (lambda: Split(timeout=None), Go(n=0)),
    "nested": (lambda: Library(timeout=None), Go(n=3)),
    "join": (lambda: Joined(timeout=None), Go(n=4)),
    "handler": (lambda: Handled(timeout=None), Go(n=4)),
    "wait": (lambda: Review(timeout=None), Go(n=3)),
    "failing collector": (lambda: Recovered(timeout=None), Go(n=3)),
}


def _check(kept: Recorder, resumed: Recorder, executions: collections.Counter[Any]) -> None:
    """What a crashed run (``kept``, its prefix) and its resumption did together is what one
    run does: each task finished once, each send routed once, nothing finished ran again (a
    step ran again only for a task that had started), one stream, one end."""
    both = Recorder(kept.ops + resumed.ops[len(kept.ops) :])
    records = both.records()
    done = [body["task"] for kind, body in records if kind == "done"]
    assert len(done) == len(set(done)), "a finished task finished again"
    causes = [tuple(b["cause"]) for k, b in records if isinstance(b.get("cause"), list)]
    assert len(causes) == len(set(causes)), "a send was routed twice"
    old = kept.records()
    finished = {b["task"] for k, b in old if k == "done" or (k == "fail" and b["final"])}
    new = records[len(old) :]
    started = [b["task"] for k, b in new if k == "start"]
    assert not finished & set(started), "a finished task ran again"
    assert sum(executions.values()) == len(started)  # every execution is journaled
    released = [(b["of"], b["to"][0]) for k, b in records if k == "route" and "of" in b]
    assert len(released) == len(set(released)), "a stream was released twice to a step"
    events = both.events()
    assert [s for s, _ in events] == list(range(1, len(events) + 1)), "the stream has a gap"
    assert sum(isinstance(e, StopEvent) for _, e in events) == 1
    assert isinstance(events[-1][1], StopEvent)
    lost = [
        e
        for _, e in resumed.events()[len(kept.events()) :]
        if isinstance(e, StepFailedEvent) and isinstance(e.exception, WorkerLost)
    ]
    was_running = {b["task"] for k, b in old if k == "start"} - finished
    assert len(lost) <= len(was_running)
    asked = [e.part for _, e in resumed.events()[len(kept.events()) :] if isinstance(e, AskPart)]
    waited = {b["req"]["part"] for k, b in old if k == "call" and b.get("req")}
    assert not waited & set(asked), "a question was asked again"


@pytest.mark.parametrize("case", list(CASES))
async def test_a_durable_fan_out_resumes_from_every_prefix_of_its_journal(case: str) -> None:
    make, start = CASES[case]
    if case != "wait":
        expected = await make().run(start)
    else:
        expected = [0, 2]
    RAN.clear()
    crashed = Recorder()
    assert await run_durably(make(), start, crashed) == expected
    if case == "take":
        assert RAN["join", None] == 1
    assert all(count == 1 for count in RAN.values()), RAN  # one uncrashed run: each once
    for cut in range(_terminal(crashed) + 1):
        kept = Recorder(crashed.ops[:cut])
        resumed = Recorder(kept.ops)
        RAN.clear()
        got = await run_durably(make(), start, resumed, kept=kept)
        assert got == expected, (cut, got)
        _check(kept, resumed, RAN)


@pytest.mark.parametrize("case", ["collect", "nested", "join", "handler", "wait"])
async def test_a_resumed_run_crashes_and_resumes_again(case: str) -> None:
    """A crash at every point of a run, then one halfway through what its resumption wrote:
    the second resumption reads a journal written by two processes."""
    make, start = CASES[case]
    crashed = Recorder()
    expected = await run_durably(make(), start, crashed)
    for cut in range(_terminal(crashed) + 1):
        kept = Recorder(crashed.ops[:cut])
        resumed = Recorder(kept.ops)
        await run_durably(make(), start, resumed, kept=kept)
        cut2 = (cut + _terminal(resumed)) // 2
        kept2 = Recorder(resumed.ops[:cut2])
        again = Recorder(kept2.ops)
        RAN.clear()
        assert await run_durably(make(), start, again, kept=kept2) == expected, (cut, cut2)
        _check(kept2, again, RAN)


async def test_a_crash_between_the_last_member_and_the_release_releases_at_resume() -> None:
    flow = Split(timeout=None)
    crashed = Recorder()
    await run_durably(flow, Go(n=2), crashed)
    ops = crashed.ops
    release = next(
        i for i, op in enumerate(ops) if getattr(op, "kind", "") == "route" and b'"of"' in op.body
    )
    assert json.loads(ops[release - 1].body)["task"]  # the last member's done just before
    kept = Recorder(ops[:release])
    replay = fold(kept.journal(), codec_for(flow), [s.name for s in flow.graph.steps])
    assert replay.scopes is not None
    assert [t.task for t in replay.pending.values()] == []  # nothing left to run but the release
    RAN.clear()
    resumed = Recorder(kept.ops)
    assert await run_durably(flow, Go(n=2), resumed, kept=kept) == [0, 1]
    assert dict(RAN) == {("join", None): 1}


def test_the_fingerprint_says_how_steps_fan_out_collect_and_join() -> None:
    assert fingerprint(Split()) != fingerprint(First())  # Take(2) against all

    class Plain(Workflow):
        @step
        async def go(self, ev: Go) -> StopEvent:
            return StopEvent()

    # A workflow that does none of these keeps the digest it had before (as computed then).
    import hashlib

    from trioflow._wire import field_types, qualified_name

    graph = Plain().graph
    parts = [qualified_name(graph.start_event_type), qualified_name(graph.stop_event_type)]
    parts.append(f"go({qualified_name(Go)})->{qualified_name(StopEvent)}")
    for event_type in graph.event_types():
        fields = ",".join(f"{name}:{tp!r}" for name, tp in field_types(event_type).items())
        parts.append(f"{qualified_name(event_type)}{{{fields}}}")
    assert fingerprint(Plain()) == hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


# -- on a SQLite store --


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/runs.db"


@pytest.mark.parametrize(
    "case", ["collect", "take", "empty", "nested", "join", "handler", "failing collector"]
)
async def test_a_fan_out_on_a_sqlite_store_ends_as_in_memory(tmp_path: Path, case: str) -> None:
    make, start = CASES[case]
    expected = await make().run(start)
    async with open_store(_url(tmp_path)) as store:
        assert await store.run(make(), start) == expected


async def test_members_waiting_for_answers_wait_on_across_a_restart(tmp_path: Path) -> None:
    """A run whose members wait for answers is suspended once they have asked (a shutdown);
    resumed from the file, they wait again without asking again, and the answers sent then
    complete the stream and its collector."""
    flow = Review(timeout=None)
    async with open_store(_url(tmp_path)) as store:
        with trio.CancelScope() as shutdown:
            async with store.start(flow, Go(n=3)) as handler:
                asked: set[int] = set()
                async for event in handler.stream_events():
                    if isinstance(event, AskPart):
                        asked.add(event.part)
                        if len(asked) == 3:
                            break
                await handler.send_event(PartConsent(part=1, ok=False))  # one before
                shutdown.cancel()
                await trio.sleep_forever()
    async with open_store(_url(tmp_path)) as store, store.resume([flow]) as handlers:
        (resumed,) = handlers
        await resumed.send_event(PartConsent(part=0, ok=True))
        await resumed.send_event(PartConsent(part=2, ok=True))
        after = [event async for event in resumed.stream_events()]
        assert await resumed.result() == [0, 2]
    assert not any(isinstance(e, AskPart) for e in after)


class NotAFanOut(Split):
    @step(num_workers=3)
    async def work(self, ev: Chunk) -> Done:
        return [Done(i=ev.i)]  # type: ignore[return-value]


class HoldsAStopEvent(Split):
    @step
    async def split(self, ev: Go) -> list[Chunk]:
        return [Chunk(i=0), StopEvent()]  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (NotAFanOut, r"fans out only when .*`list\[...\]`"),
        (HoldsAStopEvent, "a fan-out's list holds events for steps"),
    ],
    ids=["not a fan-out", "a stop event in the list"],
)
async def test_a_durable_run_refuses_a_list_that_is_no_fan_out_as_in_memory(
    tmp_path: Path, make: Callable[[], Workflow], said: str
) -> None:
    """The same refusals as a run in memory (one check for both), failing the run."""
    with pytest.raises(WorkflowRuntimeError, match=said):
        await make().run(Go())
    async with open_store(_url(tmp_path)) as store:
        with pytest.raises(WorkflowRuntimeError, match=said):
            await store.run(make(), Go())
