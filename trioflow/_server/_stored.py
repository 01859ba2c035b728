"""A run's feed on a durable store: committed events only, and every one of them, for any client.

On a store (`trioflow._store`), a run's events reach its clients once they are committed (the
store's commit listener appends them to the feed), so a client never holds an event that a
crash could take back. The store keeps every event, so the feed's history is only a cache of
the newest ones: it never waits for a slow client (what bounds the producer is the store's
pending list, backpressure from the disk), and a client behind what the feed still holds reads
the store instead (`StoredWatcher`), never `EventsExpired`. A run known only from the store (it
finished before this process started) has a feed of that kind with nothing cached.
"""

from __future__ import annotations

import trio

from .._store import EventRow, SqliteStore, StoreError
from ._feed import BATCH, BATCH_BYTES, Entry, EventKind, EventsExpired, RunFeed, Watcher

#: `EventRow.flags`: the bits of an `EventKind`.
LIFECYCLE = 1
TERMINAL = 2


def event_row(seq: int, kind: EventKind, json: bytes) -> EventRow:
    """The row that keeps event ``seq`` of ``kind``, whose envelope is ``json``."""
    flags = (LIFECYCLE if kind.lifecycle else 0) | (TERMINAL if kind.terminal else 0)
    return EventRow(seq, kind.type_name, kind.qualified_name, flags, ",".join(kind.bases), json)


class StoredFeed(RunFeed):
    """A `RunFeed` whose history caches the newest committed events of a run on a store."""

    def __init__(
        self,
        store: SqliteStore,
        run_id: str,
        retain: int,
        retain_bytes: int,
        max_watchers: int | None = None,
        *,
        last_seq: int = 0,
        finished: bool = False,
    ) -> None:
        super().__init__(retain, retain_bytes, max_watchers)
        self.store = store
        self.run_id = run_id
        self.last_seq = last_seq
        self.finished = finished
        # The store keeps everything: nothing is held for a first client, and no client
        # holds the run back.
        self._holding = False
        self._unblocked = True
        self._kinds: dict[tuple[str, str, int, str], EventKind] = {}

    def append_row(self, row: EventRow) -> None:
        """Add a committed event (the store's commit listener calls this, in seq order)."""
        self.append_nowait(row.seq, self.kind_of(row), row.body)

    def kind_of(self, row: EventRow) -> EventKind:
        """The `EventKind` of a stored event, made once per kind."""
        key = (row.type, row.qualified_name, row.flags, row.bases)
        kind = self._kinds.get(key)
        if kind is None:
            kind = self._kinds[key] = EventKind(
                row.type,
                row.qualified_name,
                lifecycle=bool(row.flags & LIFECYCLE),
                terminal=bool(row.flags & TERMINAL),
                bases=tuple(name for name in row.bases.split(",") if name),
            )
        return kind

    def watch(self, after: int = 0) -> StoredWatcher:
        """A watcher from the entry after seq ``after``, as `RunFeed.watch`, except that no
        event is ever too old: the store has them all.

        Raises:
            ValueError: ``after`` is negative or beyond the last entry.
            TooManyWatchers: ``max_watchers`` watchers are attached already.
        """
        self._check_watch(after)
        return StoredWatcher(self, after)


class StoredWatcher(Watcher):
    """A client's position in a `StoredFeed`: entries the feed no longer holds come from the
    store, in batches as large as the feed's."""

    _feed: StoredFeed

    def next_batch_nowait(self) -> list[Entry]:
        if self.cursor < self._feed.first_seq - 1:
            raise trio.WouldBlock  # behind the cache: reading the store takes a thread
        try:
            return super().next_batch_nowait()
        except EventsExpired:  # evicted meanwhile: the store has them
            raise trio.WouldBlock from None

    async def next_batch(self) -> list[Entry]:
        feed = self._feed
        while True:
            if self.cursor < feed.first_seq - 1:
                rows = await feed.store.events(
                    feed.run_id, after=self.cursor, limit=BATCH, max_bytes=BATCH_BYTES
                )
                if not rows:
                    raise StoreError(
                        f"the store has no event of run {feed.run_id} after seq {self.cursor}, "
                        f"though the run has {feed.last_seq}"
                    )
                entries = [Entry.encode(row.seq, feed.kind_of(row), row.body) for row in rows]
                self.cursor = entries[-1].seq
                return entries
            try:
                return await super().next_batch()
            except EventsExpired:  # evicted while it waited: read the store
                continue
