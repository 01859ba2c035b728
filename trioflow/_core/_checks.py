"""The graph checks a workflow may skip: reachability, dead ends, terminal events.

The other checks of `_graph` find graphs that cannot run as written (an event nobody makes, two
start events); these find steps that could never run, or whose work could never reach the run's
end, which is nearly always a mistake, but not always: a step fed only by events sent from
outside the annotations, a loop that ends the run by a timeout on purpose. So they are
LlamaIndex's checks under LlamaIndex's names, which a workflow may skip
(``Workflow(skip_graph_checks={"dead_end"})``) or a step may (``@step(skip_graph_checks=
["reachability"])``).

The graph they walk has a node per step and per event type: an edge from an event type to each
step that accepts it, and from a step to each event type it returns (in a list too). An
annotation naming a base class matches its subclasses both ways, as in the other checks.

- **reachability**: every step can be reached from the start event, the events the caller sends
  (`HumanResponseEvent` subclasses) or, for an error handler, the failures it is given.
- **dead_end**: every step that returns events has a path to a stop event or to the caller (an
  `InputRequiredEvent`).
- **terminal_event**: every event type a step returns is taken by some step, unless it ends the
  run or is for the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import attrs

from .._events import Event, HumanResponseEvent, InputRequiredEvent, StopEvent
from .._step import GraphCheck

EventTypes = tuple[type[Event], ...]


class _Step(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def accepts(self) -> EventTypes: ...
    @property
    def returns(self) -> EventTypes: ...
    @property
    def is_error_handler(self) -> bool: ...
    @property
    def config(self) -> _Config: ...


class _Config(Protocol):
    @property
    def skip_graph_checks(self) -> frozenset[str]: ...


@attrs.frozen
class Finding:
    """What one check found: its ``message`` names the steps or event types involved."""

    check: GraphCheck
    message: str


def findings(steps: Sequence[_Step], start: type[Event] | None) -> tuple[Finding, ...]:
    """What the checks find in ``steps`` (a workflow starting with ``start``; None: with no
    single start event, which is a problem of its own, and reachability is not checked),
    each step's own skips applied."""
    found: list[Finding] = []
    unreached = [] if start is None else _unreached(steps, start)
    if unreached:
        found.append(
            Finding(
                "reachability",
                f"unreachable {_steps(unreached)}: no path leads there from the start event or "
                "an event the caller sends (check the annotations, or skip the check "
                'with @step(skip_graph_checks=["reachability"]))',
            )
        )
    ending = _ending(steps)
    dead = [
        s.name
        for s in steps
        if s.returns and s.name not in ending and "dead_end" not in s.config.skip_graph_checks
    ]
    if dead:
        found.append(
            Finding(
                "dead_end",
                f"dead-end {_steps(dead)}: nothing returned there leads to a stop event or "
                "to the caller (check the annotations, or skip the check with "
                '@step(skip_graph_checks=["dead_end"]))',
            )
        )
    accepting = _Index(steps, lambda spec: spec.accepts)
    for spec in steps:
        for event_type in spec.returns:
            if not issubclass(event_type, StopEvent | InputRequiredEvent) and not any(
                accepting.related(event_type)
            ):
                found.append(
                    Finding(
                        "terminal_event",
                        f"step {spec.name!r} returns {event_type.__name__}, but no step accepts it",
                    )
                )
    return tuple(found)


def _unreached(steps: Sequence[_Step], start: type[Event]) -> list[str]:
    seeds = {start} | {t for s in steps for t in s.accepts if issubclass(t, HumanResponseEvent)}
    reached = _reached(steps, seeds, [s for s in steps if s.is_error_handler])
    return [
        s.name
        for s in steps
        if s.name not in reached and "reachability" not in s.config.skip_graph_checks
    ]


class _Index:
    """Steps by the event types they name (accept, or return): `related` finds those naming
    a type related to a given one (itself, a base class or a subclass) through the types'
    MROs, never by comparing every pair, so that a workflow of 1,000 steps is checked in
    moments (each pair compared made it a minute)."""

    def __init__(self, steps: Sequence[_Step], named: Callable[[_Step], EventTypes]) -> None:
        self._by_type: dict[type, list[_Step]] = {}
        #: For each type, the named types that are its subclasses (itself included).
        self._below: dict[type, list[type]] = {}
        for spec in steps:
            for event_type in named(spec):
                if event_type not in self._by_type:
                    for base in event_type.__mro__:
                        self._below.setdefault(base, []).append(event_type)
                self._by_type.setdefault(event_type, []).append(spec)

    def related(self, event_type: type) -> Iterator[_Step]:
        """The steps naming a type related to ``event_type`` (some more than once)."""
        by_type = self._by_type
        for base in event_type.__mro__:  # itself and its bases
            yield from by_type.get(base, ())
        for sub in self._below.get(event_type, ()):  # its subclasses
            if sub is not event_type:
                yield from by_type[sub]


def _reached(
    steps: Sequence[_Step], seeds: set[type[Event]], handlers: list[_Step]
) -> dict[str, _Step]:
    """The steps reachable from ``seeds`` and from the error ``handlers``, by name."""
    accepting = _Index(steps, lambda spec: spec.accepts)
    reached: dict[str, _Step] = {}
    events: set[type] = set()
    frontier = list(handlers)

    def arrived(new: Iterable[type]) -> None:
        for event_type in new:
            if event_type not in events:
                events.add(event_type)
                frontier.extend(s for s in accepting.related(event_type) if s.name not in reached)

    arrived(seeds)
    while frontier:
        spec = frontier.pop()
        if spec.name not in reached:
            reached[spec.name] = spec
            arrived(spec.returns)
    return reached


def _ending(steps: Sequence[_Step]) -> dict[str, _Step]:
    """The steps with a path to a stop event or to the caller, by name: walked back from
    them."""
    returning = _Index(steps, lambda spec: spec.returns)
    ending = {
        s.name: s
        for s in steps
        if any(issubclass(t, StopEvent | InputRequiredEvent) for t in s.returns)
    }
    frontier = list(ending.values())
    while frontier:
        spec = frontier.pop()
        for accepted in spec.accepts:
            for other in returning.related(accepted):
                if other.name not in ending:
                    ending[other.name] = other
                    frontier.append(other)
    return ending


def _steps(names: Sequence[str]) -> str:
    return f"step{'s' * (len(names) > 1)} {', '.join(map(repr, names))}"
