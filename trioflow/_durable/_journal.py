"""A durable run's journal: what it records, and `fold`, which reads it back into a `Replay`.

The journal is one ordered log per run, appended to synchronously (in O(1)) by the run's own
tasks, and committed in order by the store's group commit. Log order is causal order: whatever
a step saw was recorded before what the step did about it, so a crash keeps a prefix of the
log that never holds an effect without its cause.

Records, by kind (bodies are JSON):

- ``route``: an event was routed: ``{"event", "cause", "to": [step indexes]}`` or, to a step
  waiting in `Context.wait_for_event`, ``{"event", "cause", "answer": [task, k]}``. Each
  destination step gets a *task*, named ``"<n>.<step index>"`` after the record's number ``n``:
  a stable name for one execution of one step, whatever happens to the process. ``cause`` is
  ``"start"``, ``"x"`` (sent from outside the run), ``["x", seq]`` (sent to it through a
  shared store's inbox, row ``seq``) or ``[task, k]``: call ``k`` of that task's
  step code (``k = -1``: what the step returned, or its failure handed to error handlers;
  ``[task, -1, i]``: member ``i`` of the list it returned, a fan-out).

  In the runs of a workflow whose steps fan out, collect or join, every ``route`` also says
  in which *stream* it was made, ``"in"``: the name of the task whose fan-out opened the
  stream (the members of that fan-out carry it first), or null for none. ``"keep"``: the
  collecting steps whose buffer of that stream took the event (rather than a task); ``"j"``:
  which of the ``to`` steps are joins. A collecting step released (its ``Take(n)`` reached,
  or its stream done) is a ``route`` of its own, ``{"collected": [events], "of": stream,
  "in": its parent, "to": [step], "cause": "collect"}``, whose task runs the step with a
  `CollectedEvents`. A join's delivery that it only kept for later is ``done`` with attempt 0.
- ``start``: ``{"task", "attempt"}``: an attempt of a task began.
- ``call``: ``{"task", "k", "op", ...}``: call ``k`` of a task's step code, other than a send
  (``set``: a store value, ``{"key", "value"}``, the new value of a top-level key or field;
  ``state``: the whole state, ``{"value"}``, after ``set_state``, ``clear`` or an
  ``edit_state`` block; ``collect``: `Context.collect_events` and what it returned; ``wait``:
  `Context.wait_for_event` asked and waits, or with ``"timed_out"`` gave up).
- ``done``: ``{"task", "attempt"}``: the task is finished (what it returned was routed
  before).
- ``fail``: ``{"task", "attempt", "error", "final", "lost"}``: an attempt failed; ``final``:
  the failure went to the step's error handlers, so the task is finished; ``lost``: its
  process stopped while it ran (a recovery wrote this).
- ``cancel``: ``{}``: the caller cancelled the run.
- ``stop``: ``{}``: the run was stopped on purpose (its server shut down): the last record of
  its process, so that a recovery can tell a stop from a crash.

A resumed run is the fold of its journal: the tasks that are not finished, what the store and
the collect buffers held, and for each unfinished task the results of the context calls its
lost attempt made, so that running the step again repeats none of them (`TaskRef`).
"""

from __future__ import annotations

import contextlib
import logging
from contextvars import ContextVar
from typing import Any, Protocol

import attrs

from .._errors import ReplayError
from .._events import CollectedEvents, Event
from .._store import JournalEntry, Operation, StoreError
from .._wire import dumps, encode_exception, loads
from ._codec import EventCodec

logger = logging.getLogger("trioflow.durable")

#: The task whose step code runs in this context (set by a durable run's step workers).
current_ref: ContextVar[TaskRef | None] = ContextVar("trioflow_task", default=None)

#: The task of what comes from outside the run's steps (its caller): an event sent, a store
#: value set (a ``call`` record of this task is journaled, never replayed as a task's).
OUTSIDE = "x"

#: The call number of what a step returned (or its failure handed on), in a ``cause``.
RETURNED = -1


class Appender(Protocol):
    """What a journal appends to: a store's pending list (`Store`)."""

    def append(self, operation: Operation) -> int: ...

    async def flushed(self, commits: int) -> None: ...

    def holds(self, run_id: str) -> bool: ...


