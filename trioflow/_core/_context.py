"""`Context`: what a step sees of its run (stream, routing, collected events, store)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

import trio
from trio.lowlevel import checkpoint_if_cancelled

from .._errors import WorkflowRuntimeError
from .._events import Event, StartEvent, StopEvent
from .._retry import RetryInfo, current_retry
from ._cancel import cancel_pending
from ._collect import Collector
from ._idle import current_worker
from ._router import Router
from ._state_store import DICT_STATE, StateClass, StateT, Store
from ._stream import EventStream

#: The step whose code is running in this task; set once by each step worker.
current_step: ContextVar[str] = ContextVar("trioflow_current_step", default="")
#: The context the step whose code runs in this task was given (`Context.get_step_context`):
#: set once by each step worker (its thread, for a plain ``def`` step, inherits it).
current_context: ContextVar[Any] = ContextVar("trioflow_step_context", default=None)
#: The step execution under way in this task, whose ``key`` is `Context.task_key`: the
#: worker's `WorkerState` (set once per worker), or a durable run's `TaskRef` (per attempt).
current_execution: ContextVar[Any] = ContextVar("trioflow_execution", default=None)

_E = TypeVar("_E", bound=Event)


class Context(Generic[StateT]):
    """The run's context, passed to steps that declare a ``ctx: Context`` parameter
    (``ctx: Context[MyState]`` for a workflow with typed state: `Store`).

    Every run has its own, and steps of one run share it. A caller may also make one,
    ``Context(workflow)``, and hand it to runs of that workflow, one after the other
    (``workflow.run(ctx=ctx)``): each run starts with the store the one before left (a chat's
    state between its turns). `to_dict` and `from_dict` save it and read it back.
    """

    def __init__(self, workflow: Any) -> None:
        graph = getattr(workflow, "graph", None)
        if graph is None or not hasattr(graph, "steps"):
            raise TypeError(f"Context() takes the workflow it is for, got {workflow!r}")
        self._start(type(workflow), graph.state_class)

    def _start(self, workflow_type: type, state_class: StateClass = DICT_STATE) -> None:
        """A context of ``workflow_type``'s runs (whose state is of ``state_class``) that no
        run uses yet."""
        #: The workflow class whose runs may use it.
        self._workflow_type = workflow_type
        #: The run's state: of the class the workflow's steps name, or a `DictState`.
        self.store: Store[StateT] = Store._of(state_class)
        #: The run that uses it now or used it last (None: none yet).
        self._run: Any = None
        self._run_id = ""
        self._router: Router = _NOT_IN_A_RUN
        self._stream: EventStream = _NOT_IN_A_RUN
        self._send_nowait = _not_in_a_run
        self._collector = Collector()
        #: Event classes `write_event_to_stream` has checked: they may go to the stream.
        self._streamable: set[type] = set()

    @classmethod
    def _of_run(cls, run: Any) -> Context[Any]:
        """A run's own context (for a run the caller gave none)."""
        context = cls.__new__(cls)
        context._start(type(run.workflow), run.graph.state_class)
        context._bind(run)
        return context

    def _claim(self, run: Any) -> None:
        """Note that ``run`` (a `Run`) uses this context.

        Raises:
            WorkflowRuntimeError: the context is for another workflow, or another run that
                has not ended uses it.
        """
        if type(run.workflow) is not self._workflow_type:
            raise WorkflowRuntimeError(
                f"this context is for runs of {self._workflow_type.__name__}, not of "
                f"{type(run.workflow).__name__}"
            )
        if self._run is not None and not self._run.state.finished.is_set():
            raise WorkflowRuntimeError(
                f"this context is in use by run {self._run.run_id}, which has not ended: a "
                "context goes to one run at a time"
            )
        self._run = run
        self._run_id = run.run_id

    def _bind(self, run: Any) -> None:
        """Make this the context of ``run``, whose steps it serves from now on (`_claim`)."""
        self._claim(run)
        self._router = run.router
        self._stream = run.stream
        self._send_nowait = run.stream.send_nowait
        self._collector = Collector()  # collected events belong to the run that got them
        self._streamable = set()

    def to_dict(self) -> dict[str, Any]:
        """This context as JSON values, for `from_dict`: its store (``{"store": {...}}``; a
        typed state as its fields, with ``"state_type"``, the qualified name of its class).

        Raises:
            TypeError: a store value is no JSON value (the message names its key).
        """
        store = self.store
        try:
            data = store._class.to_json(store._state)
        except TypeError as exc:
            raise TypeError(
                f"ctx.to_dict(): {exc}; a saved context holds JSON values (None, bool, int, "
                "float, str, list, dict with str keys)"
            ) from None
        if not store._class.typed:
            return {"store": data}
        return {"store": data, "state_type": store._class.name}

    @classmethod
    def from_dict(cls, workflow: Any, data: Mapping[str, Any]) -> Context[Any]:
        """A context for runs of ``workflow`` holding what `to_dict` saved.

        Raises:
            ValueError: ``data`` is not what `to_dict` returns, or holds a state that does
                not fit ``workflow``'s state type.
        """
        store = data.get("store") if isinstance(data, Mapping) else None
        if not isinstance(store, Mapping) or not all(isinstance(k, str) for k in store):
            raise ValueError(
                "Context.from_dict() takes what ctx.to_dict() returned: "
                f'{{"store": {{str: value}}}}, got {data!r:.200}'
            )
        context: Context[Any] = cls(workflow)
        try:
            context.store._load(store, data.get("state_type"))
        except ValueError as exc:
            raise ValueError(f"Context.from_dict(): {exc}") from None
        return context

    @property
    def run_id(self) -> str:
        """The id of this run (the same as `WorkflowHandler.run_id`); of a context held by
        the caller, the id of the run that uses it now or used it last.

        Raises:
            WorkflowRuntimeError: no run has used this context yet.
        """
        if not self._run_id:
            raise WorkflowRuntimeError("this context has not been given to a run yet")
        return self._run_id

    @staticmethod
    def get_step_context() -> Any:
        """The context of the step whose code calls this: the ``ctx`` that step has or would
        have (a `SyncContext` in a plain ``def`` step), for code the step calls that was not
        handed it (LlamaIndex's ``Context.get_step_context()``).

        Raises:
            WorkflowRuntimeError: called outside a step's code.
        """
        context = current_context.get()
        if context is None:
            raise WorkflowRuntimeError(
                "Context.get_step_context() may only be called from within a step function"
            )
        return context

    def retry_info(self) -> RetryInfo:
        """Where the step execution calling this stands: its retry number (0 on the first
        attempt), the seconds since its first failure, and its last failure's error and time
        (None on the first attempt), as LlamaIndex's ``ctx.retry_info()``.

        Raises:
            WorkflowRuntimeError: called outside a step's code.
        """
        if current_context.get() is None:
            raise WorkflowRuntimeError(
                "ctx.retry_info() describes a step's attempt: use it in a step"
            )
        return current_retry.get() or RetryInfo()

    @property
    def task_key(self) -> str:
        """A key for the step execution under way: the same for every attempt of it (its
        retries) and, in a durable run, for every recovery of it after its process stopped;
        different for any other. Pass it as the idempotency key of effects outside the run
        (a payment, an e-mail), so that running a step again does not repeat them.

        Raises:
            WorkflowRuntimeError: called outside a step's code.
        """
        execution = current_execution.get()
        if execution is None:
            raise WorkflowRuntimeError("ctx.task_key names a step execution: use it in a step")
        key: str = execution.key
        return key

    async def write_event_to_stream(self, event: Event) -> None:
        """Put ``event`` on the run's stream, waiting while the stream's buffer is full.

        The event is available to the consumer at once; it runs at this task's next
        checkpoint at the latest.
        """
        # This is the hottest path of a streaming run: a cancellation check and a channel
        # append, with the scheduler involved only when the buffer is full or a millisecond
        # has passed since the stream last yielded (`EventStream.yield_if_due`).
        if event.__class__ not in self._streamable:
            self._check_streamable(event)
        if cancel_pending():  # (a cancel point without a coroutine: see `_cancel`)
            await checkpoint_if_cancelled()
        stream = self._stream
        try:
            self._send_nowait(event)
        except trio.WouldBlock:
            await stream.write_when_full(event)
            return
        written = stream.written + 1  # for statistics(): see EventStream.peak
        stream.written = written
        if not written & 63:  # every 64th write, look at the clock
            await stream.yield_if_due()

    def _check_streamable(self, event: object) -> None:
        if not isinstance(event, Event) or isinstance(event, StopEvent):
            raise _not_streamable(event)
        # Remembered per run (and so dropped with it): the check costs a set lookup after.
        self._streamable.add(event.__class__)

    def send_event(self, event: Event, step: str | None = None) -> None:
        """Route ``event`` to every step that accepts it, or only to ``step``.

        Raises:
            WorkflowRuntimeError: no step accepts the event, or ``step`` does not exist or
                does not accept it.
        """
        if not isinstance(event, Event):
            raise TypeError(f"send_event() takes an Event, got {event!r}")
        self._router.send(event, step)

    async def run_workflow(
        self,
        workflow: Any,
        start_event: StartEvent | None = None,
        /,
        *,
        forward: bool | tuple[type[Event], ...] = False,
        ctx: Context[Any] | None = None,
        **fields: Any,
    ) -> Any:
        """Run ``workflow`` as a child of this run, inside the calling step, and return its
        result (as `Workflow.run` does).

        The child run lives in the step's scope: cancelling this run (or its timeout, or the
        step's) cancels it, and its failure is raised here, the step's failure (retried as the
        step is). Events sent to this run that nothing in it takes go to the child (the
        answers to the questions it asks).

        Args:
            workflow: the child workflow (any `Workflow`, this one's too).
            start_event: its start event, or pass the start event's fields as keywords.
            forward: put the child's stream events on this run's stream as they come: True
                for all of them, or a tuple of event types for those; its terminal event
                never (its outcome is what this returns or raises).
            ctx: a context for the child run (``Context(workflow)``), as ``run(ctx=...)``.

        Raises:
            Exception: the child's failure, with a note naming it.
            WorkflowRuntimeError: this context belongs to no run under way.
        """
        if self._router is _NOT_IN_A_RUN:
            raise WorkflowRuntimeError(
                "run_workflow() runs a child of a run: call it from one of the run's steps"
            )
        if forward is not True and forward is not False:
            forward = tuple(forward)
            if not all(isinstance(t, type) and issubclass(t, Event) for t in forward):
                raise TypeError(f"forward= takes True, False or event types, got {forward!r}")
        run_child = getattr(workflow, "_run_child", None)
        if run_child is None:
            raise TypeError(f"run_workflow() runs a Workflow, got {workflow!r}")
        return await run_child(self, start_event, forward, ctx, fields)

    async def wait_for_event(
        self,
        event_type: type[_E],
        *,
        waiter_event: Event | None = None,
        requirements: Mapping[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (API.md fixes this parameter)
    ) -> _E:
        """Suspend this step until an event of ``event_type`` whose fields equal
        ``requirements`` arrives, and return it. The step is not re-run.

        The waiter is registered before ``waiter_event`` (typically an `InputRequiredEvent`)
        is written to the stream, so an answer cannot slip past it. A matching event resumes
        the oldest matching waiter and goes nowhere else.

        Raises:
            trio.TooSlowError: nothing matching arrived within ``timeout`` seconds.
        """
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"wait_for_event() waits for an Event subclass, got {event_type!r}")
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        event = await self._router.wait_for(
            event_type,
            dict(requirements or {}),
            waiter_event,
            timeout,
            self.write_event_to_stream,
            worker=current_worker.get(),
        )
        assert isinstance(event, event_type)
        return event

    def collect_events(self, event: Event, expected: Sequence[type[Event]]) -> list[Event] | None:
        """Buffer ``event`` and return one event per entry of ``expected``, in that order, once
        all have arrived (a type listed k times needs k events); until then return None.

        Buffers are kept per step and per ``expected`` list; an event may fill any entry whose
        type it is an instance of. An event of none of the listed types is ignored (None), and
        an empty list returns ``[]``, as in LlamaIndex.
        """
        if not isinstance(event, Event):
            raise TypeError(f"collect_events() takes an Event, got {event!r}")
        return self._collector.collect(current_step.get(), event, expected)


def _not_in_a_run(event: object) -> None:
    raise WorkflowRuntimeError("this context has not been given to a run yet")


class _NotInARun:
    """The router of a context no run has used yet: every call says so."""

    def __getattr__(self, name: str) -> Any:
        raise WorkflowRuntimeError("this context has not been given to a run yet")


_NOT_IN_A_RUN: Any = _NotInARun()


def _not_streamable(event: object) -> Exception:
    if isinstance(event, StopEvent):
        return WorkflowRuntimeError(
            f"{type(event).__name__} is a stop event: return it from a step to end the run; "
            "the runtime puts the terminal event on the stream"
        )
    return TypeError(f"write_event_to_stream() takes an Event, got {event!r}")
