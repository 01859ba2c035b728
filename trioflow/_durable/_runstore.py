"""`open_store` and `RunStore`: durable runs for a caller in its own process, no server.

A run started on a SQLite store is journaled as the server journals its runs (the same rows,
so ``trioflow serve --store`` can list, serve and resume it later, and the other way round).
Its handler works as a memory run's does: `WorkflowHandler.stream_events` gets each event at
write time (`TeeStream`), while the store gets it too. After the process stops, `RunStore.resume`
goes on with the runs it left unfinished; `RunStore.context` reads back what a finished run's
store held, for the next run of a conversation.

On ``memory:`` nothing is kept: runs are plain memory runs and there is nothing to resume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import trio

from .._core._context import Context
from .._core._log import add_note, describe
from .._core._state import RunStatus
from .._errors import ReplayError, WorkflowCancelledError
from .._events import StartEvent, WorkflowCancelledEvent
from .._handler import WorkflowHandler
from .._store import (
    MEMORY,
    NewRun,
    RunResumed,
    Store,
    StoreError,
    check_url,
)
from .._store import open_store as _open_backend
from .._workflow import Workflow, _held
from ._codec import codec_for
from ._journal import fold
from ._runtime import DurableStream, start_durable
from ._stored import Resume, RowSink, TeeStream, interrupt, new_row, run_ended, unfinished

logger = logging.getLogger("trioflow.durable")

#: How many times a run whose process crashed while one of its steps ran is resumed before
#: it fails with `WorkerLost` (the server's ``max_recoveries`` default).
MAX_RECOVERIES = 3


def open_store(url: str = MEMORY) -> AbstractAsyncContextManager[RunStore]:
    """Open the store named by ``url`` for the ``async with`` block: ``memory:`` (nothing is
    kept) or ``sqlite:///path/to/runs.db``. Leaving the block commits what is pending and
    closes the file; runs started on it must have ended or been left by then.

    Raises:
        StoreError: a URL this trioflow does not open, or a file that is no trioflow store; a
            PostgreSQL store, which processes share (``trioflow serve``, ``trioflow worker``):
            its runs are answered, cancelled and taken over through it, which a block of
            one program's does not do.
        StoreLocked: another process (or block) has the file open.
    """
    if check_url(url).partition(":")[0].lower() in ("postgresql", "postgres"):
        raise StoreError(
            "open_store takes memory: or sqlite:///path.db; a PostgreSQL store is shared by "
            "processes that serve its runs: run them with trioflow serve and trioflow worker "
            f"(or WorkflowApp(..., store=...)), got {url!r}"
        )
    return _OpenRunStore(url)


class _OpenRunStore:
    def __init__(self, url: str) -> None:
        self._url = url
        self._backend = _open_backend(url)
        self._store: RunStore | None = None

    async def __aenter__(self) -> RunStore:
        await trio.lowlevel.checkpoint()  # a cancel point, on ``memory:`` too
        self._store = RunStore(await self._backend.__aenter__(), self._url)
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._store is not None
        try:
            await self._store._close()
        finally:
            await self._backend.__aexit__(exc_type, exc, traceback)


class RunStore:
    """Where runs are kept (`open_store`): start runs on it, resume the runs a stopped
    process left unfinished, and read back a finished run's context."""

    def __init__(self, backend: Store | None, url: str) -> None:
        self._backend = backend
        self.url = url
        #: The runs of this store under way in this process, by id, from the moment their
        #: row is written (or resumed) until their end is committed: `resume` never touches
        #: them, and leaving the store's block stops them first.
        self._active: dict[str, _StoredRunBlock] = {}
        #: Held by a `resume` from reading the unfinished runs until each of them is active:
        #: two at once would resume one run twice.
        self._resuming = trio.Lock()
        #: Its `open_store` block has been left.
        self._closed = False

    def __repr__(self) -> str:
        return f"<RunStore {self.url}>"

    @property
    def durable(self) -> bool:
        """Whether runs on this store outlive the process (False for ``memory:``)."""
        return self._backend is not None

    def _open_backend(self) -> Store | None:
        """The file (None on ``memory:``), while the store's block is open.

        Raises:
            StoreError: the block has been left.
        """
        if self._closed:
            raise StoreError(
                f"{self.url} is closed: its `async with open_store(...)` block has been left"
            )
        return self._backend

    def start(
        self,
        workflow: Workflow[Any],
        /,
        start_event: StartEvent | None = None,
        *,
        ctx: Context | None = None,
        name: str | None = None,
        **fields: Any,
    ) -> AbstractAsyncContextManager[WorkflowHandler[Any]]:
        """`Workflow.start` on this store: the run's events, store values and end are kept,
        and once it is under way (the ``async with`` has entered) its row is committed, so a
        crash from then on leaves it to `resume`. ``name`` is the name it is kept under (the
        workflow's class name by default): `resume` finds its workflow by it.

        Leaving the block while the run is unfinished cancels it, as in memory, except when
        the block is left by a cancellation or a `BaseException` that is no `Exception` (a
        deadline around it, Ctrl-C, the process shutting down): the run is then *suspended*,
        nothing more of it is recorded, and `resume` goes on with it later. In the process,
        a suspended run ends as a cancelled one does (`WorkflowCancelledEvent`).

        Raises:
            NotJournalable: a store value of ``ctx`` is no JSON value (nothing is started;
                raised as the block is entered).
            StoreError: the store's block has been left.
        """
        workflow = _workflow(workflow)
        event = workflow._start_event(start_event, fields)
        name = _name(workflow, name)
        backend = self._open_backend()
        if backend is None:
            return workflow._start(event, held=_held(ctx))
        return _StoredRunBlock(self, workflow, event, name, _held(ctx))

    async def run(
        self,
        workflow: Workflow[Any],
        /,
        start_event: StartEvent | None = None,
        *,
        ctx: Context | None = None,
        name: str | None = None,
        **fields: Any,
    ) -> Any:
        """`Workflow.run` on this store (see `start`): the result, or the run's error."""
        workflow = _workflow(workflow)
        event = workflow._start_event(start_event, fields)
        name = _name(workflow, name)
        backend = self._open_backend()
        if backend is None:
            return await workflow.run(event, ctx=ctx)
        async with _StoredRunBlock(self, workflow, event, name, _held(ctx), streamed=False) as h:
            return await h.result()

    def resume(
        self,
        workflows: Iterable[Workflow[Any]] | Mapping[str, Workflow[Any]],
        *,
        max_recoveries: int = MAX_RECOVERIES,
    ) -> AbstractAsyncContextManager[list[WorkflowHandler[Any]]]:
        """Go on with the runs of ``workflows`` (a list, each kept under its class name, or a
        mapping of the names given to `start`) that a process left unfinished: each is
        resumed from its journal in the ``async with`` block, under its own id, and its
        handler handed out. Steps that finished are not run again; a step that was running
        runs again after a `StepFailedEvent` (`WorkerLost`); context calls it made are not
        repeated, and a run waiting for an answer waits again without asking again. Runs
        under way in this process are not touched.

        A run whose workflow changed since it started (or that a name now maps to another
        workflow), or that crashed its process more than ``max_recoveries`` times while a
        step ran, is not resumed: it ends ``failed`` with a `ReplayError` or `WorkerLost` (as
        do the runs of a store of an older trioflow). Runs of workflows not named are left as
        they are. Leaving the block is as leaving `start`'s, for each run.
        """
        chosen = _named(workflows)
        if isinstance(max_recoveries, bool) or not isinstance(max_recoveries, int):
            raise TypeError(f"max_recoveries must be an int >= 0, got {max_recoveries!r}")
        if max_recoveries < 0:
            raise ValueError(f"max_recoveries must be an int >= 0, got {max_recoveries!r}")
        self._open_backend()
        return _Resumed(self, chosen, max_recoveries)

    async def context(self, workflow: Workflow[Any], run_id: str) -> Context:
        """A ``Context(workflow)`` holding what run ``run_id``'s store held when its journal
        ended (at its end, for a run that ended): give it to the next run (``ctx=``) to go
        on from there, in this process or after a restart.

        Raises:
            LookupError: the store has no run ``run_id`` (never, on ``memory:``).
            ReplayError: its journal does not fit ``workflow``.
        """
        workflow = _workflow(workflow)
        backend = self._open_backend()
        row = None if backend is None else await backend.run(run_id)
        if backend is None or row is None:
            await trio.lowlevel.checkpoint()
            raise LookupError(f"{self.url} has no run {run_id!r}")
        records = await backend.journal(run_id)
        replay = fold(records, codec_for(workflow), [s.name for s in workflow.graph.steps])
        try:
            return Context.from_dict(workflow, {"store": replay.store})
        except ValueError as exc:  # a typed state its class no longer reads
            raise ReplayError(f"run {run_id!r}: {exc}") from None

    async def _close(self) -> None:
        """As the store's block is left: the runs still on it (their blocks left open in
        other tasks) are stopped as if the process stopped now, so that they resume later,
        and what they recorded is committed with the rest before the file closes."""
        self._closed = True
        with trio.CancelScope(shield=True):
            for block in list(self._active.values()):
                await block._stop_for_close()