class Journal:
    """The journal of one run, from its next record on."""

    def __init__(self, store: Appender, run_id: str, codec: EventCodec, next_n: int = 0) -> None:
        self._store = store
        self.run_id = run_id
        self.codec = codec
        self.next_n = next_n
        #: What `Store.append` returned for the last record: see `committed`.
        self._ticket = 0
        #: Records are no longer written (the run is suspended: `stop`).
        self.stopped = False

    def stop(self) -> None:
        """Write nothing more but a ``stop`` record: the journal ends here, as a crash now
        would end it, saying it was a stop. On a store that has failed, nothing: it ends
        where its commits ended, as after a crash."""
        with contextlib.suppress(StoreError):
            self._write("stop", {})
        self.stopped = True

    def _write(self, kind: str, body: dict[str, Any]) -> int:
        n = self.next_n
        if self.stopped:
            self.next_n = n + 1
            return n
        self._ticket = self._store.append(JournalEntry(self.run_id, n, kind, dumps(body)))
        self.next_n = n + 1
        return n

    def holds(self) -> bool:
        """Whether this process may still act for the run (on a store that processes share,
        its hold on the run has not run out): a step is started only then."""
        return self._store.holds(self.run_id)

    async def committed(self) -> None:
        """Wait until every record appended so far is committed."""
        await self._store.flushed(self._ticket)

    def route(self, event: dict[str, Any], steps: list[int], cause: object) -> int:
        """``event`` (encoded) goes to ``steps``; returns the record's number, which names
        the tasks."""
        return self._write("route", {"event": event, "cause": cause, "to": steps})

    def route_in(
        self,
        event: dict[str, Any],
        steps: list[int],
        cause: object,
        scope: str | None,
        keep: list[int],
        joins: list[int],
    ) -> int:
        """`route`, in the stream ``scope`` (see the module docstring)."""
        body: dict[str, Any] = {"event": event, "cause": cause, "to": steps, "in": scope}
        if keep:
            body["keep"] = keep
        if joins:
            body["j"] = joins
        return self._write("route", body)

    def release(self, events: list[dict[str, Any]], step: int, of: str, scope: str | None) -> int:
        """Collecting step ``step`` runs on ``events``, collected in stream ``of``, in the
        stream ``scope`` (``of``'s parent); returns the record's number."""
        return self._write(
            "route",
            {"collected": events, "cause": "collect", "to": [step], "of": of, "in": scope},
        )

    def answer(self, event: dict[str, Any], key: tuple[str, int], cause: object) -> None:
        self._write("route", {"event": event, "cause": cause, "answer": list(key)})

    def start(self, task: str, attempt: int) -> None:
        self._write("start", {"task": task, "attempt": attempt})

    def call(self, task: str, k: int, op: str, **fields: Any) -> None:
        self._write("call", {"task": task, "k": k, "op": op, **fields})

    def cancel(self) -> None:
        """The caller cancelled the run."""
        self._write("cancel", {})

    def done(self, task: str, attempt: int) -> None:
        self._write("done", {"task": task, "attempt": attempt})

    def fail(
        self, task: str, attempt: int, error: BaseException, *, final: bool, lost: bool = False
    ) -> None:
        self._write(
            "fail",
            {
                "task": task,
                "attempt": attempt,
                "error": encode_exception(error),
                "final": final,
                "lost": lost,
            },
        )


class TaskRef:
    """One attempt of one task, as its step code's context calls see it: their numbers, and
    for an attempt that repeats a lost one, what that one's calls did (``memo``)."""

    __slots__ = ("answers", "attempt", "k", "key", "memo", "task")

    def __init__(
        self,
        task: str,
        attempt: int,
        key: str,
        memo: dict[int, dict[str, Any]] | None = None,
        answers: dict[int, Event] | None = None,
    ) -> None:
        self.task = task
        self.attempt = attempt
        #: `Context.task_key`.
        self.key = key
        self.k = 0
        self.memo = memo or None
        self.answers = answers or {}

    def next(self) -> int:
        k = self.k
        self.k = k + 1
        return k

    def recorded(self, k: int, op: str) -> dict[str, Any] | None:
        """What call ``k`` did in the lost attempt, if it was an ``op`` (else None: the call
        acts). A call of another kind than recorded means the step does not repeat itself:
        it is logged, and from there on its calls act."""
        memo = self.memo
        if memo is None:
            return None
        found = memo.get(k)
        if found is None or found["op"] == op:
            return found
        logger.warning(
            "trioflow: task %s runs differently than before its process stopped (call %d was "
            "%s, now %s); its calls act from here on (NonDeterministicReplay)",
            self.task,
            k,
            found["op"],
            op,
        )
        self.memo = None
        return None


