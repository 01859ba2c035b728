"""`RunFeed`: one run's events, numbered and retained, for any number of HTTP clients.

A run has one stream and one consumer; over HTTP it has any number of clients, each at its own
position, and clients that come back later (`Last-Event-ID`). The feed sits between: a single
pump task takes each event off the run's stream, numbers it (``seq`` from 1), encodes it once,
and appends it to a bounded history. Each client is a `Watcher` with a cursor into that history.

Memory stays bounded whatever the clients do: the history holds at most ``retain`` entries
and ``retain_bytes`` bytes (an entry larger than that is kept alone), and a watcher takes at
most `BATCH` entries and `BATCH_BYTES` bytes at a time, which is what a client that stopped
reading holds. Making room for a new entry evicts the oldest ones, unless an attached watcher
has not taken them yet; then the pump waits, so the run's stream fills and the producing step
waits too. That is how a slow client slows the producer end to end, while a client that is gone
holds nothing back. A client that asks for an entry no longer retained gets `EventsExpired`,
never a gap. At most ``max_watchers`` clients watch at once (`TooManyWatchers`).

Until its first watcher attaches, a feed holds its first entries as if that watcher were
already there, so the client that started a run and then asks for its events gets them all,
however fast the run is. `stop_holding` ends that wait for a client that never comes.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Any, Self

import attrs
import trio

from .._store import EventKind
from .._wire import envelope_data


@attrs.define(eq=False)
class Entry:
    """One numbered event, encoded once for every client that sends it.

    It keeps one bytes object, its Server-Sent Events message (``id``, ``event``, ``data``);
    the other forms are cut from it. One copy, so that what the history holds is what
    `size` says.
    """

    seq: int
    kind: EventKind
    #: The entry as a named Server-Sent Events message: ``id: 1\nevent: Tick\ndata: {...}\n\n``.
    frame: bytes
    #: Where ``data: `` starts in `frame`.
    _data_at: int
    #: The event itself, kept for a run group's in-process readers (`RunGroup.events`); the
    #: server keeps only the JSON.
    event: Any = None

    @classmethod
    def encode(cls, seq: int, kind: EventKind | str, json: bytes, event: Any = None) -> Entry:
        """The entry of event number ``seq`` (``kind``, or just its type name), whose
        envelope is ``json``."""
        if isinstance(kind, str):
            kind = EventKind(kind)
        head = b"id: %d\nevent: %s\n" % (seq, kind.type_name.encode())
        frame = b"%sdata: %s\n\n" % (head, json)
        return cls(seq, kind, frame, len(head), event)

    @property
    def type_name(self) -> str:
        return self.kind.type_name

    @property
    def size(self) -> int:
        """What keeping the entry costs, in bytes: its message and the object around it."""
        return len(self.frame) + ENTRY_OVERHEAD

    def sse(self, *, named: bool = True) -> bytes:
        """The entry as a Server-Sent Events message; without ``event:`` unless ``named``."""
        if named:
            return self.frame
        id_line = self.frame.index(b"\n") + 1
        return self.frame[:id_line] + self.frame[self._data_at :]

    def ndjson(self) -> bytes:
        """The entry as one line of newline-delimited JSON."""
        return self.frame[self._data_at + 6 : -1]

    def event_data(self) -> memoryview:
        """The event's fields (its envelope's ``"data"``) as JSON: a slice of `frame`."""
        return envelope_data(self.frame, self._data_at + 6, len(self.frame) - 2)


#: Most entries a watcher takes at once (one write to its client).
BATCH = 256
#: Most bytes a watcher takes at once, unless one entry alone is larger: what a client that
#: stopped reading holds, besides the socket's own buffers.
BATCH_BYTES = 64 * 1024
#: What an entry costs beyond its message: the object and its place in the history (measured
#: with `sys.getsizeof`, rounded up).
ENTRY_OVERHEAD = 128


class TooManyWatchers(Exception):
    """The run has as many clients as it may have (``max_watchers``)."""


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

    def __init__(
        self, retain: int, retain_bytes: int = 1 << 62, max_watchers: int | None = None
    ) -> None:
        if retain < 1:
            raise ValueError(f"retain must be at least 1, got {retain!r}")
        if retain_bytes < 1:
            raise ValueError(f"retain_bytes must be at least 1, got {retain_bytes!r}")
        self.retain = retain
        self.retain_bytes = retain_bytes
        self.max_watchers = max_watchers
        self._entries: deque[Entry] = deque()
        #: Bytes the retained entries take (`Entry.size`).
        self.size = 0
        self.last_seq = 0
        self.finished = False
        self._watchers: set[Watcher] = set()
        #: Watchers ever attached; a run can be abandoned only once someone has watched it.
        self.ever_watched = False
        #: Waiting for the first watcher: evict nothing (see `stop_holding`).
        self._holding = True
        #: Writers waiting for a watcher to make room (one pump; on a store, each of a
        #: durable run's writers): watchers tell them of progress only while there are any.
        self._pump_waiting = 0
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
    def newest_size(self) -> int:
        """`Entry.size` of the newest retained entry (0 with none)."""
        return self._entries[-1].size if self._entries else 0

    @property
    def asks_for_input(self) -> bool:
        """Whether the newest retained entry is an `InputRequiredEvent`: the run asks its
        caller for an answer (False with nothing retained). Lifecycle events (a run started
        with ``?lifecycle=1``) do not count: a step's start or the workflow going idle is not
        the run moving on from its request."""
        for entry in reversed(self._entries):
            kind = entry.kind
            if not kind.lifecycle:
                return kind.type_name == "InputRequiredEvent" or "InputRequiredEvent" in kind.bases
        return False

    @property
    def watchers(self) -> int:
        """Clients attached right now."""
        return len(self._watchers)

    # -- the pump's side --

    def append_nowait(
        self, seq: int, kind: EventKind | str, json: bytes, event: Any = None
    ) -> None:
        """Add the next entry, numbered ``seq`` (``last_seq + 1``: there is one pump), if there
        is room for it without waiting.

        Raises:
            trio.WouldBlock: the history is full and its oldest entry is still owed to an
                attached watcher (or kept for the first one).
            ValueError: ``seq`` is not the next number.
        """
        entry = self._next_entry(seq, kind, json, event)
        if not self._make_room(entry.size):
            raise trio.WouldBlock
        self._add(entry)

    async def append(self, seq: int, kind: EventKind | str, json: bytes, event: Any = None) -> None:
        """Add the next entry as `append_nowait` does, waiting while there is no room. A
        checkpoint whether it waits or not, like every async function of trio's."""
        entry = self._next_entry(seq, kind, json, event)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._make_room(entry.size):
            await trio.lowlevel.cancel_shielded_checkpoint()
        # A watcher that attached during that yield may hold the oldest entry: look again.
        while not self._make_room(entry.size):
            self._pump_waiting += 1
            try:
                await self._progress.wait()
            finally:
                self._pump_waiting -= 1
        self._add(entry)

    def _next_entry(self, seq: int, kind: EventKind | str, json: bytes, event: Any) -> Entry:
        if seq != self.last_seq + 1:
            raise ValueError(f"the next entry is seq {self.last_seq + 1}, got {seq}")
        return Entry.encode(seq, kind, json, event)

    def _add(self, entry: Entry) -> None:
        # `_keep` and `_wake`, inlined: the pump of every run served from memory calls this
        # once an event.
        self.last_seq = entry.seq
        self._entries.append(entry)
        self.size += entry.size
        self._appended.set()
        self._appended = trio.Event()

    def _keep(self, entry: Entry) -> None:
        self.last_seq = entry.seq
        self._entries.append(entry)
        self.size += entry.size

    def _wake(self) -> None:
        """Wake the watchers waiting for entries."""
        self._appended.set()
        self._appended = trio.Event()

    def _make_room(self, incoming: int) -> bool:
        """Evict what may be evicted until there is room for one more entry of ``incoming``
        bytes; whether there is. An entry larger than ``retain_bytes`` has room once the
        history is empty."""
        entries = self._entries
        while entries and (len(entries) >= self.retain or self.size + incoming > self.retain_bytes):
            oldest = entries[0]
            if not (
                self._unblocked
                or (not self._holding and all(w.cursor >= oldest.seq for w in self._watchers))
            ):
                return False
            entries.popleft()
            self.size -= oldest.size
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
            TooManyWatchers: ``max_watchers`` watchers are attached already.
        """
        self._check_watch(after)
        if after < self.first_seq - 1:
            raise EventsExpired(after, self.first_seq)
        return Watcher(self, after)

    def _check_watch(self, after: int) -> None:
        if self.max_watchers is not None and len(self._watchers) >= self.max_watchers:
            raise TooManyWatchers(
                f"this run has as many clients as it may have ({self.max_watchers}); "
                "try again once one has left"
            )
        last = self.known_last
        if after < 0 or after > last:
            raise ValueError(
                f"after must be between 0 and the last event's seq ({last}), got {after}"
            )

    @property
    def known_last(self) -> int:
        """The seq of the run's last event as far as this process knows (a watcher may start
        after any seq up to it): its last entry's."""
        return self.last_seq

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

    def _entries_after(self, cursor: int) -> list[Entry]:
        """The entries after ``cursor``: at most `BATCH` of them and `BATCH_BYTES` bytes, and
        at least one."""
        if cursor < self.first_seq - 1:  # only after unblock(): say so rather than skip
            raise EventsExpired(cursor, self.first_seq)
        start = cursor + 1 - self.first_seq
        batch: list[Entry] = []
        room = BATCH_BYTES
        for entry in islice(self._entries, start, start + BATCH):
            room -= len(entry.frame)
            if room < 0 and batch:
                break
            batch.append(entry)
        return batch


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
        """Take the entries after the cursor, up to `BATCH` entries and `BATCH_BYTES` bytes
        (empty once the feed is finished and every entry was taken), if there are any.

        Raises:
            trio.WouldBlock: nothing to take yet.
            EventsExpired: only after `RunFeed.unblock`, when entries were evicted untaken.
        """
        feed = self._feed
        if self.cursor == feed.last_seq:
            if feed.finished:
                return []
            raise trio.WouldBlock
        batch = feed._entries_after(self.cursor)
        self.cursor = batch[-1].seq
        if feed._pump_waiting:  # for room, which this may have made
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