def _workflow(workflow: object) -> Workflow[Any]:
    if isinstance(workflow, Workflow):
        return workflow
    if isinstance(workflow, type) and issubclass(workflow, Workflow):
        raise TypeError(f"pass a workflow, not its class: {workflow.__name__}()")
    raise TypeError(f"a RunStore runs workflows, got {workflow!r}")


def _name(workflow: Workflow[Any], name: object) -> str:
    if name is None:
        return workflow.graph.workflow_name
    if not isinstance(name, str):
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not name:
        raise ValueError("name must be a non-empty str, got ''")
    return name


def _named(workflows: object) -> dict[str, Workflow[Any]]:
    """``resume``'s workflows by name: a mapping as given, or a list by class name."""
    if isinstance(workflows, Mapping):
        chosen = {}
        for name, workflow in workflows.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"resume() names workflows by non-empty str, got {name!r}")
            chosen[name] = _workflow(workflow)
        return chosen
    if isinstance(workflows, Workflow | str | bytes) or not isinstance(workflows, Iterable):
        raise TypeError(
            f"resume() takes a list of workflows (or a mapping of names to them), got {workflows!r}"
        )
    chosen = {}
    for workflow in workflows:
        workflow = _workflow(workflow)
        name = workflow.graph.workflow_name
        if name in chosen and chosen[name] is not workflow:
            raise ValueError(f"two workflows are named {name!r}: pass a mapping of distinct names")
        chosen[name] = workflow
    return chosen


