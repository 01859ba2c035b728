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

import logging
from typing import Any, cast

import attrs
import trio

from .. import RunStatus
from .._store import (
    LIFECYCLE,
    POLL,
    TERMINAL,
    EventKind,
    EventRow,
    RunRow,
    SharedStore,
    Store,
    StoreError,
    StoreUnavailable,
)
from .._wire import dumps, loads
from ._feed import BATCH, BATCH_BYTES, Entry, EventsExpired, RunFeed, Watcher
from ._record import RunRecord, brief, described

logger = logging.getLogger("trioflow.server")


class StoredFeed(RunFeed):
    """A `RunFeed` whose history caches the newest committed events of a run on a store."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        retain: int,
        retain_bytes: int,
        max_watchers: int | None = None,
        *,
        last_seq: int = 0,
        finished: bool = False,
        shared: dict[str, StoredFeed] | None = None,
        follows: bool = False,
    ) -> None:
        super().__init__(retain, retain_bytes, max_watchers)
        self.store = store
        self.run_id = run_id
        self.last_seq = last_seq
        self.finished = finished
        #: Another process writes the run's events (it runs there, or waits to be claimed):
        #: clients that have read what is committed wait for the next commit (`follow`).
        self.follows = follows
        self._following = False
        #: The last seq the store had committed when this process last read the run's row
        #: (`StoredRecord.of`): ahead of the cache while no client has caught up.
        self._committed_seq = last_seq
        #: Where the feeds of runs served from the store are found by run id while they have
        #: watchers (`RunRegistry`), so that every client of a run is in one feed: its
        #: ``max_watchers`` and its count of watchers hold (see `share`).
        self._shared = shared
        # The store keeps everything: nothing is held for a first client, and the cache
        # evicts whatever it must (`_unblocked`): a client behind it reads the store.
        self._holding = False
        self._unblocked = True
        #: The run's writer no longer waits for its clients (`unblock`: a shutdown).
        self._released = False
        self._kinds: dict[tuple[str, str, int, str], EventKind] = {}

    def append_row(
        self, row: EventRow, kind: EventKind | None = None, *, wake: bool = True
    ) -> None:
        """Add a committed event (the store's commit listener calls this, in seq order), of
        ``kind`` when its writer said (else read from the row). Without ``wake``, its
        watchers are woken later (`wake`): once for a whole commit's events."""
        entry = self._next_entry(row.seq, kind or self.kind_of(row), row.body, None)
        self._make_room(entry.size)  # the cache evicts whatever it must: the store has it
        self._keep(entry)
        if wake:
            self._wake()

    async def follow(self) -> None:
        """Wait for the run's next committed events, written by another process, and add
        them; or find that it has ended (or was purged), and finish. One client of the run
        reads the store at a time, for all of them: the others wait for what it adds."""
        if self._following:
            await self._appended.wait()
            return
        self._following = True
        try:
            await self._follow_once()
        finally:
            self._following = False
            self._wake()

    async def _follow_once(self) -> None:
        store = self.store
        signals = getattr(store, "signals", None)
        # Taken before looking: a commit between the look and the wait still wakes it.
        woken = trio.Event() if signals is None else signals.committed(self.run_id)
        try:
            if await self._read_on():
                return
        except StoreUnavailable as error:  # its clients wait, and it looks again
            logger.warning("trioflow: cannot follow run %s: %s", self.run_id, error)
        with trio.move_on_after(POLL):  # a notification is a hint: look again anyway
            await woken.wait()
        if signals is not None:
            signals.forget(self.run_id, woken)

    async def _read_on(self) -> bool:
        """Add the run's next committed events, or finish if it ended (or was purged) and
        they are all here; whether there is no need to wait."""
        store = self.store
        rows = await store.events(
            self.run_id, after=self.last_seq, limit=BATCH, max_bytes=BATCH_BYTES
        )
        if rows:
            for row in rows:
                self.append_row(row, wake=False)
            if rows[-1].flags & TERMINAL:
                self.finish()
            return True
        run = await store.run(self.run_id)
        if run is None:  # purged: its clients have had what they could get
            self.finish()
            return True
        if run.status != RunStatus.RUNNING.value:
            if run.last_seq <= self.last_seq:  # (its last events are in its ending commit)
                self.finish()
            return True
        return False

    @property
    def known_last(self) -> int:
        """The run's last committed seq as this process last read it (a client may resume
        after it while the events it follows are still on their way to this feed)."""
        return max(self.last_seq, self._committed_seq)

    def committed_up_to(self, seq: int) -> None:
        """The store says the run has committed events up to ``seq``."""
        self._committed_seq = max(self._committed_seq, seq)

    def wake(self) -> None:
        """Wake the watchers waiting for the events `append_row` added without waking them."""
        self._wake()

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

    def keeps_waiting(self) -> bool:
        """Whether the next committed event would put an attached client `retain` events
        behind: then the run's writer waits (`wait_for_watchers`), as it waits for a run's
        clients in memory, so that live clients read from the cache, not the store. Counted
        from the committed events, which are all a client can have: what is written but not
        yet committed (at most what the store holds pending) is no client's lag, and the
        writer goes on meanwhile (a client left behind by that much reads the store)."""
        if self._released:
            return False
        low = self.last_seq - self.retain  # as in memory: its oldest kept event is owed
        # A loop, not any() over a generator: this runs for every event a run writes, and
        # making the generator was most of its cost (measured with py-spy).
        for watcher in self._watchers:  # noqa: SIM110
            if watcher.cursor <= low:
                return True
        return False

    async def wait_for_watchers(self) -> None:
        """Wait while `keeps_waiting` (a client that leaves no longer counts). A checkpoint
        whether it waits or not."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.keeps_waiting():
            self._pump_waiting += 1  # a count: a durable run has a writer per step task
            try:
                await self._progress.wait()
            finally:
                self._pump_waiting -= 1

    def unblock(self) -> None:
        self._released = True
        super().unblock()

    def share(self, shared: dict[str, StoredFeed]) -> None:
        """Be the feed of this run in ``shared`` while it has watchers: the registry's feeds
        of runs served from the store. A watcher that attaches puts it there (unless another
        feed of the run is there already), and the last one to leave takes it out, so that
        the feeds of runs nobody watches are not kept."""
        self._shared = shared
        if self._watchers:
            shared.setdefault(self.run_id, self)

    def _current(self) -> StoredFeed:
        """The feed of this run its clients share (`share`): another, or this one."""
        shared = None if self._shared is None else self._shared.get(self.run_id)
        return self if shared is None else shared

    @property
    def watchers(self) -> int:
        """Clients attached right now, to this run's shared feed (`share`)."""
        return len(self._current()._watchers)

    def watch(self, after: int = 0) -> StoredWatcher:
        """A watcher from the entry after seq ``after``, as `RunFeed.watch`, except that no
        event is ever too old: the store has them all. While another feed of the run has
        watchers (`share`), the watcher is that feed's.

        Raises:
            ValueError: ``after`` is negative or beyond the last entry.
            TooManyWatchers: ``max_watchers`` watchers are attached already.
        """
        current = self._current()
        if current is not self:
            return current.watch(after)
        self._check_watch(after)
        return StoredWatcher(self, after)

    def _attach(self, watcher: Watcher) -> None:
        super()._attach(watcher)
        if self._shared is not None:
            self._shared.setdefault(self.run_id, self)

    def _detach(self, watcher: Watcher) -> None:
        super()._detach(watcher)
        shared = self._shared
        if shared is not None and not self._watchers and shared.get(self.run_id) is self:
            del shared[self.run_id]


class StoredWatcher(Watcher):
    """A client's position in a `StoredFeed`: entries the feed no longer holds come from the
    store, in batches as large as the feed's. A run purged meanwhile (`RunRegistry.forget`:
    the store deleted its events) ends there: the client has had what it could still get,
    and its stream ends as any stream does, with no more entries."""

    _feed: StoredFeed
    #: The run was purged from the store while this watcher read it: nothing more comes.
    _purged = False

    def next_batch_nowait(self) -> list[Entry]:
        if self._purged:
            return []
        if self.cursor < self._feed.first_seq - 1:
            raise trio.WouldBlock  # behind the cache: reading the store takes a thread
        if self.cursor > self._feed.last_seq:
            # It read the store past the cache: a commit is visible to the reader before its
            # listeners have appended it to the cache.
            raise trio.WouldBlock
        try:
            return super().next_batch_nowait()
        except EventsExpired:  # evicted meanwhile: the store has them
            raise trio.WouldBlock from None

    async def next_batch(self) -> list[Entry]:
        feed = self._feed
        while True:
            if self._purged:
                await trio.lowlevel.checkpoint()
                return []
            if self.cursor >= feed.last_seq and not feed.finished and feed.follows:
                await feed.follow()
                continue
            if self.cursor > feed.last_seq and not feed.finished:  # see next_batch_nowait
                await feed._appended.wait()
                continue
            if self.cursor < feed.first_seq - 1:
                rows = await feed.store.events(
                    feed.run_id, after=self.cursor, limit=BATCH, max_bytes=BATCH_BYTES
                )
                if not rows:
                    # Its events and its row go in one commit: a run still there has lost
                    # events, which is the store's error; a run gone was purged.
                    if await feed.store.run(feed.run_id) is None:
                        self._purged = True
                        return []
                    raise StoreError(
                        f"the store has no event of run {feed.run_id} after seq {self.cursor}, "
                        f"though the run has {feed.last_seq}"
                    )
                entries = [Entry.encode(row.seq, feed.kind_of(row), row.body) for row in rows]
                self.cursor = entries[-1].seq
                if feed._pump_waiting:  # for this client, which may now be near enough
                    feed._notify_progress()
                return entries
            try:
                return await super().next_batch()
            except (EventsExpired, trio.WouldBlock):  # evicted while it waited: read the store
                continue


@attrs.define(eq=False)
class StoredRecord:
    """A run known from the store only: it ended before this process started, or this
    process no longer keeps it in memory, or (on a store shared by processes) it runs in
    another process: what `RunRecord` says of a run, read from its row. Events for it and
    cancels of it go through the store (`WorkflowApp`), to the process that runs it."""

    row: RunRow
    feed: StoredFeed
    forgotten: bool = False

    @classmethod
    def of(
        cls,
        row: RunRow,
        store: Store,
        max_watchers: int | None,
        shared: dict[str, StoredFeed] | None = None,
        *,
        retain: tuple[int, int] = (1, 1),
    ) -> StoredRecord:
        """The record of the run of ``row``, with the run's feed in ``shared`` (the one its
        clients are attached to: `StoredFeed.share`), else a new one: for a run that ended,
        one that caches nothing; for one that runs in another process, one that follows its
        commits (`StoredFeed.follow`) and caches up to ``retain`` (events, bytes) of them for
        its clients."""
        feed = None if shared is None else shared.get(row.run_id)
        if feed is not None:
            feed.committed_up_to(row.last_seq)
        else:
            running = row.status == RunStatus.RUNNING.value
            feed = StoredFeed(
                store,
                row.run_id,
                *(retain if running else (1, 1)),
                max_watchers,
                last_seq=row.last_seq,
                finished=not running,
                shared=shared,
                follows=running,
            )
        return cls(row, feed)

    @property
    def run_id(self) -> str:
        return self.row.run_id

    @property
    def runs_elsewhere(self) -> bool:
        """Whether it runs in another process sharing the store (or waits for one to claim
        it): events for it and cancels of it go through the store."""
        return self.row.status == RunStatus.RUNNING.value and self.feed.store.shared

    async def send(self, body: bytes) -> bool:
        """Send the event whose wire JSON is ``body`` to the run, through the store; False if
        it is no longer running."""
        return await cast(SharedStore, self.feed.store).send(self.run_id, body)

    async def request_cancel(self) -> bool:
        """Ask the run to cancel, through the store; False if it is no longer running."""
        return await cast(SharedStore, self.feed.store).request_cancel(self.run_id)

    @property
    def workflow_name(self) -> str:
        return self.row.workflow

    @property
    def number(self) -> int:
        return self.row.number

    @property
    def lifecycle(self) -> bool:
        return self.row.lifecycle

    @property
    def started_at(self) -> float:
        return self.row.started_at

    @property
    def ended_at(self) -> float | None:
        return self.row.ended_at

    @property
    def status(self) -> RunStatus:
        return RunStatus(self.row.status)

    def cancel(self) -> bool:
        return False

    def outcome_json(self) -> tuple[bytes | None, bytes | None]:
        return self.row.result, self.row.error

    def result_names(self) -> dict[str, Any] | None:
        return None if self.row.result_type is None else loads(self.row.result_type.encode())

    def summary(self) -> dict[str, Any]:
        summary = self._head()
        if self.row.error is not None and summary["status"] in ("failed", "timed_out"):
            summary["error"] = brief(loads(self.row.error))
        return summary

    def describe(self) -> list[bytes]:
        return described(dumps(self._head()), self.row.result, self.row.error)

    def _head(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow_name,
            "status": self.row.status,
            "seq": self.row.last_seq,
            "first_seq": 1,  # a store keeps every event of a run
            "watchers": self.feed.watchers,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            # The process running it (on a store shared by processes): none once it ended.
            "node": self.row.owner if self.row.status == RunStatus.RUNNING.value else None,
            # Known from the events this process has of it (none: false).
            "waiting_for_input": self.row.status == RunStatus.RUNNING.value
            and self.feed.asks_for_input,
        }


def ended_as(record: RunRecord | StoredRecord) -> str:
    """`` (status)`` for a run that has ended, as its status is served; empty while its end
    is not yet committed (it is served as running until then: `RunRecord.status`)."""
    status = record.status
    return "" if status is RunStatus.RUNNING else f" ({status.value})"
