"""Fan-out, fan-in and joins: the runs of workflows whose steps return or take lists of events.

A step that returns ``list[E]`` opens a *stream*: each event of the list is routed on its own,
and the work that follows from them, step after step, belongs to the stream. A collecting step
(``list[R]`` parameter) bound to the stream's fan-out (`_levels`) gets the ``R`` events made in
it, once: when the stream is done, or at the ``n``-th with ``Take(n)``. A join (a step with
several event parameters) runs once one event of each has come.

When is a stream done? Each delivery of an event made in it to a step is one open *work item*,
done when that step execution ends: by then, what the execution returned has been delivered,
each delivery a new item of the same stream. A stream with no open item is done: nothing in it
can make another event. A stream opened inside another takes one item of its parent per
collecting step it feeds, given back as that step's execution, so a parent is never done
before its children have released. Only returned events belong to a stream: an event sent
with ``ctx.send_event`` (or by the caller) belongs to none, as in LlamaIndex, and a collecting
step takes no such event.

Runs of other workflows never come here: their hop is the plain one of `_worker`. Here every
delivery is a ``(stream, event)`` pair and every result goes through the router, which costs a
little per hop and is what keeping count takes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from .._errors import WorkflowRuntimeError
from .._events import CollectedEvents, Event, InputRequiredEvent, StopEvent
from ._collect import Collector
from ._graph import StepSpec, WorkflowGraph
from ._idle import WorkerState
from ._router import Router
from ._state import RunState
from ._stream import EventStream
from ._worker import Crew, _final_failure, _step_call, attempts


class Stream:
    """The work that follows from one fan-out's list."""

    __slots__ = ("buffers", "open", "parent", "source")

    def __init__(self, source: str, parent: Stream | None, bound: Sequence[int]) -> None:
        #: The fan-out step's name (for messages).
        self.source = source
        #: The stream the fan-out ran in (None: none).
        self.parent = parent
        #: Deliveries to steps of events made in this stream whose executions have not ended.
        self.open = 0
        #: For each collecting step bound to the fan-out, what it collected so far; None once
        #: it was released.
        self.buffers: dict[int, list[Event] | None] = {index: [] for index in bound}


def check_single(spec: StepSpec, result: Event) -> None:
    """Raises WorkflowRuntimeError: ``result``, returned on its own, is of a type that the
    step's annotation names only inside ``list[...]`` (LlamaIndex refuses it too)."""
    if (
        spec.fans_out
        and isinstance(result, spec.fans_out)
        and not isinstance(result, spec.bare_returns)
    ):
        raise WorkflowRuntimeError(
            f"step {spec.name!r} returned one {type(result).__name__}, which its annotation "
            "names only in `list[...]`: return a list to fan out, or name the type on its own "
            "too"
        )


def check_fan_out(spec: StepSpec, members: list[object]) -> None:
    """Raises WorkflowRuntimeError: a list returned by ``spec`` is no fan-out (its annotation
    names no ``list[...]``), or holds what is not an event for steps."""
    if not spec.fans_out:
        raise WorkflowRuntimeError(
            f"step {spec.name!r} returned a list; a step fans out only when its return "
            "annotation says `list[...]`"
        )
    for member in members:
        if not isinstance(member, Event) or isinstance(member, StopEvent):
            raise WorkflowRuntimeError(
                f"step {spec.name!r} returned a list holding {member!r:.200}; a fan-out's "
                "list holds events for steps (a stop event goes on its own)"
            )


