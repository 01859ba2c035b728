"""`call_at`: the runs' timeouts, kept by one task per trio run rather than a task per run.

A task per run that only sleeps until its timeout costs the run a task start, its memory
while the run waits (a run parked in ``wait_for_event`` for an hour keeps it all that time),
and a `trio.Cancelled` raised through it when the run ends first, as nearly every run does.
Here every deadline of a trio run is one entry of a heap, and one system task sleeps until the
earliest: its cancel scope's deadline is moved whenever an earlier one comes, which is how
trio lets a task sleep until a time that may change (and how `trio.testing.MockClock`'s
autojump sees it).

A timer that is cancelled forgets its callback at once (so a finished run is not kept
alive by it); its entry leaves the heap when its time comes, or when cancelled entries are
more than half of it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable

import trio

from ._log import log

#: Below this many entries the heap is never compacted: scanning it costs more than it saves.
_COMPACT_AT = 64


class Timer:
    """One deadline: `cancel` it to forget its callback."""

    __slots__ = ("_callback", "_timers")

    def __init__(self, timers: _Timers, callback: Callable[[], None]) -> None:
        self._timers = timers
        self._callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        """Never call the callback (if it has not been called). Idempotent."""
        if self._callback is not None:
            self._callback = None
            self._timers.forgot()


class _Timers:
    """The timers of one trio run, and the system task that calls them."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # ties: first set, first called
        self._forgotten = 0  # cancelled entries still in the heap
        self._scope = trio.CancelScope()

    def add(self, deadline: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self, callback)
        heapq.heappush(self._heap, (deadline, next(self._order), timer))
        if deadline < self._scope.deadline:
            self._scope.deadline = deadline
        return timer

    def forgot(self) -> None:
        self._forgotten += 1
        heap = self._heap
        if self._forgotten > len(heap) // 2 and len(heap) >= _COMPACT_AT:
            heap[:] = [entry for entry in heap if entry[2]._callback is not None]
            heapq.heapify(heap)
            self._forgotten = 0

    async def keep(self) -> None:
        """Call each timer when its deadline comes; until the trio run ends."""
        heap = self._heap
        while True:
            with self._scope:
                await trio.sleep_forever()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                timer = heapq.heappop(heap)[2]
                callback = timer._callback
                if callback is None:
                    self._forgotten -= 1
                    continue
                timer._callback = None
                try:
                    callback()
                except Exception as exc:  # a system task must not raise: the loop would end
                    log(logging.ERROR, "a trioflow timer failed", exc_info=exc)
            self._scope = trio.CancelScope(deadline=heap[0][0] if heap else math.inf)


_TIMERS: trio.lowlevel.RunVar[_Timers] = trio.lowlevel.RunVar("trioflow_timers")


def call_at(deadline: float, callback: Callable[[], None]) -> Timer:
    """Call ``callback()`` (synchronous, quick, never raising) in a system task at
    ``deadline`` (trio's clock), unless the returned timer is cancelled first."""
    try:
        timers = _TIMERS.get()
    except LookupError:
        timers = _Timers()
        trio.lowlevel.spawn_system_task(timers.keep, name="trioflow timers")
        _TIMERS.set(timers)
    return timers.add(deadline, callback)
