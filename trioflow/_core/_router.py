"""`Router`: the only place where a run's events move, to step inboxes, waiters and the stream.

An event sent into a run (`send`) resumes the oldest waiting `Context.wait_for_event` that
matches it, else goes to every step that accepts it, else (an `InputRequiredEvent`) to the
caller's stream, else it is an error: nothing is dropped. A step's return value goes the same
way (`emit`); for the common case, a plain event and nobody waiting, the worker applies the
router's hand-off table itself (`direct_routes`), since a method call costs a hop measurably.

Waiters park their task with `trio.lowlevel.wait_task_rescheduled`, as the inboxes do, so an
answer is handed only to a step that is still waiting: when a waiter is cancelled (its own
timeout, the step's, the run's), trio's abort callback takes it off the list first, and a later
answer goes elsewhere. The one window where an answer can reach a waiter that is not parked is
while it writes its ``waiter_event`` to the stream; the answer is kept for it and returned even
if that write is then cancelled (the step gets it, and the cancellation at its next
checkpoint), and handed on to the next waiter or the steps only if the write fails otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import trio
from outcome import Value
from trio.lowlevel import Abort, current_task, enable_ki_protection, reschedule

from .._errors import RunEndedError, WorkflowRuntimeError
from .._events import RUNTIME_STOP_EVENTS, Event, InputRequiredEvent, StopEvent
from ._idle import IdleWatch, WorkerState
from ._inbox import Inbox
from ._log import describe, log
from ._state import RunState, is_cancellation
from ._stream import EventStream


class Routes(Protocol):
    """What the router needs of a workflow's graph (`WorkflowGraph` provides it; the graph
    sits below the context, which sits on the router, so the router names no graph class)."""

    @property
    def workflow_name(self) -> str: ...

    @property
    def steps(self) -> Sequence[object]: ...

    @property
    def plain_events(self) -> Iterable[type[Event]]: ...

    def routes_for(self, event_type: type[Event]) -> Sequence[int]: ...

    def step_index(self, name: str) -> int | None: ...


_MISSING = object()


class Waiter:
    """A step suspended in `Context.wait_for_event`."""

    __slots__ = ("event", "event_type", "key", "parked", "requirements", "task", "worker")

    def __init__(
        self,
        event_type: type[Event],
        requirements: Mapping[str, Any],
        task: trio.lowlevel.Task | None,
        key: object = None,
        worker: WorkerState | None = None,
    ) -> None:
        self.event_type = event_type
        self.requirements = requirements
        self.task = task
        #: Parked in `wait_task_rescheduled` (else still writing its waiter event).
        self.parked = False
        #: An answer that arrived before the waiter parked.
        self.event: Event | None = None
        #: Which wait of which step execution this is, in a durable run (None in memory).
        self.key = key
        #: The worker whose step waits (its ``waiting`` is set while it is parked).
        self.worker = worker

    def matches(self, event: Event) -> bool:
        if not isinstance(event, self.event_type):
            return False
        for name, value in self.requirements.items():
            try:
                if not bool(getattr(event, name, _MISSING) == value):
                    return False
            except Exception:
                # A value whose `==` (or truth) raises matches nothing; other senders and
                # waiters must not pay for it.
                return False
        return True


class Router:
    """Moves the events of one run."""

    def __init__(self, graph: Routes, state: RunState, stream: EventStream) -> None:
        self._graph = graph
        self._state = state
        self._stream = stream
        self.inboxes: list[Inbox[Event]] = [Inbox() for _ in graph.steps]
        #: Steps suspended in `wait_for`, oldest first.
        self.waiters: list[Waiter] = []
        #: Events handed to waiters (the inboxes count the rest).
        self.delivered_to_waiters = 0
        #: The run's idle watch, told when a step parks in `wait_for` and when it is answered.
        self.idle: IdleWatch | None = None
        #: The routers of the child runs steps of this run are running (`Context.run_workflow`),
        #: offered what nothing here takes: the answers to their questions.
        self.children: list[Router] = []
        #: For each event class a step may return that is simply routed (see
        #: `WorkflowGraph.plain_events`): the `put` of every inbox it goes to.
        self._direct: dict[type, tuple[Callable[[Event], None], ...]] = {
            event_type: tuple(self.inboxes[i].put for i in graph.routes_for(event_type))
            for event_type in graph.plain_events
        }

    def close_inboxes(self) -> None:
        """The run is decided (`RunState.on_decided`): every worker waiting for an event
        ends, rather than wait to be cancelled."""
        for inbox in self.inboxes:
            inbox.close()

    @property
    def events_routed(self) -> int:
        return sum(inbox.received for inbox in self.inboxes) + self.delivered_to_waiters

    # -- into the run --

    def send(self, event: Event, step: str | None = None) -> None:
        """Route ``event`` (from `Context.send_event` or the caller).

        Raises:
            RunEndedError: the run's outcome is decided.
            WorkflowRuntimeError: nothing would take the event.
        """
        if self._state.outcome is not None:
            raise RunEndedError(
                f"the run has ended ({self._state.outcome.value}); it takes no more events"
            )
        self._route(event, step)

    @enable_ki_protection
    def _route(self, event: Event, step: str | None) -> None:
        if step is None and self.waiters:
            for waiter in self.waiters:
                if waiter.matches(event):  # the oldest matching waiter takes it, nobody else
                    self._hand(waiter, event)
                    return
        graph = self._graph
        routes = graph.routes_for(type(event))
        if step is not None:
            index = graph.step_index(step)
            if index is None:
                raise WorkflowRuntimeError(f"{graph.workflow_name} has no step named {step!r}")
            if index not in routes:
                raise WorkflowRuntimeError(
                    f"step {step!r} of {graph.workflow_name} does not accept {type(event).__name__}"
                )
            self._put(event, (index,))
            return
        if not routes:
            if isinstance(event, InputRequiredEvent):
                self._stream_for_caller(event)
                return
            if self.children and any(child.offer(event) for child in self.children):
                return
            raise WorkflowRuntimeError(
                f"no step of {graph.workflow_name} accepts {type(event).__name__} and no "
                "step waits for it, so it would be lost (add it to a step's event annotation)"
            )
        self._put(event, routes)

    def offer(self, event: Event) -> bool:
        """Route ``event`` (sent to a parent run) if something in this run takes it: a
        waiter, a step, or a child run of its own. Returns whether it was taken."""
        if self._state.outcome is not None:
            return False
        try:
            self._route(event, None)
        except WorkflowRuntimeError:  # nothing here takes it (raised before any change)
            return False
        return True

    def _put(self, event: Event, steps: Sequence[int]) -> None:
        """Queue ``event`` for each of ``steps`` (a durable run's router journals it too)."""
        inboxes = self.inboxes
        for index in steps:
            inboxes[index].put(event)

    def _stream_for_caller(self, event: InputRequiredEvent) -> None:
        # `send` cannot wait for room, and queueing the event elsewhere would reorder the
        # stream; a full stream that somebody reads is an error that says what to do instead.
        stream = self._stream
        try:
            try:
                stream.write_nowait(event)
            except trio.WouldBlock:
                if not stream.make_room_if_unread():
                    raise
                stream.write_nowait(event)  # a zero-size buffer has no room even now
        except trio.WouldBlock:
            raise WorkflowRuntimeError(
                f"the stream is full, so {type(event).__name__} cannot be sent to the caller "
                "without waiting: use `await ctx.write_event_to_stream(ev)` or return it"
            ) from None

    # -- what steps return --

    def direct_routes(
        self,
    ) -> tuple[Mapping[type, tuple[Callable[[Event], None], ...]], Sequence[Waiter]]:
        """The hot path of a hop, for a step worker to apply itself: for each plain event
        class (`WorkflowGraph.plain_events`) the ``put`` of every inbox it goes to, valid while
        the second item, the waiters, is empty; anything else goes through `emit`. Both are
        live views, owned here."""
        return self._direct, self.waiters

    async def emit(self, step_name: str, result: object) -> None:
        """Deal with what a step returned (None was dealt with by the caller)."""
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
            self._state.complete(result)
        elif isinstance(result, InputRequiredEvent):
            await self._stream.write(result)  # for the caller, and for any step that wants it
            if self._graph.routes_for(type(result)):
                self.send(result)
        else:
            self.send(result)

    def to_handlers(self, failed: Event, handlers: Sequence[int], scope: object = None) -> None:
        """Give a step's final failure to its error ``handlers`` (``scope``: the fan-out
        stream of the failed execution, which a plain run has none of)."""
        inboxes = self.inboxes
        for index in handlers:
            inboxes[index].put(failed)

    # -- waiters --

    async def wait_for(
        self,
        event_type: type[Event],
        requirements: Mapping[str, Any],
        waiter_event: Event | None,
        timeout: float | None,  # noqa: ASYNC109 (Context.wait_for_event's, passed on)
        write: Callable[[Event], Any],
        key: object = None,
        worker: WorkerState | None = None,
    ) -> Event:
        """Register a waiter, ``await write(waiter_event)``, then park until an event that
        matches arrives; `trio.TooSlowError` when ``timeout`` seconds pass, writing included.
        A durable run's waiter has a ``key``, and `_registered` is told once it is asked."""
        waiter = Waiter(event_type, requirements, current_task(), key, worker)
        self.waiters.append(waiter)
        with trio.fail_after(math.inf if timeout is None else timeout):
            try:
                if waiter_event is not None:
                    await write(waiter_event)
            except BaseException as exc:
                if waiter.event is not None and is_cancellation(exc):
                    # Answered while it wrote, then cancelled: the answer was accepted for
                    # this step, so it gets it; the cancellation comes again at its next
                    # checkpoint (its scope is still cancelled).
                    return waiter.event
                self._withdraw(waiter)
                raise
            if key is not None:
                self._registered(waiter)
            if waiter.event is not None:  # answered while it wrote
                return waiter.event
            return await self._park(waiter)

    def _registered(self, waiter: Waiter) -> None:
        """A keyed waiter has written its question (a durable run journals the wait)."""

    @enable_ki_protection
    async def _park(self, waiter: Waiter) -> Event:
        waiters = self.waiters

        worker = waiter.worker

        def abort(_: object) -> Abort:
            # Cancelled before an event was handed over: from now on it takes none.
            waiter.parked = False
            waiters.remove(waiter)
            if worker is not None:
                worker.waiting = False
            return Abort.SUCCEEDED

        waiter.parked = True
        if worker is not None:
            worker.waiting = True
            if self.idle is not None:
                self.idle.poke()
        event: Event = await trio.lowlevel.wait_task_rescheduled(abort)
        return event

    def _hand(self, waiter: Waiter, event: Event) -> None:
        self.waiters.remove(waiter)
        self.delivered_to_waiters += 1
        if waiter.parked:
            waiter.parked = False
            if waiter.worker is not None:
                waiter.worker.waiting = False
                if self.idle is not None:
                    self.idle.working()
            assert waiter.task is not None  # a parked waiter has its task
            reschedule(waiter.task, Value(event))
        else:
            waiter.event = event

    @enable_ki_protection
    def _withdraw(self, waiter: Waiter) -> None:
        """A waiter leaves before parking: an answer it was handed meanwhile goes on to the
        next live waiter or the steps, never lost."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)
            return
        event = waiter.event
        if event is None:
            return
        waiter.event = None
        self.delivered_to_waiters -= 1
        try:
            self._route(event, None)
        except WorkflowRuntimeError as exc:
            log(
                logging.ERROR,
                "an answer for a step that stopped waiting could not be delivered: %s",
                describe(exc),
            )
