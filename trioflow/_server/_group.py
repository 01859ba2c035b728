"""`open_run_group`: runs that outlive the request that started them, in a program's own scope.

A run started with ``async with workflow.start()`` lives in its caller's block; an app's
endpoint returns long before a run it starts should end. A run group is the nursery such runs
live in, opened in the app's lifespan: the server's own `RunRegistry`, with its bounds, its
numbered and retained events (`RunFeed`) and its rule that a run's failure or cancellation is
the run's to report, never an exception for the group's owner. `WorkflowApp` serves exactly
this over HTTP; a group without HTTP hands out the events themselves, numbered.

What leaving the block does: the runs still running are cancelled and their ends recorded
(at most ``shutdown_grace`` seconds), as a server's shutdown does; a step's ``SystemExit`` or
``KeyboardInterrupt`` (which stops the group as a signal would) is raised as itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import attrs
import trio

from .. import Event, RunEndedError, StartEvent, Workflow, WorkflowHandler, WorkflowRuntimeError
from .._errors import require_trio
from .._store import Store, StoreError
from ._feed import Entry, EventsExpired, Watcher
from ._options import ServerOptions
from ._record import RunRecord
from ._registry import RunRegistry


@attrs.frozen
class NumberedEvent:
    """One event of a run, with its place in the run's stream (``seq``, from 1)."""

    seq: int
    event: Event


class RunGroup:
    """The runs of an `open_run_group` block, found by run id."""

    def __init__(self, registry: RunRegistry) -> None:
        self._registry = registry

    async def start(
        self, workflow: Workflow, start_event: StartEvent | None = None, /, **fields: Any
    ) -> WorkflowHandler:
        """Start a run of ``workflow`` in the group and return its handler once it is under
        way (a start event, or its fields as keywords, as `Workflow.start` takes them).

        The handler gives its status, ``cancel()``, ``send_event()`` and ``await result()``;
        its events are read with `events` (the group's pump is the stream's one consumer).

        Raises:
            TooManyRuns: the group runs ``max_runs`` runs already (a `TrioflowError`).
            ShuttingDown: the group's block is being left.
        """
        event = workflow._start_event(start_event, fields)
        record = await self._registry.start(
            type(workflow).__name__, workflow, event, abandon_after=None
        )
        return record.handler

    def get(self, run_id: str) -> WorkflowHandler | None:
        """The handler of run ``run_id``; None for a run the group does not know (or has
        forgotten: see ``keep_finished``)."""
        record = self._registry.get(run_id)
        return None if record is None else record.handler

    def events(self, run_id: str, *, after: int = 0) -> NumberedEvents:
        """The run's events after seq ``after``, numbered, live, up to the terminal event:
        ``async with runs.events(run_id) as events: async for numbered in events: ...``.
        Several readers may read one run, each at its own pace (the slowest holds the run
        back, as a slow HTTP client does).

        Raises:
            LookupError: no such run.
            WorkflowRuntimeError: the events after ``after`` are no longer retained (or
                ``after`` is beyond the last), or the run has as many readers as it may have.
        """
        feed = self._record(run_id).feed
        try:
            return NumberedEvents(feed.watch(after))
        except EventsExpired as expired:
            raise WorkflowRuntimeError(str(expired)) from None
        except Exception as refused:  # ValueError, TooManyWatchers: the message says why
            raise WorkflowRuntimeError(str(refused)) from None

    async def send(self, run_id: str, event: Event) -> None:
        """Send ``event`` into the run, as its handler's ``send_event`` does.

        Raises:
            LookupError: no such run.
            RunEndedError: the run's outcome is decided.
            WorkflowRuntimeError: no step takes the event and none waits for it.
        """
        await self._record(run_id).handler.send_event(event)

    def cancel(self, run_id: str) -> bool:
        """Cancel the run; False if its outcome was decided already.

        Raises:
            LookupError: no such run.
        """
        return self._record(run_id).handler.cancel()

    def _record(self, run_id: str) -> RunRecord:
        record = self._registry.get(run_id)
        if record is None:
            raise LookupError(f"no run with id {run_id!r} in this group")
        return record


