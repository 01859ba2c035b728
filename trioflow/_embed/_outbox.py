"""`Outbox`: the encoded events between the task that reads a run's stream and the task that
sends them to the client.

While the sender waits in ``send()``, the reader goes on taking events off the run's stream
and encoding them, up to one batch: at most `BATCH` events and `BATCH_BYTES` bytes (an entry
larger than that goes alone), the limits of a server's watcher (`trioflow._server._feed`).
Then the reader waits, the run's stream fills, and the step that writes waits: the client's
pace holds the run back, with one batch more in memory than the run's stream buffer. The
sender takes the whole batch at once and sends it as one part of the body, so a fast run costs
one ``send()`` per batch rather than per event, and a slow one still sends each event as soon
as it is there.
"""

from __future__ import annotations

import trio

from .._server._feed import BATCH, BATCH_BYTES, Entry


class Outbox:
    """One batch of encoded events, filled by one reader and emptied by one sender."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._size = 0
        #: The reader has put the terminal event's entry: nothing more will come.
        self.ended = False
        #: Set (and replaced) when the outbox changes while a side waits for it.
        self._changed = trio.Event()
        self._waiting = False

    def _full_for(self, size: int) -> bool:
        entries = self._entries
        return bool(entries) and (len(entries) >= BATCH or self._size + size > BATCH_BYTES)

    async def put(self, entry: Entry) -> None:
        """Add ``entry``, waiting while the batch is full. A checkpoint only when it waits:
        the reader's stream yields now and then on its own."""
        size = len(entry.frame)
        while self._full_for(size):
            await self._wait()
        self._entries.append(entry)
        self._size += size
        self._notify()

    def end(self) -> None:
        """Nothing more will be put."""
        self.ended = True
        self._notify()

    def take_nowait(self) -> list[Entry]:
        """Take every entry there is; empty once the outbox has ended and been emptied.

        Raises:
            trio.WouldBlock: nothing to take yet.
        """
        if not self._entries:
            if self.ended:
                return []
            raise trio.WouldBlock
        batch = self._entries
        self._entries = []
        self._size = 0
        self._notify()
        return batch

    async def wait_ready(self) -> None:
        """Wait until there is something to take, or the end."""
        while not (self._entries or self.ended):
            await self._wait()

    async def _wait(self) -> None:
        self._waiting = True
        await self._changed.wait()

    def _notify(self) -> None:
        if self._waiting:
            self._waiting = False
            self._changed.set()
            self._changed = trio.Event()
