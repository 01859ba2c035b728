"""How a stream event is kept as a row: its kind (names and flags, made once per class) and
the row that holds its envelope."""

from __future__ import annotations

import attrs

from .._events import Event, LifecycleEvent, StopEvent
from .._wire import event_bases, qualified_name, type_name
from ._writes import EventRow


@attrs.frozen(cache_hash=True)  # a key of `_COLUMNS`, looked up for every event written
class EventKind:
    """What the feed keeps of an event's class besides the JSON, made once per class (by the
    pump): its names, for clients that filter (``?types=``), and how streams treat it."""

    type_name: str
    qualified_name: str = ""
    #: A `LifecycleEvent`: left out of a stream unless its client asks for it.
    lifecycle: bool = False
    #: The run's terminal event: in every stream, whatever its client filters.
    terminal: bool = False
    #: The names of its `Event` base classes, nearest first (``Event`` itself left out):
    #: what a LlamaIndex client reads as an envelope's ``types`` (`_llama`).
    bases: tuple[str, ...] = ()


def event_kind(cls: type[Event]) -> EventKind:
    """What the feed keeps of an event class (made once per class and run)."""
    return EventKind(
        type_name(cls),
        qualified_name(cls),
        lifecycle=issubclass(cls, LifecycleEvent),
        terminal=issubclass(cls, StopEvent),
        bases=event_bases(cls),
    )


#: `EventRow.flags`: the bits of an `EventKind`.
LIFECYCLE = 1
TERMINAL = 2


def event_row(seq: int, kind: EventKind, json: bytes) -> EventRow:
    """The row that keeps event ``seq`` of ``kind``, whose envelope is ``json``."""
    columns = _COLUMNS.get(kind)
    if columns is None:
        flags = (LIFECYCLE if kind.lifecycle else 0) | (TERMINAL if kind.terminal else 0)
        columns = _COLUMNS[kind] = (
            kind.type_name,
            kind.qualified_name,
            flags,
            ",".join(kind.bases),
        )
    # `tuple.__new__` itself: the named tuple's own ``__new__`` is a Python function, a frame
    # more for every event of a durable run.
    return _new_row(EventRow, (seq, *columns, json))


_new_row = tuple.__new__


#: The columns of each kind's rows, made once per kind (a handful per workflow).
_COLUMNS: dict[EventKind, tuple[str, str, int, str]] = {}
