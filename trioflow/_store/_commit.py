"""`GroupCommit`: the engine-independent half of a store (`Store`): writes appended in O(1),
committed in batches by one flusher, bounded, published to listeners after each commit, retried
while the engine says a failure may pass and failing the store when it says it will not. An
engine (`SqliteStore`, `PostgresStore`) provides the transaction (`_write`, run in a worker
thread), the verdict on its errors (`_retryable`), what closing releases (`_release`), and its
reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from ._errors import StoreError
from ._writes import (
    InboxTaken,
    JournalEntry,
    NewEvent,
    NewRun,
    Operation,
    RunEnded,
    RunPurged,
    RunReleased,
    RunResumed,
)

logger = logging.getLogger("trioflow.store")

#: Operations and bytes that may wait for a commit before writers wait for room.
PENDING_MAX = 4096
PENDING_BYTES = 4 * 1024 * 1024
#: Seconds between attempts at a commit that failed.
RETRY_AFTER = 1.0


class GroupCommit:
    """Appends, group commit, backpressure, listeners and failure, for a store's engine
    (see the module)."""

    def __init__(self, name: str) -> None:
        #: What the store is called in messages (its file, its database).
        self.name = name
        #: Why the store failed: a commit the engine refused for good, or it is closed. Then
        #: nothing more is written, and every writer and waiter gets this error (`append`,
        #: `flushed`, `room`, `drain`).
        self.failed: StoreError | None = None
        self._write_slot = trio.CapacityLimiter(1)
        self._pending: list[Operation] = []
        self._pending_bytes = 0
        self._ready = trio.Event()  # something is pending
        self._room = trio.Event()  # a commit took the pending list
        #: Commits done; `flushed` waits for a count.
        self._commits = 0
        self._committed = trio.Event()
        self._listeners: list[Callable[[Sequence[Operation]], None]] = []
        #: Held by whoever commits (the flusher, or `drain`): one commit at a time, in order.
        self._flushing = trio.Lock()
        self._next_number = 0
        #: Runs purged while under way (`RunPurged.under_way`) in a commit made, whose end
        #: has not been written yet: what they write is dropped, up to their end. The commit
        #: thread's alone (`_sort`, `_written`), changed only once a commit is made, so that
        #: a retried commit drops the same.
        self._dropping: set[str] = set()
        #: Set by an engine's `_write` (on a store shared by processes): the runs whose writes
        #: it dropped because this process no longer owns them (another claimed them), and
        #: those of them it learned so of in that commit. Taken by `_flush_once` once committed.
        self._unpublished: set[str] = set()
        self._newly_lost: set[str] = set()
        self._lost_listeners: list[Callable[[set[str]], None]] = []

    async def drain(self) -> None:
        """Commit everything appended so far, with or without the flusher: also when it was
        cancelled (its process is shutting down), which is why a caller shields this. A
        checkpoint."""
        await trio.lowlevel.checkpoint()
        while True:
            if self.failed is not None:  # nothing more is written
                raise self._failure()
            if not (self._pending or self._committing is not None):
                return
            async with self._flushing:  # after a commit under way, in order
                if self._pending and self.failed is None:
                    await self._flush_once()

    async def next_number(self) -> int:
        """The number of the next run started (its order in ``GET /runs``). A checkpoint."""
        await trio.lowlevel.checkpoint()
        number = self._next_number
        self._next_number += 1
        return number

    def append(self, operation: Operation) -> int:
        """Add ``operation`` to what the next commit writes; return the count of commits
        after which it is written (see `flushed`). Synchronous and O(1); call `room` before
        a burst of appends so that the pending list stays bounded.

        Raises:
            StoreError: the store has failed (`failed`).
        """
        if self.failed is not None:
            raise self._failure()
        self._pending.append(operation)
        self._pending_bytes += operation.size
        self._ready.set()
        return self._commits + 1 if self._committing is None else self._commits + 2

    #: The batch being committed, if a commit is under way.
    _committing: list[Operation] | None = None

    async def room(self) -> None:
        """Wait while the pending list is full: backpressure from the disk. A checkpoint.

        Raises:
            StoreError: the store has failed (`failed`): there will be no room.
        """
        await trio.lowlevel.checkpoint()
        while True:
            if self.failed is not None:
                raise self._failure()
            if not self.full:
                return
            await self._room.wait()

    async def flushed(self, commits: int) -> None:
        """Wait until ``commits`` commits have been made (what `append` returned).

        Raises:
            StoreError: the store failed before: they never will be.
        """
        await trio.lowlevel.checkpoint()
        while self._commits < commits:
            if self.failed is not None:
                raise self._failure()
            await self._committed.wait()

    def on_commit(self, listener: Callable[[Sequence[Operation]], None]) -> None:
        """Call ``listener`` with each committed batch, once it is committed."""
        self._listeners.append(listener)

    def holds(self, run_id: str) -> bool:
        """Whether this process may still act for run ``run_id``: on a store it owns, always
        (a store that processes share says whether its hold on the run has run out)."""
        return True

    def on_lost(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener`` with the runs this process learns it no longer owns (on a store
        shared by processes: another took them over): what they write is dropped from then on,
        and they must stop."""
        self._lost_listeners.append(listener)

    def _tell_lost(self, runs: set[str]) -> None:
        for listener in self._lost_listeners:
            try:
                listener(runs)
            except Exception:
                logger.exception("trioflow: a listener of %s failed on lost runs", self.name)

    async def flush_forever(self) -> None:
        """Commit what is pending, batch after batch, until cancelled. A commit under way
        when it is cancelled completes (the thread is waited for).

        Raises:
            StoreError: the store failed (`failed`): its task fails, for its nursery to stop
                what relies on the store, rather than go on without writing.
        """
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            async with self._flushing:
                if self.failed is not None:  # failed in `drain`
                    raise self._failure()
                if self._pending:
                    await self._flush_once()

    async def _flush_once(self) -> None:
        """Commit everything pending in one transaction, then tell the listeners.

        Raises:
            StoreError: the engine refused the batch for good: the store has failed.
        """
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        self._committing = batch
        self._room.set()
        self._room = trio.Event()
        try:
            await self._commit(batch)
        except Exception as error:  # refused for good: retrying would wedge every writer
            raise self._fail(batch, error) from error
        except BaseException:  # cancelled between attempts: the batch is pending again
            self._pending[:0] = batch
            self._pending_bytes += sum(operation.size for operation in batch)
            self._committing = None
            raise
        self._committing = None
        self._commits += 1
        self._committed.set()
        self._committed = trio.Event()
        published: Sequence[Operation] = batch
        if self._unpublished:  # dropped, not committed: nobody hears of them
            dropped, self._unpublished = self._unpublished, set()
            published = [op for op in batch if _run_of(op) not in dropped]
        if self._newly_lost:
            lost, self._newly_lost = self._newly_lost, set()
            self._tell_lost(lost)
        for listener in self._listeners:
            try:
                listener(published)
            except Exception:  # one listener's bug must not stop the commits of all
                logger.exception("trioflow: a listener of %s failed on a commit", self.name)

    def _fail(self, batch: Sequence[Operation], error: Exception) -> StoreError:
        """Fail the store for the error ``batch`` was refused with: log it (once, with its
        traceback), and wake every writer and waiter, who get the failure (none waits
        forever for a commit that will not come)."""
        failure = StoreError(
            f"the store {self.name} has failed: a commit of {_described(batch)} failed for"
            f" good ({type(error).__name__}: {error}); nothing more is written to it"
        )
        failure.__cause__ = error
        self.failed = failure
        self._committing = None
        logger.error("trioflow: %s", failure, exc_info=error)
        self._committed.set()
        self._room.set()
        return failure

    def _failure(self) -> StoreError:
        """`failed`, as a new exception for one more caller: one object raised in many tasks
        would gather all their tracebacks."""
        assert self.failed is not None
        error = StoreError(*self.failed.args)
        error.__cause__ = self.failed.__cause__
        return error

    async def _commit(self, batch: list[Operation]) -> None:
        while True:
            try:
                await trio.to_thread.run_sync(self._write, batch, limiter=self._write_slot)
                return
            except Exception as error:  # a full disk, an I/O error: nothing is dropped
                if not self._retryable(error):
                    raise
                logger.warning(
                    "trioflow: cannot commit %d writes to %s (%s); retrying in %g s",
                    len(batch),
                    self.name,
                    error,
                    RETRY_AFTER,
                )
                await trio.sleep(RETRY_AFTER)

    @property
    def full(self) -> bool:
        """Whether a writer should wait in `room` before appending more."""
        return len(self._pending) >= PENDING_MAX or self._pending_bytes >= PENDING_BYTES

    # -- for an engine's `_write`, in the commit thread --

    def _sort(
        self,
        batch: Sequence[Operation],
        run_values: Callable[[NewRun], tuple[Any, ...]],
        lost: set[str] | frozenset[str] = frozenset(),
    ) -> Sorted:
        """``batch`` as the rows of each statement, in one pass (most operations are events:
        the thread holds the GIL while it sorts them, and the event loop waits for it
        meanwhile). What a run purged under way writes after its purge is dropped (what it
        wrote before is deleted with it): `_dropping` holds those purged in earlier
        commits, `Sorted.purging` those purged so far in this one. So is what the runs in
        ``lost`` write (this process does not own them), their purges aside."""
        out = Sorted()
        add_event, add_record = out.events.append, out.journal.append
        dropping, purging = self._dropping, out.purging
        for op in batch:
            kind = type(op)
            if (dropping or purging or lost) and kind is not NewRun:
                run_id = op.run_id  # type: ignore[union-attr]
                if run_id in dropping or run_id in purging or run_id in lost:
                    # (Forgetting a run is any process's to do.)
                    if kind is RunPurged:
                        out.purged.append((run_id,))
                    elif kind is RunEnded:
                        out.finished.append(run_id)
                    continue
            if kind is NewEvent:
                add_event((op.run_id, *op.event))  # type: ignore[union-attr]
            elif kind is JournalEntry:
                add_record((op.run_id, op.n, op.kind, op.body))  # type: ignore[union-attr]
            elif isinstance(op, NewRun):
                out.runs.append(run_values(op))
            elif isinstance(op, RunEnded):
                outcome = (op.status, op.result, op.result_type, op.error, op.ended_at)
                out.ends.append((*outcome, op.last_seq, op.run_id))
            elif isinstance(op, RunPurged):
                out.purged.append((op.run_id,))
                if op.under_way:
                    purging.add(op.run_id)
            elif isinstance(op, RunResumed):
                out.resumed.append((op.recoveries, op.run_id))
            elif kind is InboxTaken:
                out.taken.append(op.seq)  # type: ignore[union-attr]
            elif kind is RunReleased:
                out.released.append(op.run_id)
        return out

    def _written(self, batch: Sorted) -> None:
        """``batch`` (`_sort`) is committed: the runs it purged under way are dropped from
        now on, up to their end, and those whose end it held no longer."""
        self._dropping.update(batch.purging)
        self._dropping.difference_update(batch.finished)

    async def aclose(self) -> None:
        """Close the store and release what it holds (after `drain`, for nothing to be
        lost). From then on the store is `failed`: a write, or a wait for a commit, raises
        `StoreError` rather than wait for a commit that will not come."""
        if self.failed is None:
            self.failed = StoreError(f"the store {self.name} is closed")
        self._committed.set()
        self._room.set()
        await trio.to_thread.run_sync(self._release)

    # -- what an engine provides --

    def _release(self) -> None:
        """Close the engine's connections and release its lock, in a worker thread."""
        raise NotImplementedError

    def _write(self, batch: list[Operation]) -> None:
        """Commit ``batch`` in one transaction, in a worker thread (one at a time): all of it
        or, raising, none of it."""
        raise NotImplementedError

    def _retryable(self, error: Exception) -> bool:
        """Whether a commit that failed with ``error`` may go through if tried again."""
        raise NotImplementedError


