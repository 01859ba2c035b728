"""Step workers: take an event from the step's inbox, run the step, deal with the outcome.

A worker runs one event at a time through the step: under the step's timeout, retried by its
`RetryPolicy`, in a thread for a plain ``def`` step. Every failed attempt goes to the stream as
a `StepFailedEvent`; the final failure goes to the step's error handlers, or else decides the
run. Attempts run outside any ``except`` block, so attempt 2 does not see attempt 1 in
`sys.exc_info` and its exception is not chained to attempt 1's.

Workers see their run through `Crew`, a protocol that names what they use and nothing more:
chiefly the run's `RunState` (to decide it), its `Router` (to route what steps return) and its
`EventStream` (to report), so the worker imports no run and the run imports the worker. The loop in
`work` is the hot path of a hop between steps, so what it does per event is kept to the
minimum, and everything rarer lives in the helpers below it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from .._errors import RunEndedError
from .._events import (
    CollectedEvents,
    Event,
    StepFailedEvent,
    StepFinishedEvent,
    StepRetryEvent,
    StepStartedEvent,
)
from .._retry import RetryInfo, current_retry, max_attempts, next_delay
from ._context import Context, current_context, current_execution, current_step
from ._graph import StepSpec, WorkflowGraph
from ._idle import IdleWatch, WorkerState, current_worker
from ._log import add_note, describe, log
from ._resources import Owner, Owners, call_values, exit_call, with_values, workflow_owner
from ._router import Router
from ._state import RunState, is_cancellation
from ._stream import EventStream
from ._sync import SyncContext
from ._tracing import step_span

StepCall = Callable[[Event], Awaitable[Any]]
WorkLoop = Callable[["Crew", int, "WorkerState"], Awaitable[None]]


class Observation:
    """What was asked for around step executions: lifecycle events, spans."""

    __slots__ = ("lifecycle", "observed", "tracer", "watched")

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        #: Lifecycle events go to the stream (its consumer asked for them).
        self.lifecycle = False
        #: Its idleness is watched for a parent run (`IdleWatch.tell_parent`).
        self.watched = False
        #: Step executions take the observed path (lifecycle events, spans, idleness).
        self.observed = tracer is not None

    def stream_lifecycle(self, on: bool) -> None:
        self.lifecycle = on
        self.observed = on or self.watched or self.tracer is not None

    def watch(self) -> None:
        """Take the observed path for a parent run that must know when this one is idle."""
        self.watched = self.observed = True


class Crew(Protocol):
    """What a worker sees of its run."""

    run_id: str
    workflow: Any
    graph: WorkflowGraph
    state: RunState
    router: Router
    stream: EventStream
    context: Context
    observation: Observation
    workers: list[WorkerState]
    idle: IdleWatch
    #: The owner of its run-scoped resources (None when no step takes any).
    resources: Owner | None

    @property
    def workflow_name(self) -> str: ...


async def work(crew: Crew, index: int, loop: WorkLoop | None = None) -> None:
    """One worker of step ``index``: runs until the run is decided. ``loop`` is
    what it does with the events it takes (`_work`, or a durable run's journaling loop).

    A step's `Exception` is the step's failure (retries, handlers, the run's failure). A
    `BaseException` that is no cancellation (``KeyboardInterrupt``, ``SystemExit``) decides the
    run too, and is kept for the caller, who gets it as itself (`RunState.crash`): letting it
    out of this task would turn it into an exception group and cancel the caller's scope.
    """
    spec = crew.graph.steps[index]
    me = WorkerState(spec.name, f"{crew.run_id}:{spec.name}.{len(crew.workers)}")
    crew.workers.append(me)
    # What the step's code sees of where it runs, whatever the loop (a durable loop names
    # each attempt in `current_execution` itself).
    current_worker.set(me)
    current_step.set(spec.name)
    current_execution.set(me)
    try:
        await (_work if loop is None else loop)(crew, index, me)
    except Exception as exc:
        # Not a step's failure (those are handled inside): trioflow's own error, or a
        # reporting write that failed. It still decides the run, never silently.
        crew.state.fail(spec.name, exc)
    except BaseException as exc:
        if is_cancellation(exc):
            raise
        add_note(exc, _step_note(crew, spec))
        crew.state.crash(spec.name, exc)
    finally:
        me.busy = False


async def _work(crew: Crew, index: int, me: WorkerState) -> None:
    spec = crew.graph.steps[index]
    call = _step_call(crew, spec)
    get = crew.router.inboxes[index].getter(first_yields=not crew.stream.unread_forever)
    # The router's hand-off table, read here rather than through a method call: this is the
    # hot path of a hop (see `Router.direct_routes`).
    direct, waiters = crew.router.direct_routes()
    state = crew.state
    observation = crew.observation
    while True:
        event = await get()
        if event is None or state.outcome is not None:
            return  # the run is decided: start nothing new while the scope unwinds
        me.taken += 1
        if observation.observed:  # lifecycle events or spans were asked for
            await _observed_execution(crew, index, me, call, event)
            continue
        me.busy = True
        try:
            result = await call(event)
        except Exception as exc:
            failure: Exception | None = exc
        else:
            failure = None
        attempt = 1
        if failure is not None:  # outside the `except` block: see the module docstring
            attempt, result, failure, elapsed = await _retry(crew, spec, call, event, failure)
            if failure is not None:
                me.busy = False
                await _final_failure(crew, index, event, failure, attempt, elapsed)
                continue
        me.busy = False
        if result is None:
            continue
        targets = direct.get(result.__class__)
        if targets is not None and not waiters:  # a plain event, nobody waits: hand it on
            for put in targets:
                put(result)
            continue
        try:
            await crew.router.emit(spec.name, result)
        except Exception as exc:
            failure = exc
        if failure is not None:
            # What the step returned cannot go anywhere: the step's failure, not retried
            # (running the step again would repeat whatever it already did).
            await _final_failure(crew, index, event, failure, attempt)


async def _observed_execution(
    crew: Crew, index: int, me: WorkerState, call: StepCall, event: Event
) -> None:
    """`_work`'s step execution while lifecycle events or spans are asked for: the same, with
    each attempt observed, its results always routed by the router, and the run's idle watch
    poked once they are (the worker is busy until then)."""
    spec = crew.graph.steps[index]
    me.busy = True
    crew.idle.working()
    try:
        attempt, result, failure, elapsed = await attempts(crew, spec, call, event)
        if failure is None and result is not None:
            try:
                await crew.router.emit(spec.name, result)
            except Exception as exc:
                failure, elapsed = exc, 0.0  # what it returned can go nowhere: its failure
        if failure is not None:
            await _final_failure(crew, index, event, failure, attempt, elapsed)
    finally:
        me.busy = False
    crew.idle.poke()


async def attempts(
    crew: Crew, spec: StepSpec, call: StepCall, event: Event
) -> tuple[int, Any, Exception | None, float]:
    """A step execution's attempts, the first and then those its retry policy asks for: the
    last one's number, its result, its failure (None if it succeeded) and the seconds from the
    first failure to the last (`_retry`)."""
    try:
        result = await _attempt(crew, spec, call, event, 1)
    except Exception as exc:
        failure = exc
    else:
        return 1, result, None, 0.0
    return await _retry(crew, spec, call, event, failure)  # (outside the `except` block)


async def _attempt(crew: Crew, spec: StepSpec, call: StepCall, event: Event, attempt: int) -> Any:
    if crew.observation.observed:
        return await _observed(crew, spec, call, event, attempt)
    return await call(event)


async def _retry(
    crew: Crew, spec: StepSpec, call: StepCall, event: Event, failure: Exception
) -> tuple[int, Any, Exception | None, float]:
    """Try again as the step's policy says, after attempt 1 failed with ``failure``. Returns
    the last attempt's number, its result, its failure (None if it succeeded), and the
    seconds from the first failure to the last."""
    retry = spec.config.retry
    attempt = 1
    first_failed = trio.current_time()
    elapsed = 0.0
    try:
        while retry is not None:
            delay, failure = next_delay(retry, elapsed, attempt, failure)
            if delay is None:
                break
            failed = failure_report(spec, attempt, failure, event, elapsed)
            try:
                await crew.stream.write(failed)
            except BaseException:
                crew.state.report(failed)  # the run is ending: report it with the end
                raise
            attempt += 1
            _log_retry(crew, spec, attempt, max_attempts(retry), delay, failure)
            if crew.observation.lifecycle:
                retrying = StepRetryEvent(
                    step_name=spec.name, attempt=attempt, delay=delay, exception=failure
                )
                await crew.stream.write(retrying)
            await trio.sleep(delay)  # only this worker waits
            current_retry.set(RetryInfo(attempt - 1, elapsed, failure, failed.failed_at))
            try:
                result = await _attempt(crew, spec, call, event, attempt)
            except Exception as exc:
                failure = exc
                elapsed = trio.current_time() - first_failed
            else:
                return attempt, result, None, elapsed
        return attempt, None, failure, elapsed
    finally:
        current_retry.set(None)  # (the worker's next step execution begins afresh)


def failure_report(
    spec: StepSpec, attempt: int, failure: Exception, event: Event, elapsed: float = 0.0
) -> StepFailedEvent:
    """The `StepFailedEvent` of attempt ``attempt`` of ``spec`` on ``event``, ``elapsed``
    seconds after the step execution's first failure."""
    return StepFailedEvent(
        step_name=spec.name,
        attempt=attempt,
        exception=failure,
        input_event=event,
        elapsed_seconds=elapsed,
    )


def _log_retry(
    crew: Crew,
    spec: StepSpec,
    attempt: int,
    most: int | None,
    delay: float,
    failure: Exception,
) -> None:
    log(
        logging.INFO,
        "step %r of %s (run %s) failed, attempt %d%s, retrying in %.3g s: %s",
        spec.name,
        crew.workflow_name,
        crew.run_id,
        attempt - 1,
        "" if most is None else f" of {most}",
        delay,
        describe(failure),
        extra={
            "workflow": crew.workflow_name,
            "run_id": crew.run_id,
            "step": spec.name,
            "attempt": attempt - 1,
        },
    )


async def _observed(crew: Crew, spec: StepSpec, call: StepCall, event: Event, attempt: int) -> Any:
    """``call(event)`` with what was asked for around it: lifecycle events, a span."""
    observation = crew.observation
    if observation.lifecycle:
        started_event = StepStartedEvent(step_name=spec.name, attempt=attempt, input_event=event)
        await crew.stream.write(started_event)
    started = trio.current_time()
    span = (
        contextlib.nullcontext()
        if observation.tracer is None
        else step_span(observation.tracer, crew.workflow_name, crew.run_id, spec.name, attempt)
    )
    with span:
        try:
            result = await call(event)
        except Exception as exc:
            if observation.lifecycle:
                await _report_finished(crew, spec, event, attempt, started, exc)
            raise
    if observation.lifecycle:
        await _report_finished(crew, spec, event, attempt, started, None, result)
    return result


async def _report_finished(
    crew: Crew,
    spec: StepSpec,
    event: Event,
    attempt: int,
    started: float,
    failure: Exception | None,
    result: Any = None,
) -> None:
    finished = StepFinishedEvent(
        step_name=spec.name,
        attempt=attempt,
        duration=trio.current_time() - started,
        succeeded=failure is None,
        returned=_returned(result),
    )
    try:
        await crew.stream.write(finished)
    except BaseException:
        if failure is not None:
            # The run ended while this waited for room: the step's failure must not be lost
            # with the report, so it is recorded (and reported with the end) before the
            # cancellation goes on.
            crew.state.fail(spec.name, failure, failure_report(spec, attempt, failure, event))
        raise


def _returned(result: Any) -> dict[str, int]:
    """The events a step returned (one, a fan-out's list, or none), counted by short name."""
    if isinstance(result, Event):
        return {type(result).__name__: 1}
    counts: dict[str, int] = {}
    if isinstance(result, list):
        for item in result:
            if isinstance(item, Event):
                name = type(item).__name__
                counts[name] = counts.get(name, 0) + 1
    return counts


def _step_call(crew: Crew, spec: StepSpec) -> StepCall:
    """A one-argument coroutine function running the step on an event: its parameters in
    place, in a thread for a plain ``def`` step, under its timeout."""
    method = spec.function or getattr(crew.workflow, spec.name)
    ctx: Context | SyncContext = crew.context if spec.is_async else SyncContext(crew.context)
    current_context.set(ctx)  # (in the worker's task: its step's code sees it)
    # Threads of one step of one run, sized by its workers: a `def` step waiting in a `ctx`
    # call keeps its thread, and no run can take thread slots from another.
    limiter = None if spec.is_async else trio.CapacityLimiter(spec.config.num_workers)
    call: StepCall
    if spec.resources:  # (made per call: the rest of the arguments are placed per call too)
        owners = Owners(crew.resources, workflow_owner(crew.workflow))
        call = functools.partial(_with_resources, spec, method, ctx, limiter, owners)
    else:
        call = _placed(spec, method, ctx, limiter)
    if spec.config.timeout is not None:
        call = functools.partial(_with_timeout, spec.config.timeout, call)
    return call


def _placed(
    spec: StepSpec,
    method: Callable[..., Any],
    ctx: Context | SyncContext,
    limiter: trio.CapacityLimiter | None,
) -> StepCall:
    """``method`` as a one-argument coroutine function: the event (or what a join or a
    collecting step gets) and ``ctx`` in their places, in a thread with a ``limiter``."""
    if spec.slots:  # a join: the events it was given go in its parameters' places
        method = functools.partial(_joined, method, ctx, spec.context_index)
    elif spec.context_position == "first":
        method = functools.partial(method, ctx)
    elif spec.context_position == "last":
        method = functools.partial(_context_last, method, ctx)
    if spec.collect is not None:  # a collecting step takes a list
        method = functools.partial(_listed, method)
    if limiter is None:
        return method
    return functools.partial(_in_thread, method, limiter)


async def _with_resources(
    spec: StepSpec,
    method: Callable[..., Any],
    ctx: Context | SyncContext,
    limiter: trio.CapacityLimiter | None,
    owners: Owners,
    event: Event,
) -> Any:
    """One call of a step that takes resources: they are made (here, in trio, even for a
    ``def`` step), put in their places, and those living for the call exited after it."""
    stack = contextlib.AsyncExitStack()
    try:
        values = await call_values(spec.resources, owners, stack)
        positions = tuple(r.position for r in spec.resources)
        result = await _placed(spec, with_values(method, positions, values), ctx, limiter)(event)
    except BaseException as exc:
        await exit_call(stack, exc)
        raise
    await exit_call(stack, None)
    return result


def _context_last(method: Callable[..., Any], ctx: object, event: Event) -> Any:
    return method(event, ctx)


def _joined(
    method: Callable[..., Any], ctx: object, at: int | None, collected: CollectedEvents
) -> Any:
    arguments: list[object] = list(collected.events)
    if at is not None:
        arguments.insert(at, ctx)
    return method(*arguments)


def _listed(method: Callable[..., Any], collected: CollectedEvents) -> Any:
    return method(list(collected.events))


async def _in_thread(
    method: Callable[[Event], Any], limiter: trio.CapacityLimiter, event: Event
) -> Any:
    # The run's scope waits for the thread (no abandoning), so no step code outlives the run.
    # A thread that returns after its run was cancelled must not report success: the
    # cancellation the thread ignored is raised here, before anything is done with the result.
    result = await trio.to_thread.run_sync(method, event, abandon_on_cancel=False, limiter=limiter)
    await trio.lowlevel.checkpoint_if_cancelled()
    return result


async def _with_timeout(seconds: float, call: StepCall, event: Event) -> Any:
    with trio.fail_after(seconds):
        return await call(event)


def _step_note(crew: Crew, spec: StepSpec, event: Event | None = None) -> str:
    # No run id: one exception object raised by many runs gets the note once.
    note = f"trioflow: raised in step {spec.name!r} of {crew.workflow_name}"
    if isinstance(event, StepFailedEvent):
        # An error handler's failure, often the failure it was given, re-raised: where it
        # began matters more than where it ended.
        note += f" while handling the failure of step {event.step_name!r}"
    return note


async def _final_failure(
    crew: Crew,
    index: int,
    event: Event,
    exc: Exception,
    attempt: int,
    elapsed: float = 0.0,
    scope: object = None,
) -> None:
    """Report a step's final failure (``elapsed`` seconds after its first) and hand it to the
    step's error handlers, if any (in the fan-out stream ``scope`` of the failed execution);
    else it decides the run (unless something else did already)."""
    spec = crew.graph.steps[index]
    state = crew.state
    add_note(exc, _step_note(crew, spec, event))
    failed = failure_report(spec, attempt, exc, event, elapsed)
    handlers = crew.graph.handlers_for[index]
    if state.outcome is not None and isinstance(exc, RunEndedError):
        return  # a send racing the run's end: nothing to report
    if state.outcome is not None or not handlers:
        state.fail(spec.name, exc, failed)
        return
    try:
        await crew.stream.write(failed)  # the run goes on, so the report waits its turn
    except BaseException:
        # The run ended while the report waited (timeout, cancel): the failure was a handler's
        # to deal with, so it decides nothing, but its report still goes out with the end.
        state.report(failed)
        raise
    crew.router.to_handlers(failed, handlers, scope)
