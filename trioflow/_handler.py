"""`WorkflowHandler`: the caller's view of a running workflow."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, NoReturn, cast, overload

import attrs
import trio

from ._core._context import Context
from ._core._run import Run
from ._core._state import FailureFields, RunStatus
from ._core._stream import StreamIterator
from ._errors import WorkflowCancelledError, WorkflowTimeoutError
from ._events import Event, LifecycleEvent, StopEvent
from ._typevar import TypeVar

#: What a run returns (`WorkflowHandler.result`, `Workflow.run`): ``Any`` unless the workflow
#: says, as in ``class MyFlow(Workflow[MyStop])``.
R = TypeVar("R", default=Any)

# The event types named to `WorkflowHandler.stream_events`.
E1 = TypeVar("E1", bound=Event)
E2 = TypeVar("E2", bound=Event)
E3 = TypeVar("E3", bound=Event)
E4 = TypeVar("E4", bound=Event)
E5 = TypeVar("E5", bound=Event)
E6 = TypeVar("E6", bound=Event)


@attrs.frozen(kw_only=True)
class RunStatistics:
    """A snapshot of a run, from `WorkflowHandler.statistics`."""

    #: Events delivered to steps (each step an event goes to counts) or to waiting
    #: `Context.wait_for_event` calls, the start event included.
    events_routed: int
    #: Step executions in progress right now, by step name (steps with none are left out).
    steps_running: Mapping[str, int]
    #: Events waiting in the stream's buffer.
    buffered: int
    #: The most events the buffer has held at once.
    buffer_peak: int
    #: The buffer's capacity (``Workflow(stream_buffer=...)``).
    capacity: int
    #: Writers waiting for room right now.
    writers_waiting: int
    #: Seconds writers have spent waiting for room (backpressure), summed over writers.
    backpressure_wait: float
    #: Events thrown away because nobody streamed while ``result()`` waited.
    discarded: int


class WorkflowHandler(Generic[R]):
    """A run in progress, handed out by ``async with workflow.start(...) as handler``.

    Generic in what `result` returns, as its `Workflow` is: a ``WorkflowHandler[MyStop]``
    from a ``Workflow[MyStop]``, a plain (``Any``) one from a plain workflow.
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self._state = run.state
        self._failure_raised = False
        self._timeout_error: WorkflowTimeoutError | None = None
        self._cancelled_error: WorkflowCancelledError | None = None
        #: The traceback each error had when this handler first raised it (`_raise`).
        self._tracebacks: dict[int, TracebackType | None] = {}

    def __repr__(self) -> str:
        return f"<WorkflowHandler {self._run.workflow_name} run {self.run_id} {self.status.value}>"

    @property
    def run_id(self) -> str:
        """This run's id."""
        return self._run.run_id

    @property
    def ctx(self) -> Context:
        """The run's context: the one given to ``run(ctx=...)``/``start(ctx=...)``, or the
        run's own (on a durable store, always its own: the one given gets its store when the
        run ends). Give it to the next run to go on with its store (a chat's next turn)."""
        return self._run.context

    @property
    def status(self) -> RunStatus:
        """`RunStatus.RUNNING` until the run's outcome is decided, then the outcome, at once:
        also while its steps still unwind (a ``def`` step finishing in its thread)."""
        return self._state.status

    @property
    def ended_at(self) -> float | None:
        """When the run's outcome was decided, in seconds since the epoch (`time.time`); None
        while it runs."""
        return self._state.decided_at

    @property
    def failed_step(self) -> str | None:
        """The step whose failure decided the run, once it is `RunStatus.FAILED`; else None
        (also when no step failed it, see `_fail_from_server`)."""
        state = self._state
        return (state.failed_step or None) if state.outcome is RunStatus.FAILED else None

    def is_done(self) -> bool:
        """Whether the run has finished: decided, unwound (no step code of it runs any more),
        its terminal event on the stream and the stream closed."""
        return self._state.finished.is_set()

    # Typed for up to six types: ``stream_events(A, B)`` yields ``A | B | StopEvent`` (the
    # terminal event comes whatever the filter), no types yields any `Event`, and more than
    # six yield `Event` as well.
    @overload
    def stream_events(self) -> StreamIterator[Event]: ...
    @overload
    def stream_events(self, t1: type[E1], /) -> StreamIterator[E1 | StopEvent]: ...
    @overload
    def stream_events(
        self, t1: type[E1], t2: type[E2], /
    ) -> StreamIterator[E1 | E2 | StopEvent]: ...
    @overload
    def stream_events(
        self, t1: type[E1], t2: type[E2], t3: type[E3], /
    ) -> StreamIterator[E1 | E2 | E3 | StopEvent]: ...
    @overload
    def stream_events(
        self, t1: type[E1], t2: type[E2], t3: type[E3], t4: type[E4], /
    ) -> StreamIterator[E1 | E2 | E3 | E4 | StopEvent]: ...
    @overload
    def stream_events(
        self, t1: type[E1], t2: type[E2], t3: type[E3], t4: type[E4], t5: type[E5], /
    ) -> StreamIterator[E1 | E2 | E3 | E4 | E5 | StopEvent]: ...
    @overload
    def stream_events(
        self, t1: type[E1], t2: type[E2], t3: type[E3], t4: type[E4], t5: type[E5], t6: type[E6], /
    ) -> StreamIterator[E1 | E2 | E3 | E4 | E5 | E6 | StopEvent]: ...
    @overload
    def stream_events(self, *types: type[Event]) -> StreamIterator[Event]: ...

    def stream_events(self, *types: type[Event]) -> StreamIterator[Any]:
        """Iterate over the run's stream as events are written.

        The iterator holds the stream until the terminal event; best use it as
        ``async with handler.stream_events() as events: async for ev in events: ...``, whose
        end hands the stream on to a later ``stream_events()`` (so do `aclose`, an exception
        out of the iteration, and dropping the iterator after ``break``).

        With ``types``, only events of those types are yielded (the others are consumed and
        dropped); the terminal event is always yielded last, then the iteration ends.
        Lifecycle events (`StepStartedEvent`, `StepFinishedEvent`, `StepRetryEvent`) are
        written to the stream only while its consumer names them (or `LifecycleEvent`) here.

        Raises:
            WorkflowRuntimeError: another iterator is consuming the stream, or the stream has
                already ended.
        """
        for t in types:
            if not (isinstance(t, type) and issubclass(t, Event)):
                raise TypeError(f"stream_events() filters by Event subclasses, got {t!r}")
        run = self._run
        observation = run.observation
        lifecycle = any(issubclass(t, LifecycleEvent) for t in types)
        # Lifecycle events left in the buffer by an earlier consumer that asked for them are
        # not for this one unless it asks too.
        exclude = (LifecycleEvent,) if observation.lifecycle and not lifecycle else ()
        iterator = run.stream.open(types, exclude)
        observation.stream_lifecycle(lifecycle)
        run.idle.poke()  # (a run that is idle already says so)
        return iterator

    async def send_event(self, event: Event, step: str | None = None) -> None:
        """Route ``event`` into the running run, as `Context.send_event` does; this is how a
        caller answers an `InputRequiredEvent`.

        Raises:
            RunEndedError: the run's outcome is decided (a `WorkflowRuntimeError`).
            WorkflowRuntimeError: no step accepts the event and no step waits for it.
        """
        await trio.lowlevel.checkpoint()
        if not isinstance(event, Event):
            raise TypeError(f"send_event() takes an Event, got {event!r}")
        self._run.router.send(event, step)
        durable = self._run.durable
        if durable is not None:  # accepted once journaled: a crash does not lose it
            await durable.committed()

    def cancel(self) -> bool:
        """Cancel the run, at once: its status is `RunStatus.CANCELLED`, its stream ends with
        `WorkflowCancelledEvent` and `result` raises `WorkflowCancelledError`.

        Returns:
            True if this call cancelled the run; False if its outcome was decided already
            (it completed, failed, timed out or was cancelled), which this call leaves alone.
        """
        if not self._state.cancel():
            return False
        durable = self._run.durable
        if durable is not None:
            durable.cancelled()
        return True

    async def _committed(self) -> None:
        """Wait until what a durable run has recorded so far (a cancel, say) is committed."""
        durable = self._run.durable
        if durable is None:
            await trio.lowlevel.checkpoint()
        else:
            await durable.committed()

    def _suspend(self) -> bool:
        """Stop a durable run as its process stopping would (a server shutting down): it is
        cancelled here, but nothing of that is recorded, so it resumes at the next start.
        False if its outcome was decided already (or it is no durable run: then cancel it)."""
        durable = self._run.durable
        if durable is None:
            return self.cancel()
        return durable.suspend(self._run)

    def _fail_from_server(self, error: Exception) -> bool:
        """Fail the run with ``error`` unless its outcome is decided, as if a step had raised
        it but naming no step: for the layers above, when what the run produced cannot be
        delivered (the HTTP server, an event it cannot encode). Returns whether this decided
        the run; once decided, ``error`` is the caller's to report."""
        state = self._state
        return not state.decided and state.fail("", error)

    async def result(self) -> R:
        """Wait for the run to end and return its result: the stop event's ``result``, or the
        stop event itself when the workflow uses a `StopEvent` subclass.

        While nobody streams, waiting here discards stream events the run would otherwise
        block on.

        Raises:
            Exception: the failed step's own exception, with a note naming the step.
            WorkflowTimeoutError: the run exceeded its timeout.
            WorkflowCancelledError: the run was cancelled.
            BaseException: a step's ``KeyboardInterrupt``, ``SystemExit`` or
                ``GeneratorExit``, as itself.
        """
        await self._run.stream.wait_closed()
        try:
            return self.result_nowait()
        except BaseException:
            self._failure_raised = True  # leaving start() need not raise it again
            raise

    def result_nowait(self) -> R:
        """The run's result once its outcome is decided, as `result` returns or raises it,
        without waiting for the steps to unwind. It only looks: leaving ``start()`` still
        raises a failure that only this raised.

        Raises:
            trio.WouldBlock: the run's outcome is not decided yet.
        """
        state = self._state
        if state.outcome is None:
            raise trio.WouldBlock
        if state.fatal is not None:
            self._raise(state.fatal)
        if state.outcome is RunStatus.COMPLETED:
            stop = state.stop_event
            assert stop is not None
            # What the workflow's R promises; a `Workflow[R]` naming a StopEvent subclass is
            # checked against its graph (`_graph._check_declared_result`).
            return cast(R, stop.result if type(stop) is StopEvent else stop)
        self._raise(self._outcome_error())

    def _raise(self, error: BaseException) -> NoReturn:
        """Raise ``error`` with the traceback it had when first raised here: raising one
        exception object again adds the raising frames to its traceback, which asking a run's
        result many times (a server answering status requests) would grow without end."""
        traceback = self._tracebacks.setdefault(id(error), error.__traceback__)
        raise error.with_traceback(traceback)

    def statistics(self) -> RunStatistics:
        """A snapshot of the run: routing, steps running, and the stream's buffer."""
        run = self._run
        stream = run.stream
        running: dict[str, int] = {}
        for worker in run.workers:
            if worker.busy:
                running[worker.step] = running.get(worker.step, 0) + 1
        return RunStatistics(
            events_routed=run.router.events_routed,
            steps_running=running,
            buffered=stream.buffered,
            buffer_peak=stream.peak,
            capacity=stream.capacity,
            writers_waiting=stream.writers_waiting,
            backpressure_wait=stream.waited,
            discarded=stream.discarded,
        )

    def _outcome_error(self) -> BaseException:
        run, state = self._run, self._state
        if state.outcome is RunStatus.FAILED:
            assert state.failure is not None
            return state.failure
        if state.outcome is RunStatus.TIMED_OUT:
            if self._timeout_error is None:
                self._timeout_error = WorkflowTimeoutError(
                    f"{run.workflow_name} run {run.run_id} timed out after {run.timeout} s"
                )
            return self._timeout_error
        if self._cancelled_error is None:
            self._cancelled_error = WorkflowCancelledError(
                f"{run.workflow_name} run {run.run_id} was cancelled"
            )
        return self._cancelled_error

    def unreported_failure(self) -> BaseException | None:
        """What leaving ``start()`` must raise on the run's behalf: a `BaseException` a step
        raised (``KeyboardInterrupt``, ``SystemExit``) always, as a trio nursery would (it
        cancelled the block), else the run's failure or timeout unless `result` raised it."""
        state = self._state
        if state.fatal is not None:
            return state.fatal
        if self._failure_raised or state.outcome not in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            return None
        return self._outcome_error()


def failure_fields(handler: WorkflowHandler) -> FailureFields:
    """For trioflow's own reports (the server's log): where ``handler``'s run failed, as
    structured log fields; empty unless it failed."""
    state = handler._state
    return state.failure_fields() if state.outcome is RunStatus.FAILED else FailureFields()
