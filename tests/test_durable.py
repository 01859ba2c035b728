"""Durable runs in process: the journal, and runs resumed from every prefix of it.

A run is journaled to a store that only keeps a list (`Recorder`): its journal records and
its stream events, in the one order a store commits them. A crash keeps a prefix of that
list; the run is resumed from each prefix in a fresh run, and what the two did together must
be what one uncrashed run does: the same result, each finished task done once, no send routed
twice, one dense stream with one terminal event, one `StepFailedEvent` (`WorkerLost`) for each
task that was running, and no question asked twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RetryPolicy,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    SyncContext,
    Workflow,
    WorkflowRuntimeError,
    step,
)
from trioflow._durable import (
    JournaledError,
    NotJournalable,
    ReplayError,
    WorkerLost,
    codec_for,
    fingerprint,
    fold,
    start_durable,
)
from trioflow._store import JournalEntry


class Recorder:
    """A store that keeps what it is given, in order: journal records and stream events."""

    def __init__(self, kept: list[Any] | None = None) -> None:
        self.ops: list[Any] = list(kept or [])

    def append(self, operation: Any) -> int:
        self.ops.append(operation)
        return 0

    async def flushed(self, commits: int) -> None:
        await trio.lowlevel.checkpoint()

    def holds(self, run_id: str) -> bool:
        return True

    def journal(self) -> list[tuple[int, str, bytes]]:
        return [(op.n, op.kind, op.body) for op in self.ops if isinstance(op, JournalEntry)]

    def records(self) -> list[tuple[str, dict[str, Any]]]:
        return [(kind, json.loads(body)) for _, kind, body in self.journal()]

    def events(self) -> list[tuple[int, Event]]:
        return [(op.seq, op.event) for op in self.ops if isinstance(op, Written)]


@attrs.frozen
class Written:
    """A stream event as `Recorder` keeps it."""

    seq: int
    event: Event


class Sink:
    """A stream sink writing to a `Recorder` (the event itself stands in for its row)."""

    def __init__(self, store: Recorder, seq: int = 0) -> None:
        self.store = store
        self.seq = seq

    def attach(self, fail: Callable[[Exception], bool]) -> None:
        pass

    def has_room(self) -> bool:
        return True

    async def wait_for_room(self) -> None:
        await trio.lowlevel.checkpoint()

    def write(self, seq: int, event: Event) -> None:
        self.store.append(Written(seq, event))
        self.seq = seq


async def run_durably(
    workflow: Workflow,
    start: StartEvent,
    store: Recorder,
    *,
    kept: Recorder | None = None,
    answer: Event | None = None,
) -> Any:
    """Run ``workflow`` journaled to ``store`` (resumed from ``kept``, a crashed run's
    prefix, if given) to its end; send ``answer`` when a step waits for a `Consent`, and
    `part_answer` to each step that waits for a `PartConsent`. Returns the result, or the
    exception the run ended with."""
    replay = None
    seq = 0
    if kept is not None:
        replay = fold(kept.journal(), codec_for(workflow), [s.name for s in workflow.graph.steps])
        seq = max((s for s, _ in kept.events()), default=0)
    sink = Sink(store, seq)
    with trio.fail_after(10):
        try:
            async with start_durable(
                workflow, start, store=store, run_id="run", sink=sink, replay=replay
            ) as handler:
                run = handler._run
                answered: list[object] = []  # the waiters themselves: ids are reused
                while not run.state.decided:
                    for waiter in list(run.router.waiters):
                        if waiter.task is None or not waiter.parked:
                            continue
                        if any(waiter is done for done in answered):
                            continue
                        if waiter.event_type is PartConsent:
                            answered.append(waiter)
                            await handler.send_event(part_answer(waiter.requirements["part"]))
                        elif answer is not None:
                            answered.append(waiter)
                            await handler.send_event(answer)
                            answer = None  # once
                    await trio.sleep(0.001)
                await run.state.finished.wait()
                return handler.result_nowait()
        except Exception as error:  # the run's failure, as leaving its block raises it
            return error


# -- workflows: deterministic (one worker per step), each using the journaled calls --


class Part(Event):
    i: int


class Summed(Event):
    total: int


class AskConsent(InputRequiredEvent):
    question: str


class Consent(HumanResponseEvent):
    ok: bool


class AskPart(InputRequiredEvent):
    part: int


class PartConsent(HumanResponseEvent):
    part: int
    ok: bool


def part_answer(part: int) -> PartConsent:
    """The answer the driver gives each part's question: even parts are approved."""
    return PartConsent(part=part, ok=part % 2 == 0)


