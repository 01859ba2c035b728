"""A durable run: the router, context, stream and step workers that journal what they do.

Each is the memory run's own class or loop with the journal added where state changes, so
the memory path stays as it is (`trioflow._core._run.Durability`):

- `DurableRouter` routes as `Router` does, with no hand-off table (every event a step returns
  goes through `emit`), and journals each route; each destination step gets a task, whose
  name goes into the step's inbox with the event (a worker that is handed an event directly
  may wake after another, so the name cannot be looked up in a queue of its own).
- `DurableContext` numbers the context calls of the step code under way (`TaskRef`) and
  journals them; an attempt that repeats a lost one gets each call's recorded result instead
  of acting again: a send is not routed again, a store value not set again, a collect gives
  what it gave, a wait answered before the crash returns that answer, and one still waiting
  waits again without asking again.
- `DurableStream` numbers each stream event and hands it to a `StreamSink` (the server's:
  the store) at write time, in the writing task, so that an event a step wrote is recorded
  before anything the step did after it.
- `_work_durable` is `_work` with the journal: a ``start`` before each attempt, ``done`` or
  ``fail`` after, and for a task whose process stopped while it ran, a `StepFailedEvent` with
  `WorkerLost` before it runs again.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import trio

from .._core._context import Context, current_execution, current_step
from .._core._graph import StepSpec
from .._core._idle import WorkerState, current_worker
from .._core._log import add_note, describe, log
from .._core._router import Router, Waiter
from .._core._run import Run
from .._core._state import RunState
from .._core._state_store import StateClass, Store
from .._core._stream import EventStream
from .._core._worker import (
    StepCall,
    _attempt,
    _log_retry,
    _step_call,
    _step_note,
    failure_report,
    work,
)
from .._errors import NotJournalable, ReplayError, RunEndedError, WorkerLost, WorkflowRuntimeError
from .._events import (
    Event,
    InputRequiredEvent,
    StepRetryEvent,
    StopEvent,
)
from .._handler import WorkflowHandler
from .._retry import RetryInfo, current_retry, max_attempts, next_delay
from ._codec import check_storable, codec_for
from ._journal import (
    OUTSIDE,
    RETURNED,
    Appender,
    Journal,
    PendingTask,
    Replay,
    TaskRef,
    kept_on_retry,
)

_E = TypeVar("_E", bound=Event)


class StreamSink(Protocol):
    """Where a durable run's stream events go (the server: its store, for its clients)."""

    #: The seq of the last event the sink has (a resumed run goes on after it).
    seq: int

    def attach(self, fail: Callable[[Exception], bool]) -> None:
        """``fail(error)`` fails the run (unless its outcome is decided; returns whether it
        did): for an event the sink cannot take as it is."""

    def has_room(self) -> bool:
        """Whether an event may be written now without waiting."""

    async def wait_for_room(self) -> None:
        """Wait until `has_room` (backpressure: the disk, the clients). A checkpoint."""

    def write(self, seq: int, event: Event) -> None:
        """Take event number ``seq``; synchronous, and taken even without room."""


