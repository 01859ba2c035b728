"""The pump: the one task per run that moves the run's stream into its `RunFeed`.

It numbers each event, encodes it once, and appends it to the feed. Reading the stream and
appending to the feed seldom take a trip through the scheduler while there is something to take
and room to put it (the stream hands out what is buffered, looking every 64 events whether it
is time to yield, and `RunFeed.append_nowait` does not wait), so a full buffer of large events
would keep the pump busy for many milliseconds, starving every other task of the server: the
clients' writes, other runs, new requests.
The pump therefore yields once it has worked `YIELD_EVERY` seconds since the others last ran.
That keeps the batching (a watcher wakes to a millisecond's worth of events and sends them in
one write) that yielding after every event loses: measured with ``python -m benchmarks --only
serve --only serve_fanout``, a checkpoint per event cut the rate to one client about sixfold,
and to 100 clients on one run about thirtyfold.

An event that `dumps` cannot encode (a field holding an int too long to convert to text) must
not end the pump: the feed would end without its terminal event. It goes to the feed with that
value replaced by a marker string (`mark_unencodable`), and fails the run, if it is still
running, with an `EncodeError` naming the event and the value, since its clients do not receive
what it streamed. Once the outcome is decided, the event still goes out marked and the server
logs a warning; that includes the terminal event (a stop event whose result holds such an int),
so the stream always ends with one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import trio

from .. import Event, LifecycleEvent, StopEvent
from .._store import NewEvent, SqliteStore
from .._wire import (
    EncodeError,
    dumps,
    encode_envelope,
    event_bases,
    mark_unencodable,
    qualified_name,
    type_name,
)
from ._feed import EventKind
from ._record import RunRecord
from ._stored import StoredFeed, event_row

logger = logging.getLogger("trioflow.server")

#: Seconds of work after which the pump lets other tasks run.
YIELD_EVERY = 0.001
#: Seconds a read of the stream takes when it let other tasks run (a fast read takes
#: microseconds).
RESUMED_AFTER = 0.0001


async def pump(record: RunRecord, *, clock: Callable[[], float] = time.perf_counter) -> None:
    """Number, encode and retain every event of the run's stream, terminal event included.

    ``clock`` measures the pump's own work (encoding and appending) since it last let the
    others run: wall time, not trio's clock, since what a busy pump takes from the other
    tasks is real time. The pump knows it let them run when it yielded or waited for room,
    and when reading the stream took longer than `RESUMED_AFTER` (the stream waits when it
    is empty, and yields on its own now and then): counting that as work would make the pump
    yield again at once, cutting the batches its watchers send into small writes.
    """
    feed = record.feed
    store = record.store
    # On a store the feed is a StoredFeed: the pump waits for the disk and for the clients
    # attached, and the feed gets each event once it is committed.
    stored = feed if isinstance(feed, StoredFeed) else None
    busy = 0.0
    ended = clock()
    kinds: dict[type[Event], EventKind] = {}
    # With lifecycle events asked for, every event passes the filter: `Event` is named too.
    named = (Event, LifecycleEvent) if record.lifecycle else ()
    keep_events = record.keep_events
    async for event in record.handler.stream_events(*named):
        began = clock()
        if began - ended > RESUMED_AFTER:
            busy = 0.0
        seq = record.seq + 1
        kind = kinds.get(type(event)) or kinds.setdefault(type(event), event_kind(type(event)))
        envelope = encode_envelope(seq, event)
        try:
            json = dumps(envelope)
        except EncodeError as error:
            json = _unencodable(record.handler._fail_from_server, record, envelope, error)
        kept = event if keep_events else None
        try:
            if store is None or stored is None:
                feed.append_nowait(seq, kind, json, kept)
            else:  # its clients get it once it is committed (`RunRegistry._published`)
                if store.full or stored.keeps_waiting(seq):
                    raise trio.WouldBlock
                store.append(NewEvent(record.run_id, event_row(seq, kind, json), kind))
        except trio.WouldBlock:
            if store is None or stored is None:
                await feed.append(seq, kind, json, kept)  # waits for a watcher: that yields
            else:
                await stored.wait_for_watchers(seq)  # waits for a client: that yields
                await store.room()  # waits for the disk
                store.append(NewEvent(record.run_id, event_row(seq, kind, json), kind))
            busy = 0.0
            record.seq = seq  # taken only once appended: a cancelled wait leaves no gap
        else:
            record.seq = seq
            busy += clock() - began
            if busy >= YIELD_EVERY:
                await trio.lowlevel.checkpoint()
                busy = 0.0
        ended = clock()
    record.pumped = True


def event_kind(cls: type[Event]) -> EventKind:
    """What the feed keeps of an event class (made once per class and run)."""
    return EventKind(
        type_name(cls),
        qualified_name(cls),
        lifecycle=issubclass(cls, LifecycleEvent),
        terminal=issubclass(cls, StopEvent),
        bases=event_bases(cls),
    )


class _Named(Protocol):
    @property
    def run_id(self) -> str: ...

    @property
    def workflow_name(self) -> str: ...


def _unencodable(
    fail: Callable[[Exception], bool],
    run: _Named,
    envelope: dict[str, Any],
    error: EncodeError,
) -> bytes:
    """The JSON of an event `dumps` refused: marked, failing the run (``fail``) if it still
    runs."""
    failure = EncodeError(
        f"the {envelope['type']} event (seq {envelope['seq']}) cannot be encoded as JSON: {error}",
        error.field,
    )
    if not fail(failure):  # decided: say what its clients miss
        logger.warning(
            "trioflow: run %s of %s: %s; it is sent with a marker in its place",
            run.run_id,
            run.workflow_name,
            failure,
        )
    return dumps(mark_unencodable(envelope))


class StoreSink:
    """Where the stream events of a durable run go on a server (`trioflow._durable`'s
    `StreamSink`): numbered, encoded once and appended to the store by the task that writes
    them, so that they are committed in order with the journal; its clients get them from
    ``feed`` once committed (`RunRegistry._published`). A writer waits for the disk and for
    the run's attached clients, as the pump does."""

    def __init__(
        self, store: SqliteStore, feed: StoredFeed, workflow_name: str, *, seq: int = 0
    ) -> None:
        self.seq = seq
        self.run_id = feed.run_id
        self.workflow_name = workflow_name
        self._store = store
        self._feed = feed
        self._kinds: dict[type[Event], EventKind] = {}
        self._fail: Callable[[Exception], bool] = lambda _: False
        #: The run's record, once it has one: its ``seq`` follows the sink's.
        self.record: RunRecord | None = None

    def attach(self, fail: Callable[[Exception], bool]) -> None:
        self._fail = fail

    def has_room(self) -> bool:
        return not (self._store.full or self._feed.keeps_waiting(self.seq + 1))

    async def wait_for_room(self) -> None:
        await self._feed.wait_for_watchers(self.seq + 1)
        await self._store.room()

    def write(self, seq: int, event: Event) -> None:
        cls = type(event)
        kind = self._kinds.get(cls) or self._kinds.setdefault(cls, event_kind(cls))
        envelope = encode_envelope(seq, event)
        try:
            json = dumps(envelope)
        except EncodeError as error:
            json = _unencodable(self._fail, self, envelope, error)
        self._store.append(NewEvent(self.run_id, event_row(seq, kind, json), kind))
        self.seq = seq
        if self.record is not None:
            self.record.seq = seq
