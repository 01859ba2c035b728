"""Durable runs of workflows whose steps fan out, collect or join (`_core._fanout`, journaled).

Only such workflows come here (`WorkflowGraph.scoped`); the others run on `_runtime`'s router
and loop, unchanged. What is added to theirs:

- Every stream is named by the task whose fan-out opened it, and every ``route`` says in which
  stream it was made (``"in"``), which collecting steps' buffers took it (``"keep"``) and
  which of its steps are joins (``"j"``). A fan-out's members are routed as its task's
  returned value, member ``i`` with the cause ``[task, -1, i]``: a fan-out cut by a crash is
  routed on from the first member missing when its task runs again, in the stream it had
  opened.
- A collecting step released (its ``Take(n)`` reached, or its stream done) is a ``route`` of
  its own, holding what it collected; its task runs the step on a `CollectedEvents`.
- A join's delivery kept for later is ``done`` with attempt 0 (it was collected); one that
  completes the join is started as usual.

Resuming (`DurableScopedRouter.rebuild`) recomputes the streams from the fold of the journal:
their buffers are what their ``keep``s gave them, less what was released; the open work of a
stream is its unfinished tasks plus, for each stream opened in it, the collecting steps that
stream has not released yet (as `ScopedRouter` counts it). A stream that a crash left with no
open work and buffers not released (between the last ``done`` and the release), or a buffer
that reached its ``Take(n)`` unreleased, is released as the run resumes; a stream whose
fan-out's task has not finished is closed by that task when it runs again. Joins are rebuilt by
collecting again every delivery that had been collected, in the order they were (that of the
record each got as it was collected: ``done`` with attempt 0, or its first ``start``; a join
collects a delivery and writes that record with no checkpoint between): the `Collector` is
deterministic, so it keeps what it kept, and a delivery that completed the join and had not
finished gets the same events to run again with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from .._core._fanout import ScopedRouter, Stream, check_fan_out, check_single
from .._core._graph import StepSpec
from .._core._idle import WorkerState
from .._core._log import add_note
from .._core._run import Run
from .._core._state import RunState
from .._core._stream import EventStream
from .._core._worker import (
    StepCall,
    _step_call,
    _step_note,
    failure_report,
)
from .._errors import RunEndedError
from .._events import CollectedEvents, Event, InputRequiredEvent, StopEvent
from ._journal import OUTSIDE, RETURNED, Journal, PendingTask, Replay
from ._runtime import Durable, DurableRouter, attempt_task


class Scope(Stream):
    """A `Stream` with a name: the task whose fan-out opened it."""

    __slots__ = ("name",)

    def __init__(self, name: str, source: str, parent: Scope | None, bound: Sequence[int]) -> None:
        super().__init__(source, parent, bound)
        self.name = name


def _name(scope: Stream | None) -> str | None:
    return None if scope is None else cast("Scope", scope).name


class DurableScopedRouter(DurableRouter, ScopedRouter):
    """`ScopedRouter`'s accounting with `DurableRouter`'s journal: inbox items are ``(task,
    stream, event)``."""

    def __init__(self, graph: Any, state: RunState, stream: EventStream, journal: Journal) -> None:
        super().__init__(graph, state, stream, journal)
        self._join_steps = frozenset(i for i, s in enumerate(graph.steps) if s.slots)
        #: Streams rebuilt from the journal whose fan-out's task has not finished: when it
        #: runs again, its fan-out goes on in them.
        self.reopened: dict[str, Scope] = {}
        #: Resumed join deliveries that had completed their join: they run with what they
        #: were joined with (`PendingTask.joined`), and are not collected again.
        self.prejoined: set[str] = set()
        #: The streams rebuilt from the journal, by name, until the run has begun.
        self._rebuilt: dict[str, Scope] = {}

    # -- routing in streams, journaled --

    def put_in(
        self, scope: Stream | None, event: Event, steps: Sequence[int], cause: object
    ) -> None:
        """Put ``event``, made in ``scope``, in the inboxes of ``steps``, journaled as caused
        by ``cause``."""
        self._scope, self._cause = scope, cause
        try:
            self._put(event, steps)
        finally:
            self._scope, self._cause = None, OUTSIDE

    def _put(self, event: Event, steps: Sequence[int]) -> None:
        scope = self._scope
        others, takers = list(steps), list[int]()
        if self._collecting and not self._collecting.isdisjoint(steps):
            others, takers = self._takers(event, steps, scope)
        keep = [i for i in takers if scope is not None and scope.buffers[i] is not None]
        joins = [i for i in others if i in self._join_steps]
        journal = self.journal
        # Encoded (and checked) first: an event the journal cannot hold goes nowhere.
        n = journal.route_in(
            journal.codec.encode(event), others, self._cause, _name(scope), keep, joins
        )
        for index in keep:
            assert scope is not None
            buffer = scope.buffers[index]
            assert buffer is not None
            buffer.append(event)
            take = self._specs[index].collect.take  # type: ignore[union-attr]
            if take is not None and len(buffer) >= take:
                self._release(scope, index)
        inboxes = self.inboxes
        for index in others:
            inboxes[index].put((f"{n}.{index}", scope, event))  # type: ignore[arg-type]
        if scope is not None:
            scope.open += len(others)

    def _release(self, stream: Stream, index: int) -> None:
        buffer = stream.buffers[index]
        assert buffer is not None
        stream.buffers[index] = None
        take = self._specs[index].collect.take  # type: ignore[union-attr]
        events = buffer if take is None else buffer[:take]
        codec = self.journal.codec
        n = self.journal.release(
            [codec.encode(e) for e in events], index, _name(stream) or "", _name(stream.parent)
        )
        collected = CollectedEvents(events=tuple(events))
        self.inboxes[index].put((f"{n}.{index}", stream.parent, collected))  # type: ignore[arg-type]

    def to_handlers(self, failed: Event, handlers: Sequence[int], scope: object = None) -> None:
        assert scope is None or isinstance(scope, Scope)
        self.put_in(scope, failed, handlers, self._cause)

    async def emit_in_from(
        self,
        scope: Stream | None,
        spec: StepSpec,
        index: int,
        result: object,
        task: str,
        routed: dict[str, Any] | None,
    ) -> None:
        """`ScopedRouter.emit_in`, journaled as what ``task`` returned; ``routed``: what its
        lost attempt's return had routed before the crash (it is not routed again)."""
        if isinstance(result, list):
            skip = 0 if routed is None else routed.get("members", 0)
            self._fan_out_from(scope, spec, index, result, task, skip)
            return
        if isinstance(result, Event) and not isinstance(result, StopEvent):
            check_single(spec, result)
            if routed is not None:
                return  # routed before the crash
            if isinstance(result, InputRequiredEvent):
                await self._stream.write(result)
                if not self._graph.routes_for(type(result)):
                    return
            self._scope, self._cause = scope, [task, RETURNED]
            try:
                self.send(result)
            finally:
                self._scope, self._cause = None, OUTSIDE
            return
        await self.emit(spec.name, result)  # a stop event, or no event at all

    def _fan_out_from(
        self,
        scope: Stream | None,
        spec: StepSpec,
        index: int,
        members: list[object],
        task: str,
        skip: int,
    ) -> None:
        """`ScopedRouter._fan_out`, opening the stream named ``task`` (or going on in it, if
        it was opened before a crash), from member ``skip`` on."""
        check_fan_out(spec, members)
        stream = self.reopened.pop(task, None)
        if stream is not None:
            stream.open -= 1  # (the item `rebuild` gave it for this fan-out: going on now)
        else:
            bound = self._bindings[index]
            stream = Scope(task, spec.name, cast("Scope | None", scope), bound)
            if scope is not None:
                scope.open += len(bound)  # one item per collecting step: its execution
        self._scope = stream
        try:
            for i, member in enumerate(members):
                if i < skip:
                    continue  # routed before the crash
                self._cause = [task, RETURNED, i]
                self.send(member)  # type: ignore[arg-type]  # (checked above)
        finally:
            self._scope, self._cause = None, OUTSIDE
            if stream.open == 0:  # nothing to wait for: `return []`, or straight to collectors
                self._close(stream)

    def reclose(self, task: str) -> None:
        """``task`` ended: a stream it had opened before a crash and did not go on in (it
        returned something else this time, or failed) is done if nothing in it is open."""
        stream = self.reopened.pop(task, None) if self.reopened else None
        if stream is not None:
            self.done(stream)

    # -- resuming --

    def rebuild(self, replay: Replay) -> None:
        """The streams and join buffers of the run ``replay`` folds (see the module
        docstring); `begin` then queues its tasks and makes the releases due."""
        folded = replay.scopes
        if folded is None:
            return
        steps = self._specs
        streams: dict[str, Scope] = {}
        for name, info in folded.streams.items():
            bound = self._bindings[info.step]
            stream = streams[name] = Scope(name, steps[info.step].name, None, bound)
            for i in bound:
                stream.buffers[i] = None if i in info.released else list(info.kept.get(i, ()))
        for name, info in folded.streams.items():
            stream = streams[name]
            parent = None if info.parent is None else streams.get(info.parent)
            stream.parent = parent
            if parent is not None:  # its collecting steps not yet released: open there
                parent.open += sum(buffer is not None for buffer in stream.buffers.values())
        pending = replay.pending
        for task in pending.values():
            if task.scope is not None and task.scope in streams:
                streams[task.scope].open += 1
        # A stream whose fan-out's task has not finished may be missing members: it stays
        # open (one more item) until that task runs again and goes on with it.
        self.reopened = {name: stream for name, stream in streams.items() if name in pending}
        for stream in self.reopened.values():
            stream.open += 1
        self._rebuilt = streams
        for step, task_name, event in folded.collected:  # (deterministic: as it was)
            spec = steps[step]
            joined = self.joins.collect(spec.name, event, spec.slots)
            held = pending.get(task_name)
            if joined is not None and held is not None:
                held.joined = CollectedEvents(events=tuple(joined))
                self.prejoined.add(task_name)

    def put_task(self, task: PendingTask) -> None:
        scope = None if task.scope is None else self._rebuilt.get(task.scope)
        event = task.event if task.joined is None else task.joined
        self.inboxes[task.step].put((task.task, scope, event))  # type: ignore[arg-type]

    def release_due(self) -> None:
        """Release what a crash left unreleased: buffers at their ``Take(n)``, and streams
        with no open work whose fan-out's task has finished."""
        streams, self._rebuilt = self._rebuilt, {}
        for stream in streams.values():
            for index, buffer in list(stream.buffers.items()):
                take = self._specs[index].collect.take  # type: ignore[union-attr]
                if buffer is not None and take is not None and len(buffer) >= take:
                    self._release(stream, index)
            if stream.open == 0:
                self._close(stream)


