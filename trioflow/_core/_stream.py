"""The run's stream: a bounded buffer (`Buffer`) from the steps to one consumer at a time.

Backpressure lives here and only here: a writer that finds the buffer full waits until the
consumer makes room. The terminal event does not travel through the buffer; the runtime hands it
to `EventStream.close`, and the consumer yields it once the buffered events are read. So the
terminal event never waits for room, comes after everything written before it, and comes exactly
once. The `StepFailedEvent` of a failure that ends the run travels the same way, just before the
terminal event, so a failing step never waits for a slow consumer.

Writing and reading take no trip through the scheduler while there is room (or something to
read), which is what makes the stream fast; but a loop that never yields would starve every
other task of the run. So both sides are cancel points on every call, and yield to the
scheduler once `YIELD_EVERY` seconds have passed since the stream last did (checked every 64th
event, which keeps the clock off the per-event path).

Who consumes the stream is explicit: a `StreamIterator` claims it from `stream_events()` until
the terminal event, `aclose()`, the end of its ``async with`` block, or an exception out of
``__anext__`` (a cancelled consumer). A claim is also void once its iterator is garbage (CPython
frees an iterator left by ``break`` at once), once the task that reads it has finished, and for
that task's own ``result()``: a task awaiting it is evidently not reading its iterator. The
reading task is noted when it first reads, whenever it waits for an event, and every 64th event
(looking it up on every event would cost the stream a few per cent).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Generic, Self

import trio
from trio.lowlevel import (
    Task,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
)

from .._errors import WorkflowRuntimeError
from .._events import Event, StopEvent
from .._typevar import TypeVar
from ._buffer import Buffer
from ._cancel import cancel_pending

#: What a `StreamIterator` yields: what `WorkflowHandler.stream_events` names, and `StopEvent`
#: (the terminal event); `Event` when it names nothing.
E_co = TypeVar("E_co", bound=Event, covariant=True, default=Event)

#: Seconds a reading or writing loop may go without yielding to other tasks.
YIELD_EVERY = 0.001
#: While ``result()`` waits behind a consumer, how often it checks that the consumer's task
#: still exists (nothing tells it when a task ends).
_CONSUMER_CHECK = 0.25


def _finished(task: Task) -> bool:
    return task.coro.cr_frame is None  # a finished coroutine has no frame


class EventStream:
    """The stream of one run. The runtime writes and closes it; `WorkflowHandler` reads it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buffer: Buffer[Event] = Buffer(capacity)
        # Bound once: the write fast path is a call away from a plain deque append.
        self.send_nowait = self._buffer.put_nowait
        self.terminal: StopEvent | None = None
        self._trailing: list[Event] = []
        self._consumer: weakref.ref[StreamIterator] | None = None
        #: The task that last claimed or read through the consumer.
        self._consumer_task: Task | None = None
        self._ended = False  # the terminal event has been delivered
        #: `time.perf_counter()` when a reader or writer of this stream last yielded.
        self.last_yield = time.perf_counter()
        #: Events thrown away because nobody streamed while ``result()`` waited.
        self.discarded = 0
        #: Tasks in `wait_closed` (``result()``): while one waits and nobody reads, what is
        #: buffered may be thrown away; and so always once nobody ever will (``run()``).
        self._result_waiters = 0
        self._unread_forever = False
        self._changed = trio.Event()
        #: Counted for statistics: events written and read, the most in the buffer at once,
        #: and the seconds writers spent waiting for room. The peak is taken when an event is
        #: read (the buffer only shrinks by reads, so its high points come just before one),
        #: which keeps the writer's fast path to one addition.
        self.written = 0
        self.read = 0
        self.peak = 0
        self.waited = 0.0

    # -- writing (the runtime and `Context`) --

    async def write(self, event: Event) -> None:
        """Put ``event`` on the stream, waiting while the buffer is full."""
        if cancel_pending():
            await checkpoint_if_cancelled()
        try:
            self.send_nowait(event)
        except trio.WouldBlock:
            await self.write_when_full(event)
        else:
            written = self.written + 1
            self.written = written
            if not written & 63:
                await self.yield_if_due()

    def write_nowait(self, event: Event) -> None:
        """Put ``event`` on the stream if there is room, else raise `trio.WouldBlock`."""
        self.send_nowait(event)
        self.written += 1

    async def write_when_full(self, event: Event) -> None:
        """The slow path of `write`: wait for room (this wait is the backpressure)."""
        if self._unread_forever and not self.has_consumer():
            # `run()`: nobody will ever read, and nobody may be draining (the run's task may
            # be its caller's): the oldest event goes, as `wait_closed` would have it go.
            self._discard_one()
            try:
                self.send_nowait(event)
            except trio.WouldBlock:  # an unbuffered stream: the event itself goes
                self.discarded += 1
                self.read += 1
            written = self.written + 1
            self.written = written
            if not written & 63:
                await self.yield_if_due()
            return
        self._notify()  # `wait_closed` may have to drain for a stream nobody reads
        started = trio.current_time()
        try:
            await self._buffer.put(event)
        except trio.ClosedResourceError:
            raise WorkflowRuntimeError("the run has ended; its stream is closed") from None
        finally:
            self.waited += trio.current_time() - started
            self.last_yield = time.perf_counter()
        self.written += 1

    async def yield_if_due(self) -> None:
        """Let other tasks run if `YIELD_EVERY` has passed since this stream last yielded.

        Called after an event was written or taken (every 64th), so it never raises
        `trio.Cancelled`: a write that raises has written nothing, a read that raises has
        taken nothing. The cancel point of each call comes before the operation."""
        now = time.perf_counter()
        if now - self.last_yield >= YIELD_EVERY:
            await cancel_shielded_checkpoint()
            self.last_yield = time.perf_counter()

    def close(self, terminal: StopEvent, trailing: Sequence[Event] = ()) -> None:
        """End the stream: after the events already buffered come ``trailing``, then
        ``terminal``."""
        self._trailing = list(trailing)
        self.terminal = terminal
        self._buffer.close()
        self._notify()

    @property
    def closed(self) -> bool:
        return self.terminal is not None

    # -- reading (`WorkflowHandler`) --

    def open(
        self, types: tuple[type[Event], ...], exclude: tuple[type[Event], ...] = ()
    ) -> StreamIterator:
        """Claim the stream for a new consumer, yielding ``types`` only (all when empty) and
        never ``exclude``."""
        if self._ended:
            raise WorkflowRuntimeError("this run's stream has ended: its events were consumed")
        self._drop_void_claim(from_result=False)
        if self._consumer is not None:
            raise WorkflowRuntimeError(
                "this run's stream already has a consumer: one stream_events() at a time "
                "(use `async with handler.stream_events() as events:`, or break out of the "
                "loop, or aclose() it, to hand the stream on)"
            )
        iterator = StreamIterator(self, types, exclude)
        self._consumer = weakref.ref(iterator, self._released)
        # Not the reader yet: the iterator may be handed to another task before it is read.
        self._consumer_task = current_task()
        return iterator

    def has_consumer(self, *, from_result: bool = False) -> bool:
        """Whether a consumer holds the stream (it looks only). ``from_result``: as seen from
        a task awaiting ``result()``, for which a claim of its own is void."""
        return self._consumer is not None and not self._void(from_result=from_result)

    def _void(self, *, from_result: bool) -> bool:
        """Whether the claim is void (see the module docstring)."""
        assert self._consumer is not None
        iterator = self._consumer()
        task = self._consumer_task
        if iterator is None or task is None or _finished(task):
            return True
        # A task awaiting result() is not reading an iterator it has read from; one it has
        # only made may still be on its way to the task that will read it.
        return from_result and iterator._started and task is current_task()

    def _drop_void_claim(self, *, from_result: bool) -> None:
        if self._consumer is not None and self._void(from_result=from_result):
            iterator = self._consumer()
            if iterator is not None:
                iterator._revoke()
            self._consumer = self._consumer_task = None

    def holds(self, iterator: StreamIterator) -> bool:
        return self._consumer is not None and self._consumer() is iterator

    def release(self, iterator: StreamIterator) -> None:
        if self.holds(iterator):
            self._consumer = self._consumer_task = None
            self._notify()

    def _released(self, ref: weakref.ref[StreamIterator]) -> None:
        # The consumer's iterator was dropped (CPython does this as soon as an `async for` is
        # left by `break`). Only touch trio objects from trio's own thread.
        if self._consumer is ref:
            self._consumer = None
            if trio.lowlevel.in_trio_run():
                self._notify()

    async def wait_closed(self) -> None:
        """Wait until the run has ended. Meanwhile, whenever a writer waits on a full buffer and
        nobody holds the stream, discard what is buffered: a stream nobody reads must not
        deadlock the run.

        Discarding happens only when that is still so after this task has yielded once more,
        so a consumer task started just before (``nursery.start_soon``) claims the stream
        first, whatever order trio runs the tasks of one batch in.
        """
        await checkpoint()
        self._result_waiters += 1
        try:
            await self._drain_until_closed()
        finally:
            self._result_waiters -= 1

    async def _drain_until_closed(self) -> None:
        while not self.closed:
            changed = self._changed
            if self._blocked():
                if not self.has_consumer(from_result=True):
                    await checkpoint()
                    if self._blocked() and not self.has_consumer(from_result=True):
                        self._drop_void_claim(from_result=True)
                        await self._discard_buffered()
                    continue
                # Behind a consumer: nothing says when its task ends, so look now and then.
                with trio.move_on_after(_CONSUMER_CHECK):
                    await changed.wait()
                continue
            await changed.wait()

    def discard_unread(self) -> None:
        """Nobody will read this stream (``run()``): from now on, as if ``result()`` waited."""
        self._unread_forever = True

    @property
    def unread_forever(self) -> bool:
        """Whether nobody will ever read this stream (`discard_unread`)."""
        return self._unread_forever

    def make_room_if_unread(self) -> bool:
        """For a writer that cannot wait (`Context.send_event` of an `InputRequiredEvent`):
        discard the oldest buffered event if nobody reads and ``result()`` waits, as a waiting
        writer would have it discarded. Returns whether there is room now."""
        if (self._unread_forever or self._result_waiters) and not self.has_consumer():
            return self._discard_one()
        return False

    def _blocked(self) -> bool:
        return self._buffer.writers_waiting > 0

    async def _discard_buffered(self) -> None:
        """Throw away what is buffered, yielding as a reader does: a big buffer takes a while."""
        self.peak = max(self.peak, self.written - self.read)
        while self._discard_one():
            if not self.read & 63:
                await self.yield_if_due()

    def _discard_one(self) -> bool:
        try:
            self._buffer.get_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return False
        self.discarded += 1
        self.read += 1
        return True

    def _after_buffer(self) -> Event:
        """What comes once the buffer is drained: the trailing events, then the terminal."""
        if self._trailing:
            return self._trailing.pop(0)
        assert self.terminal is not None
        self._ended = True
        self._consumer = self._consumer_task = None
        return self.terminal

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def buffered(self) -> int:
        """Events in the buffer."""
        return len(self._buffer.items)

    @property
    def writers_waiting(self) -> int:
        """Writers waiting for room in the buffer."""
        return self._buffer.writers_waiting