class _StoredRunBlock:
    """The ``async with`` of a run on a store: `Workflow.start`'s block, with the run's row
    committed before it is handed out and its end (or its suspension) recorded after. The
    run is made as the block is entered, so that a block never entered holds nothing."""

    def __init__(
        self,
        owner: RunStore,
        workflow: Workflow[Any],
        start_event: StartEvent,
        name: str,
        ctx: Context | None,
        *,
        streamed: bool = True,
        resume: Resume | None = None,
    ) -> None:
        self._owner = owner
        self._workflow = workflow
        self._start_event = start_event
        self._name = name
        self._ctx = ctx
        self._streamed = streamed
        self._resume = resume
        self._handler: WorkflowHandler[Any] | None = None
        #: Its end (or suspension) is recorded: by its own block, or by the store's close.
        self._ended = False

    async def __aenter__(self) -> WorkflowHandler[Any]:
        owner, resume, workflow = self._owner, self._resume, self._workflow
        store = owner._open_backend()
        assert store is not None
        if resume is None:
            row = await new_row(store, self._name, workflow, self._start_event)
            last, replay, used = 0, None, 0.0
        else:
            row, last, replay, used = resume.row, resume.last_seq, resume.replay, resume.time_used
        self._store, self._row = store, row
        self._sink = RowSink(store, row.run_id, self._name, seq=last)
        stream = (TeeStream if self._streamed else _sink_only)(workflow.stream_buffer, self._sink)
        block = start_durable(
            workflow,
            self._start_event,
            store=store,
            run_id=row.run_id,
            sink=self._sink,
            replay=replay,
            time_used=used,
            stream=stream,
            held=self._ctx,
            lifecycle=row.lifecycle,
        )  # a ctx that cannot be recorded is refused here, before anything is written
        if resume is None:
            # Before the run's first journal record: a committed journal has its run.
            ticket = store.append(NewRun(row))
        else:
            ticket = store.append(RunResumed(row.run_id, row.recoveries + int(resume.crashed)))
        owner._active[row.run_id] = self  # from its first write on: `resume` leaves it be
        try:
            handler = await block.__aenter__()
        except BaseException:
            del owner._active[row.run_id]
            if resume is None:  # it never got under way: it ends so (a resumed one waits)
                error = WorkflowCancelledError(f"run {row.run_id} was cancelled as it started")
                interrupt(
                    store, row, self._sink.seq, error, WorkflowCancelledEvent(), RunStatus.CANCELLED
                )
            raise
        self._block, self._handler = block, handler
        try:
            await store.flushed(ticket)  # the run is known to the store: it can be resumed
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return handler

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        handler = self._handler
        assert handler is not None
        if exc is None or isinstance(exc, Exception):
            handler.cancel()  # as in memory; a cancel recorded, so it is not resumed
        # Else the inner block's `RunState.stop` suspends it (`Durable.suspend`).
        try:
            await self._block.__aexit__(exc_type, exc, traceback)
        finally:
            await self._record_end(handler)

    async def _record_end(self, handler: WorkflowHandler[Any]) -> None:
        """Record how the run ended (nothing more, if suspended), and wait until that is
        committed: what the caller was told is what is kept. Then it is no longer active."""
        if self._ended:  # the store's close did, and has closed the file since
            await trio.lowlevel.checkpoint()
            return
        self._ended = True
        store, row = self._store, self._row
        with trio.CancelScope(shield=True):
            try:
                ticket = self._end_ticket(handler)
                if ticket is None:
                    await handler._committed()  # its journal, to the ``stop`` record
                else:
                    await store.flushed(ticket)
            except StoreError as error:
                logger.error("trioflow: the end of run %s was not recorded: %s", row.run_id, error)
            finally:
                self._owner._active.pop(row.run_id, None)

    def _end_ticket(self, handler: WorkflowHandler[Any]) -> int | None:
        """Append the run's end, unless it was suspended (its journal ends with a ``stop``
        record: the next `resume` goes on from there, not counting it as a crash)."""
        durable = handler._run.durable
        if durable is not None and durable.suspended:  # type: ignore[attr-defined]
            logger.info("trioflow: run %s of %s is suspended", self._row.run_id, self._name)
            return None
        return self._store.append(run_ended(handler, self._sink.seq))

    async def _stop_for_close(self) -> None:
        """The store's block is left while this run's block is not: stop the run as if its
        process stopped (it resumes later), wait until it has unwound, and record its end."""
        handler = self._handler
        if handler is None or self._ended:  # entering, or ended: its own block records it
            return
        handler._run.state.stop()
        await handler._run.state.finished.wait()
        self._ended = True
        run_id = self._row.run_id
        self._owner._active.pop(run_id, None)
        try:
            self._end_ticket(handler)  # committed as the store's block drains it
        except StoreError as error:
            logger.error(
                "trioflow: the end of run %s was not recorded: %s", self._row.run_id, error
            )
            return
        logger.warning(
            "trioflow: the store %s was closed with run %s of %s still under way in this "
            "process: it is suspended, to resume later",
            self._owner.url,
            self._row.run_id,
            self._name,
        )


