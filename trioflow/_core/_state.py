"""`RunState`: the one owner of a run's state. Its outcome is decided exactly once.

Every way a run can end is a method here (`complete`, `fail`, `time_out`, `cancel`, `crash`),
and each is decided at the moment it happens, not when the steps have unwound: the first
decision wins, cancels the run's scope, and what comes later (a step that catches the
cancellation and returns a stop event, a cleanup that raises) changes nothing. Everything else
is derived from it: the status, whether the run takes events, the terminal event, what
`WorkflowHandler.result` raises and what the HTTP server answers. Since these transitions
happen nowhere else, this is where a durable run's journal will record them.

Three points in time matter, in this order:

1. *decided*: `outcome` is set, the scope is cancelled, no new step execution starts.
   What waits for nothing but the decision is woken by it instead, and ends without a
   cancellation: the run's own task (`until_decided`) and the idle workers (`on_decided`).
   Cancelling a scope is cheap, but a task it wakes costs a `trio.Cancelled` unwinding it and
   a group in its nursery: for a one-step run that was a third of its time.
2. *unwound*: the run's nursery has exited, so no step code of the run runs any more.
3. *finished*: the terminal event is on the stream and the stream is closed (`finished`).

Between 1 and 3 the status is already the outcome.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from typing import TypedDict

import attrs
import trio
from trio.lowlevel import Abort, Task, current_task, enable_ki_protection, reschedule

from .._events import (
    StepFailedEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)
from ._cancel import cancel_pending


class RunStatus(enum.Enum):
    """Where a run is in its life."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


def is_cancellation(error: BaseException) -> bool:
    """A `trio.Cancelled`, or a group of nothing else (what a strict nursery makes of one)."""
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return isinstance(error, trio.Cancelled)


def cancelled_from_outside(scope: trio.CancelScope) -> bool:
    """Whether the calling task is being cancelled by a scope other than the run's own
    ``scope`` (the caller's deadline or its nursery): the run's cancellation, not a failure."""
    # Asked at every completion: `cancel_pending()` first, trio's own test of whether a cancel
    # point would raise now (the effective deadline walks every scope, 3% of a one-step run).
    # A caller's deadline already past but not yet expired by trio's scheduler is no
    # cancellation yet, for this as for trio's own checkpoints.
    return (
        not scope.cancel_called
        and cancel_pending()
        and trio.current_effective_deadline() == -math.inf
    )


class FailureFields(TypedDict, total=False):
    """Where a failed run failed, as the structured fields of its log records."""

    #: The step whose failure decided the run (none when the server failed it).
    step: str
    #: Its attempt that failed (unknown after a `RunState.crash`).
    attempt: int
    #: When that step is an error handler, the step whose failure it was handling (where the
    #: failure began, if the handler re-raised it), and that step's last attempt.
    handled_step: str
    handled_attempt: int