class ScopedDurable(Durable):
    """`Durable`, for a workflow whose steps fan out, collect or join."""

    router_class = DurableScopedRouter

    def attach(self, run: Run) -> None:
        super().attach(run)
        router = run.router
        assert isinstance(router, DurableScopedRouter)
        if self.replay is not None:
            router.rebuild(self.replay)

    def begin(self, run: Run) -> None:
        super().begin(run)
        router = run.router
        assert isinstance(router, DurableScopedRouter)
        router.release_due()

    async def _loop(self, crew: Run, index: int, me: WorkerState) -> None:
        await _work_scoped_durable(crew, index, me, self)


async def _work_scoped_durable(crew: Run, index: int, me: WorkerState, durable: Durable) -> None:
    """`_runtime._work_durable` for streams, or `_fanout.work_scoped` journaled: each
    delivery is one work item of its stream, done once its task is finished."""
    spec = crew.graph.steps[index]
    call = _step_call(crew, spec)
    router = crew.router
    assert isinstance(router, DurableScopedRouter)
    get: Callable[[], Awaitable[tuple[str, Stream | None, Event] | None]]
    get = router.inboxes[index].getter()  # type: ignore[assignment]  # (triples: `_put`)
    state = crew.state
    journal = router.journal
    while True:
        item = await get()
        if item is None or state.outcome is not None:
            return
        task, scope, event = item
        me.taken += 1
        if spec.slots:
            if task in router.prejoined:
                router.prejoined.discard(task)
            else:
                joined = router.joins.collect(spec.name, event, spec.slots)
                if joined is None:  # kept for the join until it has one event of each
                    durable.resumed.pop(task, None)
                    journal.done(task, 0)
                    router.done(scope)
                    crew.idle.poke()
                    continue
                event = CollectedEvents(events=tuple(joined))
        me.busy = True
        crew.idle.working()
        try:
            finished = await _execute(crew, spec, index, call, event, task, scope, durable)
        finally:
            me.busy = False
            router.release(task)
        router.reclose(task)
        if finished:
            router.done(scope)
        crew.idle.poke()


