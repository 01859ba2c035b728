"""How a durable run's journal writes events and store values, and reads them back.

Events go through the wire format (`trioflow._wire`), as the HTTP API writes them, with their
qualified name. Reading one back looks the name up among the workflow's own event types and
their subclasses (and `HumanResponseEvent`'s), never an arbitrary import. Since a journal is
only worth what it can rebuild, an event is checked when it is written: read back, it must
equal itself, or the step that made it fails with an error naming the field that does not
survive. A `StepFailedEvent` is the exception: its exception comes back as a `JournaledError`
with the original's type name and message (exceptions are not data).

Store values must be JSON values as they are (None, bool, int, float, str, list, dict with
str keys): anything else would come back changed (a tuple as a list, an object as its repr).
A typed state is recorded as its fields' JSON values (`StateClass.to_json`), which its
fields' types read back.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from .._core._values import json_problem
from .._errors import JournaledError, NotJournalable
from .._events import CollectedEvents, Event, HumanResponseEvent, StartEvent, StepFailedEvent
from .._wire import (
    WireError,
    decode_event,
    decode_start_event,
    encode_event_data,
    encode_exception,
    field_types,
    qualified_name,
)


class EventCodec:
    """Writes and reads the events of one workflow's journal."""

    def __init__(self, event_types: Iterable[type[Event]]) -> None:
        #: The graph's own types: what is read back must be one of them or a subclass.
        self._roots = (*event_types, HumanResponseEvent, StepFailedEvent, CollectedEvents)
        self._types: dict[str, type[Event]] = {qualified_name(t): t for t in self._roots}

    def lookup(self, name: str) -> type[Event]:
        """The event type whose qualified name is ``name``.

        Raises:
            NotJournalable: it is neither one of the workflow's event types nor a subclass of
                one.
        """
        found = self._types.get(name)
        if found is None:
            for root in self._roots:
                for cls in _subclasses(root):
                    self._types.setdefault(qualified_name(cls), cls)
            found = self._types.get(name)
        if found is None:
            raise NotJournalable(
                f"event type {name} is not one of the workflow's event types (nor a subclass "
                "of one), so a durable run cannot record it"
            )
        return found

    def name(self, cls: type[Event]) -> str:
        """``cls``'s qualified name, once it is known to read back as ``cls``."""
        name = qualified_name(cls)
        if self.lookup(name) is not cls:
            raise NotJournalable(
                f"two event classes are called {name}: a durable run cannot tell them apart"
            )
        return name

    def encode(self, event: Event) -> dict[str, Any]:
        """``event`` as journal JSON.

        Raises:
            NotJournalable: it would not read back equal to itself (the message names it and
                the field that does not).
        """
        if isinstance(event, StepFailedEvent):
            return {
                "q": qualified_name(StepFailedEvent),
                "step_name": event.step_name,
                "attempt": event.attempt,
                "error": encode_exception(event.exception),
                "input": self.encode(event.input_event),
                "elapsed": event.elapsed_seconds,
                "at": event.failed_at,
            }
        if type(event) is CollectedEvents:  # what a collecting step or a join ran on
            return {
                "q": qualified_name(CollectedEvents),
                "events": [self.encode(item) for item in event.events],
            }
        name = self.name(type(event))
        body = {"q": name, "data": encode_event_data(event)}
        try:
            back = self.decode(body)
        except WireError as error:
            raise NotJournalable(
                f"{type(event).__name__} cannot be recorded by a durable run: {error}"
            ) from None
        if back != event:
            raise NotJournalable(
                f"{type(event).__name__} cannot be recorded by a durable run: "
                f"{_differing(event, back)} does not read back as it was (a durable run's "
                "events hold JSON values, events and attrs classes of them)"
            )
        return body

    def decode(self, body: dict[str, Any]) -> Event:
        """The event ``body`` (from `encode`) stands for.

        Raises:
            WireError, NotJournalable: it does not fit its type any more.
        """
        cls = self.lookup(body["q"])
        if cls is StepFailedEvent:
            error = body["error"]
            return StepFailedEvent(
                step_name=body["step_name"],
                attempt=body["attempt"],
                exception=JournaledError(error["type"], error["message"]),
                input_event=self.decode(body["input"]),
                elapsed_seconds=body.get("elapsed", 0.0),  # (journals of before: none)
                failed_at=body.get("at", 0.0),
            )
        if cls is CollectedEvents:
            return CollectedEvents(events=tuple(self.decode(item) for item in body["events"]))
        if issubclass(cls, StartEvent):
            return decode_start_event(cls, body["data"])
        return decode_event({body["q"]: cls}, {"type": body["q"], "data": body["data"]})


