"""Typed state: ``Context[MyState]``, `Store.get_state` / `set_state` / `edit_state` /
`clear`, dotted paths, the lock that keeps concurrent edits from losing updates, ``def``
steps, saving a context, and durable runs that journal the state and resume with it."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, assert_type

import attrs
import pytest
import trio
import trio.testing
from test_durable import Recorder, run_durably

from trioflow import (
    Context,
    DictState,
    Event,
    NotJournalable,
    StartEvent,
    StopEvent,
    Store,
    SyncContext,
    Workflow,
    WorkflowCancelledError,
    WorkflowRuntimeError,
    WorkflowValidationError,
    open_store,
    step,
)
from trioflow._durable import codec_for, fingerprint, fold
from trioflow.retry_policy import ConstantDelayRetryPolicy


@attrs.define
class Profile:
    name: str = ""
    tags: list[str] = attrs.field(factory=list)


@attrs.define
class Counter:
    count: int = 0
    items: list[int] = attrs.field(factory=list)
    profile: Profile = attrs.field(factory=Profile)
    extra: dict[str, Any] = attrs.field(factory=dict)
    pair: tuple[int, int] = (0, 0)


class Tick(Event):
    i: int
    #: Of the ticks' run: add in edit_state, or by get-then-set; how many ticks there are.
    atomic: bool = True
    n: int = 1


class Counting(Workflow):
    """Sends ``n`` ticks to ``num_workers=10`` workers that each add one to the count, in
    ``edit_state`` (``atomic``) or with the get-then-set idiom."""

    @step
    async def fan(self, ctx: Context[Counter], ev: StartEvent) -> Tick | None:
        for i in range(ev.n):
            ctx.send_event(Tick(i=i, atomic=ev.atomic, n=ev.n))
        return None

    @step(num_workers=10)
    async def add(self, ctx: Context[Counter], ev: Tick) -> StopEvent | None:
        if ev.atomic:
            async with ctx.store.edit_state() as state:
                await trio.sleep(0.01)  # a step that awaits something while it edits
                state.count += 1
                state.items.append(ev.i)
        else:
            count = await ctx.store.get("count")
            await trio.sleep(0.01)
            await ctx.store.set("count", count + 1)
        async with ctx.store.edit_state() as state:
            state.extra["done"] = state.extra.get("done", 0) + 1
            finished = state.extra["done"] == ev.n
        return StopEvent(result=await ctx.store.get_state()) if finished else None


async def count_with(atomic: bool, n: int = 10) -> Counter:
    state = await Counting().run(n=n, atomic=atomic)
    assert isinstance(state, Counter)
    return state


# -- the state a run starts with, and reading it --


async def test_a_run_starts_with_the_default_state_of_the_class_its_steps_name() -> None:
    seen: list[Any] = []

    class Reader(Workflow):
        @step
        async def read(self, ctx: Context[Counter], ev: StartEvent) -> StopEvent:
            seen.append(ctx.store.state_type)
            return StopEvent(result=await ctx.store.get_state())

    assert await Reader().run() == Counter()
    assert seen == [Counter]
    assert Reader().graph.state_class.cls is Counter
    assert Context(Reader()).store.state_type is Counter


async def test_get_state_is_a_copy_that_changes_nothing() -> None:
    store = Store(Counter)
    state = await store.get_state()
    state.count = 5
    state.items.append(1)  # nested values too: a deep copy (LlamaIndex's is shallow)
    state.profile.name = "changed"
    assert await store.get_state() == Counter()


async def test_an_untyped_store_is_a_dict_state_and_keeps_values_by_reference() -> None:
    store: Store[DictState] = Store()
    history: list[str] = []
    await store.set("history", history)
    assert await store.get("history") is history
    async with store.edit_state() as state:
        assert isinstance(state, DictState)
        state.n = 1  # a key, as attribute
        state["m"] = 2
    assert await store.get_state() == {"history": [], "n": 1, "m": 2}
    assert (await store.get_state()).n == 1
    with pytest.raises(AttributeError):
        _ = (await store.get_state()).missing
    await store.clear()
    assert await store.get_state() == {}


# -- dotted paths --


async def test_dotted_paths_read_and_write_fields_keys_and_indexes() -> None:
    store = Store(Counter)
    await store.set("profile.name", "ada")
    await store.set("items", [1, 2, 3])
    await store.set("items.1", 7)
    await store.set("extra.a.b", 1)  # the dicts on the way are made
    assert await store.get("profile.name") == "ada"
    assert await store.get("items.1") == 7
    assert await store.get("items") == [1, 7, 3]
    assert await store.get("extra") == {"a": {"b": 1}}
    assert await store.get("extra.a.b") == 1
    # Where a path leads nowhere: the default.
    assert await store.get("extra.nope.deeper") is None
    assert await store.get("items.9", default="none") == "none"
    assert await store.get("nope", 3) == 3
    assert await store.get("profile._private", 4) == 4
    untyped: Store[DictState] = Store()
    await untyped.set("user.profile.name", "Ada")
    assert await untyped.get_state() == {"user": {"profile": {"name": "Ada"}}}


async def test_a_write_a_path_does_not_fit_changes_nothing() -> None:
    store = Store(Counter)
    await store.set("items", [1])
    with pytest.raises(ValueError, match=r"Counter has no field 'nope' \(its fields: count, "):
        await store.set("nope", 1)
    with pytest.raises(ValueError, match="'5' is no index of a list of 1"):
        await store.set("items.5", 1)
    with pytest.raises(ValueError, match="Profile has no field 'age'"):
        await store.set("profile.age", 1)
    with pytest.raises(ValueError, match="names joined by dots"):
        await store.set("a..b", 1)
    with pytest.raises(TypeError, match="a store path is a str"):
        await store.set(1, 1)  # type: ignore[arg-type]
    assert await store.get_state() == Counter(items=[1])


async def test_a_dotted_write_copies_the_containers_on_its_path() -> None:
    """What a reader was given stays as it was (values elsewhere are still shared)."""
    store: Store[DictState] = Store()
    other = ["shared"]
    await store.set("a", {"b": 1, "other": other})
    before = await store.get("a")
    await store.set("a.b", 2)
    assert before == {"b": 1, "other": ["shared"]}
    assert await store.get("a.b") == 2
    assert (await store.get("a"))["other"] is other


# -- set_state, clear --


async def test_set_state_takes_a_copy_of_the_state_type_only() -> None:
    store = Store(Counter)
    mine = Counter(count=3)
    await store.set_state(mine)
    mine.count = 99  # the caller's object is not the run's state
    assert (await store.get_state()).count == 3
    with pytest.raises(TypeError, match=r"set_state\(\) takes a Counter, .* got Profile"):
        await store.set_state(Profile())  # type: ignore[arg-type]
    untyped: Store[DictState] = Store()
    await untyped.set_state({"a": 1})  # type: ignore[arg-type]
    assert await untyped.get_state() == DictState(a=1)
    with pytest.raises(TypeError, match="DictState"):
        await untyped.set_state([1])  # type: ignore[arg-type]


async def test_clear_resets_to_a_new_default_state() -> None:
    store = Store(Counter)
    await store.set("profile.tags", ["x"])
    async with store.edit_state() as state:
        state.count = 4
    await store.clear()
    assert await store.get_state() == Counter()


async def test_every_async_store_method_is_a_checkpoint() -> None:
    store = Store(Counter)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.get("count"),
        lambda: store.get("profile.name"),
        lambda: store.set("count", 1),
        store.get_state,
        lambda: store.set_state(Counter()),
        store.clear,
    ]
    for call in calls:
        with trio.testing.assert_checkpoints():
            await call()
    with trio.testing.assert_checkpoints():
        async with store.edit_state():
            pass


# -- edit_state: atomic --


async def test_edit_state_loses_no_update_of_concurrent_workers() -> None:
    state = await count_with(atomic=True)
    assert state.count == 10
    assert sorted(state.items) == list(range(10))


async def test_get_then_set_from_one_writer_still_counts() -> None:
    """The get-then-set idiom is fine for a single writer (with several it loses updates:
    see the README)."""
    state = await count_with(atomic=False, n=1)
    assert state.count == 1


async def test_a_write_waits_for_an_edit_under_way_and_reads_do_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = Store(Counter)
    seen: list[int] = []

    async def edit(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with store.edit_state() as state:
            task_status.started()
            state.count += 1
            await trio.sleep(5)
            seen.append((await store.get_state()).count)  # reads see the state before
        assert trio.current_time() == 5

    async with trio.open_nursery() as nursery:
        await nursery.start(edit)
        assert await store.get("count") == 0
        await store.set("count", 100)  # waits for the edit, then lands after it
        assert trio.current_time() == 5
    assert seen == [0]
    assert (await store.get_state()).count == 100


async def test_an_exception_in_edit_state_discards_the_edit_and_frees_the_lock() -> None:
    store = Store(Counter)
    with pytest.raises(KeyError, match="stop"):
        async with store.edit_state() as state:
            state.count = 99
            state.items.append(1)
            raise KeyError("stop")
    assert await store.get_state() == Counter()  # LlamaIndex discards it too
    async with store.edit_state() as state:
        state.count = 1
    assert (await store.get_state()).count == 1


async def test_a_write_inside_its_own_edit_is_an_error_not_a_deadlock() -> None:
    store = Store(Counter)
    writes: list[Callable[[], Awaitable[None]]] = [
        lambda: store.set("count", 1),
        lambda: store.set_state(Counter()),
        store.clear,
    ]
    async with store.edit_state():
        for call in writes:
            with pytest.raises(WorkflowRuntimeError, match="inside an edit_state"):
                await call()
        with pytest.raises(WorkflowRuntimeError, match=r"edit_state\(\) inside"):
            async with store.edit_state():
                pass
        assert await store.get("count") == 0  # reads are fine


async def test_a_cancelled_wait_for_the_edit_lock_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = Store(Counter)
    entered: list[str] = []

    async def holder(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with store.edit_state() as state:
            task_status.started()
            await trio.sleep(10)
            state.count += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(holder)
        with trio.move_on_after(1) as scope:
            async with store.edit_state() as state:
                entered.append("waiter")
                state.count += 100
        assert scope.cancelled_caught
        assert trio.current_time() == 1
    assert entered == []
    assert (await store.get_state()).count == 1
    async with store.edit_state() as state:  # the lock is free again
        state.count += 1
    assert (await store.get_state()).count == 2


# -- the state type: from the steps' annotations --


def test_steps_naming_different_state_types_are_a_validation_error() -> None:
    with pytest.raises(WorkflowValidationError) as caught:

        class Mixed(Workflow):
            @step
            async def first(self, ctx: Context[Counter], ev: StartEvent) -> Tick:
                return Tick(i=0)

            @step
            async def second(self, ctx: Context[Profile], ev: Tick) -> StopEvent:
                return StopEvent()

        Mixed()
    message = str(caught.value)
    assert "different state types" in message
    assert "Context[Counter] in step 'first'" in message
    assert "Context[Profile] in step 'second'" in message


def test_a_plain_context_beside_a_typed_one_is_fine() -> None:
    class Partly(Workflow):
        @step
        async def first(self, ctx: Context, ev: StartEvent) -> Tick:
            return Tick(i=0)

        @step
        def second(self, ctx: SyncContext[Counter], ev: Tick) -> StopEvent:
            return StopEvent()

    assert Partly().graph.state_class.cls is Counter


@attrs.define
class NeedsArgument:
    required: int


@attrs.frozen
class Frozen:
    n: int = 0


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        (NeedsArgument, "cannot be made with no arguments"),
        (Frozen, "is frozen"),
        (int, "an attrs class, a dataclass or a pydantic model"),
    ],
)
def test_a_state_type_a_run_cannot_use_is_a_validation_error(state: type, problem: str) -> None:
    class Bad(Workflow):
        @step
        async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent()

    Bad.only.__annotations__["ctx"] = Context[state]  # type: ignore[valid-type]
    with pytest.raises(WorkflowValidationError, match=problem):
        Bad()


# -- other state classes --


async def test_a_dataclass_state_works_like_an_attrs_one() -> None:
    @dataclasses.dataclass
    class Tally:
        total: int = 0
        names: list[str] = dataclasses.field(default_factory=list)

    class Flow(Workflow):
        @step
        async def only(self, ctx: Context[Tally], ev: StartEvent) -> StopEvent:
            async with ctx.store.edit_state() as state:
                state.total += 2
            await ctx.store.set("names", ["a"])
            return StopEvent(result=await ctx.store.get_state())

    flow = Flow()
    assert await flow.run() == Tally(total=2, names=["a"])
    ctx = Context(flow)
    await flow.run(ctx=ctx)
    assert Context.from_dict(flow, ctx.to_dict()).store._state == Tally(total=2, names=["a"])


async def test_a_pydantic_state() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Settings(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        count: int = 0
        tags: list[str] = pydantic.Field(default_factory=list)

    class Flow(Workflow):
        @step
        async def only(self, ctx: Context[Settings], ev: StartEvent) -> StopEvent:
            async with ctx.store.edit_state() as state:
                state.count += 1
            await ctx.store.set("tags", ["x"])
            with pytest.raises(ValueError, match="no field 'nope'"):
                await ctx.store.set("nope", 1)
            copy = await ctx.store.get_state()
            copy.tags.append("not kept")
            return StopEvent(result=await ctx.store.get_state())

    flow = Flow()
    assert await flow.run() == Settings(count=1, tags=["x"])
    ctx = Context(flow)
    await flow.run(ctx=ctx)
    saved = ctx.to_dict()
    assert saved["store"] == {"count": 1, "tags": ["x"]}
    assert (await Context.from_dict(flow, saved).store.get_state()) == Settings(count=1, tags=["x"])
    with pytest.raises(ValueError, match="does not fit"):
        Context.from_dict(flow, {"store": {"count": "many"}})


# -- def steps --


class SyncCounting(Workflow):
    @step
    async def fan(self, ctx: Context[Counter], ev: StartEvent) -> Tick | None:
        for i in range(10):
            ctx.send_event(Tick(i=i))
        return None

    @step(num_workers=5)
    def in_thread(self, ctx: SyncContext[Counter], ev: Tick) -> StopEvent | None:
        if ev.i == 0:
            with pytest.raises(ZeroDivisionError), ctx.store.edit_state() as state:
                state.count = 1000
                _ = 1 / 0  # discarded, and the lock is released
        with ctx.store.edit_state() as state:
            state.count += 1
            state.items.append(ev.i)
            ctx.store.get("count")  # a read inside the block: the state before it
            finished = state.count == 10
        if not finished:
            return None
        ctx.store.set("profile.name", "thread")
        copy = ctx.store.get_state()
        ctx.store.clear()
        cleared = ctx.store.get_state()
        ctx.store.set_state(copy)
        return StopEvent(result=(ctx.store.get_state(), cleared, ctx.store.state_type))


async def test_def_steps_edit_the_state_atomically_from_their_threads() -> None:
    state, cleared, state_type = await SyncCounting().run()
    assert state.count == 10
    assert sorted(state.items) == list(range(10))
    assert state.profile.name == "thread"
    assert cleared == Counter()
    assert state_type is Counter


async def test_a_def_steps_write_inside_its_own_edit_is_an_error() -> None:
    class Nested(Workflow):
        @step
        def only(self, ctx: SyncContext[Counter], ev: StartEvent) -> StopEvent:
            with ctx.store.edit_state():
                try:
                    ctx.store.set("count", 1)
                except WorkflowRuntimeError as error:
                    return StopEvent(result=str(error))
            return StopEvent(result="no error")

    assert "inside an edit_state" in await Nested().run()


# -- a context kept between runs, saved and read back --


class Turns(Workflow):
    @step
    async def turn(self, ctx: Context[Counter], ev: StartEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state.count += 1
            state.items.append(ev.value)
            state.pair = (state.count, ev.value)
        return StopEvent(result=state.count)


async def test_a_held_context_keeps_its_typed_state_between_runs() -> None:
    flow = Turns()
    ctx: Context[Counter] = Context(flow)
    assert await flow.run(value=5, ctx=ctx) == 1
    assert await flow.run(value=6, ctx=ctx) == 2
    assert await ctx.store.get_state() == Counter(count=2, items=[5, 6], pair=(2, 6))


async def test_a_typed_context_saves_and_reads_back_as_it_was() -> None:
    flow = Turns()
    ctx: Context[Counter] = Context(flow)
    await flow.run(value=5, ctx=ctx)
    saved = ctx.to_dict()
    assert saved == {
        "store": {
            "count": 1,
            "items": [5],
            "profile": {"name": "", "tags": []},
            "extra": {},
            "pair": [1, 5],  # a tuple is written as a list, and read back as a tuple
        },
        "state_type": f"{__name__}.Counter",
    }
    json.dumps(saved)
    again = Context.from_dict(flow, saved)
    assert await again.store.get_state() == Counter(count=1, items=[5], pair=(1, 5))
    assert await flow.run(value=7, ctx=again) == 2


async def test_a_saved_state_that_does_not_fit_is_a_clear_error() -> None:
    flow = Turns()
    with pytest.raises(ValueError, match=r"from_dict\(\): .* does not fit .*Counter.*count"):
        Context.from_dict(flow, {"store": {"count": "many"}})
    with pytest.raises(ValueError, match=r"holds a state of type 'other\.State'"):
        Context.from_dict(flow, {"store": {}, "state_type": "other.State"})

    class Untyped(Workflow):
        @step
        async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent()

    with pytest.raises(ValueError, match=r"this workflow's is untyped \(a DictState\)"):
        Context.from_dict(Untyped(), {"store": {}, "state_type": f"{__name__}.Counter"})
    ctx: Context[Counter] = Context(flow)
    await ctx.store.set("extra", {"socket": object()})
    with pytest.raises(TypeError, match=r"state field 'extra'\['socket'\] holds a object"):
        ctx.to_dict()


# -- durable runs: the state is journaled, and a resumed run has it --


class Job(Event):
    name: str


class Issued(Event):
    name: str
    ticket: int


class Ticketing(Workflow):
    """Three jobs each take the next ticket number from the state in an edit, then a
    gatherer reports the tickets and the state. A resumed edit must hand out the same ticket
    as before the crash."""

    @step
    async def fan(self, ctx: Context[Counter], ev: StartEvent) -> Job | None:
        await ctx.store.set("profile.name", "desk")
        for name in ("a", "b", "c"):
            ctx.send_event(Job(name=name))
        return None

    @step(num_workers=1)  # deterministic: tickets in the order of the jobs
    async def issue(self, ctx: Context[Counter], ev: Job) -> Issued:
        async with ctx.store.edit_state() as state:
            state.count += 1
            ticket = state.count
            state.items.append(ticket)
        return Issued(name=ev.name, ticket=ticket)

    @step
    async def gather(self, ctx: Context[Counter], ev: Issued) -> StopEvent | None:
        got = ctx.collect_events(ev, [Issued] * 3)
        if got is None:
            return None
        state = await ctx.store.get_state()
        tickets = sorted((e.name, e.ticket) for e in got if isinstance(e, Issued))
        return StopEvent(result={"tickets": tickets, "state": attrs.asdict(state)})


async def test_a_typed_state_is_journaled_as_calls() -> None:
    store = Recorder()
    await run_durably(Ticketing(timeout=None), StartEvent(), store)
    calls = [body for kind, body in store.records() if kind == "call"]
    assert calls[0] == {
        "task": "0.0",
        "k": 0,
        "op": "set",
        "key": "profile",
        "value": {"name": "desk", "tags": []},
    }
    edits = [c for c in calls if c["op"] == "state"]
    assert [e["value"]["count"] for e in edits] == [1, 2, 3]


async def test_a_typed_run_resumes_from_every_prefix_of_its_journal() -> None:
    """Whatever the crash point, the resumed run ends as the uncrashed one: the same tickets
    (an edit made before the crash is not made again, and its step sees what it saw then),
    and each edit journaled once."""
    flow = Ticketing(timeout=None)
    crashed = Recorder()
    expected = await run_durably(flow, StartEvent(), crashed)
    assert expected["tickets"] == [("a", 1), ("b", 2), ("c", 3)]
    assert expected["state"]["items"] == [1, 2, 3]
    assert expected["state"]["profile"]["name"] == "desk"
    journal_length = len(crashed.ops)
    for cut in range(journal_length):
        kept = Recorder(crashed.ops[:cut])
        resumed = Recorder(crashed.ops[:cut])
        got = await run_durably(flow, StartEvent(), resumed, kept=kept)
        assert got == expected, cut
        edits = [b for k, b in resumed.records() if k == "call" and b["op"] == "state"]
        assert len(edits) == 3, cut


async def test_a_resumed_edit_runs_again_on_the_state_it_began_from() -> None:
    """The fold gives an edit journaled before a crash the state before it."""
    flow = Ticketing(timeout=None)
    crashed = Recorder()
    await run_durably(flow, StartEvent(), crashed)
    replay = fold(crashed.journal(), codec_for(flow), [s.name for s in flow.graph.steps])
    assert replay.store["count"] == 3
    journal = crashed.journal()
    second_edit = [i for i, (_, kind, body) in enumerate(journal) if b'"op":"state"' in body][1]
    replay = fold(journal[: second_edit + 1], codec_for(flow), [s.name for s in flow.graph.steps])
    (task,) = [t for t in replay.pending.values() if any("before" in c for c in t.calls.values())]
    (call,) = [c for c in task.calls.values() if c["op"] == "state"]
    assert call["before"]["count"] == 1
    assert call["value"]["count"] == 2


async def test_a_durable_state_holding_no_json_value_fails_its_step() -> None:
    class Holding(Workflow):
        @step
        async def only(self, ctx: Context[Counter], ev: StartEvent) -> StopEvent:
            async with ctx.store.edit_state() as state:
                state.extra["socket"] = object()
            return StopEvent()

    got = await run_durably(Holding(timeout=None), StartEvent(), Recorder())
    assert isinstance(got, NotJournalable)
    assert "edit_state() in a durable run: state field 'extra'['socket'] holds a object" in str(got)


def test_a_typed_state_is_part_of_the_fingerprint() -> None:
    @attrs.define
    class Other:
        count: int = 0

    class A(Workflow):
        @step
        async def only(self, ctx: Context[Counter], ev: StartEvent) -> StopEvent:
            return StopEvent()

    class B(Workflow):
        @step
        async def only(self, ctx: Context[Other], ev: StartEvent) -> StopEvent:
            return StopEvent()

    class C(Workflow):
        @step
        async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent()

    assert len({fingerprint(A()), fingerprint(B()), fingerprint(C())}) == 3


async def test_a_store_run_keeps_its_typed_state_for_the_next_run(tmp_path: Path) -> None:
    flow = Turns()
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    async with open_store(url) as store:
        ctx: Context[Counter] = Context(flow)
        await ctx.store.set("profile.name", "before")
        async with store.start(flow, value=1, ctx=ctx) as handler:
            assert await handler.result() == 1
        assert (await ctx.store.get_state()).items == [1]
        first = handler.run_id
    async with open_store(url) as store:  # a restart
        ctx = await store.context(flow, first)
        assert await ctx.store.get_state() == Counter(
            count=1, items=[1], profile=Profile(name="before"), pair=(1, 1)
        )
        assert await store.run(flow, value=2, ctx=ctx) == 2
        assert await ctx.store.get_state() == Counter(
            count=2, items=[1, 2], profile=Profile(name="before"), pair=(2, 2)
        )


# -- what type checkers see (mypy checks this file: `assert_type`, and each ignore must be
# needed) --


async def _checked_state_types(
    ctx: Context[Counter], sync: SyncContext[Counter], plain: Context
) -> None:
    assert_type(await ctx.store.get_state(), Counter)
    async with ctx.store.edit_state() as state:
        assert_type(state, Counter)
    await ctx.store.set_state(Profile())  # type: ignore[arg-type]
    assert_type(sync.store.get_state(), Counter)
    with sync.store.edit_state() as synced:
        assert_type(synced, Counter)
    assert_type(await plain.store.get_state(), Any)  # a plain Context takes any state
    typed_workflow_context: Context[Counter] = Context(Turns())
    assert_type(Store(Counter), Store[Counter])
    assert_type(Store(), Store[DictState])
    assert typed_workflow_context


def test_the_readme_example_runs() -> None:
    """The README's typed-state example (a ``py`` block: test_readme runs ``python`` ones by
    position) counts every word once, with four workers editing at once."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```py\n(.*?)```", readme, re.DOTALL) if "class Tally" in b]
    done = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["6 ['be', 'be', 'not', 'or', 'to', 'to']"]