def _run_of(op: Operation) -> str:
    return op.row.run_id if isinstance(op, NewRun) else op.run_id


def _described(batch: Sequence[Operation]) -> str:
    """What a batch writes, for an error: how many writes, of which runs."""
    runs = list(dict.fromkeys(_run_of(op) for op in batch))
    named = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
    writes = f"{len(batch)} write{'s' if len(batch) > 1 else ''}"
    return f"{writes} (of run{'s' if len(runs) > 1 else ''} {named})"


@attrs.define
class Sorted:
    """A batch as the rows of each statement of its transaction (`GroupCommit._sort`)."""

    runs: list[tuple[Any, ...]] = attrs.field(factory=list)
    events: list[tuple[Any, ...]] = attrs.field(factory=list)
    ends: list[tuple[Any, ...]] = attrs.field(factory=list)
    journal: list[tuple[Any, ...]] = attrs.field(factory=list)
    resumed: list[tuple[Any, ...]] = attrs.field(factory=list)
    purged: list[tuple[Any, ...]] = attrs.field(factory=list)
    #: The inbox rows taken (`InboxTaken`), by seq.
    taken: list[int] = attrs.field(factory=list)
    #: The runs released (`RunReleased`).
    released: list[str] = attrs.field(factory=list)
    #: Runs purged under way in this batch.
    purging: set[str] = attrs.field(factory=set)
    #: Runs being dropped whose end is in this batch.
    finished: list[str] = attrs.field(factory=list)
