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

import trio

from .. import Event, LifecycleEvent
from .._durable import RowSink, unencodable
from .._store import EventKind, NewEvent, Store, event_kind, event_row
from .._wire import (
    EncodeError,
    dumps,
    encode_envelope,
)
from ._record import RunRecord
from ._stored import StoredFeed

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
        envelope = encode_envelope(seq, event, tracebacks=record.tracebacks)
        try:
            json = dumps(envelope)
        except EncodeError as error:
            json = unencodable(
                record.handler._fail_from_server,
                record.run_id,
                record.workflow_name,
                envelope,
                error,
            )
        kept = event if keep_events else None
        try:
            if store is None or stored is None:
                feed.append_nowait(seq, kind, json, kept)
            else:  # its clients get it once it is committed (`RunRegistry._published`)
                if store.full or stored.keeps_waiting():
                    raise trio.WouldBlock
                store.append(NewEvent(record.run_id, event_row(seq, kind, json), kind))
        except trio.WouldBlock:
            if store is None or stored is None:
                await feed.append(seq, kind, json, kept)  # waits for a watcher: that yields
            else:
                await stored.wait_for_watchers()  # waits for a client: that yields
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


class StoreSink(RowSink):
    """`RowSink` for a run served over HTTP: a writer also waits for the run's attached
    clients, as the pump does; its clients get each event from ``feed`` once committed
    (`RunRegistry._published`)."""

    def __init__(
        self,
        store: Store,
        feed: StoredFeed,
        workflow_name: str,
        *,
        seq: int = 0,
        tracebacks: bool = False,
    ) -> None:
        super().__init__(store, feed.run_id, workflow_name, seq=seq, tracebacks=tracebacks)
        self._feed = feed
        #: The run's record, once it has one: its ``seq`` follows the sink's.
        self.record: RunRecord | None = None

    def has_room(self) -> bool:
        return super().has_room() and not self._feed.keeps_waiting()

    async def wait_for_room(self) -> None:
        await self._feed.wait_for_watchers()
        await super().wait_for_room()

    def write(self, seq: int, event: Event) -> None:
        super().write(seq, event)
        if self.record is not None:
            self.record.seq = seq