class DurableStream(EventStream):
    """A run's stream whose events go to a `StreamSink`, numbered, at write time. No task in
    the process reads it: the sink is the consumer."""

    def __init__(self, capacity: int, sink: StreamSink) -> None:
        super().__init__(capacity)
        self.sink = sink
        self.send_nowait = self._send_to_sink  # type: ignore[assignment]
        #: The run is suspended: its events go nowhere (as if its process had stopped).
        self.suspended = False

    def _send_to_sink(self, event: Event) -> None:
        sink = self.sink
        if self.suspended:
            return
        if not sink.has_room():
            raise trio.WouldBlock
        sink.write(sink.seq + 1, event)

    def write_nowait(self, event: Event) -> None:
        # For writers that cannot wait (an `InputRequiredEvent` sent): the sink takes it.
        sink = self.sink
        if not self.suspended:
            sink.write(sink.seq + 1, event)
        self.written += 1

    def make_room_if_unread(self) -> bool:
        return True

    async def write_when_full(self, event: Event) -> None:
        started = trio.current_time()
        try:
            await self.sink.wait_for_room()
        finally:
            self.waited += trio.current_time() - started
        sink = self.sink
        if not self.suspended:
            sink.write(sink.seq + 1, event)
        self.written += 1

    def close(self, terminal: StopEvent, trailing: Sequence[Event] = ()) -> None:
        self._close_for_reader(terminal, ())
        self._record_end(terminal, trailing)

    def _close_for_reader(self, terminal: StopEvent, trailing: Sequence[Event]) -> None:
        """End the stream for a reader in the process (`EventStream.close`)."""
        EventStream.close(self, terminal, trailing)

    def _record_end(self, terminal: StopEvent, trailing: Sequence[Event]) -> None:
        """Give the sink ``trailing`` and the terminal event, unless suspended."""
        if self.suspended:
            return
        sink = self.sink
        try:
            for event in (*trailing, terminal):
                sink.write(sink.seq + 1, event)
        except Exception as exc:  # the run's end must not fail with its sink: said loudly
            log(logging.ERROR, "the end of a durable run could not be recorded: %s", describe(exc))


class DurableRouter(Router):
    """`Router` with a journal: see the module docstring."""

    def __init__(self, graph: Any, state: RunState, stream: EventStream, journal: Journal) -> None:
        super().__init__(graph, state, stream)
        self._direct = {}  # every result goes through `emit`, so that it is journaled
        self.journal = journal
        #: What the next route is journaled as caused by (set around each send).
        self._cause: object = OUTSIDE
        #: Waits of resumed tasks that were waiting when their process stopped, until the
        #: task's step code waits again (`resume_wait`), by (task, call number).
        self.reserved: dict[tuple[str, int], Waiter] = {}

    def send_from(self, event: Event, step: str | None, cause: object) -> None:
        """`send`, journaled as caused by ``cause``."""
        self._cause = cause
        try:
            self.send(event, step)
        finally:
            self._cause = OUTSIDE

    def put_from(self, event: Event, steps: Sequence[int], cause: object) -> None:
        """Put ``event`` in the inboxes of ``steps``, journaled as caused by ``cause``."""
        self._cause = cause
        try:
            self._put(event, steps)
        finally:
            self._cause = OUTSIDE

    def _put(self, event: Event, steps: Sequence[int]) -> None:
        # Encoded (and checked) first: an event the journal cannot hold goes nowhere.
        n = self.journal.route(self.journal.codec.encode(event), list(steps), self._cause)
        for index in steps:
            self.inboxes[index].put((f"{n}.{index}", event))  # type: ignore[arg-type]

    def _hand(self, waiter: Waiter, event: Event) -> None:
        key = waiter.key
        if key is not None:
            assert isinstance(key, tuple)
            self.journal.answer(self.journal.codec.encode(event), key, self._cause)
        super()._hand(waiter, event)

    def _registered(self, waiter: Waiter) -> None:
        # Checked by `DurableContext.wait_for_event`: the type has a name, the requirements
        # are JSON values.
        assert isinstance(waiter.key, tuple)
        task, k = waiter.key
        journal = self.journal
        journal.call(
            task, k, "wait", type=journal.codec.name(waiter.event_type), req=waiter.requirements
        )

    def put_task(self, task: PendingTask) -> None:
        """Queue a resumed run's unfinished ``task`` for its step again."""
        self.inboxes[task.step].put((task.task, task.event))  # type: ignore[arg-type]

    def reserve(
        self, key: tuple[str, int], event_type: type[Event], requirements: dict[str, Any]
    ) -> None:
        """Keep the place of a wait that was under way when the run's process stopped: an
        answer that comes before its step waits again is kept for it."""
        waiter = Waiter(event_type, requirements, None, key)
        self.waiters.append(waiter)
        self.reserved[key] = waiter

    async def resume_wait(self, key: tuple[str, int], timeout: float | None) -> Event | None:  # noqa: ASYNC109
        """Wait again in a reserved wait (without asking again); None if there is none."""
        waiter = self.reserved.pop(key, None)
        if waiter is None or waiter.event is not None:  # none, or answered meanwhile
            await trio.lowlevel.checkpoint()
            return None if waiter is None else waiter.event
        waiter.task = trio.lowlevel.current_task()
        waiter.worker = current_worker.get()
        with trio.fail_after(math.inf if timeout is None else timeout):
            return await self._park(waiter)

    def release(self, task: str) -> None:
        """``task`` finished without coming back to its reserved wait: let it go, and route
        an answer it was kept for as if it had just been sent."""
        if not self.reserved:  # the common case: one check per task
            return
        for key in [key for key in self.reserved if key[0] == task]:
            waiter = self.reserved.pop(key)
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            elif waiter.event is not None:
                self.delivered_to_waiters -= 1
                try:
                    self._route(waiter.event, None)
                except Exception as exc:
                    log(
                        logging.ERROR,
                        "an answer kept for a resumed wait was lost: %s",
                        describe(exc),
                    )

    async def emit_from(self, step_name: str, result: object, cause: object) -> None:
        """`emit`, with what is routed journaled as caused by ``cause``."""
        if isinstance(result, Event) and not isinstance(result, StopEvent | InputRequiredEvent):
            self.send_from(result, None, cause)
            return
        if isinstance(result, InputRequiredEvent):
            await self._stream.write(result)
            if self._graph.routes_for(type(result)):
                self.send_from(result, None, cause)
            return
        await self.emit(step_name, result)  # no event, or a stop event: nothing is routed


