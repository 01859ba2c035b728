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
from collections.abc import Collection

import trio

from .. import (
    RunStatus,
    StartEvent,
    TrioflowError,
    Workflow,
    WorkflowHandler,
    WorkflowRuntimeError,
)
from ._feed import RunFeed
from ._options import ServerOptions
from ._pump import pump
from ._record import RunRecord
from ._report import log_failed_run

logger = logging.getLogger("trioflow.server")


class TooManyRuns(TrioflowError):
    """The server runs as many runs as it may (``max_runs``)."""


class ShuttingDown(TrioflowError):
    """The server is shutting down and starts no more runs."""


class RunRegistry:
    """Starts runs in ``nursery`` and finds them by id."""

    def __init__(
        self, nursery: trio.Nursery, options: ServerOptions, *, keep_events: bool = False
    ) -> None:
        self._nursery = nursery
        self._options = options
        self._keep_events = keep_events
        self._max_runs = options.max_runs
        self._records: dict[str, RunRecord] = {}
        self._numbers = itertools.count()
        #: Finished runs, oldest first, and the bytes they keep (`RunRecord.footprint`).
        self._finished: deque[tuple[str, int]] = deque()
        self._finished_bytes = 0
        self._starting = 0  # runs between the limit check and their record
        self._closing = False
        self._fatal: BaseException | None = None
        self._fatal_raised = trio.Event()

    def get(self, run_id: str) -> RunRecord | None:
        record = self._records.get(run_id)
        return None if record is None or record.forgotten else record

    def forget(self, record: RunRecord) -> None:
        """Forget ``record``'s run: it is found no more (`get`, `page`), and its record is
        dropped once the run has ended (cancel it first to make that soon). Clients streaming
        it keep their stream."""
        record.forgotten = True
        if not record.done.is_set():
            return
        if self._records.pop(record.run_id, None) is None:
            return
        for index, (run_id, size) in enumerate(self._finished):
            if run_id == record.run_id:
                del self._finished[index]
                self._finished_bytes -= size
                return

    def page(
        self,
        limit: int,
        *,
        before: int | None = None,
        workflow: str | None = None,
        statuses: Collection[RunStatus] = (),
    ) -> tuple[list[RunRecord], int | None]:
        """Up to ``limit`` runs, newest first, started before run number ``before`` (all when
        None), of ``workflow`` and with one of ``statuses`` when given; and the number to pass
        as ``before`` for the next page (None when there is none)."""
        found: list[RunRecord] = []
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
        try:
            record: RunRecord = await self._nursery.start(
                self._drive, name, workflow, start_event, abandon_after, lifecycle
            )
        finally:
            self._starting -= 1
        return record

    async def shutdown(self, grace: float) -> None:
        """Start no more runs, cancel the running ones, and wait (at most ``grace`` seconds in
        all) until their terminal events are in their feeds. Clients still reading then receive
        everything up to the terminal event. For the first half of ``grace`` slow clients hold
        their runs back as ever; then the feeds stop waiting for them (`RunFeed.unblock`)."""
        running = self._close()
        deadline = trio.current_time() + grace
        with trio.move_on_at(deadline - grace / 2):
            for record in running:
                await record.done.wait()
        for record in running:
            record.feed.unblock()
        with trio.move_on_at(deadline):
            for record in running:
                await record.done.wait()

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
        """Start no more runs and cancel the running ones; return those."""
        self._closing = True
        running = [r for r in self._records.values() if not r.done.is_set()]
        for record in running:
            record.handler.cancel()
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
                options = self._options
                feed = RunFeed(options.retain, options.retain_bytes, options.max_clients_per_run)
                record = RunRecord(
                    name, handler, feed, next(self._numbers), lifecycle, self._keep_events
                )
                self._records[record.run_id] = record
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
            record.feed.finish()
            record.done.set()
            if record.forgotten:
                del self._records[record.run_id]
            else:
                self._forget_old(record)

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
            del self._records[run_id]
            self._finished_bytes -= size


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
