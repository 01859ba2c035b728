"""Which collecting steps each fan-out feeds, worked out once from the step annotations.

A fan-out (a step that returns ``list[E]``) opens a stream when it runs; a collecting step
(one that takes ``list[R]``) gets the ``R`` events made in the nearest stream around them. So
a collecting step is *bound* to a fan-out when ``R`` is made at the fan-out's *level*: reachable
from the list's events through steps that neither fan out nor collect. A fan-out met on the way
opens a level of its own, and gives back to this one only what the collecting steps bound to it
return; a collecting step met on the way ends the walk, since what it returns surfaces one
level up. The runtime releases a stream to the steps bound to its fan-out (`_fanout`), and the
graph's checks refuse a collecting step that no fan-out feeds.

Annotations naming a base class match subclasses both ways, as in the graph's other checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from .._events import Event

EventTypes = tuple[type[Event], ...]


class _Config(Protocol):
    @property
    def failures_of(self) -> tuple[str, ...] | None: ...


class _Step(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def config(self) -> _Config: ...
    @property
    def is_error_handler(self) -> bool: ...
    @property
    def accepts(self) -> EventTypes: ...
    @property
    def returns(self) -> EventTypes: ...
    @property
    def bare_returns(self) -> EventTypes: ...
    @property
    def fans_out(self) -> EventTypes: ...
    @property
    def collect(self) -> object: ...


def bindings(steps: Sequence[_Step]) -> tuple[tuple[int, ...], ...]:
    """For each step, the indexes of the collecting steps its fan-out feeds (none for a step
    that does not fan out)."""
    return tuple(
        _bound(steps, _level(steps, spec.fans_out, frozenset({i}))) if spec.fans_out else ()
        for i, spec in enumerate(steps)
    )


def _related(event_type: type[Event], accepted: EventTypes) -> bool:
    return any(issubclass(event_type, t) or issubclass(t, event_type) for t in accepted)


def _bound(steps: Sequence[_Step], level: set[type[Event]]) -> tuple[int, ...]:
    return tuple(
        i
        for i, spec in enumerate(steps)
        if spec.collect is not None and any(_related(t, spec.accepts) for t in level)
    )


def _level(
    steps: Sequence[_Step], seeds: Iterable[type[Event]], guard: frozenset[int]
) -> set[type[Event]]:
    """The event types made at the level that ``seeds`` open. ``guard`` holds the fan-outs
    on the way here, so that a fan-out feeding itself ends the walk."""
    seen: set[type[Event]] = set()
    visited: set[int] = set()
    frontier = list(seeds)

    def visit(i: int) -> None:
        if i in visited:
            return
        visited.add(i)
        spec = steps[i]
        if spec.fans_out:
            frontier.extend(spec.bare_returns)  # a single event: this level
            if i not in guard:
                frontier.extend(_given_back(steps, i, guard | {i}))
        else:
            frontier.extend(spec.returns)
        for handler in _handlers_of(steps, spec):  # they run where the failure was
            visit(handler)

    while frontier:
        event_type = frontier.pop()
        if event_type in seen:
            continue
        seen.add(event_type)
        for i, spec in enumerate(steps):
            if spec.collect is None and _related(event_type, spec.accepts):
                visit(i)
    return seen


def _handlers_of(steps: Sequence[_Step], failing: _Step) -> list[int]:
    """The error handlers that take ``failing``'s final failures (none for a handler's)."""
    if failing.is_error_handler:
        return []
    return [
        i
        for i, spec in enumerate(steps)
        if spec.is_error_handler
        and (spec.config.failures_of is None or failing.name in spec.config.failures_of)
    ]


def _given_back(steps: Sequence[_Step], fan_out: int, guard: frozenset[int]) -> set[type[Event]]:
    """What the fan-out ``fan_out`` gives back to the level it runs at: what the collecting
    steps of its own level return (through theirs, should they fan out in turn)."""
    given: set[type[Event]] = set()
    for i in _bound(steps, _level(steps, steps[fan_out].fans_out, guard)):
        given.update(steps[i].bare_returns)
        if steps[i].fans_out and i not in guard:
            given.update(_given_back(steps, i, guard | {i}))
        for handler in _handlers_of(steps, steps[i]):  # they run where it runs
            given.update(steps[handler].returns)
    return given
