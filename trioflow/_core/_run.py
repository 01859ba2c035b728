"""The runtime of one run: a cancel scope around a nursery of step workers.

`Run.main` is the run's only task started from outside. It opens the run's scope, readies
each step's workers (`trioflow._core._worker`: started as events wait for them, up to
``num_workers``) and a timer for the workflow's timeout, routes the start event, and waits.
Every way the run ends is decided in its `RunState` at the moment it happens (a stop event,
a failure, the timeout, a cancel), which cancels the scope; a cancellation from outside (the
caller's deadline) is decided as a cancel the moment this task or a worker sees it. When the
scope has unwound, whatever ended it, `Run.main` puts exactly one terminal event on the
stream and closes it. Workers never let an exception escape, so the nursery only ever unwinds
with `trio.Cancelled`, and no `ExceptionGroup` reaches a caller; and when nothing was at work
but the step that decided the run, it does not even do that: the decision woke this task and
the idle workers, which end quietly (`RunState`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio
from trio.lowlevel import checkpoint_if_cancelled

from .._events import StartEvent, StopEvent, WorkflowCancelledEvent
from ._blocking import watch_step
from ._cancel import cancel_pending
from ._context import Context
from ._fanout import ScopedRouter, work_scoped
from ._graph import WorkflowGraph
from ._idle import IdleWatch, WorkerState
from ._log import add_note, describe, failed_in, log, logger
from ._resources import Owner
from ._router import Router
from ._state import RunState, RunStatus
from ._stream import EventStream
from ._timers import call_at
from ._tracing import current_tracer, end_run_span, run_span
from ._worker import Observation, work


class Durability(Protocol):
    """What makes a run durable (`trioflow._durable`): its router, context and workers
    journal what happens, and a resumed run begins where its journal ends. The memory path
    never touches it: a run without one is exactly as fast as before it existed."""

    def attach(self, run: Run) -> None:
        """Give ``run`` its journaling router and context (called once it is built)."""

    def worker(self) -> Callable[[Run, int], Awaitable[None]]:
        """The coroutine function each step worker runs (`work`'s journaling twin)."""

    def begin(self, run: Run) -> None:
        """Route the start event, or hand a resumed run's unfinished tasks to the steps."""

    async def committed(self) -> None:
        """Wait until what the run journaled so far is committed."""

    def cancelled(self) -> None:
        """The caller cancelled the run: recorded, so that a crash before its end is recorded
        ends it as cancelled rather than resuming it."""

    def suspend(self, run: Run) -> bool:
        """Stop the run as if its process stopped now (`RunState.stop`): nothing it does from
        here on is recorded, so it resumes from here; False if its outcome was decided."""


@attrs.define(eq=False)
class Run:
    """One run: its state, router, stream and workers. The handler reads it."""

    workflow: Any
    graph: WorkflowGraph
    start_event: StartEvent
    timeout: float | None
    stream: EventStream
    blocking_threshold: float | None = None
    run_id: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    #: None: a run in memory. Else what journals it (`Durability`).
    durable: Durability | None = None
    #: Seconds of ``timeout`` used up before this process ran it (a resumed run's).
    time_used: float = 0.0
    #: The context the caller gave the run (``run(ctx=...)``): a memory run uses it as its
    #: own; a durable run starts from its store and leaves its own store there at its end
    #: (`take_held_context`).
    held: Context | None = None
    state: RunState = attrs.field(init=False)
    router: Router = attrs.field(init=False)
    context: Context = attrs.field(init=False)
    observation: Observation = attrs.field(factory=lambda: Observation(current_tracer()))
    #: One per step worker, in the order they started.
    workers: list[WorkerState] = attrs.field(factory=list)
    idle: IdleWatch = attrs.field(init=False)
    #: The owner of its run-scoped resources, while it runs (only when a step takes some).
    resources: Owner | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.state = RunState(self.timeout)
        scoped = self.graph.scoped
        self.router = (ScopedRouter if scoped else Router)(self.graph, self.state, self.stream)
        self.context = Context._of_run(self)
        if self.durable is not None:
            self.durable.attach(self)  # (its own router and context)
        self.state.on_decided = self.router.close_inboxes
        self.idle = IdleWatch(
            self.state, self.stream, self.router.inboxes, self.workers, self.observation
        )
        self.router.idle = self.idle

    def take_held_context(self) -> None:
        """As the run begins: the caller's context (``held``) is now in use by it. A memory
        run uses it as its own; a durable run (which began from a copy of its store) gives
        it its store when it ends.

        Raises:
            WorkflowRuntimeError: another run that has not ended uses it, or it is for
                another workflow.
        """
        held = self.held
        if held is None:
            return
        if self.durable is None:
            held._bind(self)
            self.context = held
        else:
            held._claim(self)

    @property
    def workflow_name(self) -> str:
        return self.graph.workflow_name

    # -- the run's task --

    async def main(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        tracer = self.observation.tracer
        if tracer is None:
            await self._main(task_status)
            return
        with run_span(tracer, self.workflow_name, self.run_id) as span:
            try:
                await self._main(task_status)
            finally:
                state = self.state
                try:
                    end_run_span(span, state.status.value, state.failure)
                except Exception as exc:
                    log(logging.ERROR, "ending the run's span failed: %s", describe(exc))

    async def _main(self, task_status: trio.TaskStatus[None]) -> None:
        started = trio.current_time()
        if logger.isEnabledFor(logging.DEBUG):  # (its fields are a dict a run need not make)
            log(
                logging.DEBUG,
                "run %s of %s started",
                self.run_id,
                self.workflow_name,
                extra=self._fields(),
            )
        #: The workflow's runs at once (``num_concurrent_runs``), of which this run holds one.
        slots: trio.CapacityLimiter | None = getattr(self.workflow, "_run_slots", None)
        try:
            if self.graph.resourced:
                await self._with_resources(slots, task_status)
            else:
                await self._in_scope(slots, task_status)
        finally:
            if slots is not None and self in slots.statistics().borrowers:
                slots.release_on_behalf_of(self)
            self._conclude(trio.current_time() - started)

    async def _with_resources(
        self, slots: trio.CapacityLimiter | None, task_status: trio.TaskStatus[None]
    ) -> None:
        """`_in_scope` with an owner of the run's resources around it, whose keepers live
        outside the run's scope: what is cancelled when the run ends is its steps, and the
        resources are exited only once those have unwound (`trioflow._core._resources`)."""
        async with trio.open_nursery() as keepers:
            owner = self.resources = Owner(keepers, f"run {self.run_id} of {self.workflow_name}")
            try:
                await self._in_scope(slots, task_status)
            finally:
                with trio.CancelScope(shield=True):  # (each exit is bounded)
                    await owner.aclose()
                self._report_teardown(owner)

    def _report_teardown(self, owner: Owner) -> None:
        """Resources that failed as they were exited: logged, and noted on the run's failure.
        The run's outcome was decided when it ended, and stays: see the README."""
        owner.report()
        failure = self.state.failure
        if failure is not None:
            for name, exc in owner.errors:
                add_note(
                    failure,
                    f"trioflow: resource {name} also failed as it was exited: {describe(exc)}",
                )

    async def _in_scope(
        self, slots: trio.CapacityLimiter | None, task_status: trio.TaskStatus[None]
    ) -> None:
        """The run's scope: its steps' workers and its timeout, until it is decided."""
        state = self.state
        with state.scope:
            if slots is not None:
                # Under way (its handler is handed out), it waits for a slot before its
                # steps, its timer and its start event, as LlamaIndex's runs do.
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                await slots.acquire_on_behalf_of(self)
            self._watch_for_blocking()
            durable = self.durable
            worker = (
                durable.worker()
                if durable is not None
                else _work_scoped
                if self.graph.scoped
                else work
            )
            async with trio.open_nursery() as nursery:
                self.idle.nursery = nursery
                for index in range(len(self.graph.steps)):
                    self._start_workers_when_needed(nursery, worker, index)
                timer = None
                if self.timeout is not None:
                    deadline = trio.current_time() + self.timeout - self.time_used
                    timer = call_at(deadline, self._time_out)
                try:
                    if durable is None:
                        self.router.send(self.start_event)
                    else:
                        durable.begin(self)
                    task_status.started()
                    try:
                        await state.until_decided()
                    finally:
                        # Decided, or cancelled by the caller's scope: then it is decided
                        # now, before any step has unwound.
                        state.stop()
                finally:
                    if timer is not None:
                        timer.cancel()
        # The run's task ends without a `trio.Cancelled` when the decision woke it (see
        # `RunState`); a cancellation of the caller's that came meanwhile is raised here, as it
        # would have been through the run's scope, so that no code of the caller's runs on.
        if cancel_pending():
            await checkpoint_if_cancelled()

    def _start_workers_when_needed(
        self, nursery: trio.Nursery, worker: Callable[[Run, int], Awaitable[None]], index: int
    ) -> None:
        """Start step ``index``'s workers one at a time, when an event waits for the step
        and none of its workers is free, up to its ``num_workers``: a step that is never used
        costs no task, and a run of a chain of steps one each, not ``num_workers`` each."""
        spec = self.graph.steps[index]
        inbox = self.router.inboxes[index]
        state = self.state
        name = f"trioflow step {spec.name}"
        started = 0

        def start_one() -> None:
            nonlocal started
            if state.outcome is not None:
                return  # the run is decided: nothing new starts while it unwinds
            started += 1
            if started == spec.config.num_workers:
                inbox.on_backlog = None
            nursery.start_soon(worker, self, index, name=name)

        inbox.on_backlog = start_one
        # Events sent before the run got under way (to a run waiting for a slot of
        # `num_concurrent_runs`) wait in the inbox already: a worker for each, up to the limit.
        for _ in range(min(inbox.waiting, spec.config.num_workers)):
            start_one()

    def _time_out(self) -> None:
        """The workflow's timeout, decided the moment it passes (`call_at`)."""
        busy = {worker.step for worker in self.workers if worker.busy}
        self.state.time_out(tuple(s.name for s in self.graph.steps if s.name in busy))

    def _watch_for_blocking(self) -> None:
        if self.blocking_threshold is None:
            return
        for spec in self.graph.steps:
            if spec.is_async:  # a plain `def` step runs in a thread: it cannot block the loop
                watch_step(
                    spec.code,
                    workflow=self.workflow_name,
                    step=spec.name,
                    threshold=self.blocking_threshold,
                )

    def _conclude(self, duration: float) -> None:
        """Exactly once, on every way out of `main`: the terminal event, then the stream ends.
        Nothing here may prevent that: the stream is closed first, the rest cannot raise."""
        state = self.state
        state.cancel()  # decided already, unless this task itself failed (a bug): a cancel
        terminal: StopEvent = WorkflowCancelledEvent()
        try:
            terminal = state.terminal_event()
        finally:
            self.stream.close(terminal, state.reports)
            held = self.held
            if held is not None and held is not self.context:  # a durable run's: a copy
                held.store._adopt(self.context.store)
            state.finished.set()
        for step_name, exception in state.later_failures:
            log(
                logging.ERROR,
                "step %r of %s (run %s) also failed after the run's outcome was decided",
                step_name,
                self.workflow_name,
                self.run_id,
                exc_info=exception,
                extra=self._fields(step=step_name),
            )
            if state.failure is not None:
                add_note(
                    state.failure,
                    f"trioflow: step {step_name!r} also failed: {describe(exception)}",
                )
        self._log_end(duration)

    def _fields(self, **more: Any) -> dict[str, Any]:
        return {"workflow": self.workflow_name, "run_id": self.run_id, **more}

    def _log_end(self, duration: float) -> None:
        state = self.state
        assert state.outcome is not None
        loud = state.outcome in (RunStatus.FAILED, RunStatus.TIMED_OUT)
        if not logger.isEnabledFor(logging.INFO if loud else logging.DEBUG):
            return  # (the common case: a run that completes logs at DEBUG)
        fields = self._fields(outcome=state.outcome.value, duration=duration)
        if state.outcome is RunStatus.FAILED:
            assert state.failure is not None
            where = state.failure_fields()
            fields.update(where)
            # INFO, not WARNING: the failure is raised to the caller anyway; logging it loudly
            # too would say everything twice.
            log(
                logging.INFO,
                "run %s of %s failed%s: %s",
                self.run_id,
                self.workflow_name,
                failed_in(**where),
                describe(state.failure),
                extra=fields,
            )
        elif state.outcome is RunStatus.TIMED_OUT:
            log(
                logging.INFO,
                "run %s of %s timed out after %s s",
                self.run_id,
                self.workflow_name,
                self.timeout,
                extra=fields,
            )
        else:
            log(
                logging.DEBUG,
                "run %s of %s %s in %.3f s",
                self.run_id,
                self.workflow_name,
                state.outcome.value,
                duration,
                extra=fields,
            )


async def _work_scoped(crew: Run, index: int) -> None:
    await work(crew, index, work_scoped)