class Plan(StartEvent):
    parts: int = 3
    flaky: bool = False
    #: Each part waits for its own answer (several waits at once), and counts if approved.
    ask_each: bool = False


class FanFlow(Workflow):
    """Fans out ``parts`` events by send_event, collects them, keeps a store total, asks a
    human (with ``ask_each``, each part asks for its own answer too), and (``flaky``) fails
    a step's first attempt once."""

    @step
    async def split(self, ctx: Context, ev: Plan) -> Part | None:
        await ctx.store.set("parts", ev.parts)
        await ctx.store.set("flaky", ev.flaky)
        await ctx.store.set("ask_each", ev.ask_each)
        for i in range(ev.parts):
            await ctx.write_event_to_stream(Part(i=i))
            ctx.send_event(Part(i=i))
        return None

    @step(retry=RetryPolicy(max_attempts=2, delay=0.001))
    async def work(self, ctx: Context, ev: Part) -> Summed | None:
        if await ctx.store.get("flaky") and ev.i == 0 and not await ctx.store.get("failed"):
            await ctx.store.set("failed", True)
            raise ValueError("first attempt of part 0")
        parts = await ctx.store.get("parts")
        if await ctx.store.get("ask_each"):
            reply = await ctx.wait_for_event(
                PartConsent, waiter_event=AskPart(part=ev.i), requirements={"part": ev.i}
            )
            if not reply.ok:
                ev = Part(i=0)  # counts nothing
        got = ctx.collect_events(ev, [Part] * parts)
        if got is None:
            return None
        return Summed(total=sum(p.i * p.i for p in got if isinstance(p, Part)))

    @step
    async def ask(self, ctx: Context, ev: Summed) -> StopEvent:
        answer = await ctx.wait_for_event(Consent, waiter_event=AskConsent(question="ok?"))
        await ctx.store.set("answer", answer.ok)
        return StopEvent(result={"total": ev.total, "ok": answer.ok, "key": ctx.task_key})


def _check_resumed(crashed: Recorder, cut: int, resumed: Recorder, expected: Any, got: Any) -> None:
    kept = Recorder(crashed.ops[:cut])
    both = Recorder(kept.ops + resumed.ops[len(kept.ops) :])
    assert isinstance(got, dict), got
    assert (got["total"], got["ok"]) == (expected["total"], expected["ok"])
    records = both.records()
    done = [body["task"] for kind, body in records if kind == "done"]
    assert len(done) == len(set(done)), "a finished task finished again"
    causes = [tuple(body["cause"]) for kind, body in records if isinstance(body.get("cause"), list)]
    assert len(causes) == len(set(causes)), "a send was routed twice"
    events = both.events()
    assert [s for s, _ in events] == list(range(1, len(events) + 1)), "the stream has a gap"
    assert sum(isinstance(e, StopEvent) for _, e in events) == 1
    assert isinstance(events[-1][1], StopEvent)
    started = {body["task"] for kind, body in kept.records() if kind == "start"}
    finished = {body["task"] for kind, body in kept.records() if kind == "done"} | {
        body["task"] for kind, body in kept.records() if kind == "fail" and body["final"]
    }
    lost = [
        e
        for _, e in resumed.events()[len(kept.events()) :]
        if isinstance(e, StepFailedEvent) and isinstance(e.exception, WorkerLost)
    ]
    # Each task running at the crash runs again after one StepFailedEvent(WorkerLost); a
    # task that ended the run (not journaled as done) may be among them.
    assert len(lost) <= len(started - finished)
    # A question whose wait was recorded before the crash is not asked again.
    waits = [body for kind, body in kept.records() if kind == "call" and body["op"] == "wait"]
    questions = [e for _, e in events if isinstance(e, AskConsent)]
    asked = any(not body["req"] for body in waits if "req" in body)
    assert len(questions) == 1 if asked else len(questions) >= 1
    for part in {e.part for _, e in events if isinstance(e, AskPart)}:
        of_part = [e for _, e in events if isinstance(e, AskPart) and e.part == part]
        asked = any(body.get("req") == {"part": part} for body in waits)
        assert len(of_part) == 1 if asked else len(of_part) >= 1


def _terminal(store: Recorder) -> int:
    """Where the run's terminal event is: a crash after it leaves a run that has ended (the
    server records its end from that event, `_ended_on_stream`), nothing to resume."""
    return next(
        i
        for i, op in enumerate(store.ops)
        if isinstance(op, Written) and isinstance(op.event, StopEvent)
    )