def check_storable(key: str, value: Any, *, given: bool = False) -> None:
    """Refuse a store value a durable run cannot record as it is (``given``: one of the
    store of the context a caller gave the run, rather than set by ``ctx.store.set``).

    Raises:
        NotJournalable: ``value`` holds something that is no JSON value (the message names
            the key and where in the value).
    """
    problem = json_problem(value)
    if problem is not None:
        where, what = problem
        place = f"{key!r}{where}"
        said = (
            f"the context given to a durable run (ctx=...): its store value {place}"
            if given
            else f"ctx.store.set({key!r}, ...) in a durable run: {place}"
        )
        raise NotJournalable(
            f"{said} holds {what}; a durable "
            "run's store holds JSON values (None, bool, int, float, str, list, dict with str "
            "keys), which it can record and give back as they are"
        )


def _differing(event: Event, back: Event) -> str:
    for field in attrs.fields(type(event)):  # type: ignore[arg-type]  # attrs at runtime
        try:
            if getattr(event, field.name) != getattr(back, field.name):
                return f"field {field.name!r}"
        except Exception:
            return f"field {field.name!r}"
    return "a field"


def _subclasses(cls: type) -> Iterator[type]:
    subclass: type
    for subclass in cls.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


def fingerprint(workflow: Any) -> str:
    """A digest of ``workflow``'s graph: its steps, what each takes and returns (and how:
    fanning out, collecting, joining), its start and stop events, and the fields (names and
    types) of the events they name. A journal is replayed only into a graph with the same
    digest."""
    graph = workflow.graph
    parts = [qualified_name(graph.start_event_type), qualified_name(graph.stop_event_type)]
    for spec in graph.steps:
        accepts = ",".join(qualified_name(t) for t in spec.accepts)
        returns = ",".join(qualified_name(t) for t in spec.returns)
        parts.append(f"{spec.name}({accepts})->{returns}")
        if spec.fans_out or spec.collect is not None or spec.slots:
            # (a step that does none of these adds nothing: other graphs keep their digest)
            fans = ",".join(qualified_name(t) for t in spec.fans_out)
            take = None if spec.collect is None else spec.collect.take
            slots = ",".join(qualified_name(t) for t in spec.slots)
            collects = "-" if spec.collect is None else f"take={take}"
            parts.append(f"{spec.name} fans[{fans}] collects[{collects}] joins[{slots}]")
    for event_type in graph.event_types():  # and the fields of every event it names
        fields = ",".join(f"{name}:{tp!r}" for name, tp in field_types(event_type).items())
        parts.append(f"{qualified_name(event_type)}{{{fields}}}")
    state = graph.state_class
    if state.typed:  # (an untyped workflow keeps its digest: its journals resume as before)
        parts.append(f"state {state.name}{{{_state_fields(state.cls, state.fields())}}}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _state_fields(cls: type, names: tuple[str, ...]) -> str:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a name only its defining function knew: the names still count
        hints = {}
    return ",".join(f"{name}:{hints.get(name)!r}" for name in names)


def codec_for(workflow: Any) -> EventCodec:
    """The codec of ``workflow``'s journals."""
    return EventCodec(workflow.graph.event_types())