@attrs.define(eq=False)
class RunState:
    """A run's outcome and what decided it; one method per transition."""

    #: Seconds the run may take (``Workflow(timeout=...)``), for the timed-out report.
    timeout: float | None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: None until decided; then how the run ended. Assigned only in `_decide`.
    outcome: RunStatus | None = None
    #: When it was decided, in seconds since the epoch (wall time, for people and records).
    decided_at: float | None = None
    stop_event: StopEvent | None = None
    #: What failed the run, as raised by the step (or a `BaseException`, see `crash`).
    failure: BaseException | None = None
    failed_step: str = ""
    #: The `StepFailedEvent` of the step failure that decided the run (None for a crash): its
    #: attempt, and for a failing error handler, the failure it was handling (``input_event``).
    failure_report: StepFailedEvent | None = None
    #: The steps running when the run timed out.
    active_steps: tuple[str, ...] = ()
    #: A `BaseException` that is no `Exception` (``KeyboardInterrupt``, ``SystemExit``) raised
    #: by a step: it propagates to the caller as itself, whatever the outcome.
    fatal: BaseException | None = None
    #: Failures after the decision: never dropped, logged and attached to the failure.
    later_failures: list[tuple[str, BaseException]] = attrs.field(factory=list)
    #: `StepFailedEvent`s that go to the stream just before the terminal event, because the
    #: failure ended the run (or the run ended while reporting it).
    reports: list[StepFailedEvent] = attrs.field(factory=list)
    #: Set when the terminal event is on the stream and the stream is closed.
    finished: trio.Event = attrs.field(factory=trio.Event)
    #: Called when a step raises a `fatal` exception: ``start()`` cancels the caller's block,
    #: so the exception reaches the caller as promptly as trio's own nursery would make it.
    on_fatal: list[Callable[[], None]] = attrs.field(factory=list)
    #: Called when the run is stopped from outside (`stop`) just before that decides it: a
    #: durable run stops recording there, so that it resumes rather than ends cancelled.
    on_stop: Callable[[], None] | None = None
    #: Called as the run is decided, just before its scope is cancelled: the router wakes the
    #: workers parked on its inboxes there, which then end (`Inbox.close`).
    on_decided: Callable[[], None] | None = None
    #: The run's own task while it waits in `until_decided`.
    _waiting: Task | None = attrs.field(default=None, init=False)

    @property
    def status(self) -> RunStatus:
        return RunStatus.RUNNING if self.outcome is None else self.outcome

    @property
    def decided(self) -> bool:
        return self.outcome is not None

    @enable_ki_protection  # (decided and not cancelled would leave the run's task waiting)
    def _decide(self, outcome: RunStatus) -> None:
        self.outcome = outcome
        self.decided_at = time.time()
        try:
            waiting = self._waiting
            if waiting is not None:
                self._waiting = None
                reschedule(waiting)
            if self.on_decided is not None:
                self.on_decided()
        finally:
            # Whatever is still at work (a step, a `wait_for_event`, an idle event waiting for
            # room in the stream) is cancelled; what was woken above is no longer parked.
            self.scope.cancel()

    @enable_ki_protection  # (noted as waiting and not parked would have `_decide` wake it)
    async def until_decided(self) -> None:
        """Wait until the run is decided (the run's own task, inside its scope).

        The decision wakes this task; a cancellation from outside (the caller's scope) raises
        `trio.Cancelled` here, as `trio.sleep_forever` would, and the caller decides the run
        as stopped (`stop`)."""
        if self.outcome is not None:
            return
        self._waiting = current_task()

        def abort(_: object) -> Abort:
            self._waiting = None
            return Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    # -- transitions: each returns whether it decided the run --

    def complete(self, stop_event: StopEvent) -> bool:
        """A step returned the run's stop event."""
        if self.outcome is not None:
            return False  # a second stop event, or one after a failure: the first decided
        if cancelled_from_outside(self.scope):
            # A step that caught the caller's cancellation and returned a stop event anyway.
            self.stop()
            return False
        self.stop_event = stop_event
        self._decide(RunStatus.COMPLETED)
        return True

    def fail(
        self, step_name: str, exception: BaseException, report: StepFailedEvent | None = None
    ) -> bool:
        """A step's final failure that no error handler takes. Its ``report`` goes to the
        stream with the end, so the failing step waits for no one."""
        if report is not None:
            self.reports.append(report)
        if self.outcome is None and cancelled_from_outside(self.scope):
            # Raised while the caller's cancellation unwound the step (a cleanup error):
            # the cancellation came first, so it decides.
            self.stop()
        if self.outcome is not None:
            self.later_failures.append((step_name, exception))
            return False
        self.failure = exception
        self.failed_step = step_name
        self.failure_report = report
        self._decide(RunStatus.FAILED)
        return True

    def crash(self, step_name: str, exception: BaseException) -> bool:
        """A step raised a `BaseException` that is no `Exception` (``KeyboardInterrupt``,
        ``SystemExit``, ``GeneratorExit``): it fails the run unless decided, and reaches the
        caller as itself in any case."""
        if self.fatal is None:
            self.fatal = exception
            for callback in self.on_fatal:
                callback()
        elif exception is not self.fatal:
            self.later_failures.append((step_name, exception))
        if self.outcome is not None:
            return False
        if isinstance(exception, KeyboardInterrupt) and self.on_stop is not None:
            # Ctrl-C landed in the step's code: the process is stopping, so a durable run is
            # stopped as by a shutdown (it resumes later), not failed for good.
            self.on_stop()
        self.failure = exception
        self.failed_step = step_name
        self._decide(RunStatus.FAILED)
        return True

    def time_out(self, active_steps: tuple[str, ...]) -> bool:
        """The workflow's timeout passed with ``active_steps`` running."""
        if self.outcome is not None:
            return False
        self.active_steps = active_steps
        self._decide(RunStatus.TIMED_OUT)
        return True

    def cancel(self) -> bool:
        """The caller cancelled the run (`WorkflowHandler.cancel`)."""
        if self.outcome is not None:
            return False
        self._decide(RunStatus.CANCELLED)
        return True

    def stop(self) -> bool:
        """The run is stopped from outside: the scope it runs in is cancelled, or the caller
        left its ``start()`` block. Cancelled, as `cancel`; a durable run is stopped as if its
        process stopped (`on_stop`), to resume later."""
        if self.outcome is not None:
            return False
        if self.on_stop is not None:
            self.on_stop()
        self._decide(RunStatus.CANCELLED)
        return True

    def report(self, failed: StepFailedEvent) -> None:
        """Send ``failed`` to the stream with the end (it could not wait for room)."""
        self.reports.append(failed)

    # -- derived --

    def failure_fields(self) -> FailureFields:
        """Where the run failed, as log fields (see `FailureFields`)."""
        fields = FailureFields(step=self.failed_step) if self.failed_step else FailureFields()
        report = self.failure_report
        if report is not None:
            fields["attempt"] = report.attempt
            handled = report.input_event
            if isinstance(handled, StepFailedEvent):  # the step was an error handler
                fields["handled_step"] = handled.step_name
                fields["handled_attempt"] = handled.attempt
        return fields

    def terminal_event(self) -> StopEvent:
        """The stream's last event, as the outcome says."""
        outcome = self.outcome
        if outcome is RunStatus.COMPLETED:
            assert self.stop_event is not None
            return self.stop_event
        if outcome is RunStatus.FAILED:
            assert self.failure is not None
            return WorkflowFailedEvent(step_name=self.failed_step, exception=self.failure)
        if outcome is RunStatus.TIMED_OUT:
            assert self.timeout is not None
            return WorkflowTimedOutEvent(timeout=self.timeout, active_steps=self.active_steps)
        return WorkflowCancelledEvent()