class DurableStore(Store[Any]):
    """`Store` whose writes are journaled, and not repeated by an attempt that repeats a lost
    one: ``set`` as a ``set`` call of its top-level name and that name's new value (as
    before typed state, so that a journal of either reads back the same), ``set_state``,
    ``clear`` and an ``edit_state`` block as a ``state`` call holding the whole state after it.

    A repeated ``edit_state`` block runs again on a copy of the state its lost attempt began
    from (which the journal's fold gives back: `_journal.fold`), and its edit is dropped: the
    journal holds it already, and the step's code sees what it saw the first time.
    """

    def __init__(
        self, journal: Journal, run_state: RunState, found: StateClass, tree: dict[str, Any]
    ) -> None:
        self._start(found)
        self._journal = journal
        self._run_state = run_state
        self._state = found.from_json(tree)

    def _call(self, op: str) -> tuple[str, int] | None:
        """The task and number the write under way is journaled as (the caller's: ``(x,
        0)``), or None if its lost attempt made it (it is not made again).

        Raises:
            WorkflowRuntimeError: a write from outside the steps once the run has ended.
        """
        ref = _ref()
        if ref is None:  # from outside the run's steps (the caller): journaled as such
            if self._run_state.decided:
                raise WorkflowRuntimeError(
                    "this run has ended: its store is kept as it ended; give its context to "
                    "a new run (ctx=...) to go on from there"
                )
            return OUTSIDE, 0
        k = ref.next()
        if ref.recorded(k, op) is not None:
            return None  # made before the crash: the store has it
        return ref.task, k

    def _set_now(self, names: list[str], value: Any) -> None:
        where = self._call("set")
        if where is None:
            return
        name, new = self._new_value(names, value)
        found = self._class
        if not found.typed:
            check_storable(name, new)
            self._journal.call(*where, "set", key=name, value=new)
            self._state[name] = new
            return
        # Written in a copy first: a value the journal cannot hold changes nothing.
        state = copy.copy(self._state)
        found.assign(state, name, new)
        tree = self._tree(state, f"ctx.store.set({'.'.join(names)!r}, ...)")
        self._journal.call(*where, "set", key=name, value=tree[name])
        self._state = state

    def _replace_now(self, state: Any) -> None:
        where = self._call("state")
        if where is not None:
            self._record(where, state, "ctx.store.set_state() or clear()")

    def _begin_edit(self) -> tuple[Any, object]:
        ref = _ref()
        if ref is not None:
            k = ref.next()
            recorded = ref.recorded(k, "state")
            if recorded is not None:  # edited before the crash: again on what it began from
                return self._class.from_json(recorded.get("before", {})), None
            return self._class.copy(self._state), (ref.task, k)
        return self._class.copy(self._state), self._call("state")

    def _end_edit(self, draft: Any, token: object) -> None:
        if token is not None:
            assert isinstance(token, tuple)
            self._record(token, draft, "ctx.store.edit_state()")

    def _record(self, where: tuple[str, int], state: Any, what: str) -> None:
        """Journal ``state`` as the whole state, then install it."""
        self._journal.call(*where, "state", value=self._tree(state, what))
        self._state = state

    def _tree(self, state: Any, what: str) -> dict[str, Any]:
        try:
            return self._class.to_json(state)
        except TypeError as exc:
            raise NotJournalable(
                f"{what} in a durable run: {exc}; a durable run's state holds JSON values "
                "(None, bool, int, float, str, list, dict with str keys, and for typed state "
                "what its fields' types read back from them), which it can record and give "
                "back as they are"
            ) from None