@attrs.define(eq=False)
class PendingTask:
    """A task the journal holds as not finished."""

    task: str
    step: int
    event: Event
    #: The attempt that ran last (0: none began).
    attempt: int = 0
    #: Attempts that failed (and were retried): what the step's retry policy counts.
    tries: int = 0
    #: What the context calls of its current attempt did, by call number (see `TaskRef`).
    calls: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    #: Answers its waits were handed, by call number.
    answers: dict[int, Event] = attrs.field(factory=dict)
    #: The stream it runs in (the name of the task that opened it), None for none.
    scope: str | None = None
    #: For a join's delivery that completed it before the crash: what it was joined with
    #: (set by `_scoped.rebuild`): it runs with that, and is not collected again.
    joined: Event | None = None

    def open_wait(self) -> tuple[int, dict[str, Any]] | None:
        """Its last call, if that is a wait still unanswered: where it was when it stopped."""
        if not self.calls:
            return None
        k = max(self.calls)
        call = self.calls[k]
        if call["op"] != "wait" or call.get("timed_out") or k in self.answers:
            return None
        return k, call


@attrs.define(eq=False)
class Replay:
    """A journal, folded: what a resumed run starts from."""

    #: The unfinished tasks, in the order they were routed.
    pending: dict[str, PendingTask] = attrs.field(factory=dict)
    #: The run's state as its ``set`` and ``state`` calls left it, as JSON values (a typed
    #: state's fields).
    store: dict[str, Any] = attrs.field(factory=dict)
    #: `Context.collect_events` calls to make again, in order: (step, event, expected).
    collects: list[tuple[str, Event, tuple[type[Event], ...]]] = attrs.field(factory=list)
    #: The number of the next record.
    next_n: int = 0
    #: The caller cancelled the run (its end was not recorded): it ends so at recovery.
    cancelled: bool = False
    #: Its process stopped on purpose (a ``stop`` record is its last), not by a crash.
    stopped: bool = False
    #: The inbox rows (on a store shared by processes) whose events it was sent, by seq:
    #: delivered once, whichever process delivered them.
    inbox: set[int] = attrs.field(factory=set)
    #: Its streams and join deliveries, if its records say in which stream each route was
    #: made (a workflow that fans out, collects or joins); else None.
    scopes: ScopeFold | None = None

    @property
    def executing(self) -> bool:
        """Whether a step was running when its process stopped (a task began and neither
        finished nor waits for an answer): what counts as a recovery (``max_recoveries``)."""
        return any(t.attempt and t.open_wait() is None for t in self.pending.values())


@attrs.define(eq=False)
class StreamFold:
    """A stream, as the journal left it."""

    #: The stream its fan-out ran in (None: none).
    parent: str | None
    #: The index of the step whose fan-out opened it.
    step: int
    #: What its collecting steps' buffers got, by step, in order.
    kept: dict[int, list[Event]] = attrs.field(factory=dict)
    #: The collecting steps it was released to.
    released: set[int] = attrs.field(factory=set)


@attrs.define(eq=False)
class ScopeFold:
    """The streams and join deliveries of a journal (`Replay.scopes`)."""

    #: Every stream the journal names, by name (the task that opened it).
    streams: dict[str, StreamFold] = attrs.field(factory=dict)
    #: The deliveries to joins not collected yet, by task: (step, event).
    uncollected: dict[str, tuple[int, Event]] = attrs.field(factory=dict)
    #: The deliveries to joins, in the order the joins collected them (that of their first
    #: ``start``, or ``done`` with attempt 0: a step's workers may take its deliveries in
    #: another order than they were routed): (step, task, event).
    collected: list[tuple[int, str, Event]] = attrs.field(factory=list)

    def stream(self, name: str, parent: str | None) -> StreamFold:
        """Stream ``name``, known from here on if it was not (opened in ``parent``)."""
        found = self.streams.get(name)
        if found is None:
            found = self.streams[name] = StreamFold(parent, int(name.rsplit(".", 1)[1]))
        return found


def _scopes(replay: Replay) -> ScopeFold:
    if replay.scopes is None:
        replay.scopes = ScopeFold()
    return replay.scopes


def fold(records: list[tuple[int, str, bytes]], codec: EventCodec, step_names: list[str]) -> Replay:
    """Read a run's committed journal back.

    Raises:
        ReplayError: a record does not fit the workflow (an event type it no longer has, a
            step index out of range) or cannot be read.
    """
    replay = Replay()
    for n, kind, raw in records:
        try:
            _apply(replay, n, kind, loads(raw), codec, step_names)
        except ReplayError:
            raise
        except Exception as error:
            raise ReplayError(f"journal record {n} ({kind}) does not fit: {error}") from None
        replay.next_n = n + 1
        replay.stopped = kind == "stop"
    return replay