class ScopedRouter(Router):
    """`Router` that keeps account of streams: every delivery is a ``(stream, event)`` pair."""

    def __init__(self, graph: WorkflowGraph, state: RunState, stream: EventStream) -> None:
        super().__init__(graph, state, stream)
        self._direct = {}  # every result goes through `emit_in`, which keeps count
        self._specs = graph.steps
        self._bindings = graph.bindings
        self._collecting = frozenset(i for i, s in enumerate(graph.steps) if s.collect)
        #: The stream of what is being routed now (set around each synchronous route).
        self._scope: Stream | None = None
        #: The events joins have got so far, per step.
        self.joins = Collector()

    # -- routing, with the stream of what is routed --

    def route_in(self, scope: Stream | None, event: Event) -> None:
        """`send` ``event``, made in ``scope``."""
        self._scope = scope
        try:
            self.send(event)
        finally:
            self._scope = None

    def _route(self, event: Event, step: str | None) -> None:
        if step is not None and self._graph.step_index(step) in self._collecting:
            raise WorkflowRuntimeError(
                f"step {step!r} collects the events of a fan-out, so nothing can be sent to "
                "it: return the events from the steps of the fan-out's stream"
            )
        super()._route(event, step)

    def _put(self, event: Event, steps: Sequence[int]) -> None:
        scope = self._scope
        if self._collecting and not self._collecting.isdisjoint(steps):
            steps = self._collect(event, steps, scope)
        inboxes = self.inboxes
        for index in steps:
            inboxes[index].put((scope, event))  # type: ignore[arg-type]
        if scope is not None:
            scope.open += len(steps)

    def _collect(self, event: Event, steps: Sequence[int], scope: Stream | None) -> list[int]:
        """Give ``event`` to the collecting steps among ``steps`` that its stream feeds;
        return the other steps. Raises before changing anything if nothing takes it."""
        others, takers = self._takers(event, steps, scope)
        for index in takers:
            buffer = scope.buffers[index]  # type: ignore[union-attr]
            if buffer is None:
                continue  # released at its Take(n): the rest of the stream goes nowhere
            buffer.append(event)
            collect = self._specs[index].collect
            if collect is not None and collect.take is not None and len(buffer) >= collect.take:
                self._release(scope, index)  # type: ignore[arg-type]
        return others

    def _takers(
        self, event: Event, steps: Sequence[int], scope: Stream | None
    ) -> tuple[list[int], list[int]]:
        """The steps among ``steps`` that do not collect, and the collecting ones that
        ``scope`` feeds. Raises if there are neither: ``event`` would be lost."""
        others = [i for i in steps if i not in self._collecting]
        takers = [] if scope is None else [i for i in steps if i in scope.buffers]
        if not others and not takers:
            names = ", ".join(repr(self._specs[i].name) for i in steps)
            where = (
                "outside any fan-out (sent, not returned by a step of a fan-out's stream)"
                if scope is None
                else f"in the stream of fan-out {scope.source!r}, which does not feed them"
            )
            raise WorkflowRuntimeError(
                f"{type(event).__name__} was made {where}, and the only steps that take it "
                f"({names}) collect the events of a fan-out, so it would be lost"
            )
        assert scope is not None or not takers
        return others, takers

    def _release(self, stream: Stream, index: int) -> None:
        """Run collecting step ``index`` on what it got from ``stream``, in the parent
        stream, which has counted the execution since the fan-out."""
        buffer = stream.buffers[index]
        assert buffer is not None
        stream.buffers[index] = None
        take = self._specs[index].collect.take  # type: ignore[union-attr]
        collected = CollectedEvents(events=tuple(buffer if take is None else buffer[:take]))
        self.inboxes[index].put((stream.parent, collected))  # type: ignore[arg-type]

    # -- what step executions return, and their ends --

    async def emit_in(
        self, scope: Stream | None, spec: StepSpec, index: int, result: object
    ) -> None:
        """Deal with what step ``index`` returned in ``scope``."""
        if result is None:
            return
        if isinstance(result, list):
            self._fan_out(scope, spec, index, result)
        elif isinstance(result, Event) and not isinstance(result, StopEvent):
            check_single(spec, result)
            if isinstance(result, InputRequiredEvent):
                await self._stream.write(result)  # for the caller, and for any step that wants it
                if not self._graph.routes_for(type(result)):
                    return
            self.route_in(scope, result)
        else:
            await self.emit(spec.name, result)  # a stop event, or no event at all

    def _fan_out(
        self, scope: Stream | None, spec: StepSpec, index: int, members: list[object]
    ) -> None:
        check_fan_out(spec, members)
        bound = self._bindings[index]
        stream = Stream(spec.name, scope, bound)
        if scope is not None:
            scope.open += len(bound)  # one item per collecting step: its execution
        self._scope = stream
        try:
            for member in members:
                self.send(member)  # type: ignore[arg-type]  # (checked above)
        finally:
            self._scope = None
            if stream.open == 0:  # nothing to wait for: `return []`, or straight to collectors
                self._close(stream)

    def done(self, scope: Stream | None) -> None:
        """A step execution of ``scope`` ended, its results delivered."""
        if scope is None:
            return
        scope.open -= 1
        if scope.open == 0:
            self._close(scope)

    def _close(self, stream: Stream) -> None:
        for index, buffer in stream.buffers.items():
            if buffer is not None:
                self._release(stream, index)

    def to_handlers(self, failed: Event, handlers: Sequence[int], scope: object = None) -> None:
        # The failed execution's item goes on as its handlers' executions.
        assert scope is None or isinstance(scope, Stream)
        for index in handlers:
            self.inboxes[index].put((scope, failed))  # type: ignore[arg-type]
        if scope is not None:
            scope.open += len(handlers)


async def work_scoped(crew: Crew, index: int, me: WorkerState) -> None:
    """`_work` for a scoped run (see the module docstring): each delivery is one work item,
    done once the execution's results are delivered."""
    spec = crew.graph.steps[index]
    call = _step_call(crew, spec)
    router = crew.router
    assert isinstance(router, ScopedRouter)
    get: Callable[[], Awaitable[tuple[Stream | None, Event] | None]]
    get = router.inboxes[index].getter()  # type: ignore[assignment]  # (pairs: `_put`)
    state = crew.state
    while True:
        item = await get()
        if item is None or state.outcome is not None:
            return
        scope, event = item
        me.taken += 1
        if spec.slots:
            joined = router.joins.collect(spec.name, event, spec.slots)
            if joined is None:  # kept for the join until it has one event of each
                router.done(scope)
                continue
            event = CollectedEvents(events=tuple(joined))
        me.busy = True
        crew.idle.working()
        attempt, result, failure, elapsed = await attempts(crew, spec, call, event)
        if failure is not None:
            await _final_failure(crew, index, event, failure, attempt, elapsed, scope)
            _done(crew, router, me, scope)
            continue
        try:
            await router.emit_in(scope, spec, index, result)
        except Exception as exc:
            failure = exc
        if failure is not None:
            await _final_failure(crew, index, event, failure, attempt, scope=scope)
        _done(crew, router, me, scope)


def _done(crew: Crew, router: ScopedRouter, me: WorkerState, scope: Stream | None) -> None:
    """The end of a step execution of ``scope``, its results routed."""
    me.busy = False
    router.done(scope)
    crew.idle.poke()