class DurableContext(Context):
    """`Context` whose calls are numbered per step execution and journaled."""

    def __init__(self, run: Run, router: DurableRouter, journal: Journal) -> None:
        self._start(type(run.workflow), run.graph.state_class)
        self._bind(run)
        self._durable_router = router
        self._journal = journal
        self.store = DurableStore(journal, run.state, run.graph.state_class, {})

    def send_event(self, event: Event, step: str | None = None) -> None:
        if not isinstance(event, Event):
            raise TypeError(f"send_event() takes an Event, got {event!r}")
        ref = _ref()
        if ref is None:
            self._durable_router.send_from(event, step, OUTSIDE)
            return
        k = ref.next()
        if ref.recorded(k, "send") is not None:
            return  # routed before the crash: its steps have it
        self._durable_router.send_from(event, step, [ref.task, k])

    def collect_events(self, event: Event, expected: Sequence[type[Event]]) -> list[Event] | None:
        if not isinstance(event, Event):
            raise TypeError(f"collect_events() takes an Event, got {event!r}")
        ref = _ref()
        codec = self._journal.codec
        if ref is None:
            return super().collect_events(event, expected)
        k = ref.next()
        recorded = ref.recorded(k, "collect")
        if recorded is not None:
            result = recorded["result"]
            return None if result is None else [codec.decode(item) for item in result]
        encoded = codec.encode(event)
        names = [codec.name(t) if isinstance(t, type) else repr(t) for t in expected]
        collected = super().collect_events(event, expected)
        self._journal.call(
            ref.task,
            k,
            "collect",
            step=current_step.get(),
            event=encoded,
            expected=names,
            result=None if collected is None else [codec.encode(e) for e in collected],
        )
        return collected

    async def wait_for_event(
        self,
        event_type: type[_E],
        *,
        waiter_event: Event | None = None,
        requirements: Mapping[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (API.md fixes this parameter)
    ) -> _E:
        ref = _ref()
        if ref is None:
            return await super().wait_for_event(
                event_type, waiter_event=waiter_event, requirements=requirements, timeout=timeout
            )
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"wait_for_event() waits for an Event subclass, got {event_type!r}")
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        wanted = dict(requirements or {})
        check_storable("requirements", wanted)
        self._journal.codec.name(event_type)  # one it can record
        k = ref.next()
        recorded = ref.recorded(k, "wait")
        router = self._durable_router
        key = (ref.task, k)
        if recorded is not None:  # asked before the crash: never asked again
            answer = ref.answers.get(k)
            if recorded.get("timed_out") or answer is not None:
                await trio.lowlevel.checkpoint()
                if answer is None:
                    raise trio.TooSlowError  # it gave up before the crash: so it does again
                assert isinstance(answer, event_type)
                return answer
        try:
            if recorded is not None:  # it waits again
                answer = await router.resume_wait(key, timeout)
                if answer is None:
                    answer = await router.wait_for(
                        event_type,
                        wanted,
                        None,
                        timeout,
                        self.write_event_to_stream,
                        key,
                        worker=current_worker.get(),
                    )
            else:
                answer = await router.wait_for(
                    event_type,
                    wanted,
                    waiter_event,
                    timeout,
                    self.write_event_to_stream,
                    key,
                    worker=current_worker.get(),
                )
        except trio.TooSlowError:
            self._journal.call(ref.task, k, "wait", timed_out=True)
            raise
        assert isinstance(answer, event_type)
        return answer