def _apply(
    replay: Replay,
    n: int,
    kind: str,
    body: dict[str, Any],
    codec: EventCodec,
    step_names: list[str],
) -> None:
    pending = replay.pending
    if kind == "route":
        if "of" in body:  # a collecting step released
            _release(replay, n, body, codec, step_names)
            return
        event = codec.decode(body["event"])
        cause = body["cause"]
        if isinstance(cause, list):
            if cause[0] in pending:
                if len(cause) > 2:  # member ``cause[2]`` of a fan-out: those before it too
                    pending[cause[0]].calls[cause[1]] = {"op": "send", "members": cause[2] + 1}
                else:
                    pending[cause[0]].calls[cause[1]] = {"op": "send"}
            elif cause[0] == OUTSIDE:  # the event of inbox row ``cause[1]``
                replay.inbox.add(cause[1])
        answer = body.get("answer")
        if answer is not None:
            task, k = answer
            if task in pending:
                pending[task].answers[k] = event
            return
        scope = None
        if "in" in body:
            scope = _scoped_route(replay, n, body, event)
        for step in body["to"]:
            if not 0 <= step < len(step_names):
                raise ReplayError(f"journal record {n} routes to step {step}, which is gone")
            task = f"{n}.{step}"
            pending[task] = PendingTask(task, step, event, scope=scope)
        return
    if kind == "cancel":
        replay.cancelled = True
        return
    if kind == "stop":
        return
    if kind not in ("call", "start", "done", "fail"):
        raise ReplayError(f"journal record {n} is of an unknown kind {kind!r}")
    scopes = replay.scopes
    if scopes is not None and kind != "call" and scopes.uncollected:
        delivery = scopes.uncollected.pop(body["task"], None)
        if delivery is not None:  # a join's delivery, collected just before this record
            scopes.collected.append((delivery[0], body["task"], delivery[1]))
    task = pending.get(body["task"])
    if kind == "call":
        op = body["op"]
        if op == "set":
            replay.store[body["key"]] = body["value"]
        elif op == "state":
            if task is not None:
                # What an edit began from, for the attempt that repeats it (`DurableStore`):
                # a shallow copy is enough, since the fold never changes a value in place.
                body["before"] = dict(replay.store)
            replay.store = dict(body["value"])
        elif op == "collect":
            expected = tuple(codec.lookup(name) for name in body["expected"])
            replay.collects.append((body["step"], codec.decode(body["event"]), expected))
        if task is not None:
            task.calls[body["k"]] = body
    elif kind == "start":
        if task is not None:
            task.attempt = body["attempt"]
    elif kind == "done":
        pending.pop(body["task"], None)
    elif kind == "fail":
        if body["final"]:
            pending.pop(body["task"], None)
        elif task is not None and not body["lost"]:
            # Retried: the next attempt starts afresh, its calls act again; but what an
            # attempt before it returned and was routed stays routed (`kept_on_retry`).
            task.tries += 1
            task.calls = kept_on_retry(task.calls)
            task.answers.clear()


def kept_on_retry(calls: dict[int, dict[str, Any]] | None) -> dict[int, dict[str, Any]]:
    """What a retry keeps of an attempt's calls: only the routing of what an earlier attempt
    returned (a lost one, routed before its process stopped), so that the attempt that
    succeeds does not route it again, nor the members of a fan-out routed already."""
    if calls and RETURNED in calls:
        return {RETURNED: calls[RETURNED]}
    return {}


def _scoped_route(replay: Replay, n: int, body: dict[str, Any], event: Event) -> str | None:
    """The stream accounting of a route made in a stream (``"in"``); returns the stream."""
    scopes = _scopes(replay)
    scope: str | None = body["in"]
    if scope is not None:
        opener = replay.pending.get(scope)  # (a stream is first named by its fan-out's
        # members, while the task that opened it has not finished)
        stream = scopes.stream(scope, None if opener is None else opener.scope)
        for step in body.get("keep", ()):
            stream.kept.setdefault(step, []).append(event)
    for step in body.get("j", ()):
        scopes.uncollected[f"{n}.{step}"] = (step, event)
    return scope


def _release(
    replay: Replay, n: int, body: dict[str, Any], codec: EventCodec, step_names: list[str]
) -> None:
    """A ``route`` releasing a collecting step: its task runs it on what was collected."""
    (step,) = body["to"]
    if not 0 <= step < len(step_names):
        raise ReplayError(f"journal record {n} routes to step {step}, which is gone")
    scope: str | None = body["in"]
    _scopes(replay).stream(body["of"], scope).released.add(step)
    events = tuple(codec.decode(item) for item in body["collected"])
    task = f"{n}.{step}"
    replay.pending[task] = PendingTask(task, step, CollectedEvents(events=events), scope=scope)
