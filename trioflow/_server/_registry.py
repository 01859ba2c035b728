"""`RunRegistry`: the runs started over HTTP, living in a nursery that the server owns.

A run started by a request outlives that request, so it cannot live in the request's task.
Each run is a task in the registry's nursery: it enters `Workflow.start`, pumps the run's
stream into the run's `RunFeed`, and records how the run ended. Finished runs are kept (their
status and retained events stay readable) up to a limit, oldest forgotten first, so the memory
of a long-lived server stays bounded.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import attrs
import trio

from .._core._run import RunStatus
from .._errors import TrioflowError
from .._events import StartEvent, WorkflowFailedEvent
from .._handler import WorkflowHandler
from .._wire import dumps, encode_envelope, encode_exception, encode_value, type_name
from .._workflow import Workflow
from ._feed import RunFeed


class TooManyRuns(TrioflowError):
    """The server runs as many runs as it may (``max_runs``)."""


class ShuttingDown(TrioflowError):
    """The server is shutting down and starts no more runs."""


@attrs.define(eq=False)
class RunRecord:
    """What the server knows of one run."""

    workflow_name: str
    handler: WorkflowHandler
    feed: RunFeed
    started_at: float = attrs.field(factory=time.time)
    #: The result as JSON, once the run has completed.
    result: Any = None
    #: What ended the run, when it did not complete.
    error: BaseException | None = None
    failed_step: str | None = None
    #: Set once the run has ended and its terminal event is in the feed.
    done: trio.Event = attrs.field(factory=trio.Event)

    @property
    def run_id(self) -> str:
        return self.handler.run_id

    def describe(self) -> dict[str, Any]:
        """The run's status as JSON (``GET /runs/{id}``)."""
        status = self.handler.status if self.done.is_set() else RunStatus.RUNNING
        described: dict[str, Any] = {
            "run_id": self.run_id,
            "workflow": self.workflow_name,
            "status": status.value,
            "seq": self.feed.last_seq,
            "watchers": self.feed.watchers,
            "started_at": self.started_at,
        }
        if status is RunStatus.COMPLETED:
            described["result"] = self.result
        elif self.error is not None:
            described["error"] = encode_exception(self.error)
            if self.failed_step is not None:
                described["error"]["step"] = self.failed_step
        return described


class RunRegistry:
    """Starts runs in ``nursery`` and finds them by id."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        max_runs: int,
        keep_finished: int,
        retain: int,
        hold_for_first_client: float,
    ) -> None:
        self._nursery = nursery
        self._max_runs = max_runs
        self._keep_finished = keep_finished
        self._retain = retain
        self._hold = hold_for_first_client
        self._records: dict[str, RunRecord] = {}
        self._finished: deque[str] = deque()
        self._starting = 0  # runs between the limit check and their record
        self._closing = False

    def get(self, run_id: str) -> RunRecord | None:
        return self._records.get(run_id)

    def records(self) -> list[RunRecord]:
        """Every run known, oldest first."""
        return list(self._records.values())

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
    ) -> RunRecord:
        """Start a run of ``workflow`` and return its record once the run is under way.

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
                self._drive, name, workflow, start_event, abandon_after
            )
        finally:
            self._starting -= 1
        return record

    async def shutdown(self, grace: float) -> None:
        """Start no more runs, cancel the running ones, and wait (at most ``grace`` seconds
        for each stage) until their terminal events are in their feeds. Clients still reading
        then receive everything up to the terminal event; the first stage waits for slow
        clients, the second stops waiting for them (see `RunFeed.unblock`)."""
        self._closing = True
        running = [r for r in self._records.values() if not r.done.is_set()]
        for record in running:
            record.handler.cancel()
        with trio.move_on_after(grace):
            for record in running:
                await record.done.wait()
        for record in running:
            record.feed.unblock()
        with trio.move_on_after(grace):
            for record in running:
                await record.done.wait()

    async def _drive(
        self,
        name: str,
        workflow: Workflow,
        start_event: StartEvent,
        abandon_after: float | None,
        task_status: trio.TaskStatus[RunRecord],
    ) -> None:
        record: RunRecord | None = None
        try:
            async with workflow.start(start_event) as handler:
                record = RunRecord(name, handler, RunFeed(self._retain))
                self._records[record.run_id] = record
                task_status.started(record)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_hold_for_first_client, record.feed, self._hold)
                    if abandon_after is not None:
                        nursery.start_soon(_cancel_when_abandoned, record, abandon_after)
                    await _pump(record)
                    nursery.cancel_scope.cancel()
                try:
                    record.result = encode_value(await handler.result())
                except Exception as exc:  # how the run ended: the feed said so already
                    record.error = exc
        except Exception as exc:
            # Leaving start() raises a failure that result() did not get to raise (the pump
            # was interrupted). It belongs to the record, never to the server's nursery.
            if record is None:
                raise
            record.error = record.error or exc
        finally:
            if record is not None:
                record.feed.finish()
                record.done.set()
                self._forget_old(record)

    def _forget_old(self, record: RunRecord) -> None:
        self._finished.append(record.run_id)
        while len(self._finished) > self._keep_finished:
            del self._records[self._finished.popleft()]


async def _pump(record: RunRecord) -> None:
    """Number, encode and retain every event of the run's stream, terminal event included."""
    feed = record.feed
    async for event in record.handler.stream_events():
        if type(event) is WorkflowFailedEvent:
            record.failed_step = event.step_name
        seq = feed.last_seq + 1
        await feed.append(seq, type_name(type(event)), dumps(encode_envelope(seq, event)))


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