@pytest.mark.parametrize("ask_each", [False, True])
async def test_a_run_resumes_from_every_prefix_of_its_journal(ask_each: bool) -> None:
    flow = FanFlow(timeout=None)
    start = Plan(parts=3, flaky=True, ask_each=ask_each)
    crashed = Recorder()
    expected = await run_durably(flow, start, crashed, answer=Consent(ok=True))
    assert expected["total"] == (4 if ask_each else 5)  # part 1's answer is no
    assert expected["ok"] is True
    for cut in range(_terminal(crashed) + 1):
        kept = Recorder(crashed.ops[:cut])
        resumed = Recorder(kept.ops)
        got = await run_durably(flow, start, resumed, kept=kept, answer=Consent(ok=True))
        _check_resumed(crashed, cut, resumed, expected, got)


def _crash_point(data: st.DataObject, low: int, high: int) -> int:
    """A record boundary from ``low`` to ``high``, drawn without the bounds: how many records
    a run of concurrent steps writes depends on how trio schedules them, which varies between
    executions of one example, and hypothesis needs each example to draw the same."""
    return low + data.draw(st.integers(0, 1 << 16)) % (high - low + 1)


@given(
    parts=st.integers(1, 5),
    flaky=st.booleans(),
    ok=st.booleans(),
    ask_each=st.booleans(),
    data=st.data(),
)
async def test_any_crash_point_resumes_to_the_same_result(
    parts: int, flaky: bool, ok: bool, ask_each: bool, data: st.DataObject
) -> None:
    flow = FanFlow(timeout=None)
    start = Plan(parts=parts, flaky=flaky, ask_each=ask_each)
    crashed = Recorder()
    expected = await run_durably(flow, start, crashed, answer=Consent(ok=ok))
    cut = _crash_point(data, 0, _terminal(crashed))
    kept = Recorder(crashed.ops[:cut])
    resumed = Recorder(kept.ops)
    got = await run_durably(flow, start, resumed, kept=kept, answer=Consent(ok=ok))
    _check_resumed(crashed, cut, resumed, expected, got)
    # A crash after the resumed run's own records: resumed once more, from there.
    cut2 = _crash_point(data, cut, _terminal(resumed))
    kept2 = Recorder(resumed.ops[:cut2])
    again = Recorder(kept2.ops)
    got2 = await run_durably(flow, start, again, kept=kept2, answer=Consent(ok=ok))
    assert (got2["total"], got2["ok"]) == (expected["total"], expected["ok"])


async def test_the_answer_journaled_before_a_crash_is_not_asked_for_again() -> None:
    flow = FanFlow(timeout=None)
    crashed = Recorder()
    await run_durably(flow, Plan(parts=1), crashed, answer=Consent(ok=False))
    records = crashed.records()
    answered = next(
        i for i, (kind, body) in enumerate(records) if kind == "route" and "answer" in body
    )
    # Keep everything up to the answer's route record.
    cut = [i for i, op in enumerate(crashed.ops) if isinstance(op, JournalEntry)][answered] + 1
    kept = Recorder(crashed.ops[:cut])
    resumed = Recorder(kept.ops)
    got = await run_durably(flow, Plan(parts=1), resumed, kept=kept)  # nobody answers now
    assert got["ok"] is False
    new = resumed.events()[len(kept.events()) :]
    assert not any(isinstance(e, AskConsent) for _, e in new)
    assert isinstance(new[0][1], StepFailedEvent)
    assert isinstance(new[0][1].exception, WorkerLost)


class Patient(Workflow):
    """Asks, gives up after a while, and says so (on the stream, then as its result)."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        try:
            await ctx.wait_for_event(Consent, waiter_event=AskConsent(question="?"), timeout=5)
        except trio.TooSlowError:
            await ctx.write_event_to_stream(Part(i=-1))
            return StopEvent(result="gave up")
        return StopEvent(result="answered")


async def test_a_wait_that_timed_out_before_a_crash_times_out_again_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A step whose wait gave up before the crash gives up again when it runs again, at
    once: it does not ask again, nor wait again, and an answer sent now is not taken."""
    crashed = Recorder()
    assert await run_durably(Patient(timeout=None), StartEvent(), crashed) == "gave up"
    timed_out = max(
        i
        for i, op in enumerate(crashed.ops)
        if isinstance(op, JournalEntry) and b'"timed_out":true' in op.body
    )
    kept = Recorder(crashed.ops[: timed_out + 1])
    resumed = Recorder(kept.ops)
    began = trio.current_time()
    got = await run_durably(
        Patient(timeout=None), StartEvent(), resumed, kept=kept, answer=Consent(ok=True)
    )
    assert got == "gave up"
    assert trio.current_time() - began < 1  # no new wait of 5 s
    new = [e for _, e in resumed.events()[len(kept.events()) :]]
    assert not any(isinstance(e, AskConsent) for e in new)
    assert [type(e) for e in new] == [StepFailedEvent, Part, StopEvent]


