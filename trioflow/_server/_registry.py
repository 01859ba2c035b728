"""`RunRegistry`: the runs started over HTTP, living in a nursery that the server owns.

A run started by a request outlives that request, so it cannot live in the request's task.
Each run is a task in the registry's nursery: it enters `Workflow.start` and pumps the run's
stream into the run's `RunFeed` (`_pump`). What a run's status is, and its result or error,
the run's handler says (`RunRecord.describe`); the registry keeps no state of its own about
it. Finished runs are kept (their status and retained events stay readable) up to a limit,
oldest forgotten first, so the memory of a long-lived server stays bounded.

A run that raises a `BaseException` that is no `Exception` (a step's ``SystemExit`` or
``KeyboardInterrupt``) stops the registry as a signal stops the server: no more runs start,
the others are cancelled, and `wait_fatal` hands the exception to `serve`, which raises it once
the server has shut down. The registry's nursery never sees it, so the server is never left
half alive, unable to start runs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import cast

import trio

from .. import (
    Event,
    RunStatus,
    StartEvent,
    TrioflowError,
    Workflow,
    WorkflowHandler,
    WorkflowRuntimeError,
)
from .._durable import (
    OUTSIDE,
    Resume,
    new_row,
    run_ended,
    start_durable,
    unfinished,
)
from .._store import (
    POLL,
    InboxTaken,
    NewEvent,
    NewRun,
    Operation,
    RunEnded,
    RunPurged,
    RunReleased,
    RunResumed,
    RunRow,
    SharedStore,
    Store,
    StoreError,
    StoreUnavailable,
    wait_for,
)
from .._wire import BadJsonError, WireError, decode_event, loads, sendable_event_types
from ._feed import RunFeed
from ._options import ServerOptions, node_name
from ._pump import StoreSink, pump
from ._record import RunRecord
from ._report import log_failed_run
from ._stored import StoredFeed, StoredRecord

logger = logging.getLogger("trioflow.server")


class TooManyRuns(TrioflowError):
    """The server runs as many runs as it may (``max_runs``)."""


class ShuttingDown(TrioflowError):
    """The server is shutting down and starts no more runs."""


class RunRegistry:
    """Starts runs in ``nursery`` and finds them by id."""

    def __init__(
        self,
        nursery: trio.Nursery,
        options: ServerOptions,
        *,
        keep_events: bool = False,
        store: Store | None = None,
    ) -> None:
        self._nursery = nursery
        self._options = options
        self._keep_events = keep_events
        #: Where runs, their events and their outcomes are committed (None: memory only).
        #: Its flusher runs in ``nursery`` too, and tells `_published` of each commit.
        self._store = store
        #: Runs forgotten whose rows the store has not yet deleted: `find` skips them.
        self._hidden: set[str] = set()
        if store is not None:
            store.on_commit(self._published)
            store.on_lost(self._lost)
        self._max_runs = options.max_runs
        #: On a store shared by processes (`Store.shared`): the workflows served, whose runs
        #: this process claims (`recover`), and for each run under way here the inbox rows
        #: delivered to it (or refused), by seq: each is delivered once (`_deliver`).
        self._served: Mapping[str, Workflow] = {}
        #: Set while a claim counts the room it may fill (`runs_here` waits for it).
        self._claiming: trio.Event | None = None
        self._taken: dict[str, set[int]] = {}
        self._sendable: dict[str, Mapping[str, type[Event]]] = {}
        #: This process's node id, which its records report while they run.
        self.node = node_name(options)
        self._records: dict[str, RunRecord] = {}
        #: On a store, the feeds of the runs under way, from before their first event (which
        #: may be committed before the run's record is known) until their end is committed.
        self._feeds: dict[str, StoredFeed] = {}
        #: On a store, the feeds of runs served from it (`StoredRecord`) that have clients:
        #: one per run, shared by every request while it has clients (`StoredFeed.share`),
        #: so that ``max_clients_per_run`` and the count of its watchers hold.
        self._stored_feeds: dict[str, StoredFeed] = {}
        self._numbers = itertools.count()
        #: Finished runs, oldest first, and the bytes they keep (`RunRecord.footprint`).
        self._finished: deque[tuple[str, int]] = deque()
        self._finished_bytes = 0
        self._starting = 0  # runs between the limit check and their record
        self._closing = False
        #: When the shutdown must be over (`shutdown`), once one has begun.
        self._deadline: float | None = None
        self._fatal: BaseException | None = None
        self._fatal_raised = trio.Event()

    def get(self, run_id: str) -> RunRecord | None:
        """The run ``run_id`` if this process keeps it in memory."""
        record = self._records.get(run_id)
        return None if record is None or record.forgotten else record

    async def find(self, run_id: str) -> RunRecord | StoredRecord | None:
        """The run ``run_id``: in memory, or else in the store (a run that ended before)."""
        await trio.lowlevel.checkpoint()
        record = self._records.get(run_id)
        if record is not None:
            return None if record.forgotten else record
        store = self._store
        if store is None or run_id in self._hidden:
            return None
        if run_id in self._feeds and not store.shared:
            # (A run in `_feeds` but not yet in `_records` is starting: its row is
            # committed, its id not yet handed out. Its row is no ended run's to serve. On a
            # store that processes share, its row is served as any running run's is: one
            # being claimed here has an id its clients know.)
            return None
        row = await store.run(run_id)
        if row is None:
            return None
        return self._stored(row)

    def _stored(self, row: RunRow) -> StoredRecord:
        """The record of a run served from the store, with its clients' feed if it has any."""
        assert self._store is not None
        options = self._options
        return StoredRecord.of(
            row,
            self._store,
            options.max_clients_per_run,
            self._stored_feeds,
            retain=(options.retain, options.retain_bytes),
        )

    async def forget(self, record: RunRecord | StoredRecord) -> None:
        """Forget ``record``'s run: it is found no more (`get`, `find`, `page`), and it is
        dropped once it has ended (cancel it first to make that soon). Clients streaming it
        keep their stream. On a store the run is purged from it before this returns, so a
        crash does not bring it back; what it still writes until its end is dropped."""
        await trio.lowlevel.checkpoint()
        record.forgotten = True
        if self._store is not None:
            self._hidden.add(record.run_id)  # `find` skips it until its purge is committed
            under_way = isinstance(record, RunRecord) and not record.done.is_set()
            await self._store.flushed(self._store.append(RunPurged(record.run_id, under_way)))
        if isinstance(record, StoredRecord):
            return
        if not record.done.is_set() or record.run_id in self._feeds:
            # Under way, or on a store ended but its end not yet committed (its feed takes
            # committed events until then, its terminal one included): `_wrap_up` drops it
            # once that end is committed (`_published`), after its feed is finished.
            return
        self._drop(record)

    def _drop(self, record: RunRecord) -> None:
        """Drop the forgotten ``record``, which has ended (and on a store, whose end is
        committed)."""
        if self._records.pop(record.run_id, None) is None:
            return
        for index, (run_id, size) in enumerate(self._finished):
            if run_id == record.run_id:
                del self._finished[index]
                self._finished_bytes -= size
                return

    async def page(
        self,
        limit: int,
        *,
        before: int | None = None,
        workflow: str | None = None,
        statuses: Collection[RunStatus] = (),
    ) -> tuple[list[RunRecord | StoredRecord], int | None]:
        """Up to ``limit`` runs, newest first, started before run number ``before`` (all when
        None), of ``workflow`` and with one of ``statuses`` when given; and the number to pass
        as ``before`` for the next page (None when there is none). On a store, every run it
        has (those this process runs as they are in memory)."""
        await trio.lowlevel.checkpoint()
        if self._store is not None:
            return await self._stored_page(limit, before, workflow, statuses)
        found: list[RunRecord | StoredRecord] = []
        for record in reversed(self._records.values()):  # newest first: in start order
            if record.forgotten or (before is not None and record.number >= before):
                continue
            if workflow is not None and record.workflow_name != workflow:
                continue
            if statuses and record.handler.status not in statuses:
                continue
            if len(found) == limit:
                return found, found[-1].number
            found.append(record)
        return found, None

    async def _stored_page(
        self,
        limit: int,
        before: int | None,
        workflow: str | None,
        statuses: Collection[RunStatus],
    ) -> tuple[list[RunRecord | StoredRecord], int | None]:
        """`page` on a store. A run this process has in memory is what it says there (its
        status is its handler's, as `find` gives it); the store's row of it may lag behind
        (its end is committed after it is decided). So the store lists the runs it alone
        has, filtered by their committed status, and the runs in memory are filtered by their
        own, then merged in: a page is as full as the store allows, and says what
        ``GET /runs/{id}`` says. The rows skipped, those of runs in memory or forgotten, are
        bounded by what memory keeps."""
        store = self._store
        assert store is not None
        wanted = [status.value for status in statuses]
        stored: list[RunRecord | StoredRecord] = []
        #: The runs in memory met in the store's rows: listed by their own status, even if
        #: forgotten from memory (`_forget_old`) while the next rows were read.
        held: dict[str, RunRecord] = {}
        cursor = before
        while len(stored) <= limit:
            rows = await store.page(limit + 1, before=cursor, workflow=workflow, statuses=wanted)
            for row in rows:
                record = self._records.get(row.run_id)
                if record is not None:
                    held[row.run_id] = record
                elif row.run_id not in self._hidden and row.run_id not in self._feeds:
                    stored.append(self._stored(row))  # (not one starting: see `find`)
            if len(rows) <= limit:  # the store has no more
                break
            cursor = rows[-1].number
        in_memory = [
            record
            for record in {**held, **self._records}.values()
            if not record.forgotten
            and (before is None or record.number < before)
            and (workflow is None or record.workflow_name == workflow)
            and (not statuses or record.status in statuses)
        ]
        found = sorted([*stored, *in_memory], key=lambda record: record.number, reverse=True)
        if len(found) > limit:
            return found[:limit], found[limit - 1].number
        return found, None

    async def recover(self, workflows: Mapping[str, Workflow]) -> None:
        """Resume the runs the store has as running (their process stopped before they
        ended) from their journals, each under the same id, its stream going on after its
        last committed event. A run that cannot be resumed ends instead, with a
        `WorkflowFailedEvent` saying why (`trioflow._durable.unfinished`): its workflow is
        no longer served or has changed, it was resumed ``max_recoveries`` times already, or
        it predates journals."""
        store = self._store
        assert store is not None
        if store.shared:
            # Its runs are any process's: this one claims what it can run, now (the runs of
            # the process it replaces, among others) and from now on.
            self._served = workflows
            await self._claim()
            self._nursery.start_soon(self._claim_forever)
            self._nursery.start_soon(self._control_forever)
            return
        limit = self._options.max_recoveries
        resumable = await unfinished(store, workflows, max_recoveries=limit)
        # The ends of the runs that are not resumed are committed before the server listens
        # (nothing else writes yet, so this is quick); each resumed run's start waits for its
        # own `RunResumed`. Not a drain after them: a run that writes nonstop would keep
        # the store from ever being drained, and the server from listening.
        await store.drain()
        for resume in resumable:
            await self._resume(resume)

    async def _resume(self, resume: Resume) -> None:
        """Run the run of ``resume`` (of an earlier process, or claimed) in the nursery, once
        it is under way."""
        row = resume.row
        await self._nursery.start(
            self._drive_stored,
            row.workflow,
            resume.workflow,
            resume.start_event,
            None,
            row.lifecycle,
            resume,
        )

    # -- on a store shared by processes --

    async def _claim(self) -> None:
        """Claim as many runs as this process has room for (`unfinished`), and run them.
        Without room (or running none: an HTTP node), claim the runs asked to cancel that
        nobody runs: they end at once, running nothing, rather than wait for room."""
        store = self._store
        assert store is not None
        if self._closing:
            await trio.lowlevel.checkpoint()
            return
        free = self._max_runs - self.running
        options = self._options
        if free <= 0:
            await unfinished(
                store,
                self._served,
                max_recoveries=options.max_recoveries,
                busy=list(self._feeds),
                limit=16,
                unserved_after=options.unserved_grace,
                cancelled_only=True,
            )
            return
        self._starting += free  # counted at once, as `start` counts a run
        claimed: list[Resume] = []
        self._claiming = claiming = trio.Event()
        try:
            try:
                claimed = await unfinished(
                    store,
                    self._served,
                    max_recoveries=options.max_recoveries,
                    busy=list(self._feeds),
                    limit=free,
                    unserved_after=options.unserved_grace,
                )
            finally:
                self._starting -= free - len(claimed)  # (the room it did not fill)
                free = len(claimed)
                self._claiming = None
                claiming.set()
            while claimed:
                await self._resume(claimed[0])
                del claimed[0]
                self._starting -= 1
                free -= 1
        finally:
            self._starting -= free
            if claimed:  # (starting one failed: the others go back, for a later claim)
                with trio.CancelScope(shield=True):
                    await store.release([resume.row.run_id for resume in claimed])

    def _shared(self) -> SharedStore:
        """The store, which processes share (`Store.shared`)."""
        store = self._store
        assert store is not None
        assert store.shared
        return cast(SharedStore, store)

    async def _claim_forever(self) -> None:
        """Claim runs whenever one may be waiting: told by a notification (a run submitted,
        released, cancelled), a run of this process's ending, or after `POLL` seconds (a
        process that died says nothing)."""
        signals = self._shared().signals
        while not self._closing:
            queued = signals.queued()  # (taken before claiming: one set meanwhile counts)
            await self._unless_unavailable(self._claim, "claim runs")
            await wait_for(queued, POLL)

    async def _control_forever(self) -> None:
        """Act on what other processes (or this one) sent to this process's runs through the
        store: answers are delivered (`_deliver`), cancels cancel. Told by a notification, or
        after `POLL` seconds."""
        store = self._shared()
        while True:
            controlled = store.signals.controlled()
            await self._unless_unavailable(self._take_control, "read answers and cancels")
            await wait_for(controlled, POLL)

    async def _take_control(self) -> None:
        inbox, cancels = await self._shared().control()
        for seq, run_id, body in inbox:
            self._deliver(run_id, seq, body)
        for run_id in cancels:
            record = self._records.get(run_id)
            if record is not None and record.handler.cancel():
                logger.info("trioflow: run %s is cancelled (asked through the store)", run_id)

    async def _unless_unavailable(self, work: Callable[[], Awaitable[None]], what: str) -> None:
        """``work()``; when the database cannot be reached, say so and go on (the caller looks
        again); any other failure stops the registry as a fatal error does (`serve` and
        `trioflow worker` fail with it), rather than leave it without claims or control."""
        try:
            await work()
        except StoreUnavailable as error:
            logger.warning("trioflow: cannot %s: %s; trying again", what, error)
        except Exception as error:
            logger.error("trioflow: cannot %s: the server stops", what, exc_info=error)
            if self._fatal is None:
                self._fatal = error
            self._close()
            self._fatal_raised.set()

    def _deliver(self, run_id: str, seq: int, body: bytes) -> None:
        """Send the event of inbox row ``seq`` to run ``run_id`` (under way here), journaled
        as that row's (`Replay.inbox`), so that it is delivered once whatever happens to this
        process; an event the run cannot take is logged, and taken too."""
        store = self._store
        assert store is not None
        taken = self._taken.get(run_id)
        record = self._records.get(run_id)
        if taken is None or record is None or seq in taken:
            return
        if record.handler._state.outcome is not None:
            # Decided, or stopped here (suspended: its journal records nothing more): left
            # in the inbox, for whichever process goes on with it.
            return
        taken.add(seq)
        router = record.handler._run.router
        try:
            sent = loads(body)
            step = sent.pop("step", None)  # (LlamaIndex's clients may name the step)
            event = decode_event(self._sendable_of(record), sent)
            router.send_from(event, step, [OUTSIDE, seq])  # type: ignore[attr-defined]
        except (WireError, BadJsonError, WorkflowRuntimeError) as error:
            logger.warning(
                "trioflow: run %s of %s refused an event sent to it: %s",
                run_id,
                record.workflow_name,
                error,
            )
        store.append(InboxTaken(run_id, seq))

    async def ended_elsewhere(self, run_id: str) -> RunRecord | StoredRecord | None:
        """Wait until run ``run_id``, which another process runs, has ended (its end is
        committed), and return its record then; or, if this process claimed it meanwhile,
        its record here at once (None: it was purged)."""
        signals = self._shared().signals
        while True:
            woken = signals.committed(run_id)  # (taken before looking)
            try:
                record = await self.find(run_id)
                if not (isinstance(record, StoredRecord) and record.runs_elsewhere):
                    return record
                await wait_for(woken, POLL)
            finally:
                signals.forget(run_id, woken)

    def _sendable_of(self, record: RunRecord) -> Mapping[str, type[Event]]:
        name = record.workflow_name
        types = self._sendable.get(name)
        if types is None:
            types = self._sendable[name] = sendable_event_types(self._served[name])
        return types

    def _lost(self, runs: set[str]) -> None:
        """The store says this process no longer owns ``runs`` (another took them over):
        they stop here, writing nothing more (it would be dropped), as if this process had
        died; their clients' streams end, to go on from another process."""
        store = self._shared()
        for run_id in runs:
            record = self._records.get(run_id)
            if record is not None and not record.done.is_set():
                record.handler._suspend()  # its task ends it as suspended
                continue
            feed = self._feeds.pop(run_id, None)
            if record is not None and feed is not None:  # its end was dropped: not decided
                record.mark_suspended()
                self._wrap_up(record)
            elif feed is not None:
                feed.finish()
            store.forget_lost(run_id)

    async def submit(
        self, name: str, workflow: Workflow, start_event: StartEvent, *, lifecycle: bool = False
    ) -> str:
        """Submit a run of ``workflow`` for any process sharing the store to claim and run;
        return its id once that is committed.

        Raises:
            ShuttingDown: the server is shutting down.
        """
        store = self._store
        assert store is not None
        assert store.shared
        if self._closing:
            raise ShuttingDown("the server is shutting down; it starts no more runs")
        row = await new_row(store, name, workflow, start_event, lifecycle=lifecycle)
        try:
            await store.flushed(store.append(NewRun(row, queued=True)))
        except StoreUnavailable:
            raise
        except StoreError as error:
            raise ShuttingDown(f"the server is shutting down: {error}") from None
        return row.run_id

    async def runs_here(self) -> bool:
        """Whether a run started by a request runs in this process: no, on a store shared by
        processes when it runs none (``max_runs`` 0) or as many as it may (then any process
        with room runs it: `submit`). Said once a claim under way (which counts the room it
        may fill) knows what it took. A checkpoint."""
        await trio.lowlevel.checkpoint()
        store = self._store
        if store is None or not store.shared:
            return True
        while self._claiming is not None:
            await self._claiming.wait()
        return self.running < self._max_runs

    async def commit_forever(self) -> None:
        """Commit what the runs write to the store (`Store.flush_forever`), until
        cancelled. A store that fails for good (it logged why) stops the registry as a fatal
        exception would (`wait_fatal` hands `serve` the `StoreError`): see `_store_failed`."""
        store = self._store
        assert store is not None
        try:
            await store.flush_forever()
        except StoreError as error:
            self._store_failed(error)

    def _store_failed(self, error: StoreError) -> None:
        """The store can record nothing more: stop, as a crash would have stopped the process
        (so that nothing is decided that the store does not have). The runs are suspended:
        they resume from what was committed at the next start, on a store that works. Called
        before any other task learns of the failure: no run records anything after it."""
        logger.error(
            "trioflow: the store has failed: the server stops; its runs resume at the next start"
        )
        if self._fatal is None:
            self._fatal = error
        self._close()
        # Runs that have ended, whose end will never be committed: their streams end too
        # (without their terminal event, which is not committed either), as the suspended
        # runs' do; the next start ends or resumes them from what was committed.
        for run_id in list(self._feeds):
            record = self._records.get(run_id)
            if record is None or record.done.is_set():
                feed = self._feeds.pop(run_id)
                if record is None:
                    feed.finish()
                else:
                    record.mark_suspended()
                    self._wrap_up(record)
        self._fatal_raised.set()

    @property
    def closing(self) -> bool:
        """Whether the registry is shutting down (it starts no more runs)."""
        return self._closing

    @property
    def running(self) -> int:
        return len(self._records) - len(self._finished) + self._starting

    async def start(
        self,
        name: str,
        workflow: Workflow,
        start_event: StartEvent,
        *,
        abandon_after: float | None,
        lifecycle: bool = False,
    ) -> RunRecord:
        """Start a run of ``workflow`` and return its record once the run is under way; with
        ``lifecycle``, its lifecycle events go to its feed too.

        Raises:
            TooManyRuns: ``max_runs`` runs are running already.
            ShuttingDown: the server is shutting down.
        """
        if self._closing:
            raise ShuttingDown("the server is shutting down; it starts no more runs")
        if self.running >= self._max_runs:
            raise TooManyRuns(f"the server is running its limit of {self._max_runs} runs")
        # Count the run at once: starting it takes checkpoints, and concurrent requests must
        # not all pass the limit check meanwhile.
        self._starting += 1
        drive = self._drive if self._store is None else self._drive_stored
        try:
            record: RunRecord = await self._nursery.start(
                drive, name, workflow, start_event, abandon_after, lifecycle
            )
        except StoreUnavailable:  # the database, for now: the request may be made again
            raise
        except StoreError as error:  # it failed as the run started: the server is stopping
            raise ShuttingDown(f"the server is shutting down: {error}") from None
        finally:
            self._starting -= 1
        return record

    async def shutdown(self, grace: float, *, by: float | None = None) -> None:
        """Start no more runs, cancel the running ones, and wait (at most ``grace`` seconds in
        all, and no later than ``by`` when given) until their terminal events are in their
        feeds. Clients still reading then receive everything up to the terminal event. For the
        first half of that time slow clients hold their runs back as ever; then the feeds stop
        waiting for them (`RunFeed.unblock`).

        The first call sets the shutdown's deadline (`shutdown_deadline`); a later one (the
        run group's block, left after `serve` has shut the app's runs down) keeps it, and so
        does what follows the runs (the store's drain): a shutdown takes its grace once."""
        running = self._close()
        now = trio.current_time()
        if self._deadline is None:
            self._deadline = now + grace if by is None else min(now + grace, by)
        deadline = self._deadline
        with trio.move_on_at(now + max(deadline - now, 0) / 2):
            for record in running:
                await record.done.wait()
        for record in running:
            record.feed.unblock()
        with trio.move_on_at(deadline):
            for record in running:
                await record.done.wait()

    @property
    def shutdown_deadline(self) -> float | None:
        """When the shutdown that began (`shutdown`) must be over, on trio's clock; None
        before one begins."""
        return self._deadline

    @property
    def fatal(self) -> BaseException | None:
        """The first `BaseException` that is no `Exception` a run raised, if any."""
        return self._fatal

    async def wait_fatal(self) -> BaseException:
        """Wait until a run raises a `BaseException` that is no `Exception`; return it."""
        await self._fatal_raised.wait()
        assert self._fatal is not None
        return self._fatal

    def _close(self) -> list[RunRecord]:
        """Start no more runs and cancel the running ones (on a store, suspend them: they
        resume at the next start); return those."""
        self._closing = True
        running = [r for r in self._records.values() if not r.done.is_set()]
        for record in running:
            if self._store is None:
                record.handler.cancel()
            else:
                record.handler._suspend()
        return running

    def _stop_for(self, error: BaseException, workflow_name: str) -> None:
        """A run raised ``error``, a `BaseException` that is no `Exception`: stop as a signal
        would (`serve` then raises it)."""
        if self._fatal is None:
            self._fatal = error
            logger.warning(
                "trioflow: a run of %s raised %s: the server stops",
                workflow_name,
                type(error).__name__,
            )
        elif error is not self._fatal:  # never dropped, though only the first is raised
            logger.error(
                "trioflow: a run of %s also raised %s while the server stopped",
                workflow_name,
                type(error).__name__,
                exc_info=error,
            )
        self._close()
        self._fatal_raised.set()

    async def _drive(
        self,
        name: str,
        workflow: Workflow,
        start_event: StartEvent,
        abandon_after: float | None,
        lifecycle: bool,
        task_status: trio.TaskStatus[RunRecord],
    ) -> None:
        record: RunRecord | None = None
        raised: BaseException | None = None
        try:
            async with workflow.start(start_event) as handler:
                record = self._record(name, handler, lifecycle)
                task_status.started(record)
                await _follow(record, self._options.hold_for_first_client, abandon_after)
        except BaseException as error:  # sorted out by `_end`, which re-raises what is ours
            raised = error
        if record is None:  # start() failed before the run was under way: the request's error
            assert raised is not None
            raise raised
        try:
            log_failed_run(record)  # the traceback no client gets
            await self._end(record, raised)
        finally:
            self._wrap_up(record)
            record.done.set()

    def _record(self, name: str, handler: WorkflowHandler, lifecycle: bool) -> RunRecord:
        """The record of a run just started in memory (no checkpoint before its pump reads:
        the run's first lifecycle events would go by)."""
        options = self._options
        feed = RunFeed(options.retain, options.retain_bytes, options.max_clients_per_run)
        number = next(self._numbers)
        record = RunRecord(
            name,
            handler,
            feed,
            number,
            lifecycle,
            self._keep_events,
            tracebacks=not self._options.hide_tracebacks,
        )
        record.node = self.node
        self._records[record.run_id] = record
        return record

    async def _drive_stored(
        self,
        name: str,
        workflow: Workflow,
        start_event: StartEvent,
        abandon_after: float | None,
        lifecycle: bool,
        resume: Resume | None = None,
        *,
        task_status: trio.TaskStatus[RunRecord],
    ) -> None:
        """`_drive` on a store: a durable run (`trioflow._durable`), whose row is committed
        before its record is handed out, whose stream events go to the store as they are
        written, and whose end is recorded when it is over. With ``resume``, a run of an
        earlier process goes on from its journal."""
        store = self._store
        assert store is not None
        options = self._options
        if resume is None:
            row = await new_row(store, name, workflow, start_event, lifecycle=lifecycle)
            # Before the run's first journal record: a committed journal has its run.
            ticket = store.append(NewRun(row))
            last, replay, used = 0, None, 0.0
        else:
            row, last, replay = resume.row, resume.last_seq, resume.replay
            ticket = store.append(RunResumed(row.run_id, row.recoveries + int(resume.crashed)))
            used = resume.time_used
            for seq in replay.inbox:  # delivered before (its journal says): taken
                store.append(InboxTaken(row.run_id, seq))
        if store.shared:
            self._taken[row.run_id] = set() if replay is None else set(replay.inbox)
        feed = StoredFeed(
            store,
            row.run_id,
            options.retain,
            options.retain_bytes,
            options.max_clients_per_run,
            last_seq=last,
        )
        sink = StoreSink(store, feed, name, seq=last, tracebacks=not options.hide_tracebacks)
        self._feeds[row.run_id] = feed
        record: RunRecord | None = None
        started = False
        raised: BaseException | None = None
        try:
            async with start_durable(
                workflow,
                start_event,
                store=store,
                run_id=row.run_id,
                sink=sink,
                replay=replay,
                time_used=used,
                lifecycle=lifecycle,
            ) as handler:
                record = RunRecord(
                    name,
                    handler,
                    feed,
                    row.number,
                    lifecycle,
                    self._keep_events,
                    started_at=row.started_at,
                    store=store,
                    seq=sink.seq,
                    node=self.node,
                    tracebacks=not options.hide_tracebacks,
                )
                sink.record = record
                try:
                    await store.flushed(ticket)
                except StoreError:  # it failed (`_store_failed`): nothing more is recorded
                    handler._suspend()
                    raise
                # Known once committed: until then `_starting` counts it against max_runs.
                self._records[row.run_id] = record
                task_status.started(record)
                started = True
                await _follow_stored(record, abandon_after)
        except BaseException as error:  # sorted out by `_end`, which re-raises what is ours
            raised = error
        if not started:  # the run was not under way: the request's error (or the restart's)
            assert raised is not None
            self._feeds.pop(row.run_id, None)
            self._taken.pop(row.run_id, None)
            raise raised
        assert record is not None
        record.pumped = True
        try:
            if self._suspended(record):
                logger.info(
                    "trioflow: run %s of %s is suspended; it resumes %s",
                    row.run_id,
                    name,
                    "in a process sharing the store" if store.shared else "at the next start",
                )
            else:
                log_failed_run(record)
            await self._end(record, raised)
        finally:
            # Decided again: the store may have failed meanwhile.
            if self._suspended(record):  # nothing recorded: its clients' streams end
                # (A stop is no crash: its journal ends with a ``stop`` record, so the next
                # start does not count it against max_recoveries.)
                self._feeds.pop(row.run_id, None)
                record.mark_suspended()
                self._wrap_up(record)
                if store.shared and store.failed is None:  # for another process, at once
                    store.append(RunReleased(row.run_id))
            else:  # `_published` finishes it once committed
                store.append(run_ended(record.handler, record.seq))
            record.done.set()
            if store.shared:
                self._taken.pop(row.run_id, None)
                self._shared().forget_lost(row.run_id)

    def _suspended(self, record: RunRecord) -> bool:
        """Whether the ended run ``record`` goes on at the next start rather than end here:
        it was suspended (a stop), or its end cannot be recorded (the store has failed)."""
        durable = record.handler._run.durable
        assert self._store is not None
        return self._store.failed is not None or durable.suspended  # type: ignore[union-attr]

    def _wrap_up(self, record: RunRecord) -> None:
        """The run's last event is in its feed: end the feed, and keep or forget the run. A
        run suspended on a store that processes share is let go at once: another process
        goes on with it, and the store says how it does."""
        record.feed.finish()
        if record.forgotten:
            self._drop(record)
        elif record.suspended and self._store is not None and self._store.shared:
            self._records.pop(record.run_id, None)
        else:
            self._forget_old(record)

    def _published(self, batch: Sequence[Operation]) -> None:
        """The store committed ``batch``: its events go to their runs' clients, and a run
        whose end it holds is finished."""
        feeds = self._feeds
        # A commit holds stretches of one run's events: each stretch looks its run's feed up
        # once and wakes its watchers once, after its last event.
        run_id, feed = None, None
        for operation in batch:
            if type(operation) is NewEvent:
                if operation.run_id != run_id:
                    if feed is not None:
                        feed.wake()
                    run_id, feed = operation.run_id, feeds.get(operation.run_id)
                if feed is not None:
                    feed.append_row(operation.event, operation.tag, wake=False)
                continue
            if feed is not None:
                feed.wake()
            run_id, feed = None, None
            if isinstance(operation, RunEnded):
                ended = feeds.pop(operation.run_id, None)
                record = self._records.get(operation.run_id)
                if record is not None:
                    record.settled.set()  # its status and outcome are served from now on
                    self._wrap_up(record)
                    if self._store is not None and self._store.shared:  # room here, now
                        self._shared().signals.wake_claims()
                elif ended is not None:  # its record is gone: its clients' streams end still
                    ended.finish()
            elif isinstance(operation, RunPurged):
                self._hidden.discard(operation.run_id)
        if feed is not None:
            feed.wake()

    async def _end(self, record: RunRecord, raised: BaseException | None) -> None:
        """Sort out what leaving the run's ``start()`` raised: the run's own failure is the
        record's to report (`RunRecord.describe`); a fatal exception stops the registry; a
        cancellation of the registry's nursery goes on; anything else is a bug of the
        server's, logged (it must not take the other runs down)."""
        reported = _reported_error(record.handler)
        fatal = _fatal(reported, raised)
        if fatal is not None:
            # Whatever else leaving start() raised (the cancellation of the pump that the
            # step's exception caused) ends here with this task: the fatal exception is what
            # goes on, to serve().
            self._stop_for(fatal, record.workflow_name)
            if not record.pumped:
                await _drain(record)
        elif raised is None or raised is reported:
            pass
        elif isinstance(raised, Exception):
            logger.error(
                "trioflow: error following run %s of %s",
                record.run_id,
                record.workflow_name,
                exc_info=raised,
            )
        else:
            raise raised

    def _forget_old(self, record: RunRecord) -> None:
        """Keep ``record`` and forget the oldest finished runs beyond ``keep_finished`` runs or
        ``keep_finished_bytes`` bytes; the newest is kept whatever its size."""
        kept = record.footprint()
        self._finished.append((record.run_id, kept))
        self._finished_bytes += kept
        limit, limit_bytes = self._options.keep_finished, self._options.keep_finished_bytes
        finished = self._finished
        while len(finished) > 1 and (len(finished) > limit or self._finished_bytes > limit_bytes):
            run_id, size = finished.popleft()
            forgotten = self._records.pop(run_id)
            self._finished_bytes -= size
            if isinstance(forgotten.feed, StoredFeed):
                # Served from the store from now on: the clients it still has and those that
                # come are in one feed.
                forgotten.feed.share(self._stored_feeds)


