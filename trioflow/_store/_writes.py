"""What every store keeps and writes, whatever its engine: a run's row, a stream event's row,
and the operations writers append (`Store.append`), committed in order by group commit."""

from __future__ import annotations

from typing import Any, NamedTuple

import attrs


@attrs.frozen
class RunRow:
    """A run as the store keeps it."""

    run_id: str
    #: The order runs were started in (``GET /runs`` lists newest first).
    number: int
    workflow: str
    status: str
    #: The start event's fields as JSON.
    start_event: bytes
    #: The run records its lifecycle events too.
    lifecycle: bool
    #: The seq of its last committed event.
    last_seq: int
    #: Once it ended: its result as JSON (completed), or its error (failed, timed out,
    #: cancelled), as ``GET /runs/{id}`` gives them.
    result: bytes | None
    error: bytes | None
    started_at: float
    ended_at: float | None
    #: When the result is the workflow's own stop event: its class's names as JSON
    #: (``{"type", "qualified_name", "bases"}``), for clients that name it.
    result_type: str | None = None
    #: The workflow's graph it runs on (`trioflow._durable.fingerprint`): a journal is
    #: replayed only into the graph it was written by.
    fingerprint: str = ""
    #: How many times it was resumed after its process stopped.
    recoveries: int = 0
    #: On a store shared by processes: the node executing it (None: none is, it waits to be
    #: claimed), and whether a cancel was asked of it from another process.
    owner: str | None = None
    cancel_requested: bool = False


class EventRow(NamedTuple):
    """One committed stream event: its seq, its kind's names and flags, its envelope. A
    tuple: one is made per event, on the hot path of a durable run."""

    seq: int
    type: str
    qualified_name: str
    #: 1: a lifecycle event; 2: the terminal event.
    flags: int
    #: Its `Event` base classes' names, comma-separated.
    bases: str
    body: bytes


@attrs.frozen
class NewRun:
    """Write: a run has started; ``queued``: it is submitted for any process to claim and run
    (on a store shared by processes), rather than running in the writer's."""

    row: RunRow
    queued: bool = False

    @property
    def size(self) -> int:
        return len(self.row.start_event) + 256


class NewEvent:
    """Write: a run streamed an event; ``tag`` is anything its writer wants its commit
    listeners to get back with it (the server: the event's kind, made once per class)."""

    __slots__ = ("event", "run_id", "size", "tag")

    def __init__(self, run_id: str, event: EventRow, tag: Any = None) -> None:
        self.run_id = run_id
        self.event = event
        self.tag = tag
        self.size = len(event.body) + 128


@attrs.frozen
class RunEnded:
    """Write: a run's outcome, after its last event."""

    run_id: str
    status: str
    result: bytes | None
    error: bytes | None
    ended_at: float
    last_seq: int
    result_type: str | None = None

    @property
    def size(self) -> int:
        return len(self.result or b"") + len(self.error or b"") + 128


@attrs.frozen
class RunPurged:
    """Write: forget a run, events, journal and all. Usually one that has ended; with
    ``under_way``, one that still runs (it was cancelled, and its end is on its way): what it
    writes from then on, up to its end, is dropped, so that the purge is final once
    committed, and a crash leaves nothing of it behind."""

    run_id: str
    under_way: bool = False

    @property
    def size(self) -> int:
        return 64


class JournalEntry:
    """Write: record ``n`` of a run's journal (`trioflow._durable`), of ``kind``, its body
    JSON. What a resumed run is rebuilt from."""

    __slots__ = ("body", "kind", "n", "run_id", "size")

    def __init__(self, run_id: str, n: int, kind: str, body: bytes) -> None:
        self.run_id = run_id
        self.n = n
        self.kind = kind
        self.body = body
        self.size = len(body) + 64


@attrs.frozen
class RunResumed:
    """Write: a run is resumed after its process stopped (one recovery more)."""

    run_id: str
    recoveries: int

    @property
    def size(self) -> int:
        return 64


class InboxTaken:
    """Write: the event sent to a run as its inbox row ``seq`` (on a store shared by
    processes) was delivered to the run (its journal says so) or refused by it."""

    __slots__ = ("run_id", "seq")
    size = 64

    def __init__(self, run_id: str, seq: int) -> None:
        self.run_id = run_id
        self.seq = seq


class RunReleased:
    """Write: the run stopped in this process without ending (on a store that processes
    share): another process may claim it at once, rather than after this one's lease."""

    __slots__ = ("run_id",)
    size = 64

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


Operation = (
    NewRun | NewEvent | RunEnded | RunPurged | JournalEntry | RunResumed | InboxTaken | RunReleased
)
