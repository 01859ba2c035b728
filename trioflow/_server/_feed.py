"""`RunFeed`: one run's events, numbered and retained, for any number of HTTP clients.

A run has one stream and one consumer; over HTTP it has any number of clients, each at its own
position, and clients that come back later (`Last-Event-ID`). The feed sits between: a single
pump task takes each event off the run's stream, numbers it (``seq`` from 1), encodes it once,
and appends it to a bounded history. Each client is a `Watcher` with a cursor into that history.

Memory stays bounded whatever the clients do: the history holds at most ``retain`` entries.
Making room for a new entry evicts the oldest one, unless an attached watcher has not taken it
yet; then the pump waits, so the run's stream fills and the producing step waits too. That is
how a slow client slows the producer end to end, while a client that is gone holds nothing
back. A client that asks for an entry no longer retained gets `EventsExpired`, never a gap.

Until its first watcher attaches, a feed holds its first entries as if that watcher were
already there, so the client that started a run and then asks for its events gets them all,
however fast the run is. `stop_holding` ends that wait for a client that never comes.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Self

import attrs
import trio


@attrs.define(eq=False)
class Entry:
    """One numbered event, encoded once for every client that sends it."""

    seq: int
    type_name: str
    #: The envelope as compact JSON.
    json: bytes
    _sse: bytes | None = None
    _sse_anonymous: bytes | None = None

    def sse(self, *, named: bool = True) -> bytes:
        """The entry as a Server-Sent Events message (built on first use, then reused)."""
        if named:
            if self._sse is None:
                self._sse = b"id: %d\nevent: %s\ndata: %s\n\n" % (
                    self.seq,
                    self.type_name.encode(),
                    self.json,
                )
            return self._sse
        if self._sse_anonymous is None:
            self._sse_anonymous = b"id: %d\ndata: %s\n\n" % (self.seq, self.json)
        return self._sse_anonymous

    def ndjson(self) -> bytes:
        """The entry as one line of newline-delimited JSON."""
        return self.json + b"\n"


#: Most entries a watcher takes at once (one write to its client).
BATCH = 256


class EventsExpired(Exception):
    """The events a client asked for are no longer retained."""

    def __init__(self, after: int, oldest: int) -> None:
        super().__init__(after, oldest)
        self.after = after
        self.oldest = oldest

    def __str__(self) -> str:
        return (
            f"events after seq {self.after} are no longer retained: the oldest kept is seq "
            f"{self.oldest}; ask for ?after={self.oldest - 1} to continue from there"
        )


class RunFeed:
    """The numbered, retained events of one run, shared by its watchers."""

    def __init__(self, retain: int) -> None:
        if retain < 1:
            raise ValueError(f"retain must be at least 1, got {retain!r}")
        self.retain = retain
        self._entries: deque[Entry] = deque()
        self.last_seq = 0
        self.finished = False
        self._watchers: set[Watcher] = set()
        #: Watchers ever attached; a run can be abandoned only once someone has watched it.
        self.ever_watched = False
        #: Waiting for the first watcher: evict nothing (see `stop_holding`).
        self._holding = True
        #: Set when backpressure should stop (the server is shutting down): evict regardless.
        self._unblocked = False
        self._appended = trio.Event()  # set (and replaced) whenever an entry is appended
        self._progress = trio.Event()  # set (and replaced) when a watcher advances or leaves
        self._watchers_changed = trio.Event()

    @property
    def first_seq(self) -> int:
        """Seq of the oldest retained entry (``last_seq + 1`` when nothing is retained)."""
        return self._entries[0].seq if self._entries else self.last_seq + 1

    @property
    def watchers(self) -> int:
        """Clients attached right now."""
        return len(self._watchers)

    # -- the pump's side --

    def append_nowait(self, seq: int, type_name: str, json: bytes) -> None:
        """Add the next entry, numbered ``seq`` (``last_seq + 1``: there is one pump), if there
        is room for it without waiting.

        Raises:
            trio.WouldBlock: the history is full and its oldest entry is still owed to an
                attached watcher (or kept for the first one).
            ValueError: ``seq`` is not the next number.
        """
        if seq != self.last_seq + 1:
            raise ValueError(f"the next entry is seq {self.last_seq + 1}, got {seq}")
        if not self._make_room():
            raise trio.WouldBlock
        self.last_seq = seq
        self._entries.append(Entry(seq, type_name, json))
        self._appended.set()
        self._appended = trio.Event()

    async def append(self, seq: int, type_name: str, json: bytes) -> None:
        """Add the next entry as `append_nowait` does, waiting while there is no room. A
        checkpoint whether it waits or not, like every async function of trio's."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._make_room():
            await trio.lowlevel.cancel_shielded_checkpoint()
        # A watcher that attached during that yield may hold the oldest entry: look again.
        while not self._make_room():
            await self._progress.wait()
        self.append_nowait(seq, type_name, json)

    def _make_room(self) -> bool:
        """Evict what may be evicted until there is room for one more entry; whether there
        is."""
        entries = self._entries
        while len(entries) >= self.retain:
            oldest = entries[0].seq
            if not (
                self._unblocked
                or (not self._holding and all(w.cursor >= oldest for w in self._watchers))
            ):
                return False
            entries.popleft()
        return True

    def finish(self) -> None:
        """No more entries will come: watchers end once they have taken the last one."""
        self.finished = True
        self._appended.set()

    def stop_holding(self) -> None:
        """Stop keeping entries for a first watcher that has not come."""
        self._holding = False
        self._notify_progress()

    def unblock(self) -> None:
        """Stop waiting for slow watchers: evict as if nobody were attached (shutdown)."""
        self._unblocked = True
        self._notify_progress()

    # -- the clients' side --

    def watch(self, after: int = 0) -> Watcher:
        """A watcher that starts with the entry after seq ``after``; it is attached (and holds
        the pump back) inside its ``with`` block.

        Raises:
            EventsExpired: entries after ``after`` were already evicted.
            ValueError: ``after`` is negative or beyond the last entry.
        """
        if after < 0 or after > self.last_seq:
            raise ValueError(
                f"after must be between 0 and the last event's seq ({self.last_seq}), got {after}"
            )
        if after < self.first_seq - 1:
            raise EventsExpired(after, self.first_seq)
        return Watcher(self, after)

    def _attach(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)
        self.ever_watched = True
        self._notify_watchers()
        if self._holding:
            # The first watcher ends the hold: a pump waiting for room may evict what this
            # watcher does not need (it may have asked for the entries after some seq).
            self._holding = False
            self._notify_progress()

    def _detach(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        self._notify_watchers()
        self._notify_progress()

    async def wait_watchers_changed(self) -> None:
        """Wait until a watcher attaches or leaves."""
        await self._watchers_changed.wait()

    def _notify_watchers(self) -> None:
        self._watchers_changed.set()
        self._watchers_changed = trio.Event()

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _entries_after(self, cursor: int, limit: int) -> list[Entry]:
        if cursor < self.first_seq - 1:  # only after unblock(): say so rather than skip
            raise EventsExpired(cursor, self.first_seq)
        start = cursor + 1 - self.first_seq
        return list(islice(self._entries, start, start + limit))


class Watcher:
    """One client's position in a `RunFeed`."""

    def __init__(self, feed: RunFeed, after: int) -> None:
        self._feed = feed
        #: Seq of the last entry taken.
        self.cursor = after

    def __enter__(self) -> Self:
        self._feed._attach(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._feed._detach(self)

    def next_batch_nowait(self) -> list[Entry]:
        """Take the entries after the cursor, up to `BATCH` (empty once the feed is finished
        and every entry was taken), if there are any.

        Raises:
            trio.WouldBlock: nothing to take yet.
            EventsExpired: only after `RunFeed.unblock`, when entries were evicted untaken.
        """
        feed = self._feed
        if self.cursor == feed.last_seq:
            if feed.finished:
                return []
            raise trio.WouldBlock
        batch = feed._entries_after(self.cursor, BATCH)
        self.cursor = batch[-1].seq
        if len(feed._entries) >= feed.retain:  # the pump may be waiting for this
            feed._notify_progress()
        return batch

    async def next_batch(self) -> list[Entry]:
        """Wait for entries after the cursor and take them as `next_batch_nowait` does. A
        checkpoint whether it waits or not. Taking many at once lets a client that fell
        behind catch up with few large writes; the limit keeps a slow client's window moving
        in small steps, so the pump behind it resumes smoothly rather than in bursts of a
        whole history.

        Raises:
            EventsExpired: only after `RunFeed.unblock`, when entries were evicted untaken.
        """
        feed = self._feed
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while self.cursor == feed.last_seq and not feed.finished:
            await feed._appended.wait()
            waited = True
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return self.next_batch_nowait()  # cannot block now: there is something, or the end