def _sink_only(capacity: int, sink: RowSink) -> DurableStream:
    """The stream of a run nobody in the process reads (`RunStore.run`)."""
    stream = DurableStream(capacity, sink)
    stream.discard_unread()
    return stream


class _Resumed:
    """`RunStore.resume`'s block: each unfinished run in a `_StoredRunBlock` of its own."""

    def __init__(
        self, owner: RunStore, workflows: dict[str, Workflow[Any]], max_recoveries: int
    ) -> None:
        self._owner = owner
        self._workflows = workflows
        self._max_recoveries = max_recoveries
        self._blocks: list[_StoredRunBlock] = []

    async def __aenter__(self) -> list[WorkflowHandler[Any]]:
        owner = self._owner
        store = owner._open_backend()
        if store is None:
            await trio.lowlevel.checkpoint()
            return []
        handlers = []
        try:
            async with owner._resuming:  # one resume at a time reads and takes runs
                found = await unfinished(
                    store,
                    self._workflows,
                    max_recoveries=self._max_recoveries,
                    others="keep",
                    busy=owner._active,
                )
                for resume in found:
                    if resume.row.run_id in owner._active:  # taken since it was read
                        continue
                    block = _StoredRunBlock(
                        owner,
                        resume.workflow,
                        resume.start_event,
                        resume.row.workflow,
                        None,
                        resume=resume,
                    )
                    handlers.append(await block.__aenter__())
                    self._blocks.append(block)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return handlers

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        errors: list[BaseException] = []
        for block in reversed(self._blocks):
            try:
                await block.__aexit__(exc_type, exc, traceback)
            except BaseException as error:  # each run's own failure
                if error is not exc:
                    errors.append(error)
        self._blocks.clear()
        if errors:  # the first run's; the others are named on it
            first = errors[-1]
            for other in errors[-2::-1]:
                add_note(first, f"trioflow: another resumed run also failed: {describe(other)}")
            raise first


__all__ = ["MAX_RECOVERIES", "RunStore", "open_store"]
