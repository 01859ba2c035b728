"""`Envelope`: one event of a run's stream as the server sent it, and optionally as an event.

A stream's events arrive as envelopes ``{"seq", "type", "qualified_name", "time", "data"}``. Given
event classes (`Client.events` ``decode=``), the client also builds the event itself, with
trioflow's own strict wire decoder, the one the server checks events sent in with: the class
is found by qualified name, else by short name when only one of the classes has it (a server
started as ``trioflow serve flows:App`` names a class ``flows.Tick`` where the client imported
``myapp.flows.Tick``). Classes with a field that holds an exception (`StepFailedEvent`,
`WorkflowFailedEvent`) are not built: an exception travels as its type and message only, so
their envelopes keep ``event=None``, as do those of classes not given.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable
from typing import Any, TypeAlias

import attrs

from .. import (
    Event,
    StopEvent,
    Workflow,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)
from .._wire import decode_event, described_event_types, field_types, qualified_name, type_name
from ._errors import ResponseError

#: What ``decode=`` takes: a workflow (its event types, as ``GET /workflows/{name}`` lists
#: them), or an event class or several.
Decode: TypeAlias = Workflow | type[Workflow] | type[Event] | Iterable[type[Event]]

#: The runtime's terminal events: a stream ends after one of these or the workflow's own stop
#: event.
_TERMINALS: tuple[type[StopEvent], ...] = (
    StopEvent,
    WorkflowFailedEvent,
    WorkflowCancelledEvent,
    WorkflowTimedOutEvent,
)
_TERMINAL_NAMES = frozenset(qualified_name(t) for t in _TERMINALS)


@attrs.frozen
class Envelope:
    """One event of a run's stream, as the server sent it.

    Attributes:
        seq: its number in the run's stream, from 1; resume after it with ``after=seq``.
        type: the event class's short name (``"Progress"``).
        qualified_name: the class's module-qualified name on the server.
        data: the event's fields as JSON.
        event: the event itself, when ``decode=`` named its class (else None).
        time: when the event entered the run's stream on the server, in seconds since the
            epoch (None from a server that does not say).
    """

    seq: int
    type: str
    qualified_name: str
    data: dict[str, Any] = attrs.field(repr=False)
    event: Event | None = None
    time: float | None = None


class Decoder:
    """Turns the ``data:`` of stream messages into envelopes, and says which is terminal."""

    def __init__(self, decode: Decode | None = None) -> None:
        types = [] if decode is None else [*_event_types(decode), *_TERMINALS]
        by_name: dict[str, type[Event]] = {}
        short: dict[str, list[type[Event]]] = {}
        for event_type in types:
            by_name[qualified_name(event_type)] = event_type
        for event_type in by_name.values():
            short.setdefault(type_name(event_type), []).append(event_type)
        by_name.update({name: ts[0] for name, ts in short.items() if len(ts) == 1})
        self._types = by_name

    def envelope(self, data: str) -> Envelope:
        """The envelope a message's data holds, without its event (`decode` builds that).

        Raises:
            ResponseError: the data is no envelope (``unexpected_response``).
        """
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        if not (
            isinstance(value, dict)
            and type(value.get("seq")) is int
            and isinstance(value.get("type"), str)
            and isinstance(value.get("qualified_name"), str)
            and isinstance(value.get("data"), dict)
        ):
            raise ResponseError(
                200, "unexpected_response", f"the event stream sent no envelope: {data[:200]!r}"
            )
        at = value.get("time")
        return Envelope(
            value["seq"],
            value["type"],
            value["qualified_name"],
            value["data"],
            time=float(at) if isinstance(at, int | float) and type(at) is not bool else None,
        )

    def decode(self, envelope: Envelope) -> Envelope:
        """``envelope`` with its event built, if its class is one to decode.

        Raises:
            WireError: the data do not fit the class (a different version of it, say).
        """
        event_type = self._class_of(envelope)
        if event_type is None or _holds_exceptions(event_type):
            return envelope
        key = qualified_name(event_type)
        event = decode_event({key: event_type}, {"type": key, "data": envelope.data})
        return attrs.evolve(envelope, event=event)

    def is_terminal(self, envelope: Envelope) -> bool:
        """Whether the stream ends with ``envelope``, as far as the classes known here tell (a
        workflow's own stop event is known only when it is among those to decode)."""
        if envelope.qualified_name in _TERMINAL_NAMES:
            return True
        event_type = self._class_of(envelope)
        return event_type is not None and issubclass(event_type, StopEvent)

    def _class_of(self, envelope: Envelope) -> type[Event] | None:
        types = self._types
        return types.get(envelope.qualified_name) or types.get(envelope.type)


def _event_types(decode: Decode) -> list[type[Event]]:
    if isinstance(decode, Workflow):
        return described_event_types(decode)
    if isinstance(decode, type) and issubclass(decode, Workflow):
        # Describing reads the class alone (its graph, its steps' code); an instance made
        # without __init__ stands in for it, since a subclass's __init__ may want arguments.
        return described_event_types(object.__new__(decode))
    if isinstance(decode, type) and issubclass(decode, Event):
        return [decode]
    types = list(decode)
    for event_type in types:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(
                f"decode= takes a Workflow or Event classes, got {event_type!r} among them"
            )
    return types


def _holds_exceptions(event_type: type[Event]) -> bool:
    return any(_names_exception(tp) for tp in field_types(event_type).values())


def _names_exception(tp: Any) -> bool:
    if isinstance(tp, type) and issubclass(tp, BaseException):
        return True
    return any(_names_exception(arg) for arg in typing.get_args(tp))
