"""`WorkerState`, what is seen of a step worker, and `IdleWatch`, which tells a run's stream
when the run waits with nothing to do (`WorkflowIdleEvent`).

A run is idle when its outcome is open, every event routed to a step has been taken by one of
its workers, and every worker is either waiting for its next event or parked in
``wait_for_event``: only an event from outside can move it on.

Idleness is a lifecycle event, written only while the stream's consumer asks for lifecycle
events, so the plain hop pays nothing for it: the workers poke the watch only on the observed
path (`_worker._observed_execution`, which they take while lifecycle events are asked for) and
in the loops of runs that keep account of streams or journal (not the plain hop), each time
a step execution has ended and its results are routed; a step pokes it as it parks in
``wait_for_event``, and a consumer as it asks. At a poke the run's state is what it is, so the
watch looks at once, and writes the event at once if the stream has room (else a task of its
own waits for room). Counting the events each step's inbox received against those its workers
took tells apart a worker that is waiting from one that was just handed an event and has not
run yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Protocol

import trio

from .._events import WorkflowIdleEvent
from ._state import RunState
from ._stream import EventStream


class WorkerState:
    """What `WorkflowHandler.statistics` and a timeout's report see of one worker."""

    __slots__ = ("busy", "children", "idle_children", "prefix", "step", "taken", "waiting")

    def __init__(self, step: str, prefix: str = "") -> None:
        self.step = step
        #: Inside a step call right now.
        self.busy = False
        #: Parked in ``wait_for_event`` (inside a step call) right now.
        self.waiting = False
        #: Child runs its step runs (`Context.run_workflow`), and how many of them are idle:
        #: while all are, the step waits as if in ``wait_for_event``.
        self.children = 0
        self.idle_children = 0
        #: Events taken so far, and what names this worker in `key`.
        self.taken = 0
        self.prefix = prefix

    @property
    def key(self) -> str:
        """`Context.task_key` of the step execution under way: the run, the step, the worker
        and its count of events (retries of one execution keep it)."""
        return f"{self.prefix}.{self.taken}"


#: The worker whose step code runs in this task (set once by each worker, whatever its loop).
current_worker: ContextVar[WorkerState | None] = ContextVar("trioflow_worker", default=None)


class _Inbox(Protocol):
    received: int


class _Observation(Protocol):
    lifecycle: bool

    def watch(self) -> None: ...


class IdleWatch:
    """The idle detector of one run (see the module docstring)."""

    def __init__(
        self,
        state: RunState,
        stream: EventStream,
        inboxes: Sequence[_Inbox],
        workers: Sequence[WorkerState],
        observation: _Observation,
    ) -> None:
        self._state = state
        self._stream = stream
        self._inboxes = inboxes
        self._workers = workers
        self._observation = observation
        #: Where the watch's task runs (the run's nursery), once the run is under way.
        self.nursery: trio.Nursery | None = None
        self._wake: trio.Event | None = None
        #: The run was idle when last looked at, and said so.
        self._said = False
        #: Told whether the run is idle, for a parent run whose step runs it (`tell_parent`).
        self._parent: Callable[[bool], None] | None = None
        #: What the parent was last told.
        self.told_idle = False
        #: The scope of an idle event waiting for room in the stream: withdrawn (cancelled)
        #: once the run is busy again, so that none says so late.
        self._pending: trio.CancelScope | None = None

    def tell_parent(self, tell: Callable[[bool], None]) -> None:
        """Call ``tell(idle)`` each time this run becomes idle or busy again: it is the child
        of a step of another run (`Context.run_workflow`), which waits while it is idle."""
        self._parent = tell
        self._observation.watch()

    def _busy(self) -> None:
        self._said = False
        if self._pending is not None:
            self._pending.cancel()
        self._tell(False)

    def _tell(self, idle: bool) -> None:
        if self._parent is not None and idle != self.told_idle:
            self.told_idle = idle
            self._parent(idle)

    def poke(self) -> None:
        """Something that may make the run idle happened (a step execution ended, its results
        routed; a step parks in ``wait_for_event``; a consumer asks): if the run is idle now,
        and has not said so since it last was busy, say so."""
        if not self._observation.lifecycle and self._parent is None:
            return
        if not self.is_idle():
            self._busy()
            return
        self._tell(True)
        if self._said or not self._observation.lifecycle:
            return
        self._said = True
        try:
            self._stream.write_nowait(WorkflowIdleEvent())
        except trio.WouldBlock:  # (a full stream) its own task waits for room
            self._said = False
            self._wake_watch()
        except trio.ClosedResourceError:  # the run is ending: nobody is told of idleness
            pass

    def _wake_watch(self) -> None:
        if self._wake is None:
            if self.nursery is None:
                return  # the run is not under way yet
            self._wake = trio.Event()
            self.nursery.start_soon(self._watch, name="trioflow idle watch")
        self._wake.set()

    def working(self) -> None:
        """The run is not idle (a step execution starts, a waiting step is answered): the
        next time it is, it says so again."""
        self._busy()

    def is_idle(self) -> bool:
        if self._state.outcome is not None:
            return False
        taken = sum(worker.taken for worker in self._workers)
        if taken != sum(inbox.received for inbox in self._inboxes):
            return False  # an event waits for a step, or was handed to a worker not yet run
        return all(
            worker.waiting or not worker.busy or 0 < worker.children == worker.idle_children
            for worker in self._workers
        )

    async def _watch(self) -> None:
        """Say so where the stream had no room: once there is, unless the run is busy again
        by then (`_busy` withdraws the event)."""
        while True:
            assert self._wake is not None
            await self._wake.wait()
            self._wake = trio.Event()
            if not self.is_idle():
                self._said = False
            elif not self._said and self._observation.lifecycle:
                self._said = True
                with trio.CancelScope() as self._pending:
                    await self._stream.write(WorkflowIdleEvent())
                self._pending = None
