"""Collecting events: `Collector`'s semantics, its cost, and `ctx.collect_events` in a run."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trioflow import Context, Event, StartEvent, StopEvent, Workflow, WorkflowTimeoutError, step
from trioflow._core._collect import Collector


class Base(Event):
    n: int = 0


class Sub(Base):
    pass


class SubSub(Sub):
    pass


class Sibling(Base):
    pass


class Other(Event):
    n: int = 0


class Unlisted(Event):
    n: int = 0


HIERARCHY: tuple[type[Event], ...] = (Base, Sub, SubSub, Sibling, Other)


def test_returns_in_list_order_once_every_entry_has_an_event() -> None:
    """None until each entry has an event, then the events in the order of the list."""
    collector = Collector()
    assert collector.collect("join", Other(n=1), [Base, Other]) is None
    assert collector.collect("join", Base(n=2), [Base, Other]) == [Base(n=2), Other(n=1)]


def test_a_type_listed_k_times_needs_k_events() -> None:
    """[A, A, B] waits for two A events; the result keeps the list's order."""
    collector = Collector()
    expected = [Base, Base, Other]
    assert collector.collect("join", Base(n=1), expected) is None
    assert collector.collect("join", Other(n=2), expected) is None
    assert collector.collect("join", Base(n=3), expected) == [Base(n=1), Base(n=3), Other(n=2)]


def test_what_a_result_does_not_take_stays_buffered() -> None:
    """Events beyond one per entry wait for the next round; the oldest go first."""
    collector = Collector()
    expected = (Base, Other)
    assert collector.collect("join", Base(n=1), expected) is None
    assert collector.collect("join", Base(n=2), expected) is None
    assert collector.collect("join", Other(n=3), expected) == [Base(n=1), Other(n=3)]
    assert collector.collect("join", Other(n=4), expected) == [Base(n=2), Other(n=4)]
    assert collector.collect("join", Other(n=5), expected) is None


def test_buffers_are_per_step_and_per_list() -> None:
    """Another step, or the same types in another order, collect into a buffer of their own."""
    collector = Collector()
    assert collector.collect("a", Base(n=1), [Base, Other]) is None
    assert collector.collect("b", Other(n=2), [Base, Other]) is None
    assert collector.collect("a", Other(n=3), [Other, Base]) is None
    assert collector.collect("a", Other(n=4), [Base, Other]) == [Base(n=1), Other(n=4)]
    assert collector.collect("a", Base(n=5), [Other, Base]) == [Other(n=3), Base(n=5)]


def test_an_event_no_entry_matches_is_ignored() -> None:
    """An event of an unlisted type returns None and is not buffered (it used to raise)."""
    collector = Collector()
    assert collector.collect("join", Unlisted(n=1), [Base]) is None
    assert collector.collect("join", Base(n=2), [Base]) == [Base(n=2)]


def test_an_empty_list_collects_nothing_at_once() -> None:
    """An empty expected list returns [] straight away, whatever the event."""
    assert Collector().collect("join", Unlisted(), []) == []


def test_entries_must_be_event_classes() -> None:
    """A list entry that is not an Event subclass is a TypeError naming it."""
    with pytest.raises(TypeError, match="Event subclasses, got <class 'int'>"):
        Collector().collect("join", Base(), [Base, int])  # type: ignore[list-item]


def test_a_subclass_event_fills_whichever_entry_completes_the_list() -> None:
    """With [Base, Sub], a Sub then a Base complete the list (first-fit put the Sub on the Base
    entry and waited for another Sub)."""
    collector = Collector()
    assert collector.collect("join", Sub(n=1), [Base, Sub]) is None
    assert collector.collect("join", Base(n=2), [Base, Sub]) == [Base(n=2), Sub(n=1)]


def test_first_fit_answers_are_kept() -> None:
    """Where first-fit completes, its answer stands: each entry in list order takes the
    oldest event that matches it, even a subclass event on a base entry."""
    collector = Collector()
    expected = [Base, Sub]
    assert collector.collect("join", Sub(n=1), expected) is None
    assert collector.collect("join", Sub(n=2), expected) == [Sub(n=1), Sub(n=2)]
    assert collector.collect("join", SubSub(n=3), [Base, Base, Sub]) is None
    assert collector.collect("join", Base(n=4), [Base, Base, Sub]) is None
    assert collector.collect("join", Sub(n=5), [Base, Base, Sub]) == [
        SubSub(n=3),
        Base(n=4),
        Sub(n=5),
    ]


def test_a_longer_chain_of_reassignments() -> None:
    """Completing [Sub, Base, SubSub] from SubSub, Sub, Base moves every earlier event to
    another entry; the flow finds it at the third event."""
    collector = Collector()
    expected = [SubSub, Sub, Base]
    assert collector.collect("join", SubSub(n=1), expected) is None
    assert collector.collect("join", Sub(n=2), expected) is None
    assert collector.collect("join", Base(n=3), expected) == [SubSub(n=1), Sub(n=2), Base(n=3)]
    assert collector.collect("join", Base(n=4), [Sub, Base]) is None
    assert collector.collect("join", SubSub(n=5), [Sub, Base]) == [SubSub(n=5), Base(n=4)]


# --- Against a reference ------------------------------------------------------------------


def complete_assignment_exists(buffer: Sequence[Event], expected: Sequence[type[Event]]) -> bool:
    """Whether every entry can get its own event (Kuhn's matching, entries to events)."""
    owner: dict[int, int] = {}  # buffer index -> entry

    def place(entry: int, seen: set[int]) -> bool:
        for i, event in enumerate(buffer):
            if i in seen or not isinstance(event, expected[entry]):
                continue
            seen.add(i)
            if i not in owner or place(owner[i], seen):
                owner[i] = entry
                return True
        return False

    return all(place(entry, set()) for entry in range(len(expected)))