class NumberedEvents:
    """One reader's place in a run's events (`RunGroup.events`)."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher
        self._batch: list[Entry] = []
        self._attached = False
        self._closed = False

    async def __aenter__(self) -> Self:
        await trio.lowlevel.checkpoint()
        self._attach()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> NumberedEvent:
        self._attach()
        if self._batch:
            await trio.lowlevel.checkpoint()  # next_batch() is one; so is taking from a batch
        while not self._batch:
            try:
                batch = await self._watcher.next_batch()
            except EventsExpired as expired:  # only when the group is being left
                await self.aclose()
                raise WorkflowRuntimeError(str(expired)) from None
            if not batch:
                await self.aclose()
                raise StopAsyncIteration
            self._batch = batch[::-1]
        entry = self._batch.pop()
        return NumberedEvent(entry.seq, entry.event)

    async def aclose(self) -> None:
        """Stop reading: the run no longer waits for this reader."""
        if self._attached and not self._closed:
            self._watcher.__exit__(None, None, None)
        self._closed = True
        await trio.lowlevel.checkpoint()

    def _attach(self) -> None:
        if self._closed:
            raise RunEndedError("these events have been read to their end, or closed")
        if not self._attached:
            self._watcher.__enter__()
            self._attached = True


def open_run_group(
    *,
    max_runs: int = 64,
    retain: int = 1024,
    retain_bytes: int = 4 * 1024 * 1024,
    max_readers_per_run: int = 128,
    hold_for_first_reader: float = 10.0,
    keep_finished: int = 100,
    keep_finished_bytes: int = 64 * 1024 * 1024,
    shutdown_grace: float = 5.0,
) -> RunGroupBlock:
    """A group of runs that outlive the requests that start them, for an app's lifespan:
    ``async with trioflow.open_run_group() as runs: handler = await runs.start(flow, ...)``.

    The bounds are the HTTP server's, which serves such a group (see the README's "Serving
    over HTTP"): at most ``max_runs`` running, each keeping its newest ``retain`` events and
    ``retain_bytes`` bytes (of their JSON) for readers that come late, at most
    ``max_readers_per_run`` readers each, the first events kept for the first reader for
    ``hold_for_first_reader`` seconds, and finished runs kept by count and bytes.
    """
    options = ServerOptions(
        max_runs=max_runs,
        retain=retain,
        retain_bytes=retain_bytes,
        max_clients_per_run=max_readers_per_run,
        hold_for_first_client=hold_for_first_reader,
        keep_finished=keep_finished,
        keep_finished_bytes=keep_finished_bytes,
        shutdown_grace=shutdown_grace,
    )
    return RunGroupBlock(options)


class RunGroupBlock:
    """The ``async with`` of `open_run_group`: a nursery holding the group's runs. A class
    rather than ``@asynccontextmanager``, as `Workflow.start`'s block: the block's own
    exception leaves as itself."""

    def __init__(
        self,
        options: ServerOptions,
        *,
        keep_events: bool = True,
        stops_on_fatal: bool = True,
        store: Store | None = None,
        workflows: Mapping[str, Workflow] | None = None,
    ) -> None:
        self._options = options
        #: The workflows served by name: a store's unfinished runs are resumed on them.
        self._workflows = workflows or {}
        #: Where the runs are committed (`WorkflowApp` on ``store=``); its flusher runs in the
        #: block's nursery, and what is pending is committed before the block is left.
        self._store = store
        #: Entries keep the events themselves (for `RunGroup.events`); a server needs no more
        #: than their JSON.
        self._keep_events = keep_events
        #: A step's ``SystemExit`` cancels the block and leaves it as itself; a server
        #: (`WorkflowApp`) leaves that to `serve`, which shuts down gracefully first.
        self._stops_on_fatal = stops_on_fatal
        self._nursery_manager: Any = None
        self._nursery: trio.Nursery | None = None
        self._registry: RunRegistry | None = None

    @property
    def registry(self) -> RunRegistry:
        """The registry the group's runs live in (inside the block)."""
        assert self._registry is not None, "the block has not been entered"
        return self._registry

    async def __aenter__(self) -> RunGroup:
        require_trio("open_run_group()")  # before trio.open_nursery() fails obscurely
        if self._nursery_manager is not None:
            raise RuntimeError("a run group's block is entered once")
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._registry = RunRegistry(
            self._nursery, self._options, keep_events=self._keep_events, store=self._store
        )
        if self._store is not None:
            self._nursery.start_soon(self._registry.commit_forever)
            try:
                await self._registry.recover(self._workflows)
            except BaseException:
                self._nursery.cancel_scope.cancel()
                await self._nursery_manager.__aexit__(None, None, None)
                raise
        if self._stops_on_fatal:
            self._nursery.start_soon(_stop_on_fatal, self._registry, self._nursery.cancel_scope)
        return RunGroup(self._registry)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        body_error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._nursery is not None
        assert self._registry is not None
        registry = self._registry
        grace = self._options.shutdown_grace
        # The shutdown's deadline, unless one began before (`serve` shut the runs down first).
        deadline = trio.current_time() + grace
        try:
            if body_error is None:  # a failing block cancels the runs at once instead
                await registry.shutdown(grace)
        finally:
            self._nursery.cancel_scope.cancel()
            try:
                # The runs never raise into it (see `RunRegistry`): what leaving it raises is
                # a cancellation of the caller's scope, which the block's own error beats.
                await self._nursery_manager.__aexit__(None, None, None)
            except BaseException:
                if body_error is None or (self._stops_on_fatal and registry.fatal is not None):
                    raise
                raise body_error  # noqa: B904 (the cancellation stays attached as __context__)
            finally:
                if self._store is not None and self._store.failed is None:
                    # What the runs wrote, to their last records, is committed before the
                    # store closes (a kill would lose no more than this would), within what
                    # is left of the shutdown's grace: on a store that cannot commit (a
                    # failing disk, retried) the shutdown still takes its grace once.
                    if registry.shutdown_deadline is not None:
                        deadline = registry.shutdown_deadline
                    with trio.CancelScope(shield=True, deadline=deadline):
                        await self._store.drain()
            fatal = registry.fatal
            if fatal is not None and self._stops_on_fatal:  # it cancelled the block: it goes on
                raise fatal from None
            if isinstance(fatal, StoreError):
                # The store failed (maybe during the shutdown, after `serve` stopped looking
                # for fatal errors): whoever runs the group learns of it as it stops.
                raise fatal from None


async def _stop_on_fatal(registry: RunRegistry, block: trio.CancelScope) -> None:
    """A step's ``SystemExit`` or ``KeyboardInterrupt`` stops the group as a signal stops a
    server: its block is cancelled, and leaving it raises that exception."""
    await registry.wait_fatal()
    block.cancel()
