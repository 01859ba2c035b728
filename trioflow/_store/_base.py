"""`Store`: what the layers above (the durable runtime, the server, `RunStore`) use of a store,
whatever its engine. `SqliteStore` is one; a store of runs across machines is another shape of
the same contract.

The contract, which those layers rely on:

- **Writes are appended, then group-committed.** `append` is synchronous and O(1): the writer
  never waits on the engine. A flusher task (`flush_forever`, in a nursery that outlives every
  writer) commits everything pending in one transaction, as soon as the previous commit
  returned, in the order it was appended. `append` returns a ticket that `flushed` waits for.
- **Bounded.** `full` says when the pending writes reach the store's bound; a writer then
  waits in `room`: backpressure from the engine, never an unbounded buffer.
- **Listeners hear of commits, after them.** `on_commit` listeners get each committed batch,
  in order, once it is durable: what they publish (events to clients) a crash cannot take
  back.
- **Failures.** A commit that may go through later is retried, nothing dropped. One the
  engine refuses for good fails the store (`failed`): `flush_forever` raises it, and every
  writer and waiter gets a `StoreError` instead of waiting for a commit that will not come.
- **Reads see committed writes only.**
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

from ._cluster import Signals
from ._errors import StoreError
from ._writes import EventRow, Operation, RunRow


class Store(Protocol):
    """A durable store of runs, their stream events and their journals (see the module)."""

    #: Why the store failed for good (or that it is closed); None while it works.
    failed: StoreError | None
    #: Whether other processes share the store (`SharedStore`); else this one owns it.
    shared: bool

    # -- writing --

    async def next_number(self) -> int:
        """The number of the next run started (its order in ``GET /runs``)."""
        ...

    def append(self, operation: Operation) -> int:
        """Add ``operation`` to the next commit; return the ticket `flushed` waits for.

        Raises:
            StoreError: the store has failed.
        """
        ...

    @property
    def full(self) -> bool:
        """Whether a writer should wait in `room` before appending more."""
        ...

    async def room(self) -> None:
        """Wait while the pending writes are at the store's bound.

        Raises:
            StoreError: the store has failed: there will be no room.
        """
        ...

    async def flushed(self, commits: int) -> None:
        """Wait until the write whose ticket is ``commits`` is committed.

        Raises:
            StoreError: the store failed before it was.
        """
        ...

    def on_commit(self, listener: Callable[[Sequence[Operation]], None]) -> None:
        """Call ``listener`` with every batch once it is committed, in order."""
        ...

    def holds(self, run_id: str) -> bool:
        """Whether this process may still act for run ``run_id`` (start its steps): on a
        shared store, whether its hold on the run has not run out."""
        ...

    def on_lost(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener`` with the runs this process learns it no longer owns (on a shared
        store, another process took them over): what they write is dropped from then on."""
        ...

    async def claim(
        self,
        served: Mapping[str, str],
        *,
        limit: int | None = None,
        busy: Collection[str] = (),
        unserved_after: float | None = None,
        cancelled_only: bool = False,
    ) -> list[RunRow]:
        """The unfinished runs this process may resume (or start: on a shared store, runs
        submitted for any process), none in ``busy`` (under way here), oldest first: on a
        store this process owns, every run it has as running; on a shared one, up to
        ``limit`` runs of the workflows ``served`` (names to graphs' fingerprints) that no
        live process owns, this process's from now on; with ``unserved_after``, also those
        of other workflows or graphs that waited that many seconds (for the caller to fail);
        with ``cancelled_only``, only runs asked to cancel (for the caller to end)."""
        ...

    async def release(self, run_ids: Collection[str]) -> None:
        """Give up runs `claim` gave that this process does not run after all (a shared
        store's other processes may claim them at once)."""
        ...

    async def flush_forever(self) -> None:
        """Commit what is pending, batch after batch, until cancelled.

        Raises:
            StoreError: the store failed for good.
        """
        ...

    async def drain(self) -> None:
        """Commit everything appended so far (also without the flusher).

        Raises:
            StoreError: the store has failed.
        """
        ...

    async def aclose(self) -> None:
        """Close the store; from then on it is `failed` ("closed")."""
        ...

    # -- reading (committed writes only) --

    async def run(self, run_id: str) -> RunRow | None:
        """The row of run ``run_id``, if the store has it."""
        ...

    async def runs(self, *, status: str | None = None) -> list[RunRow]:
        """Every run (with ``status``, if given), oldest first."""
        ...

    async def page(
        self,
        limit: int,
        *,
        before: int | None = None,
        workflow: str | None = None,
        statuses: Sequence[str] = (),
    ) -> list[RunRow]:
        """Up to ``limit`` runs, newest first, numbered below ``before`` (all when None), of
        ``workflow`` and with one of ``statuses`` when given."""
        ...

    async def events(
        self, run_id: str, *, after: int, limit: int, max_bytes: int | None = None
    ) -> list[EventRow]:
        """Up to ``limit`` events of ``run_id`` after seq ``after``, in order, and no more
        than ``max_bytes`` of bodies (at least one event, when there is one)."""
        ...

    async def journal(self, run_id: str) -> list[tuple[int, str, bytes]]:
        """The journal of ``run_id``: ``(n, kind, body)`` in order."""
        ...

    async def last_seq(self, run_id: str) -> int:
        """The seq of the last event of ``run_id`` (0 with none)."""
        ...


class SharedStore(Store, Protocol):
    """A store that processes share (``shared``): each run is owned by one process at a time,
    and the others reach it through the store (see `trioflow._store._cluster`)."""

    #: This process's name among them (a run's ``owner``).
    node: str
    #: What notifications said: a run to claim, control to act on, commits of a run.
    signals: Signals

    async def send(self, run_id: str, body: bytes) -> bool:
        """Put an event's wire JSON in a running run's inbox, committed, and wake its owner;
        False if the run is not running."""
        ...

    async def request_cancel(self, run_id: str) -> bool:
        """Ask a running run to cancel, committed, and wake its owner; False if the run is
        not running."""
        ...

    async def control(self) -> tuple[list[tuple[int, str, bytes]], list[str]]:
        """The inbox rows not yet taken of this process's runs (``(seq, run_id, body)``),
        and which of its runs were asked to cancel."""
        ...

    def forget_lost(self, run_id: str) -> None:
        """The lost run ``run_id`` has stopped in this process."""
        ...
