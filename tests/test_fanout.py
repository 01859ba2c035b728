"""Fan-out and fan-in by type: steps returning ``list[E]``, steps taking ``list[E]`` (with
`Collect`, `Take`), and joins (steps with several event parameters)."""

from __future__ import annotations

import typing
from typing import Annotated

import pytest
import trio
import trio.testing

from trioflow import (
    CollectedEvents,
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StepStartedEvent,
    StopEvent,
    SyncContext,
    Workflow,
    WorkflowRuntimeError,
    WorkflowValidationError,
    step,
)
from trioflow.collect import All, Collect, Take


class Chunk(Event):
    i: int


class Done(Event):
    i: int


class Single(Event):
    pass


class Split(Workflow):
    """Five chunks, the later ones finishing first, collected once all are done."""

    @step
    async def split(self, ev: StartEvent) -> list[Chunk]:
        return [Chunk(i=i) for i in range(ev.get("n", 5))]

    @step(num_workers=10)
    async def work(self, ev: Chunk) -> Done:
        await trio.sleep(10 - ev.i)
        return Done(i=ev.i)

    @step
    async def join(self, done: list[Done]) -> StopEvent:
        return StopEvent(result=[d.i for d in done])


async def test_a_list_fans_out_and_a_list_parameter_collects_once_all_are_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    assert await Split().run() == [4, 3, 2, 1, 0]  # in the order they came


async def test_an_empty_list_collects_nothing_at_once() -> None:
    assert await Split().run(n=0) == []


@pytest.mark.parametrize(
    "marker", [Take(2), Collect(Take(2)), Collect(2)], ids=["Take", "Collect(Take)", "Collect(n)"]
)
async def test_take_runs_the_collector_at_the_nth_event(
    autojump_clock: trio.testing.MockClock, marker: object
) -> None:
    ran: list[list[int]] = []

    class Fastest(Split):
        @step
        async def join(self, done: Annotated[list[Done], marker]) -> StopEvent:
            ran.append([d.i for d in done])
            return StopEvent(result=[d.i for d in done])

    started = trio.current_time()
    assert await Fastest().run() == [4, 3]
    assert trio.current_time() - started == 7  # at the second, not once all five are done
    assert ran == [[4, 3]]


async def test_take_more_than_came_runs_once_the_stream_is_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Many(Split):
        @step
        async def join(self, done: Annotated[list[Done], Collect(Take(9))]) -> StopEvent:
            return StopEvent(result=len(done))

    assert await Many().run(n=3) == 3


async def test_collect_all_is_the_default(autojump_clock: trio.testing.MockClock) -> None:
    class Explicit(Split):
        @step
        async def join(self, done: Annotated[list[Done], Collect(All())]) -> StopEvent:
            return StopEvent(result=sorted(d.i for d in done))

    assert await Explicit().run(n=3) == [0, 1, 2]


