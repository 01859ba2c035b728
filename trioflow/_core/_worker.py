"""Step workers: take an event from the step's inbox, run the step, deal with the outcome.

A worker runs one event at a time through the step: under the step's timeout, retried by its
`RetryPolicy`, in a thread for a plain ``def`` step. Every failed attempt goes to the stream as
a `StepFailedEvent`; the final failure goes to the step's error handlers, or else ends the run.
The loop in `work` is the hot path of a hop between steps, so what it does per event is kept to
the minimum, and everything rarer lives in the helpers below it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .._events import (
    Event,
    StepFailedEvent,
    StepFinishedEvent,
    StepRetryEvent,
    StepStartedEvent,
)
from ._context import Context, current_step
from ._graph import StepSpec
from ._sync import SyncContext
from ._tracing import step_span

if TYPE_CHECKING:
    from ._run import Run

StepCall = Callable[[Event], Awaitable[Any]]

logger = logging.getLogger("trioflow")


class WorkerState:
    """What `WorkflowHandler.statistics` and a timeout's report see of one worker."""

    __slots__ = ("busy", "step")

    def __init__(self, step: str) -> None:
        self.step = step
        #: Inside a step call: a cancellation now means the step was still running.
        self.busy = False


async def work(run: Run, index: int) -> None:
    """One worker of step ``index``: runs until the run's scope is cancelled."""
    spec = run.graph.steps[index]
    current_step.set(spec.name)
    call = _step_call(run, spec)
    get = run.inboxes[index].getter()
    direct_routes = run.direct_routes
    waiters = run.waiters
    state = WorkerState(spec.name)
    run.workers.append(state)
    try:
        while True:
            event = await get()
            if run.outcome is not None:
                return  # the run is over: start nothing new while the scope unwinds
            state.busy = True
            try:
                if run.observed:  # lifecycle events or spans were asked for
                    result = await _observed(run, spec, call, event, 1)
                else:
                    result = await call(event)
                attempt = 1
            except Exception as exc:
                retried = await _retry_or_fail(run, index, call, event, exc)
                if retried is None:
                    return  # the failure ends the run
                if retried is _HANDED_TO_HANDLERS:
                    state.busy = False
                    continue
                result, attempt = retried
            state.busy = False
            try:
                targets = direct_routes.get(result.__class__)
                if targets is not None and not waiters:  # the hot path of a hop
                    for put in targets:
                        put(result)
                elif result is not None:
                    await run.emit(spec.name, result)
            except Exception as exc:
                # What the step returned cannot go anywhere: the step's failure, not retried
                # (running the step again would repeat whatever it already did).
                if not await _final_failure(run, index, event, exc, attempt):
                    return
    except BaseException:
        if state.busy:  # for WorkflowTimedOutEvent.active_steps
            run.interrupted_steps.add(spec.name)
        raise
    finally:
        state.busy = False


# What `_retry_or_fail` returns once error handlers took the step's final failure.
_HANDED_TO_HANDLERS: Any = object()


async def _retry_or_fail(
    run: Run, index: int, call: StepCall, event: Event, exc: Exception
) -> tuple[Any, int] | None:
    """After a failed first attempt: retry as the step's policy says. Returns the result and
    the attempt that produced it, `_HANDED_TO_HANDLERS` when error handlers took the final
    failure, or None when the failure ends the run."""
    spec = run.graph.steps[index]
    retry = spec.config.retry
    attempt = 1
    while retry is not None and attempt < retry.max_attempts and isinstance(exc, retry.retry_on):
        failed = StepFailedEvent(
            step_name=spec.name, attempt=attempt, exception=exc, input_event=event
        )
        try:
            await run.stream.write(failed)
        except BaseException:
            run.failure_reports.append(failed)  # the run is ending: report it with the end
            raise
        attempt += 1
        delay = retry.delay_before(attempt)
        logger.info(
            "step %r of %s (run %s) failed, attempt %d of %d, retrying in %.3g s: %s: %s",
            spec.name,
            run.workflow_name,
            run.run_id,
            attempt - 1,
            retry.max_attempts,
            delay,
            type(exc).__name__,
            exc,
            extra={
                "workflow": run.workflow_name,
                "run_id": run.run_id,
                "step": spec.name,
                "attempt": attempt - 1,
            },
        )
        if run.lifecycle:
            retrying = StepRetryEvent(
                step_name=spec.name, attempt=attempt, delay=delay, exception=exc
            )
            await run.stream.write(retrying)
        await trio.sleep(delay)  # only this worker waits
        try:
            if run.observed:
                return await _observed(run, spec, call, event, attempt), attempt
            return await call(event), attempt
        except Exception as again:
            exc = again
    if await _final_failure(run, index, event, exc, attempt):
        return _HANDED_TO_HANDLERS  # type: ignore[no-any-return]
    return None


