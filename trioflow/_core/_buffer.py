"""`Buffer`: the bounded FIFO under a run's stream, with parked tasks handed their item.

It behaves as a trio memory channel of one sender and one receiver would (a full buffer parks
its writers in order, an empty one its reader, closing ends reading once the buffer is drained
and fails waiting writers), with what the stream needs and no more. Why not the channel itself:
its ``send_nowait`` was a fifth of what a streamed event cost (a dozen attribute lookups and a
``max`` for its statistics, on every call); here writing to a buffer with room is a length check
and a deque append, and reading one with something in it a ``popleft``. A task parked on an
empty buffer is handed its item directly (`trio.lowlevel.reschedule`), as the step inboxes do.

Cancellation is trio's: `put` and `get` are checkpoints, a parked task cancelled is taken off
its queue, and an item is either taken or not (never lost to a cancellation).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, TypeVar

import trio
from outcome import Error, Value
from trio.lowlevel import (
    Abort,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    enable_ki_protection,
    reschedule,
    wait_task_rescheduled,
)

_T = TypeVar("_T")


class Buffer(Generic[_T]):
    """A FIFO of at most ``capacity`` items (0: a writer waits for a reader to take its item).

    Invariants: readers are parked only while ``items`` is empty and nobody writes, writers only
    while it is full (so `put_nowait` either hands the item to a parked reader, appends it, or
    refuses it), and a parked writer's item is the next to enter the buffer once a reader
    makes room."""

    __slots__ = ("_readers", "capacity", "closed", "items", "writers")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: deque[_T] = deque()
        #: Readers parked on an empty buffer, oldest first (one, but for a consumer whose
        #: claim was handed on while it waited).
        self._readers: deque[Task] = deque()
        #: Writers parked on a full one, oldest first, each with the item it writes. Ordered by
        #: a dict so that a cancelled one leaves in constant time, whichever it is: trio
        #: cancels many waiting writers in no particular order.
        self.writers: OrderedDict[Task, _T] = OrderedDict()
        #: No more writes: reading ends with `trio.EndOfChannel` once the buffer is drained.
        self.closed = False

    @property
    def writers_waiting(self) -> int:
        return len(self.writers)

    @enable_ki_protection
    def put_nowait(self, item: _T) -> None:
        """Hand ``item`` to a parked reader or append it; `trio.WouldBlock` if the buffer is
        full, `trio.ClosedResourceError` once it is closed."""
        if self.closed:
            raise trio.ClosedResourceError
        if self._readers:
            reschedule(self._readers.popleft(), Value(item))
        elif len(self.items) < self.capacity:
            self.items.append(item)
        else:
            raise trio.WouldBlock

    @enable_ki_protection
    async def put(self, item: _T) -> None:
        """`put_nowait`, waiting while the buffer is full (a cancelled wait puts nothing)."""
        await checkpoint_if_cancelled()
        try:
            self.put_nowait(item)
        except trio.WouldBlock:
            pass
        else:
            await cancel_shielded_checkpoint()
            return
        task = current_task()
        writers = self.writers
        writers[task] = item

        def abort(_: object) -> Abort:
            del writers[task]
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    @enable_ki_protection
    def get_nowait(self) -> _T:
        """The oldest item; `trio.WouldBlock` if there is none, `trio.EndOfChannel` if there
        will be none (closed and drained)."""
        items = self.items
        writers = self.writers
        if items:
            item = items.popleft()
            if writers:  # it was full: the oldest waiting writer's item goes in
                task, written = writers.popitem(last=False)
                items.append(written)
                reschedule(task)
            return item
        if writers:  # a buffer of size 0: the item is taken from its writer
            task, item = writers.popitem(last=False)
            reschedule(task)
            return item
        if self.closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    @enable_ki_protection
    async def get(self) -> _T:
        """`get_nowait`, waiting while the buffer is empty (a cancelled wait takes nothing)."""
        await checkpoint_if_cancelled()
        try:
            item = self.get_nowait()
        except trio.WouldBlock:
            pass
        else:
            await cancel_shielded_checkpoint()
            return item
        task = current_task()
        readers = self._readers
        readers.append(task)

        def abort(_: object) -> Abort:
            readers.remove(task)
            return Abort.SUCCEEDED

        handed: _T = await wait_task_rescheduled(abort)
        return handed

    @enable_ki_protection
    def close(self) -> None:
        """No more writes: parked readers get `trio.EndOfChannel` (the buffer is empty while
        they wait), parked writers `trio.ClosedResourceError` (their items go nowhere)."""
        if self.closed:
            return
        self.closed = True
        while self._readers:
            reschedule(self._readers.popleft(), Error(trio.EndOfChannel()))
        while self.writers:
            task, _ = self.writers.popitem(last=False)
            reschedule(task, Error(trio.ClosedResourceError()))