async def _execute(
    crew: Run,
    spec: StepSpec,
    index: int,
    call: StepCall,
    event: Event,
    task: str,
    scope: Stream | None,
    durable: Durable,
) -> bool:
    """`_runtime._execute` in ``scope``; returns whether the task finished (done, or its
    failure handed to error handlers), its results routed."""
    outcome = await attempt_task(crew, spec, call, event, task, durable)
    if outcome is None:
        return False  # suspended
    attempt, result, failure, elapsed, ref = outcome
    router = crew.router
    assert isinstance(router, DurableScopedRouter)
    routed = ref.recorded(RETURNED, "send")
    if failure is not None:
        return await _final_failure(
            crew, spec, index, task, scope, event, failure, attempt, elapsed, routed is not None
        )
    if isinstance(result, StopEvent):
        # Not journaled as done: should the process stop before the run's end is recorded,
        # the step runs again and ends the run again.
        await router.emit(spec.name, result)
        return False
    if result is not None:
        try:
            await router.emit_in_from(scope, spec, index, result, task, routed)
        except Exception as exc:
            return await _final_failure(
                crew, spec, index, task, scope, event, exc, attempt, routed=routed is not None
            )
    router.journal.done(task, attempt)
    return True


async def _final_failure(
    crew: Run,
    spec: StepSpec,
    index: int,
    task: str,
    scope: Stream | None,
    event: Event,
    exc: Exception,
    attempt: int,
    elapsed: float = 0.0,
    routed: bool = False,
) -> bool:
    """`_runtime._final_failure`, its handlers running in ``scope``; returns whether they
    took the failure (the task is finished). ``routed``: the lost attempt's outcome was
    routed before the crash (what it returned, or its failure to the handlers), so nothing
    is routed again: the task is finished as it finished then."""
    router = crew.router
    assert isinstance(router, DurableScopedRouter)
    state = crew.state
    add_note(exc, _step_note(crew, spec, event))
    failed = failure_report(spec, attempt, exc, event, elapsed)
    handlers = crew.graph.handlers_for[index]
    if state.outcome is not None and isinstance(exc, RunEndedError):
        return False
    if state.outcome is not None or not handlers:
        state.fail(spec.name, exc, failed)
        return False
    try:
        await crew.stream.write(failed)
    except BaseException:
        state.report(failed)
        raise
    if not routed:
        router.put_in(scope, failed, handlers, [task, RETURNED])
    router.journal.fail(task, attempt, exc, final=True)
    return True
