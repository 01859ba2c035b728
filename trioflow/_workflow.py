"""`Workflow`: the base class users subclass, and the entry points that start runs."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic

import trio

from ._core._context import Context
from ._core._graph import (
    ADDED_STEPS,
    InvalidGraph,
    WorkflowGraph,
    added_steps,
    declared_steps,
    forget_graph,
    graph_of,
)
from ._core._idle import IdleWatch, WorkerState, current_worker
from ._core._log import add_note, describe
from ._core._resources import ResourceBlock
from ._core._run import Run
from ._core._state import is_cancellation
from ._core._stream import EventStream
from ._errors import WorkflowValidationError, require_trio
from ._events import Event, StartEvent, StopEvent
from ._handler import R, WorkflowHandler
from ._step import GRAPH_CHECKS, checks_named, declaration_of

DEFAULT_TIMEOUT = 45.0
"""Seconds a run may take unless ``Workflow(timeout=...)`` says otherwise (LlamaIndex's)."""

DEFAULT_STREAM_BUFFER = 256
"""Events the stream holds before a writer waits for the consumer."""

DEFAULT_BLOCKING_THRESHOLD = 0.1
"""Seconds an async step may hold the event loop before trioflow warns about it."""


class Workflow(Generic[R]):
    """Base class of workflows: subclass it and decorate async methods with `step`.

    An instance is a reusable definition: each `run` or `start` has its own context, and runs
    are isolated even when many run at once. The graph is checked when the first instance of a
    class is made.

    For type checkers it is generic in what `run` returns: a plain ``Workflow`` returns
    ``Any``, as ``StopEvent.result`` is; ``class MyFlow(Workflow[MyStop])`` is a workflow that
    ends with the `StopEvent` subclass ``MyStop``, whose ``run()`` returns that event (the
    graph's check refuses a ``Workflow[R]`` its steps contradict).

    Args:
        timeout: seconds a run may take, or None for no limit.
        stream_buffer: events the stream holds before writers wait for the consumer.
        blocking_threshold: warn (`LoopBlockedWarning`, once per step) when an async step holds
            the event loop longer than this many seconds; None switches the check off.
        num_concurrent_runs: at most this many runs of this instance at once; another waits
            for one to end before it starts (its timeout counts from its start). None: any.
        workflow_name: its name (`workflow_name`); by default its class's module and
            qualified name.
        skip_graph_checks: graph checks to skip (LlamaIndex's): "reachability" (every step
            can be reached from the start event or the caller's events), "dead_end" (what
            every step returns can lead to the run's end) and "terminal_event" (every event
            type returned is taken by a step, unless it ends the run or is for the caller).

    Raises:
        WorkflowValidationError: the steps do not form a valid graph (every problem listed).
    """

    # Class-level defaults, so a subclass whose own __init__ forgets super().__init__() still
    # works (its graph is then checked at its first run).
    timeout: float | None = DEFAULT_TIMEOUT
    stream_buffer: int = DEFAULT_STREAM_BUFFER
    blocking_threshold: float | None = DEFAULT_BLOCKING_THRESHOLD
    num_concurrent_runs: int | None = None
    _run_slots: trio.CapacityLimiter | None = None
    _workflow_name: str | None = None
    _skip_graph_checks: frozenset[str] = frozenset()
    #: The graph checks passed (`graph`).
    _checked = False

    def __init__(
        self,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        stream_buffer: int = DEFAULT_STREAM_BUFFER,
        blocking_threshold: float | None = DEFAULT_BLOCKING_THRESHOLD,
        num_concurrent_runs: int | None = None,
        workflow_name: str | None = None,
        skip_graph_checks: Iterable[str] | None = None,
    ) -> None:
        if timeout is not None and not _positive(timeout):
            raise ValueError(
                f"timeout must be a positive number of seconds or None, got {timeout!r}"
            )
        if (
            isinstance(stream_buffer, bool)
            or not isinstance(stream_buffer, int)
            or stream_buffer < 0
        ):
            raise ValueError(f"stream_buffer must be an int >= 0, got {stream_buffer!r}")
        if blocking_threshold is not None and not _positive(blocking_threshold):
            raise ValueError(
                f"blocking_threshold must be a positive number of seconds or None, "
                f"got {blocking_threshold!r}"
            )
        if num_concurrent_runs is not None and (
            isinstance(num_concurrent_runs, bool)
            or not isinstance(num_concurrent_runs, int)
            or num_concurrent_runs < 1
        ):
            raise ValueError(
                f"num_concurrent_runs must be an int >= 1 or None, got {num_concurrent_runs!r}"
            )
        if workflow_name is not None and (not isinstance(workflow_name, str) or not workflow_name):
            raise ValueError(f"workflow_name must be a non-empty string, got {workflow_name!r}")
        self.timeout = timeout
        self.stream_buffer = stream_buffer
        self.blocking_threshold = blocking_threshold
        self.num_concurrent_runs = num_concurrent_runs
        if num_concurrent_runs is not None:
            self._run_slots = trio.CapacityLimiter(num_concurrent_runs)
        self._workflow_name = workflow_name
        self._skip_graph_checks = checks_named(skip_graph_checks, GRAPH_CHECKS, "a workflow")
        self._checked = False
        _checked_graph(self)  # validate now: a broken graph fails at construction

    @property
    def workflow_name(self) -> str:
        """This workflow's name: the one given (``Workflow(workflow_name=...)``), else its
        class's module and qualified name (``myapp.flows.Research``), as LlamaIndex names it."""
        if self._workflow_name is not None:
            return self._workflow_name
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def add_step(cls, func: Callable[..., Any]) -> None:
        """Add ``func``, a function decorated with ``@step`` outside the class (it takes no
        ``self``: ``(ev)``, ``(ctx, ev)`` or ``(ev, ctx)``), as a step of this class (not of its
        subclasses), under its name; ``@step(workflow=cls)`` does this. The graph is checked
        again when next used.

        Raises:
            WorkflowValidationError: ``func`` is no ``@step`` function, or the class has a step
                of that name.
        """
        if declaration_of(func) is None:
            raise WorkflowValidationError(
                cls.__name__, [f"{func!r} is not decorated with @step: it cannot be a step"]
            )
        name = getattr(func, "__name__", "")
        if name in declared_steps(cls):
            raise WorkflowValidationError(
                cls.__name__, [f"it has a step {name!r} already: give the function another name"]
            )
        setattr(cls, ADDED_STEPS, {**added_steps(cls), name: declaration_of(func)})
        forget_graph(cls)

    def open_resources(self) -> AbstractAsyncContextManager[None, None]:
        """Own this workflow's workflow-scoped resources (``Resource(f, scope="workflow")``)
        for the length of an ``async with`` block around its runs.

        Values made while the block is open are shared by the runs of this instance, and any
        that was entered as a context manager is exited when the block ends, the last made
        first, after which they are forgotten. Without an open block a workflow-scoped value
        is kept as long as the instance, and one that would need exiting cannot be made.

        Raises:
            WorkflowRuntimeError: they are open already.
            Exception: on leaving, what a resource raised as it was exited (the first, with
                notes naming the others), unless the block raised.
        """
        return ResourceBlock(self)

    @property
    def graph(self) -> WorkflowGraph:
        """The validated graph of this workflow's steps (built once per class).

        Raises:
            WorkflowValidationError: the steps do not form a valid graph, or a graph check
                this workflow does not skip (``skip_graph_checks``) found a problem.
        """
        return _checked_graph(self)

    async def run(
        self, /, start_event: StartEvent | None = None, *, ctx: Context | None = None, **fields: Any
    ) -> R:
        """Run the workflow to its end and return the result; stream events are discarded.

        Pass a start event, or the start event's fields as keywords. With ``ctx`` (a
        ``Context(workflow)`` of the caller's), the run uses that context: its store is what
        earlier runs given it left.

        Raises:
            Exception: a failed step's own exception, with a note naming the step.
            WorkflowTimeoutError: the run exceeded ``timeout``.
            WorkflowCancelledError: the run was cancelled.
        """
        event = self._start_event(start_event, fields)
        return await self._start(event, streamed=False, held=_held(ctx)).run_to_end()

    def start(
        self, /, start_event: StartEvent | None = None, *, ctx: Context | None = None, **fields: Any
    ) -> AbstractAsyncContextManager[WorkflowHandler[R], None]:
        """Start a run inside an ``async with`` block and hand out its `WorkflowHandler`.

        The run's steps live in a nursery inside the block. Leaving the block while the run is
        unfinished cancels it; once the block has exited, no step code of the run executes.
        Leaving raises the run's failure or timeout unless `WorkflowHandler.result` already
        raised it; a cancellation the caller asked for raises nothing. ``ctx``: as for `run`.
        """
        return self._start(self._start_event(start_event, fields), held=_held(ctx))

    async def _run_child(
        self,
        parent: Context[Any],
        start_event: StartEvent | None,
        forward: bool | tuple[type[Event], ...],
        ctx: Context[Any] | None,
        fields: dict[str, Any],
    ) -> R:
        """`Context.run_workflow`: a run of this workflow inside a step of ``parent``'s run."""
        event = self._start_event(start_event, fields)
        block = self._start(event, streamed=forward is not False, held=_held(ctx))
        child = block._run
        worker = current_worker.get()
        if worker is not None:  # the step waits while its children are idle
            _watch_child(child, worker, parent._run.idle)
        try:
            async with block as handler:
                parent._router.children.append(child.router)
                try:
                    if forward is not False:
                        await _forward(handler, parent, Event if forward is True else forward)
                    return await handler.result()
                except BaseException as exc:
                    if not is_cancellation(exc):
                        where = f"child run {child.run_id} of {child.workflow_name}"
                        add_note(exc, f"trioflow: in {where}")
                    raise
                finally:
                    parent._router.children.remove(child.router)
        finally:
            if worker is not None:
                worker.children -= 1
                if child.idle.told_idle:
                    worker.idle_children -= 1

    def _start_event(self, start_event: StartEvent | None, fields: dict[str, Any]) -> StartEvent:
        expected = self.graph.start_event_type
        if start_event is not None:
            if fields:
                raise TypeError("pass either a start event or its fields, not both")
            if not isinstance(start_event, expected):
                raise TypeError(
                    f"{type(self).__name__} starts with {expected.__name__}, got {start_event!r}"
                )
            return start_event
        try:
            return expected(**fields)
        except TypeError as exc:
            raise TypeError(f"cannot make the start event {expected.__name__}: {exc}") from None

    def _start(
        self,
        start_event: StartEvent,
        *,
        streamed: bool = True,
        stream: EventStream | None = None,
        **durable: Any,
    ) -> _RunBlock[R]:
        """A run's block. ``durable`` may hold ``held`` (the caller's context); ``stream``, with
        ``run_id``, ``durable`` and ``time_used``, makes it a durable run
        (`trioflow._durable.start_durable`)."""
        require_trio("a trioflow run")  # before trio.open_nursery() fails obscurely
        if stream is None:
            stream = EventStream(self.stream_buffer)
        if not streamed:
            stream.discard_unread()  # `run()`: nobody will read, from the first event on
        run = Run(
            workflow=self,
            graph=self.graph,
            start_event=start_event,
            timeout=self.timeout,
            stream=stream,
            blocking_threshold=self.blocking_threshold,
            **durable,
        )
        return _RunBlock(run)


class _RunBlock(Generic[R]):
    """The ``async with`` of `Workflow.start`: a nursery holding the run's task around the
    caller's block.

    A class rather than ``@asynccontextmanager``: contextlib assigns ``__traceback__`` to an
    exception that passes through a generator, which an exception that is a frozen dataclass
    refuses (``FrozenInstanceError`` in place of the step's own exception). Here the block's
    exception is either let through untouched (``__aexit__`` returns None) or replaced by a
    `raise`, and never wrapped in the group a strict nursery would make of it: the nursery only
    ever sees a body that ended cleanly.
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self._handler: WorkflowHandler[R] = WorkflowHandler(run)
        # Made when the block is entered: `run_to_end` needs none.
        self._nursery: AbstractAsyncContextManager[trio.Nursery] | None = None

    async def run_to_end(self) -> R:
        """`Workflow.run`: the run's task is the caller's own, since nothing else happens in
        the block while the run goes on (a task and a nursery fewer per run). When `Run.main`
        returns, the outcome is decided and the steps have unwound: the result is there.
        What it raises (the caller's cancellation, a Ctrl-C) is what leaving a ``start()``
        block would raise (`_exit_error`): the run's failure, or a step's ``SystemExit``,
        before a cancellation; the nursery's group of one exception as that exception."""
        self._run.take_held_context()
        try:
            await self._run.main()
        except BaseException as exc:
            body = _one_exception(exc)
            error = _exit_error(self._handler, body)
            assert error is not None  # (there is a body error)
            if error is exc:
                raise
            if error is body:
                raise body from None
            raise error  # noqa: B904 (the run's failure; what ended the block is its context)
        return self._handler.result_nowait()

    async def __aenter__(self) -> WorkflowHandler[R]:
        self._run.take_held_context()  # before anything runs: a context in use is refused
        manager = self._nursery = trio.open_nursery()
        nursery = await manager.__aenter__()
        self._run.state.on_fatal.append(nursery.cancel_scope.cancel)
        try:
            await nursery.start(self._run.main)
        except BaseException as exc:
            # Cancelled before the run got under way (the caller's scope): the nurseries'
            # groups of `trio.Cancelled` reach the caller as one `trio.Cancelled`.
            error = _one_cancelled(exc) or exc
            try:
                await manager.__aexit__(type(error), error, error.__traceback__)
            except BaseExceptionGroup as group:
                if _one_cancelled(group) is not None and isinstance(error, trio.Cancelled):
                    raise error from None
                raise
            raise error from None
        return self._handler

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        body_error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._run.state.stop()  # leaving the block ends the run, if still undecided
        manager = self._nursery
        assert manager is not None  # (entered)
        try:
            await manager.__aexit__(None, None, None)
        except BaseException:
            # Leaving a nursery is a checkpoint, so a cancellation of the caller's scope can
            # surface here. What the run and the block raised still comes first.
            error = _exit_error(self._handler, body_error)
            if error is None or is_cancellation(error):
                raise
            raise error  # noqa: B904 (the cancellation stays attached as __context__)
        error = _exit_error(self._handler, body_error)
        if error is not None and error is not body_error:
            raise error
        # Else nothing, or the block's own exception as it was. Returning None, not False,
        # tells type checkers that the block never swallows an exception (so a function that
        # returns from inside ``async with flow.start()`` needs no return after it).


def _exit_error(handler: WorkflowHandler, body_error: BaseException | None) -> BaseException | None:
    """What leaving a `start()` block raises: the block's own exception, or else the run's
    failure or timeout unless `result()` raised it already. A real error beats a cancellation,
    as in a trio nursery: the enclosing scope would swallow the Cancelled and the error with it.
    """
    unreported = handler.unreported_failure()
    if body_error is None or unreported is body_error:
        return unreported
    if unreported is not None:
        if is_cancellation(body_error) or not isinstance(unreported, Exception):
            # A step's KeyboardInterrupt or SystemExit beats whatever the block raised.
            return unreported
        add_note(body_error, f"trioflow: the run had also failed: {describe(unreported)}")
    return body_error


def _one_exception(error: BaseException) -> BaseException:
    """What stands for ``error`` from a run's nursery: itself; for a group (nested) of
    `trio.Cancelled` only, one `trio.Cancelled`; for a group of one exception besides them (a
    Ctrl-C delivered in the run's nursery), that exception; else the group."""
    if not isinstance(error, BaseExceptionGroup):
        return error
    cancelled = _one_cancelled(error)
    if cancelled is not None:
        return cancelled
    rest = error.split(trio.Cancelled)[1]
    leaves = list(_leaves(rest)) if rest is not None else []
    return leaves[0] if len(leaves) == 1 else error


def _leaves(group: BaseException) -> Iterator[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        for inner in group.exceptions:
            yield from _leaves(inner)
    else:
        yield group


def _one_cancelled(error: BaseException) -> trio.Cancelled | None:
    """A `trio.Cancelled` standing for ``error``, when it is one or a group of nothing else."""
    if isinstance(error, trio.Cancelled):
        return error
    if isinstance(error, BaseExceptionGroup) and error.split(trio.Cancelled)[1] is None:
        first = error.exceptions[0]
        return _one_cancelled(first)
    return None


def _held(ctx: object) -> Context | None:
    if ctx is None or isinstance(ctx, Context):
        return ctx
    raise TypeError(f"ctx must be a trioflow Context (Context(workflow)), got {ctx!r}")


def _positive(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < math.inf


def _checked_graph(workflow: Workflow[Any]) -> WorkflowGraph:
    """`Workflow.graph` (a function, not the property, which a step may shadow)."""
    try:
        graph = graph_of(type(workflow))
    except InvalidGraph as invalid:
        problems = invalid.problems_with(workflow._skip_graph_checks)
        raise WorkflowValidationError(invalid.workflow_name, problems) from None
    if graph.findings and not workflow._checked:
        problems = graph.problems(workflow._skip_graph_checks)
        if problems:
            raise WorkflowValidationError(graph.workflow_name, problems)
        workflow._checked = True
    return graph


async def _forward(
    handler: WorkflowHandler[Any],
    parent: Context[Any],
    wanted: type[Event] | tuple[type[Event], ...],
) -> None:
    """Put a child run's stream events of the ``wanted`` types on its parent's stream, as
    they come; never its terminal event."""
    async for streamed in handler.stream_events():
        if isinstance(streamed, wanted) and not isinstance(streamed, StopEvent):
            await parent.write_event_to_stream(streamed)


def _watch_child(child: Run, worker: WorkerState, parent_idle: IdleWatch) -> None:
    """While every child run a parent's step runs is idle, the step waits (for an answer to
    one of them), as a step parked in ``wait_for_event`` does: the parent may be idle too."""
    worker.children += 1

    def tell(idle: bool) -> None:
        worker.idle_children += 1 if idle else -1
        if idle:
            parent_idle.poke()
        else:
            parent_idle.working()

    child.idle.tell_parent(tell)
