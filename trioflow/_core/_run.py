"""The runtime of one run: a cancel scope around a nursery of step workers.

`Run.main` is the run's only task started from outside. It opens the run's scope (the
workflow timeout is its deadline), starts ``num_workers`` workers per step (`trioflow._worker`),
routes the start event, and when the scope exits, whatever ended it, puts exactly one terminal
event on the stream and closes it. Workers never let an `Exception` escape: a step's exception
is recorded (the first one decides the run, later ones are attached to it) and the scope is
cancelled, so the nursery only ever unwinds with `trio.Cancelled` and no `ExceptionGroup`
reaches a caller.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import trio

from .._errors import WorkflowRuntimeError
from .._events import (
    RUNTIME_STOP_EVENTS,
    Event,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)
from ._blocking import watch_step
from ._context import Context, Waiter
from ._graph import WorkflowGraph
from ._inbox import Inbox
from ._stream import EventStream
from ._tracing import current_tracer, end_run_span, run_span
from ._worker import WorkerState, work

logger = logging.getLogger("trioflow")


class RunStatus(enum.Enum):
    """Where a run is in its life."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


@attrs.define(eq=False)
class Run:
    """The state of one run. Owned by the task running `main`; the handler reads it."""

    workflow: Any
    graph: WorkflowGraph
    start_event: StartEvent
    timeout: float | None
    stream: EventStream
    blocking_threshold: float | None = None
    run_id: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    context: Context = attrs.field(init=False)
    inboxes: list[Inbox[Event]] = attrs.field(init=False)
    #: How the run ended, decided by the first of: a stop event, a failure, a cancel request,
    #: the timeout. None while nothing has decided it.
    outcome: RunStatus | None = None
    stop_event: StopEvent | None = None
    failure: BaseException | None = None
    failed_step: str = ""
    #: Failures after the first: never dropped, attached to the first as notes and logged.
    later_failures: list[tuple[str, BaseException]] = attrs.field(factory=list)
    #: Steps that were inside a step call when the run's scope was cancelled (workers add
    #: themselves as they unwind), so a timeout can report what was still running.
    interrupted_steps: set[str] = attrs.field(factory=set)
    #: For each event class a step may return that is simply routed (see
    #: `WorkflowGraph.plain_events`): the `put` of every inbox it goes to.
    direct_routes: dict[type[Event], tuple[Callable[[Event], None], ...]] = attrs.field(init=False)
    #: `StepFailedEvent`s that could not wait for room in the stream (the failure ended the
    #: run, or the run ended while reporting it): streamed just before the terminal event.
    failure_reports: list[StepFailedEvent] = attrs.field(factory=list)
    #: Steps suspended in `Context.wait_for_event`, oldest first.
    waiters: list[Waiter] = attrs.field(factory=list)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    finished: trio.Event = attrs.field(factory=trio.Event)
    #: Lifecycle events go to the stream (its consumer asked for them).
    lifecycle: bool = False
    #: The OpenTelemetry tracer, when tracing was enabled as the run was made.
    tracer: Any = attrs.field(factory=current_tracer)
    #: Whether step executions take the observed path (lifecycle events or spans).
    observed: bool = attrs.field(init=False)
    #: One per step worker, in the order they started: which step, and whether it is inside
    #: a step call right now.
    workers: list[WorkerState] = attrs.field(factory=list)
    #: Events handed to a waiting `Context.wait_for_event` (the inboxes count the rest).
    delivered_to_waiters: int = 0

    def __attrs_post_init__(self) -> None:
        self.observed = self.tracer is not None
        self.context = Context(self.run_id, self, self.stream, self.waiters)
        self.inboxes = [Inbox() for _ in self.graph.steps]
        self.direct_routes = {
            event_type: tuple(self.inboxes[i].put for i in self.graph.routes_for(event_type))
            for event_type in self.graph.plain_events
        }

    @property
    def status(self) -> RunStatus:
        if not self.finished.is_set():
            return RunStatus.RUNNING
        assert self.outcome is not None
        return self.outcome

    @property
    def workflow_name(self) -> str:
        return self.graph.workflow_name

    def stream_lifecycle(self, on: bool) -> None:
        """Put lifecycle events on the stream from now on, or stop."""
        self.lifecycle = on
        self.observed = on or self.tracer is not None

    # -- deciding the outcome (synchronous: called from workers and from the handler) --

    def complete(self, stop_event: StopEvent) -> None:
        if self.outcome is None:
            self.outcome = RunStatus.COMPLETED
            self.stop_event = stop_event
            self.scope.cancel()
        # A second stop event in the same tick loses: the first one ended the run.

    def fail(
        self, step_name: str, exception: BaseException, report: StepFailedEvent | None = None
    ) -> None:
        """Record a step's final failure; the first decides the run. ``report`` goes to the
        stream just before the terminal event, so the failing step waits for no one."""
        if report is not None:
            self.failure_reports.append(report)
        if self.outcome is None:
            self.outcome = RunStatus.FAILED
            self.failure = exception
            self.failed_step = step_name
            self.scope.cancel()
        else:
            self.later_failures.append((step_name, exception))

    def cancel(self) -> None:
        if self.outcome is None:
            self.outcome = RunStatus.CANCELLED
            self.scope.cancel()

    # -- routing (the `Router` that `Context` uses) --

    def send_event(self, event: Event, step: str | None) -> None:
        if step is None and self.waiters:
            for waiter in self.waiters:
                if waiter.matches(event):  # the oldest matching waiter takes it, nobody else
                    self.waiters.remove(waiter)
                    waiter.deliver(event)
                    self.delivered_to_waiters += 1
                    return
        routes = self.graph.routes_for(type(event))
        if step is not None:
            index = self.graph.step_index(step)
            if index is None:
                raise WorkflowRuntimeError(f"{self.workflow_name} has no step named {step!r}")
            if index not in routes:
                raise WorkflowRuntimeError(
                    f"step {step!r} of {self.workflow_name} does not accept {type(event).__name__}"
                )
            self.inboxes[index].put(event)
            return
        if not routes:
            if isinstance(event, InputRequiredEvent):
                self._stream_for_caller(event)
                return
            raise WorkflowRuntimeError(
                f"no step of {self.workflow_name} accepts {type(event).__name__}, so it "
                "would be lost (add it to a step's event annotation)"
            )
        inboxes = self.inboxes
        for index in routes:
            inboxes[index].put(event)

    def _stream_for_caller(self, event: InputRequiredEvent) -> None:
        # `send_event` cannot wait for room, and queueing the event elsewhere would reorder
        # the stream; a full stream is an error that says what to do instead.
        try:
            self.stream.write_nowait(event)
        except trio.WouldBlock:
            raise WorkflowRuntimeError(
                f"the stream is full, so {type(event).__name__} cannot be sent to the caller "
                "without waiting: use `await ctx.write_event_to_stream(ev)` or return it"
            ) from None

    async def emit(self, step_name: str, result: object) -> None:
        """Deal with what a step returned."""
        if not isinstance(result, Event):
            raise WorkflowRuntimeError(
                f"step {step_name!r} returned {result!r}; a step returns an Event or None"
            )
        if isinstance(result, StopEvent):
            if isinstance(result, RUNTIME_STOP_EVENTS):
                raise WorkflowRuntimeError(
                    f"step {step_name!r} returned {type(result).__name__}, a terminal event "
                    "that only the runtime produces"
                )
            self.complete(result)
        elif isinstance(result, InputRequiredEvent):
            await self.stream.write(result)  # for the caller, and for any step that wants it
            if self.graph.routes_for(type(result)):
                self.send_event(result, None)
        else:
            self.send_event(result, None)

    # -- the run's task --

    async def main(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.tracer is None:
            await self._main(task_status)
            return
        with run_span(self.tracer, self.workflow_name, self.run_id) as span:
            try:
                await self._main(task_status)
            finally:
                assert self.outcome is not None
                end_run_span(span, self.outcome.value, self.failure)

    async def _main(self, task_status: trio.TaskStatus[None]) -> None:
        started = trio.current_time()
        logger.debug(
            "run %s of %s started",
            self.run_id,
            self.workflow_name,
            extra={"workflow": self.workflow_name, "run_id": self.run_id},
        )
        try:
            with self.scope:
                self._watch_for_blocking()
                if self.timeout is not None:
                    self.scope.deadline = trio.current_time() + self.timeout
                async with trio.open_nursery() as nursery:
                    for index, spec in enumerate(self.graph.steps):
                        for _ in range(spec.config.num_workers):
                            nursery.start_soon(work, self, index, name=f"trioflow step {spec.name}")
                    self.send_event(self.start_event, None)
                    task_status.started()
            if self.outcome is None and self.scope.cancelled_caught:
                self.outcome = RunStatus.TIMED_OUT
        finally:
            self._conclude()
            self._log_end(trio.current_time() - started)

    def _log_end(self, duration: float) -> None:
        assert self.outcome is not None
        fields: dict[str, Any] = {
            "workflow": self.workflow_name,
            "run_id": self.run_id,
            "outcome": self.outcome.value,
            "duration": duration,
        }
        if self.outcome is RunStatus.FAILED:
            fields["step"] = self.failed_step
            # INFO, not WARNING: the failure is raised to the caller anyway; logging it loudly
            # too would say everything twice.
            logger.info(
                "run %s of %s failed in step %r: %s: %s",
                self.run_id,
                self.workflow_name,
                self.failed_step,
                type(self.failure).__name__,
                self.failure,
                extra=fields,
            )
        elif self.outcome is RunStatus.TIMED_OUT:
            logger.info(
                "run %s of %s timed out after %s s",
                self.run_id,
                self.workflow_name,
                self.timeout,
                extra=fields,
            )
        else:
            logger.debug(
                "run %s of %s %s in %.3f s",
                self.run_id,
                self.workflow_name,
                self.outcome.value,
                duration,
                extra=fields,
            )

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

    def _conclude(self) -> None:
        """Exactly once, on every way out of `main`: the terminal event, then the stream ends."""
        if self.outcome is None:  # cancelled from outside (the caller's scope), or a crash
            self.outcome = RunStatus.CANCELLED
        terminal: StopEvent
        if self.outcome is RunStatus.COMPLETED:
            assert self.stop_event is not None
            terminal = self.stop_event
        elif self.outcome is RunStatus.FAILED:
            assert self.failure is not None
            terminal = WorkflowFailedEvent(step_name=self.failed_step, exception=self.failure)
        elif self.outcome is RunStatus.TIMED_OUT:
            assert self.timeout is not None
            active = tuple(s.name for s in self.graph.steps if s.name in self.interrupted_steps)
            terminal = WorkflowTimedOutEvent(timeout=self.timeout, active_steps=active)
        else:
            terminal = WorkflowCancelledEvent()
        for step_name, exception in self.later_failures:
            logger.error(
                "step %r of %s (run %s) also failed after the run's outcome was decided",
                step_name,
                self.workflow_name,
                self.run_id,
                exc_info=exception,
            )
            if self.failure is not None:
                self.failure.add_note(
                    f"trioflow: step {step_name!r} also failed: {type(exception).__name__}: "
                    f"{exception}"
                )
        self.stream.close(terminal, self.failure_reports)
        self.finished.set()