async def test_task_key_is_the_same_on_every_recovery() -> None:
    flow = FanFlow(timeout=None)
    crashed = Recorder()
    expected = await run_durably(flow, Plan(parts=1), crashed, answer=Consent(ok=True))
    last_start = max(
        i for i, op in enumerate(crashed.ops) if isinstance(op, JournalEntry) and op.kind == "start"
    )
    kept = Recorder(crashed.ops[: last_start + 1])
    got = await run_durably(
        flow, Plan(parts=1), Recorder(kept.ops), kept=kept, answer=Consent(ok=True)
    )
    assert got["key"] == expected["key"]
    assert got["key"].startswith("run:")


# -- what cannot be journaled, and journals that do not fit --


class Holder(Event):
    value: Any


class Unjournalable(Workflow):
    @step
    async def first(self, ctx: Context, ev: StartEvent) -> StopEvent | Holder:
        what = ev.get("what")
        if what == "store":
            await ctx.store.set("k", {"ok": [1, 2], "bad": (1, 2)})
        elif what == "event":
            ctx.send_event(Holder(value=object()))
        return StopEvent(result="unreachable")

    @step
    async def hold(self, ev: Holder) -> None:
        pass


async def test_a_store_value_that_cannot_be_recorded_fails_with_a_clear_error() -> None:
    got = await run_durably(Unjournalable(), StartEvent(what="store"), Recorder())
    assert isinstance(got, NotJournalable)
    assert "'k'['bad'] holds a tuple" in str(got)


async def test_an_event_that_cannot_be_recorded_fails_its_step() -> None:
    got = await run_durably(Unjournalable(), StartEvent(what="event"), Recorder())
    assert isinstance(got, NotJournalable)
    assert "Holder" in str(got)
    assert "'value'" in str(got)


async def test_a_retry_in_a_durable_run_acts_again_as_in_memory() -> None:
    """Retries keep their in-memory meaning: the second attempt's calls act (its sends are
    routed again); only a recovery replays a lost attempt's calls."""
    flow = FanFlow(timeout=None)
    store = Recorder()
    got = await run_durably(flow, Plan(parts=2, flaky=True), store, answer=Consent(ok=True))
    assert got["total"] == 1
    fails = [body for kind, body in store.records() if kind == "fail"]
    assert [(f["attempt"], f["final"], f["lost"]) for f in fails] == [(1, False, False)]