def _seed(held: Context[Any]) -> dict[str, Any]:
    """The state of the context a caller gave a new run, as JSON values to journal.

    Raises:
        NotJournalable: something in it is no JSON value (nothing is started).
    """
    store = held.store
    if not store._class.typed:
        seed = dict(store._state)
        for key, value in seed.items():
            check_storable(key, value, given=True)
        return seed
    try:
        return store._class.to_json(store._state)
    except TypeError as exc:
        raise NotJournalable(
            f"the context given to a durable run (ctx=...): its {exc}; a durable run's state "
            "holds JSON values, which it can record and give back as they are"
        ) from None


def _ref() -> TaskRef | None:
    execution = current_execution.get()
    return execution if isinstance(execution, TaskRef) else None


class Durable:
    """What makes one run durable (`Durability`): its journal, and when it is resumed, the
    fold of the journal it resumes from."""

    #: Its router's class (`_scoped.ScopedDurable`'s routes in streams).
    router_class: type[DurableRouter] = DurableRouter

    def __init__(
        self, journal: Journal, replay: Replay | None = None, *, lifecycle: bool = False
    ) -> None:
        self.journal = journal
        self.replay = replay
        #: Lifecycle events go to the stream (nobody in the process asks: its sink does).
        self.lifecycle = lifecycle
        #: The resumed tasks not yet taken by a worker, by name.
        self.resumed: dict[str, PendingTask] = {} if replay is None else dict(replay.pending)
        #: The process before stopped on purpose (else it crashed).
        self.replay_stopped = replay is not None and replay.stopped
        #: The store values a new run begins with (the caller's context's).
        self.seed: dict[str, Any] = {}

    def attach(self, run: Run) -> None:
        stream = run.stream
        assert isinstance(stream, DurableStream)
        state = run.state
        stream.sink.attach(lambda error: not state.decided and state.fail("", error))
        state.on_stop = functools.partial(self._stop_recording, run)
        run.observation.stream_lifecycle(self.lifecycle)
        router = self.router_class(run.graph, run.state, run.stream, self.journal)
        run.router = router
        context = DurableContext(run, router, self.journal)
        run.context = context
        replay = self.replay
        held = run.held
        found = run.graph.state_class
        if replay is None and held is not None:  # begins with the caller's store (`begin`)
            self.seed = _seed(held)
            context.store = DurableStore(self.journal, run.state, found, self.seed)
        if replay is not None:
            try:
                context.store = DurableStore(self.journal, run.state, found, replay.store)
            except ValueError as exc:
                raise ReplayError(f"the journal's state does not fit: {exc}") from None
            for step_name, event, expected in replay.collects:
                context._collector.collect(step_name, event, expected)

    def worker(self) -> Callable[[Run, int], Awaitable[None]]:
        return functools.partial(work, loop=self._loop)  # type: ignore[arg-type]

    def begin(self, run: Run) -> None:
        router = run.router
        assert isinstance(router, DurableRouter)
        if self.replay is None or self.replay.next_n == 0:  # nothing journaled yet
            for key, value in self.seed.items():
                self.journal.call(OUTSIDE, 0, "set", key=key, value=value)
            router.send_from(run.start_event, None, "start")
            return
        codec = self.journal.codec
        for task in self.replay.pending.values():
            waiting = task.open_wait()
            if waiting is not None:
                k, call = waiting
                router.reserve((task.task, k), codec.lookup(call["type"]), call["req"])
            router.put_task(task)

    async def committed(self) -> None:
        """Wait until what the run journaled so far is committed."""
        await self.journal.committed()

    def cancelled(self) -> None:
        self.journal.cancel()

    @property
    def suspended(self) -> bool:
        return self.journal.stopped

    def suspend(self, run: Run) -> bool:
        return run.state.stop()

    def _stop_recording(self, run: Run) -> None:
        """The run is stopped from outside (`RunState.stop`): from here on nothing it does is
        recorded, as if its process had stopped now, so it resumes from here."""
        self.journal.stop()
        stream = run.stream
        assert isinstance(stream, DurableStream)
        stream.suspended = True

    async def _loop(self, crew: Run, index: int, me: WorkerState) -> None:
        await _work_durable(crew, index, me, self)


