"""`Inbox`: the unbounded queue of events waiting for one step, read by its workers.

Why not a trio memory channel: routing inside a run must never block the sender (a cycle of
steps with bounded inboxes can deadlock), so the queue is unbounded and `put` is synchronous.
For that case a memory channel costs a raised `WouldBlock` on every receive from an empty queue,
which is the common case of a hop. Handing the event straight to a parked worker with
`trio.lowlevel.reschedule` makes a step-to-step hop one task switch and nothing more: about
1.6 times the rate of two tasks bouncing a value through memory channels (`python -m benchmarks`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from outcome import Value
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


class Inbox(Generic[_T]):
    """An unbounded FIFO queue whose `get` parks the calling task while it is empty.

    Invariant: workers are parked only while the queue is empty, so `put` either hands the
    item to the longest-waiting worker or appends it. Each worker reads through its own
    `getter`. Workers are started as they are needed: an item appended with no worker parked
    calls `on_backlog` (the run starts another worker there, until the step has all it may).
    Once the run is decided the inbox is closed: ``get()`` returns None rather than wait.
    """

    __slots__ = ("_items", "_parked", "closed", "on_backlog", "received")

    def __init__(self) -> None:
        self._items: deque[_T] = deque()
        self._parked: deque[Task] = deque()
        #: The run is decided (`close`).
        self.closed = False
        #: Called when an item is appended because no worker was parked (None: nobody to call).
        self.on_backlog: Callable[[], None] | None = None
        #: Items put so far (for statistics).
        self.received = 0

    @enable_ki_protection
    def put(self, item: _T) -> None:
        """Queue ``item``; never blocks."""
        self.received += 1
        if self._parked:
            reschedule(self._parked.popleft(), Value(item))
        else:
            self._items.append(item)
            if self.on_backlog is not None:
                self.on_backlog()

    @enable_ki_protection
    def close(self) -> None:
        """The run is decided: every parked worker is handed None, and every ``get()`` from now
        on returns None. A worker that gets None sees the outcome and ends, without the
        cancellation that would otherwise wake it (see `RunState`)."""
        self.closed = True
        parked = self._parked
        while parked:
            reschedule(parked.popleft(), Value(None))

    @property
    def waiting(self) -> int:
        """Items queued for a worker to take."""
        return len(self._items)

    def getter(self, *, first_yields: bool = True) -> Callable[[], Awaitable[_T | None]]:
        """A ``get()`` for the calling task (a step worker) to await over and over: it takes the
        oldest item, parking the task while there is none; once the inbox is closed, None.
        The task and its abort callback are bound once rather than on every call, which is
        measurable on a hop.

        Like a memory channel's ``receive()`` it is a checkpoint: a busy worker still lets
        others run, and an item taken is never lost to a cancellation. Parking is itself a
        cancellation point: trio delivers a pending cancel at once. A closed inbox is none
        (the run is decided, and a worker that is done has no use for a `trio.Cancelled`).

        ``first_yields=False``: the first item taken is only a cancel point, about 5% of a
        one-step run. The task has just started, so it let the others run by starting; but
        the caller of ``start()`` runs only after the first step's task yields once more, and
        a consumer that asks for lifecycle events right away expects those of the first
        step. So it is for runs nobody streams (``run()``)."""
        items, parked = self._items, self._parked
        task = current_task()

        def abort(_: object) -> Abort:
            parked.remove(task)
            return Abort.SUCCEEDED

        inbox = self
        yields = first_yields  # whether taking an item yields (from the second on, always)

        @enable_ki_protection
        async def get() -> _T | None:
            nonlocal yields
            if inbox.closed:
                return None
            if items:
                await checkpoint_if_cancelled()
                item = items.popleft()
                if yields:
                    await cancel_shielded_checkpoint()
                else:  # (see the docstring)
                    yields = True
                return item
            parked.append(task)
            handed: _T | None = await wait_task_rescheduled(abort)
            return handed

        return get