class Go(Event):
    pass


class Contended(Workflow):
    """An async step holds the edit lock for 10 s; a ``def`` step waits for it."""

    @step
    async def hold(self, ctx: Context[Counter], ev: StartEvent) -> Go | None:
        async with ctx.store.edit_state() as state:
            ctx.send_event(Go())
            await trio.sleep(10)
            state.count += 1
        return None

    @step
    def wait(self, ctx: SyncContext[Counter], ev: Go) -> StopEvent:
        with ctx.store.edit_state() as state:
            state.items.append(1)  # (never reached: the run is cancelled first)
        return StopEvent(result="edited")


async def test_a_def_step_waiting_for_the_edit_lock_is_cancelled_with_its_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Contended(timeout=None).start() as handler:
        await trio.sleep(1)
        handler.cancel()
        with pytest.raises(WorkflowCancelledError):
            await handler.result()
    assert trio.current_time() < 10
    assert await handler.ctx.store.get_state() == Counter()


async def test_a_def_steps_edit_is_journaled_in_a_durable_run() -> None:
    class SyncEdit(Workflow):
        @step
        def only(self, ctx: SyncContext[Counter], ev: StartEvent) -> StopEvent:
            with ctx.store.edit_state() as state:
                state.count = 7
            return StopEvent(result=ctx.store.get("count"))

    store = Recorder()
    assert await run_durably(SyncEdit(timeout=None), StartEvent(), store) == 7
    (call,) = [body for kind, body in store.records() if kind == "call"]
    assert (call["task"], call["k"], call["op"], call["value"]["count"]) == ("0.0", 0, "state", 7)