def test_a_changed_graph_has_another_fingerprint() -> None:
    class Before(Workflow):
        @step
        async def only(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    class After(Workflow):  # one step more
        @step
        async def only(self, ev: StartEvent) -> StopEvent | Part:
            return StopEvent()

        @step
        async def more(self, ev: Part) -> StopEvent:
            return StopEvent()

    assert fingerprint(Before()) == fingerprint(Before())
    assert fingerprint(Before()) != fingerprint(After())


def test_a_journal_that_does_not_fit_is_refused() -> None:
    flow = FanFlow(timeout=None)
    codec = codec_for(flow)
    names = [s.name for s in flow.graph.steps]
    route = json.dumps({"event": {"q": "nowhere.Gone", "data": {}}, "cause": "x", "to": [0]})
    with pytest.raises(ReplayError, match=r"nowhere\.Gone"):
        fold([(0, "route", route.encode())], codec, names)
    far = json.dumps({"event": {"q": f"{__name__}.Plan", "data": {}}, "cause": "x", "to": [9]})
    with pytest.raises(ReplayError, match="step 9"):
        fold([(0, "route", far.encode())], codec, names)
    with pytest.raises(ReplayError, match="unknown kind"):
        fold([(0, "mystery", b"{}")], codec, names)


def test_a_step_failure_reads_back_with_its_type_and_message() -> None:
    codec = codec_for(FanFlow(timeout=None))
    failed = StepFailedEvent(
        step_name="work", attempt=2, exception=ValueError("bad part"), input_event=Part(i=1)
    )
    back = codec.decode(codec.encode(failed))
    assert isinstance(back, StepFailedEvent)
    assert isinstance(back.exception, JournaledError)
    assert (back.exception.type_name, str(back.exception)) == ("ValueError", "bad part")
    assert back.input_event == Part(i=1)


async def test_task_key_in_memory_is_per_execution() -> None:
    keys: list[str] = []

    class Keys(Workflow):
        @step
        async def first(self, ctx: Context, ev: StartEvent) -> Part:
            keys.append(ctx.task_key)
            return Part(i=0)

        @step
        async def second(self, ctx: Context, ev: Part) -> StopEvent:
            keys.append(ctx.task_key)
            return StopEvent()

    await Keys().run()
    await Keys().run()
    assert len(set(keys)) == 4


async def test_task_key_outside_a_step_is_an_error() -> None:
    async with FanFlow(timeout=None).start(Plan(parts=1)) as handler:
        with pytest.raises(WorkflowRuntimeError, match="task_key"):
            handler._run.context.task_key  # noqa: B018
        handler.cancel()


async def test_a_def_steps_calls_are_journaled_too() -> None:
    """A plain ``def`` step's context calls cross into trio from its thread: they are
    numbered and journaled as an async step's are."""

    class SyncFlow(Workflow):
        @step
        def only(self, ctx: SyncContext, ev: StartEvent) -> StopEvent:
            ctx.store.set("k", 1)
            return StopEvent(result=ctx.task_key)

    store = Recorder()
    assert await run_durably(SyncFlow(), StartEvent(), store) == "run:0.0"
    assert ("call", {"task": "0.0", "k": 0, "op": "set", "key": "k", "value": 1}) in (
        store.records()
    )


class Rescued(Workflow):
    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        raise ValueError("no")

    @step
    async def rescue(self, ev: StepFailedEvent) -> StopEvent:
        await trio.sleep(1)  # (so that a resumed `go` fails again before this ends the run)
        return StopEvent(result="rescued")


async def test_a_failure_handed_to_its_handlers_before_a_crash_is_not_handed_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A crash between routing a final failure to its error handlers and recording the
    failure: the step runs again and fails again, but its handlers get the failure once."""
    flow = Rescued(timeout=None)
    crashed = Recorder()
    assert await run_durably(flow, StartEvent(), crashed) == "rescued"
    records = crashed.records()
    handed = next(
        i for i, (kind, body) in enumerate(records) if kind == "route" and body["to"] == [1]
    )
    assert records[handed + 1][0] == "fail"  # the cut between them is the one that matters
    for cut in range(len(crashed.ops) + 1):
        kept = Recorder(crashed.ops[:cut])
        resumed = Recorder(kept.ops)
        assert await run_durably(flow, StartEvent(), resumed, kept=kept) == "rescued"
        routes_to_rescue = [
            body for kind, body in resumed.records() if kind == "route" and body["to"] == [1]
        ]
        assert len(routes_to_rescue) == 1, cut


FLAKY = {"on": False}
B_RAN: list[int] = []


class Then(Event):
    pass


class FlakyAfterResume(Workflow):
    @step(retry=RetryPolicy(max_attempts=3, delay=0.0))
    async def a(self, ev: StartEvent) -> Then:
        if FLAKY["on"]:
            FLAKY["on"] = False
            raise ConnectionError("transient after restart")
        return Then()

    @step
    async def b(self, ev: Then) -> StopEvent:
        B_RAN.append(1)
        import trio

        await trio.sleep(0.3)
        return StopEvent(result=len(B_RAN))


async def test_a_step_retried_after_a_resume_does_not_route_its_return_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A step whose lost attempt had routed what it returned, failing once after the resume
    and then succeeding: what it returned is routed once (the routing is kept across the
    retry, in the process and in the fold)."""
    crashed = Recorder()
    await run_durably(FlakyAfterResume(timeout=None), StartEvent(), crashed)
    recs = crashed.records()
    routes = [i for i, op in enumerate(crashed.ops) if getattr(op, "kind", "") == "route"]
    cut = routes[1] + 1  # a's return routed, a not done
    kept = Recorder(crashed.ops[:cut])
    assert [k for k, _ in kept.records()] == ["route", "start", "route"], recs
    B_RAN.clear()
    FLAKY["on"] = True
    resumed = Recorder(kept.ops)
    await run_durably(FlakyAfterResume(timeout=None), StartEvent(), resumed, kept=kept)
    both = Recorder(kept.ops + resumed.ops[len(kept.ops) :]).records()
    causes = [
        tuple(b["cause"]) for k, b in both if k == "route" and isinstance(b.get("cause"), list)
    ]
    assert len(causes) == len(set(causes)), causes
