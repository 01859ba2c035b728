"""`Context`: what a step sees of its run (stream, routing, collected events, store)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import trio
from trio.lowlevel import checkpoint_if_cancelled

from .._errors import WorkflowRuntimeError
from .._events import Event, StopEvent
from ._collect import Collector
from ._router import Router
from ._stream import EventStream

#: The step whose code is running in this task; set once by each step worker.
current_step: ContextVar[str] = ContextVar("trioflow_current_step", default="")
#: The step execution under way in this task, whose ``key`` is `Context.task_key`: the
#: worker's `WorkerState` (set once per worker), or a durable run's `TaskRef` (per attempt).
current_execution: ContextVar[Any] = ContextVar("trioflow_execution", default=None)

_E = TypeVar("_E", bound=Event)


class Store:
    """Key-value state shared by the steps of one run. Values are kept by reference."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        """Return the value stored under ``key``, or ``default``."""
        await trio.lowlevel.checkpoint()
        return self._data.get(key, default)

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``."""
        await trio.lowlevel.checkpoint()
        self._data[key] = value


class Context:
    """The run's context, passed to steps that declare a ``ctx: Context`` parameter.

    Every run has its own; steps of one run share it.
    """

    def __init__(self, run_id: str, router: Router, stream: EventStream) -> None:
        self._run_id = run_id
        self._router = router
        self._stream = stream
        self._send_nowait = stream.send_nowait
        self._collector = Collector()
        #: Event classes `write_event_to_stream` has checked: they may go to the stream.
        self._streamable: set[type] = set()
        self.store = Store()

    @property
    def run_id(self) -> str:
        """The id of this run (the same as `WorkflowHandler.run_id`)."""
        return self._run_id

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
            event_type, dict(requirements or {}), waiter_event, timeout, self.write_event_to_stream
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


def _not_streamable(event: object) -> Exception:
    if isinstance(event, StopEvent):
        return WorkflowRuntimeError(
            f"{type(event).__name__} is a stop event: return it from a step to end the run; "
            "the runtime puts the terminal event on the stream"
        )
    return TypeError(f"write_event_to_stream() takes an Event, got {event!r}")