@attrs.frozen
class FrozenProfile:
    name: str = "x"


@attrs.define
class WithFrozen:
    profile: FrozenProfile = attrs.field(factory=FrozenProfile)


async def test_a_path_into_a_frozen_field() -> None:
    class Flow(Workflow):
        @step
        async def only(self, ctx: Context[WithFrozen], ev: StartEvent) -> StopEvent:
            with pytest.raises(ValueError, match="cannot set 'name' in a frozen FrozenProfile"):
                await ctx.store.set("profile.name", "y")
            return StopEvent(result=await ctx.store.get("profile.name"))

    assert await Flow().run() == "x"


async def test_a_timed_out_def_attempt_does_not_keep_its_edit(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A plain `def` step's edit whose step was cancelled meanwhile (its timeout) is
    discarded, as an async step's is, though its thread's block ended well: the retry starts
    from the state before it. The clock moves only when told (a thread's work must not let
    it jump past the retry's own timeout)."""
    entered, release = threading.Event(), threading.Event()

    class Flow(Workflow):
        @step(timeout=1, retry=ConstantDelayRetryPolicy(delay=0, maximum_attempts=2))
        def count(self, ctx: SyncContext, ev: StartEvent) -> StopEvent:
            with ctx.store.edit_state() as state:
                state["n"] = state.get("n", 0) + 1
                n = state["n"]
                if n == 1:  # the first attempt outlives its timeout inside the block
                    entered.set()
                    release.wait(10)
            return StopEvent(result=n)

    results: list[int] = []

    async def run() -> None:
        results.append(await Flow(timeout=None).run())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.to_thread.run_sync(entered.wait)
        mock_clock.jump(1.5)  # past the attempt's timeout, its thread still in the block
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert results == [1]  # the cancelled attempt's edit is gone


@attrs.define
class BaseLine:
    base: str = "base"


@attrs.define
class ExtendedLine(BaseLine):
    extra: int = 0


class Middle(Event):
    pass


async def test_a_subclassed_workflow_extends_its_bases_state() -> None:
    """Steps naming a state class and a subclass of it: the run's state is the subclass's
    (LlamaIndex's rule), and a base class's state given to set_state replaces only its
    fields."""

    class Base(Workflow):
        @step
        async def first(self, ctx: Context[BaseLine], ev: StartEvent) -> Middle:
            async with ctx.store.edit_state() as state:
                assert isinstance(state, ExtendedLine)
            await ctx.store.set_state(BaseLine(base="set by the base step"))
            return Middle()

    class Extended(Base):
        @step
        async def second(self, ctx: Context[ExtendedLine], ev: Middle) -> StopEvent:
            return StopEvent(result=await ctx.store.get_state())

    assert Extended().graph.state_class.cls is ExtendedLine
    held = Context(Extended())
    await held.store.set("extra", 7)
    result = await Extended().run(ctx=held)
    assert result == ExtendedLine(base="set by the base step", extra=7)  # extra kept

    class Unrelated(Base):
        @step
        async def second(self, ctx: Context[Profile], ev: Middle) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match="one derives from all the others"):
        Unrelated()
