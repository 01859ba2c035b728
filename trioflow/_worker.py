"""Step workers: take an event from the step's inbox, run the step, deal with the outcome.

A worker runs one event at a time through the step: under the step's timeout, retried by its
`RetryPolicy`, in a thread for a plain ``def`` step. Every failed attempt goes to the stream as
a `StepFailedEvent`; the final failure goes to the step's error handlers, or else ends the run.
The loop in `work` is the hot path of a hop between steps, so what it does per event is kept to
the minimum, and everything rarer lives in the helpers below it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ._context import Context, current_step
from ._events import Event, StepFailedEvent
from ._graph import StepSpec
from ._sync import SyncContext

if TYPE_CHECKING:
    from ._runtime import Run

StepCall = Callable[[Event], Awaitable[Any]]


async def work(run: Run, index: int) -> None:
    """One worker of step ``index``: runs until the run's scope is cancelled."""
    spec = run.graph.steps[index]
    current_step.set(spec.name)
    call = _step_call(run, spec)
    get = run.inboxes[index].getter()
    direct_routes = run.direct_routes
    waiters = run.waiters
    busy = False  # inside the step: a cancellation now means the step was still running
    try:
        while True:
            event = await get()
            if run.outcome is not None:
                return  # the run is over: start nothing new while the scope unwinds
            busy = True
            try:
                result = await call(event)
                attempt = 1
            except Exception as exc:
                retried = await _retry_or_fail(run, index, call, event, exc)
                if retried is None:
                    return  # the failure ends the run
                if retried is _HANDED_TO_HANDLERS:
                    busy = False
                    continue
                result, attempt = retried
            busy = False
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
        if busy:  # for WorkflowTimedOutEvent.active_steps
            run.interrupted_steps.add(spec.name)
        raise


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
        await trio.sleep(retry.delay_before(attempt))  # only this worker waits
        try:
            return await call(event), attempt
        except Exception as again:
            exc = again
    if await _final_failure(run, index, event, exc, attempt):
        return _HANDED_TO_HANDLERS  # type: ignore[no-any-return]
    return None


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