async def _observed(run: Run, spec: StepSpec, call: StepCall, event: Event, attempt: int) -> Any:
    """``call(event)`` with what was asked for around it: lifecycle events, a span."""
    if run.lifecycle:
        started_event = StepStartedEvent(step_name=spec.name, attempt=attempt, input_event=event)
        await run.stream.write(started_event)
    started = trio.current_time()
    span = (
        contextlib.nullcontext()
        if run.tracer is None
        else step_span(run.tracer, run.workflow_name, run.run_id, spec.name, attempt)
    )
    with span:
        try:
            result = await call(event)
        except Exception as exc:
            if run.lifecycle:
                await _report_finished(run, spec, event, attempt, started, exc)
            raise
    if run.lifecycle:
        await _report_finished(run, spec, event, attempt, started, None)
    return result


async def _report_finished(
    run: Run,
    spec: StepSpec,
    event: Event,
    attempt: int,
    started: float,
    failure: Exception | None,
) -> None:
    finished = StepFinishedEvent(
        step_name=spec.name,
        attempt=attempt,
        duration=trio.current_time() - started,
        succeeded=failure is None,
    )
    try:
        await run.stream.write(finished)
    except BaseException:
        if failure is not None:
            # The run ended while this waited for room: the step's failure must not be lost
            # with the report, so it is recorded (and reported with the end) before the
            # cancellation goes on.
            report = StepFailedEvent(
                step_name=spec.name, attempt=attempt, exception=failure, input_event=event
            )
            run.fail(spec.name, failure, report)
        raise


def _step_call(run: Run, spec: StepSpec) -> StepCall:
    """A one-argument coroutine function running the step on an event: its parameters in
    place, in a thread for a plain ``def`` step, under its timeout."""
    method = getattr(run.workflow, spec.name)
    ctx: Context | SyncContext = run.context if spec.is_async else SyncContext(run.context)
    if spec.context_position == "first":
        method = functools.partial(method, ctx)
    elif spec.context_position == "last":
        method = functools.partial(_context_last, method, ctx)
    call: StepCall = method if spec.is_async else functools.partial(_in_thread, method)
    if spec.config.timeout is not None:
        call = functools.partial(_with_timeout, spec.config.timeout, call)
    return call


def _context_last(method: Callable[..., Any], ctx: object, event: Event) -> Any:
    return method(event, ctx)


async def _in_thread(method: Callable[[Event], Any], event: Event) -> Any:
    # The run's scope waits for the thread (no abandoning), so no step code outlives the run.
    # A thread that returns after its run was cancelled must not report success: the
    # cancellation the thread ignored is raised here, before anything is done with the result.
    result = await trio.to_thread.run_sync(method, event, abandon_on_cancel=False)
    await trio.lowlevel.checkpoint_if_cancelled()
    return result


async def _with_timeout(seconds: float, call: StepCall, event: Event) -> Any:
    with trio.fail_after(seconds):
        return await call(event)


async def _final_failure(run: Run, index: int, event: Event, exc: Exception, attempt: int) -> bool:
    """Report a step's final failure and hand it to the step's error handlers, if any.

    Returns whether the worker goes on (an error handler took the failure); otherwise the
    failure has been recorded and the run is ending.
    """
    spec = run.graph.steps[index]
    exc.add_note(
        f"trioflow: raised in step {spec.name!r} of {run.workflow_name} (run {run.run_id})"
    )
    failed = StepFailedEvent(step_name=spec.name, attempt=attempt, exception=exc, input_event=event)
    handlers = run.graph.handlers_for[index]
    if not handlers or run.outcome is not None:
        run.fail(spec.name, exc, failed)  # decided at once; the report goes out with the end
        return False
    try:
        await run.stream.write(failed)  # the run goes on, so the report waits its turn
    except BaseException:
        # The run ended while the report waited (timeout, cancel): the failure was a handler's
        # to deal with, so it decides nothing, but its report still goes out with the end.
        run.failure_reports.append(failed)
        raise
    for handler in handlers:
        run.inboxes[handler].put(failed)
    return True