async def _work_durable(crew: Run, index: int, me: WorkerState, durable: Durable) -> None:
    """`_work`, journaled (see the module docstring)."""
    spec = crew.graph.steps[index]
    call = _step_call(crew, spec)
    router = crew.router
    assert isinstance(router, DurableRouter)
    get: Callable[[], Awaitable[tuple[str, Event] | None]]
    get = router.inboxes[index].getter()  # type: ignore[assignment]  # (pairs: `_put`)
    state = crew.state
    while True:
        item = await get()
        if item is None or state.outcome is not None:
            return
        task, event = item
        me.taken += 1
        me.busy = True
        crew.idle.working()
        try:
            await _execute(crew, spec, index, call, event, task, durable)
        finally:
            me.busy = False
            router.release(task)
        crew.idle.poke()


async def _execute(
    crew: Run,
    spec: StepSpec,
    index: int,
    call: StepCall,
    event: Event,
    task: str,
    durable: Durable,
) -> None:
    """Run ``task`` (``event`` for step ``index``) to its end: attempts, retries, and what
    its result or failure does next."""
    outcome = await attempt_task(crew, spec, call, event, task, durable)
    if outcome is None:
        return  # suspended
    attempt, result, failure, elapsed, ref = outcome
    router = crew.router
    assert isinstance(router, DurableRouter)
    routed = ref.recorded(RETURNED, "send") is not None
    if failure is not None:
        await _final_failure(
            crew, spec, index, task, event, failure, attempt, elapsed, routed=routed
        )
        return
    if isinstance(result, StopEvent):
        # Not journaled as done: should the process stop before the run's end is recorded,
        # the step runs again and ends the run again.
        await router.emit(spec.name, result)
        return
    if result is not None and not routed:
        try:
            await router.emit_from(spec.name, result, [task, RETURNED])
        except Exception as exc:
            await _final_failure(crew, spec, index, task, event, exc, attempt)
            return
    router.journal.done(task, attempt)


async def attempt_task(
    crew: Run, spec: StepSpec, call: StepCall, event: Event, task: str, durable: Durable
) -> tuple[int, Any, Exception | None, float, TaskRef] | None:
    """The attempts of ``task``, journaled, from where a resumed one stopped: the last
    attempt's number, its result, its final failure (None if it succeeded), the seconds from
    the first failure to the last, and its `TaskRef`; None when this process may no longer
    act for the run (it is suspended)."""
    resumed = durable.resumed.pop(task, None)
    router = crew.router
    assert isinstance(router, DurableRouter)
    journal = router.journal
    key = f"{crew.run_id}:{task}"
    attempt, tries = 1, 0
    memo: dict[int, dict[str, Any]] | None = None
    answers: dict[int, Event] | None = None
    if resumed is not None:
        tries = resumed.tries
        attempt = resumed.attempt + 1 if resumed.attempt else tries + 1
        memo, answers = resumed.calls, resumed.answers
        if resumed.attempt:  # it was running when its process stopped: that attempt is lost
            how = "was stopped" if durable.replay_stopped else "stopped (a crash, a kill)"
            lost = WorkerLost(
                f"the process running step {spec.name!r} {how} before the step finished; "
                "it runs again"
            )
            journal.fail(task, resumed.attempt, lost, final=False, lost=True)
            await crew.stream.write(failure_report(spec, resumed.attempt, lost, event))
    retry = spec.config.retry
    current_retry.set(None)  # (a task begins afresh, whatever the worker's last one left)
    first_failed: float | None = None
    elapsed = 0.0
    while True:
        if not journal.holds():
            # This process's hold on the run has run out (it was paused, or cut off): another
            # may run it by now. Start nothing: the run stops here, as if its process had.
            durable.suspend(crew)
            return None
        journal.start(task, attempt)
        ref = TaskRef(task, attempt, key, memo, answers)
        current_execution.set(ref)
        try:
            result = await _attempt(crew, spec, call, event, attempt)
        except Exception as exc:
            failure: Exception | None = exc
        else:
            failure = None
        if failure is None:
            current_retry.set(None)
            return attempt, result, None, elapsed, ref
        tries += 1
        now = trio.current_time()
        first_failed = now if first_failed is None else first_failed
        elapsed = now - first_failed
        delay = None
        if retry is not None:
            delay, failure = next_delay(retry, elapsed, tries, failure)
        if delay is None:
            current_retry.set(None)
            return attempt, None, failure, elapsed, ref
        failed = failure_report(spec, attempt, failure, event, elapsed)
        journal.fail(task, attempt, failure, final=False)
        try:
            await crew.stream.write(failed)
        except BaseException:
            crew.state.report(failed)
            raise
        assert retry is not None  # (only a policy gives a delay)
        attempt += 1
        # A retry's calls act again, as in memory; what was routed of a return stays so.
        memo, answers = kept_on_retry(memo) or None, None
        _log_retry(crew, spec, attempt, max_attempts(retry), delay, failure)
        if crew.observation.lifecycle:
            await crew.stream.write(
                StepRetryEvent(step_name=spec.name, attempt=attempt, delay=delay, exception=failure)
            )
        await trio.sleep(delay)
        current_retry.set(RetryInfo(attempt - 1, elapsed, failure, failed.failed_at))