async def test_each_stream_is_collected_on_its_own(autojump_clock: trio.testing.MockClock) -> None:
    """Two fan-outs under way at once: each collector run gets the events of its own."""

    class Batch(Event):
        name: str
        size: int

    class Item(Event):
        batch: str
        i: int

    class Result(Event):
        batch: str
        i: int

    class Summary(Event):
        batch: str
        items: list[int]

    class Batches(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Batch:
            ctx.send_event(Batch(name="a", size=3))
            return Batch(name="b", size=2)

        @step
        async def split(self, ev: Batch) -> list[Item]:
            return [Item(batch=ev.name, i=i) for i in range(ev.size)]

        @step(num_workers=10)
        async def work(self, ev: Item) -> Result:
            await trio.sleep(1 + ev.i)
            return Result(batch=ev.batch, i=ev.i * 10)

        @step
        async def summary(self, results: list[Result]) -> Summary:
            assert len({r.batch for r in results}) == 1  # one batch's, never mixed
            return Summary(batch=results[0].batch, items=sorted(r.i for r in results))

        @step
        async def end(self, ctx: Context, ev: Summary) -> StopEvent | None:
            got = ctx.collect_events(ev, [Summary, Summary])
            if got is None:
                return None
            summaries = typing.cast("list[Summary]", got)
            return StopEvent(result=sorted((s.batch, s.items) for s in summaries))

    assert await Batches().run() == [("a", [0, 10, 20]), ("b", [0, 10])]


async def test_nested_fan_outs_collect_level_by_level(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Documents, each split into pages: the pages of each document are collected per
    document, and the documents once every document is collected."""

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
        async def docs(self, ev: StartEvent) -> list[Doc]:
            return [Doc(d=d) for d in range(3)]

        @step
        async def pages(self, ev: Doc) -> list[Page]:
            return [Page(d=ev.d, p=p) for p in range(ev.d + 1)]

        @step(num_workers=20)
        async def read(self, ev: Page) -> Read:
            await trio.sleep(5 - ev.p + ev.d)
            return Read(d=ev.d, p=ev.p)

        @step
        async def doc_read(self, reads: list[Read]) -> DocRead:
            assert len({r.d for r in reads}) == 1  # one document's pages, never mixed
            return DocRead(d=reads[0].d, pages=sorted(r.p for r in reads))

        @step
        async def all_read(self, docs: list[DocRead]) -> StopEvent:
            return StopEvent(result=sorted((d.d, d.pages) for d in docs))

    assert Library().graph.bindings == ((4,), (3,), (), (), ())
    assert await Library().run() == [(0, [0]), (1, [0, 1]), (2, [0, 1, 2])]


async def test_a_fan_out_straight_into_a_collector() -> None:
    class Direct(Workflow):
        @step
        async def split(self, ev: StartEvent) -> list[Done]:
            return [Done(i=i) for i in range(4)]

        @step
        async def join(self, done: list[Done]) -> StopEvent:
            return StopEvent(result=[d.i for d in done])

    assert await Direct().run() == [0, 1, 2, 3]


async def test_a_list_or_a_single_event() -> None:
    class Either(Workflow):
        @step
        async def split(self, ev: StartEvent) -> list[Chunk] | Single:
            return Single() if ev.get("single") else [Chunk(i=1), Chunk(i=2)]

        @step
        async def work(self, ev: Chunk) -> Done:
            return Done(i=ev.i)

        @step
        async def join(self, done: list[Done]) -> StopEvent:
            return StopEvent(result=sum(d.i for d in done))

        @step
        async def single(self, ev: Single) -> StopEvent:
            return StopEvent(result="single")

    assert await Either().run() == 3
    assert await Either().run(single=True) == "single"


async def test_none_from_a_fan_out_opens_no_stream(autojump_clock: trio.testing.MockClock) -> None:
    joined: list[list[Done]] = []

    class Maybe(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Single:
            return Single()

        @step
        async def split(self, ev: Single) -> list[Done] | None:
            return None

        @step
        async def join(self, done: list[Done]) -> StopEvent:
            joined.append(done)
            return StopEvent()

        @step
        async def later(self, ev: Single) -> StopEvent:
            await trio.sleep(5)
            return StopEvent(result="later")

    assert await Maybe().run() == "later"
    assert joined == []


async def test_a_failed_member_handled_in_the_stream_is_collected() -> None:
    """An error handler runs in the stream of the execution that failed: what it returns is
    collected with the rest, and the stream waits for it."""

    class Handled(Split):
        @step
        async def work(self, ev: Chunk) -> Done:
            if ev.i == 2:
                raise ValueError("chunk 2")
            return Done(i=ev.i)

        @step
        async def recover(self, ev: StepFailedEvent) -> Done:
            assert isinstance(ev.input_event, Chunk)
            return Done(i=-ev.input_event.i)

    assert sorted(await Handled().run()) == [-2, 0, 1, 3, 4]


async def test_a_member_waiting_for_an_answer_holds_the_stream_open() -> None:
    class Ask(InputRequiredEvent):
        i: int

    class Answer(HumanResponseEvent):
        i: int
        ok: bool

    class Review(Split):
        @step
        async def work(self, ctx: Context, ev: Chunk) -> Done | None:  # type: ignore[override]
            answer = await ctx.wait_for_event(
                Answer, waiter_event=Ask(i=ev.i), requirements={"i": ev.i}
            )
            return Done(i=ev.i) if answer.ok else None

    asked = 0
    async with Review().start(n=3) as handler:
        async for ev in handler.stream_events():
            if isinstance(ev, Ask):
                asked += 1
                assert not handler.is_done()
                await handler.send_event(Answer(i=ev.i, ok=ev.i != 1))
        assert asked == 3
        assert sorted(await handler.result()) == [0, 2]


async def test_lifecycle_and_failure_events_name_what_a_collector_ran_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Failing(Split):
        @step
        async def join(self, done: list[Done]) -> StopEvent:
            raise RuntimeError("cannot join")

    async with Failing().start(n=2) as handler:
        seen = [ev async for ev in handler.stream_events(StepStartedEvent, StepFailedEvent)]
        with pytest.raises(RuntimeError, match="cannot join"):
            await handler.result()
    started = [ev for ev in seen if isinstance(ev, StepStartedEvent) and ev.step_name == "join"]
    (failed,) = [ev for ev in seen if isinstance(ev, StepFailedEvent)]
    assert len(started) == 1
    assert isinstance(started[0].input_event, CollectedEvents)
    assert sorted(d.i for d in started[0].input_event.events) == [0, 1]  # type: ignore[attr-defined]
    assert failed.input_event == started[0].input_event


async def test_a_bare_event_of_a_list_only_type_is_an_error() -> None:
    class Wrong(Workflow):
        @step
        async def split(self, ev: StartEvent) -> list[Done]:
            return Done(i=1)  # type: ignore[return-value]

        @step
        async def join(self, done: list[Done]) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowRuntimeError, match=r"names only in `list\[...\]`"):
        await Wrong().run()


async def test_a_list_from_a_step_that_does_not_fan_out_is_an_error() -> None:
    class Wrong(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return [StopEvent()]  # type: ignore[return-value]

    with pytest.raises(WorkflowRuntimeError, match=r"returned .*StopEvent"):
        await Wrong().run()

    class Scoped(Split):
        @step
        async def work(self, ev: Chunk) -> Done:
            return [Done(i=1)]  # type: ignore[return-value]

    with pytest.raises(WorkflowRuntimeError, match=r"fans out only when .*`list\[...\]`"):
        await Scoped().run()


@pytest.mark.parametrize("member", [StopEvent(), 3], ids=["stop", "int"])
async def test_a_list_holds_events_for_steps(member: object) -> None:
    class Wrong(Split):
        @step
        async def split(self, ev: StartEvent) -> list[Chunk]:
            return [Chunk(i=0), member]  # type: ignore[list-item]

    with pytest.raises(WorkflowRuntimeError, match="a fan-out's list holds events for steps"):
        await Wrong().run()


async def test_a_collector_takes_nothing_sent_to_it() -> None:
    class Targeted(Split):
        @step
        async def split(self, ctx: Context, ev: StartEvent) -> list[Chunk]:  # type: ignore[override]
            ctx.send_event(Done(i=9), step="join")
            return []

    with pytest.raises(WorkflowRuntimeError, match="'join' collects the events of a fan-out"):
        await Targeted().run()

    class Sent(Split):
        @step
        async def split(self, ctx: Context, ev: StartEvent) -> list[Chunk]:  # type: ignore[override]
            ctx.send_event(Done(i=9))
            return []

    with pytest.raises(WorkflowRuntimeError, match=r"outside any fan-out .* would be lost"):
        await Sent().run()


def test_a_collector_that_no_fan_out_feeds_is_refused() -> None:
    class Orphan(Workflow):
        @step
        async def go(self, ev: StartEvent) -> Done:
            return Done(i=0)

        @step
        async def join(self, done: list[Done]) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match="'join' collects list\\[Done\\], but no"):
        Orphan()


def test_collect_markers_are_checked() -> None:
    with pytest.raises(ValueError, match="Take"):
        Take(0)
    with pytest.raises(TypeError, match="Collect"):
        Collect("all")  # type: ignore[arg-type]

    class Misplaced(Workflow):
        @step
        async def go(self, ev: Annotated[StartEvent, Collect()]) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match="Collect marker, which goes on a `list"):
        Misplaced()


# -- joins: one event of each --


class Left(Event):
    n: int


class Right(Event):
    n: int


async def test_a_join_runs_once_it_has_one_event_of_each() -> None:
    class Joined(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Left | Right:
            ctx.send_event(Right(n=1))
            ctx.send_event(Left(n=2))
            ctx.send_event(Right(n=3))
            return Left(n=4)

        @step(num_workers=1)
        async def join(self, left: Left, ctx: Context, right: Right) -> StopEvent | None:
            pairs = await ctx.store.get("pairs", [])
            pairs.append((left.n, right.n))
            await ctx.store.set("pairs", pairs)
            return StopEvent(result=pairs) if len(pairs) == 2 else None

    assert Joined().graph.steps[1].slots == (Left, Right)
    assert await Joined().run() == [(2, 1), (4, 3)]


async def test_a_plain_def_join_with_its_context_first() -> None:
    class Joined(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Left | Right:
            ctx.send_event(Right(n=1))
            return Left(n=2)

        @step
        def join(self, ctx: SyncContext, left: Left, right: Right) -> StopEvent:
            return StopEvent(result=(type(ctx).__name__, left.n, right.n))

    assert await Joined().run() == ("SyncContext", 2, 1)


def test_the_graph_json_says_who_fans_out_collects_and_joins() -> None:
    from trioflow._wire import describe_workflow

    class Joined(Split):
        @step
        async def join(self, done: Annotated[list[Done], Take(3)]) -> Left:  # type: ignore[override]
            return Left(n=0)

        @step
        async def pair(self, left: Left, right: Right) -> StopEvent:
            return StopEvent()

        @step
        async def right(self, ev: Chunk) -> Right:
            return Right(n=0)

    steps = {s["name"]: s for s in describe_workflow("j", Joined())["steps"]}
    assert steps["split"]["fans_out"] == ["Chunk"]
    assert steps["split"]["returns"] == ["Chunk"]
    assert steps["join"]["collects"] == {"take": 3}
    assert steps["join"]["accepts"] == ["Done"]
    assert steps["pair"]["joins"] == ["Left", "Right"]
    assert steps["work"] == {**steps["work"], "fans_out": [], "collects": None, "joins": []}


# -- error handlers in a stream --


class Item(Event):
    i: int


class Ok(Event):
    i: int


class Failed(Event):
    i: int


class Tally(Event):
    n: int


class Lost(Event):
    items: tuple[int, ...]


class Sorted(Workflow):
    @step
    async def split(self, ev: StartEvent) -> list[Item]:
        return [Item(i=i) for i in range(4)]

    @step
    async def work(self, ev: Item) -> Ok:
        if ev.i % 2:
            raise ValueError(ev.i)
        return Ok(i=ev.i)

    @step
    async def rescue(self, ev: StepFailedEvent) -> Failed:
        assert isinstance(ev.input_event, Item)
        return Failed(i=ev.input_event.i)

    @step
    async def oks(self, oks: list[Ok]) -> Tally:
        return Tally(n=len(oks))

    @step
    async def failures(self, failed: list[Failed]) -> Lost:
        return Lost(items=tuple(sorted(f.i for f in failed)))

    @step
    async def report(self, tally: Tally, lost: Lost) -> StopEvent:
        return StopEvent(result=(tally.n, lost.items))


async def test_a_collector_of_an_error_handlers_events() -> None:
    """What an error handler returns in a stream is collected in it: its steps run where the
    failure was, so the static bindings follow failures to them."""
    assert await Sorted().run() == (2, (1, 3))