class StreamIterator(Generic[E_co]):
    """Async iterator over a run's stream, returned by `WorkflowHandler.stream_events`.

    Yields the events of the requested types in the order they were written, then the terminal
    event (whatever the filter), then stops. It holds the stream until then, or until `aclose`,
    the end of its ``async with`` block, or an exception out of ``__anext__``; a later
    ``stream_events()`` continues with the next event.

    For type checkers it is generic in what it yields: ``stream_events(A, B)`` makes a
    ``StreamIterator[A | B | StopEvent]``, ``stream_events()`` a ``StreamIterator[Event]``
    (the default, so a plain ``StreamIterator`` annotation means that).
    """

    __slots__ = (
        "__weakref__",
        "_done",
        "_exclude",
        "_revoked",
        "_started",
        "_stream",
        "_types",
        "_unfiltered",
    )

    def __init__(
        self,
        stream: EventStream,
        types: tuple[type[Event], ...],
        exclude: tuple[type[Event], ...] = (),
    ) -> None:
        self._stream = stream
        self._types = types
        self._exclude = exclude
        self._unfiltered = not (types or exclude)  # every event passes: the common case
        self._done = False
        self._started = False
        self._revoked = False  # the stream was taken from it (see `EventStream.has_consumer`)

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done = True
        self._stream.release(self)

    async def __anext__(self) -> E_co:
        if self._done:
            if self._revoked:
                raise WorkflowRuntimeError(
                    "this iterator no longer holds the run's stream (its task awaited "
                    "result(), which took the stream over to drain it)"
                )
            raise StopAsyncIteration
        stream = self._stream
        if not self._started:
            # The task that reads is the consumer (it may not be the one that called
            # stream_events()); it is noted again whenever the reader parks.
            self._started = True
            stream._consumer_task = current_task()
        buffer = stream._buffer
        try:
            if cancel_pending():
                await checkpoint_if_cancelled()
            items = buffer.items
            while True:
                # Take what is buffered without a trip through the scheduler (the reading half
                # of the stream's hot path: `Buffer.get_nowait` written out); wait only when
                # the buffer is empty. A consumer that keeps up thus reads in batches, not one
                # event per task switch.
                writers = buffer.writers
                if items or writers:
                    waiting = len(items)  # what the buffer held, this event included
                    # From a full buffer (or one of size 0) taking the event lets the oldest
                    # waiting writer's in, in one call that a KeyboardInterrupt cannot split
                    # (`Buffer` is protected, this frame is not).
                    event = buffer.get_nowait() if writers else items.popleft()
                    if waiting > stream.peak:
                        stream.peak = waiting
                    read = stream.read
                    stream.read = read + 1
                    if not read & 63:  # a reader that never parks yields now and then too,
                        stream._consumer_task = current_task()  # and is noted as the reader
                        await stream.yield_if_due()
                else:
                    event = await self._next_unbuffered(stream, buffer)
                # What passes is what `E_co` stands for (see `_passes`), told to the type
                # checker by an ignore rather than a cast, which would cost every event a call.
                if self._unfiltered or self._passes(event):
                    return event  # type: ignore[return-value]
        except BaseException:
            # A cancelled consumer (or a bug) ends its `async for`: hand the stream on now,
            # rather than when the garbage collector gets to the iterator.
            self._done = True
            stream.release(self)
            raise

    async def _next_unbuffered(self, stream: EventStream, buffer: Buffer[Event]) -> Event:
        """`__anext__`'s slow path, for an empty buffer with no writer waiting: the next event
        written (waiting for it), or what comes after the buffer once it is closed."""
        if buffer.closed:
            return self._after_buffer()
        stream._consumer_task = current_task()  # a reader that parks is the consumer
        try:
            event = await buffer.get()
        except trio.EndOfChannel:
            return self._after_buffer()
        stream.read += 1
        return event

    def _passes(self, event: Event) -> bool:
        """Whether the filter lets ``event`` through: one of ``types`` (when given), never one
        of ``exclude``, and always the terminal event (a StopEvent, after which `_done` is set;
        `WorkflowHandler.stream_events` makes what passes agree with `E_co`)."""
        if self._done:
            return True
        if self._types:
            return isinstance(event, self._types)
        return not isinstance(event, self._exclude)

    def _revoke(self) -> None:
        self._done = self._revoked = True

    def _after_buffer(self) -> Event:
        event = self._stream._after_buffer()
        self._done = isinstance(event, StopEvent)  # only the terminal is a StopEvent
        return event

    async def aclose(self) -> None:
        """Stop iterating and hand the stream on; events not yet read stay for the next one."""
        await trio.lowlevel.checkpoint()
        self._done = True
        self._stream.release(self)