async def _final_failure(
    crew: Run,
    spec: StepSpec,
    index: int,
    task: str,
    event: Event,
    exc: Exception,
    attempt: int,
    elapsed: float = 0.0,
    *,
    routed: bool = False,
) -> None:
    """`_worker._final_failure`, journaled: a failure its error handlers take finishes the
    task; one that ends the run is not journaled (run again, the step fails again).
    ``routed``: the lost attempt's failure (or result) was routed before its process stopped,
    so it is not routed again: its handlers have it once."""
    router = crew.router
    assert isinstance(router, DurableRouter)
    state = crew.state
    add_note(exc, _step_note(crew, spec, event))
    failed = failure_report(spec, attempt, exc, event, elapsed)
    handlers = crew.graph.handlers_for[index]
    if state.outcome is not None and isinstance(exc, RunEndedError):
        return
    if state.outcome is not None or not handlers:
        state.fail(spec.name, exc, failed)
        return
    try:
        await crew.stream.write(failed)
    except BaseException:
        state.report(failed)
        raise
    if not routed:
        router.put_from(failed, handlers, [task, RETURNED])
    router.journal.fail(task, attempt, exc, final=True)


def start_durable(
    workflow: Any,
    start_event: Event,
    *,
    store: Appender,
    run_id: str,
    sink: StreamSink,
    replay: Replay | None = None,
    time_used: float = 0.0,
    lifecycle: bool = False,
    stream: DurableStream | None = None,
    held: Context | None = None,
) -> AbstractAsyncContextManager[WorkflowHandler[Any], None]:
    """`Workflow.start`, for a run journaled to ``store`` whose stream goes to ``sink`` (with
    its lifecycle events if ``lifecycle``), through ``stream`` if given (a `TeeStream`, for a
    reader in the process); with ``replay``, a run resumed from its journal, ``time_used``
    seconds of its timeout gone; with ``held``, a new run beginning with that context's store.
    """
    journal = Journal(store, run_id, codec_for(workflow), 0 if replay is None else replay.next_n)
    if stream is None:
        stream = DurableStream(workflow.stream_buffer, sink)
    kind = Durable
    if workflow.graph.scoped:  # its steps fan out, collect or join: streams are journaled
        from ._scoped import ScopedDurable

        kind = ScopedDurable
    durable: dict[str, Any] = {"held": held} if held is not None else {}
    result: AbstractAsyncContextManager[WorkflowHandler[Any], None] = workflow._start(
        start_event,
        stream=stream,
        run_id=run_id,
        durable=kind(journal, replay, lifecycle=lifecycle),
        time_used=time_used,
        **durable,
    )
    return result