def _is_cancellation(error: BaseException) -> bool:
    """A `trio.Cancelled`, or a group of nothing else: the registry's nursery is closing."""
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return isinstance(error, trio.Cancelled)


def _reported_error(handler: WorkflowHandler) -> BaseException | None:
    """The run's error as its handler reports it once the run has ended; None if it
    completed."""
    try:
        handler.result_nowait()
    except BaseException as error:  # the run's own error, kept by its handler: not ours
        return error
    return None


def _fatal(reported: BaseException | None, raised: BaseException | None) -> BaseException | None:
    """The run's `BaseException` that is no `Exception` (a step's ``SystemExit``), if any:
    as its handler reports it (leaving ``start()`` does not raise it once a status request
    was told of it), else as leaving ``start()`` raised it."""
    for error in (reported, raised):
        if not (error is None or isinstance(error, Exception) or _is_cancellation(error)):
            return error
    return None


async def _drain(record: RunRecord) -> None:
    """Finish the pump's work after a step's fatal exception cancelled it, so that the run's
    stream still ends with its terminal event (the run has ended: nothing waits for it)."""
    with contextlib.suppress(WorkflowRuntimeError):  # the stream can be read no more
        await pump(record)


async def _follow(record: RunRecord, hold: float, abandon_after: float | None) -> None:
    """Pump the run's stream into its feed, with the feed's helpers alongside."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold_for_first_client, record.feed, hold)
        if abandon_after is not None:
            nursery.start_soon(_cancel_when_abandoned, record, abandon_after)
        await pump(record)
        nursery.cancel_scope.cancel()


async def _follow_stored(record: RunRecord, abandon_after: float | None) -> None:
    """Wait for a durable run to end (its stream goes to the store as it is written), with
    `_cancel_when_abandoned` alongside."""
    async with trio.open_nursery() as nursery:
        if abandon_after is not None:
            nursery.start_soon(_cancel_when_abandoned, record, abandon_after)
        await record.handler._state.finished.wait()
        nursery.cancel_scope.cancel()


async def _hold_for_first_client(feed: RunFeed, seconds: float) -> None:
    """Keep the run's first events for its first client for at most ``seconds``."""
    with trio.move_on_after(seconds):
        while not feed.ever_watched:
            await feed.wait_watchers_changed()
    feed.stop_holding()


async def _cancel_when_abandoned(record: RunRecord, grace: float) -> None:
    """Cancel the run once its last client has left and none has come back within ``grace``
    seconds. A run nobody has watched yet is left alone: its client may still be on its way."""
    feed = record.feed
    while True:
        while not (feed.ever_watched and feed.watchers == 0):
            await feed.wait_watchers_changed()
        with trio.move_on_after(grace) as waiting:
            while feed.watchers == 0:
                await feed.wait_watchers_changed()
        if waiting.cancelled_caught:
            record.handler.cancel()
            return