def first_fit(buffer: Sequence[Event], expected: Sequence[type[Event]]) -> list[int] | None:
    """The old collect_events' choice: per entry, the oldest unused matching event."""
    chosen: list[int] = []
    for wanted in expected:
        index = next(
            (i for i, e in enumerate(buffer) if i not in chosen and isinstance(e, wanted)), None
        )
        if index is None:
            return None
        chosen.append(index)
    return chosen


@settings(max_examples=2 * settings().max_examples)  # a cheap property: twice the usual
@given(
    expected=st.lists(st.sampled_from(HIERARCHY), min_size=1, max_size=5),
    arrivals=st.lists(st.sampled_from((*HIERARCHY, Unlisted)), max_size=30),
)
def test_agrees_with_an_exhaustive_reference(
    expected: list[type[Event]], arrivals: list[type[Event]]
) -> None:
    """Against brute force: a result comes exactly when a complete assignment exists, it is
    first-fit's whenever first-fit completes, and it is always a valid assignment."""
    collector = Collector()
    buffer: list[Event] = []
    for n, kind in enumerate(arrivals):
        event = kind(n=n)  # type: ignore[call-arg]
        got = collector.collect("join", event, expected)
        if any(isinstance(event, t) for t in expected):
            buffer.append(event)
        if not complete_assignment_exists(buffer, expected):
            assert got is None
            continue
        assert got is not None
        fit = first_fit(buffer, expected)
        if fit is not None:
            assert got == [buffer[i] for i in fit]
        assert all(isinstance(e, t) for e, t in zip(got, expected, strict=True))
        for e in got:  # n makes events unique, so value equality finds the very event
            buffer.remove(e)


# --- Cost ---------------------------------------------------------------------------------


class CountingMeta(type):
    """A metaclass that counts `isinstance` / `issubclass` checks against its classes."""

    checks = 0

    def __instancecheck__(cls, instance: Any) -> bool:
        CountingMeta.checks += 1
        return super().__instancecheck__(instance)

    def __subclasscheck__(cls, subclass: type) -> bool:
        CountingMeta.checks += 1
        return super().__subclasscheck__(subclass)


class CountedBase(Event, metaclass=CountingMeta):
    n: int = 0


class CountedSub(CountedBase):
    pass


class CountedOther(Event, metaclass=CountingMeta):
    n: int = 0


def fan_in(collector: Collector, size: int) -> int:
    """Send ``size`` events (half CountedSub first, then CountedBase and CountedOther by turns)
    through ``collector``, collecting [CountedBase, CountedSub, CountedOther]; return how many
    results came back. The CountedSub events pile up, so a scan of the buffer per call shows."""
    expected = [CountedBase, CountedSub, CountedOther]
    events: list[Event] = [CountedSub(n=n) for n in range(size // 2)]
    for n in range(size // 2, size, 2):
        events += [CountedBase(n=n), CountedOther(n=n + 1)]
    return sum(collector.collect("join", event, expected) is not None for event in events)


def test_matching_checks_each_class_once_per_buffer() -> None:
    """2,000 events cost one isinstance check per (event class, listed type), not one per
    buffered event (the old code made about a million here)."""
    CountingMeta.checks = 0
    assert fan_in(Collector(), 2000) == 500
    assert CountingMeta.checks <= 3 * 3


def count_calls(work: Callable[[], object]) -> int:
    """How many Python and builtin function calls ``work`` makes (deterministic, unlike time)."""
    calls = 0

    def profile(frame: types.FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


def test_cost_grows_linearly_with_the_events() -> None:
    """Twice the events make at most about twice the function calls: collecting is linear
    (first-fit over a growing buffer made four times as many)."""
    small = count_calls(lambda: fan_in(Collector(), 1000))
    large = count_calls(lambda: fan_in(Collector(), 2000))
    assert large <= 2.2 * small, (small, large)


# --- In a run (Context.collect_events) ------------------------------------------------------


async def test_collect_events_in_a_run_ignores_unlisted_events() -> None:
    """ctx.collect_events returns None for an event of an unlisted type instead of failing."""

    class Flow(Workflow):
        @step
        async def fan_out(self, ctx: Context, ev: StartEvent) -> Base | Unlisted | None:
            ctx.send_event(Base(n=1))
            ctx.send_event(Unlisted(n=2))
            ctx.send_event(Base(n=3))
            return None

        @step(num_workers=1)
        async def join(self, ctx: Context, ev: Base | Unlisted) -> StopEvent | None:
            got = ctx.collect_events(ev, [Base, Base])
            return None if got is None else StopEvent(result=got)

    assert await Flow().run() == [Base(n=1), Base(n=3)]


async def test_collect_events_in_a_run_completes_with_subclass_overlap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """In a run, [Base, Sub] completes from a Sub and then a Base (first-fit waited forever)."""

    class Flow(Workflow):
        @step
        async def fan_out(self, ctx: Context, ev: StartEvent) -> Base | None:
            ctx.send_event(Sub(n=1))
            ctx.send_event(Base(n=2))
            return None

        @step(num_workers=1)
        async def join(self, ctx: Context, ev: Base) -> StopEvent | None:
            got = ctx.collect_events(ev, [Base, Sub])
            return None if got is None else StopEvent(result=got)

    try:
        result = await Flow(timeout=10).run()
    except WorkflowTimeoutError:
        result = "timed out"
    assert result == [Base(n=2), Sub(n=1)]


async def test_collect_events_in_a_run_with_an_empty_list() -> None:
    """ctx.collect_events(ev, []) returns [] at once."""

    class Flow(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent(result=ctx.collect_events(ev, []))

    assert await Flow().run() == []
