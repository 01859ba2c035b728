"""Runs on a store: the row a run is kept in, its stream events as rows, the record of its end,
and whether (and from what) a run whose process stopped is resumed.

The server (`trioflow._server._registry`) and the embedded `RunStore` keep runs the same way,
so that either can read, serve or resume what the other wrote.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs
import trio

from .._core._state import RunStatus
from .._core._stream import EventStream
from .._errors import ReplayError, WorkerLost, WorkflowCancelledError, WorkflowRuntimeError
from .._events import (
    Event,
    StartEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
)
from .._store import (
    TERMINAL,
    EventKind,
    NewEvent,
    RunEnded,
    RunInterrupted,
    RunRow,
    Store,
    event_kind,
    event_row,
)
from .._wire import (
    BadJsonError,
    EncodeError,
    WireError,
    decode_start_event,
    dumps,
    encode_envelope,
    encode_event_data,
    encode_exception,
    encode_value,
    envelope_data,
    event_bases,
    loads,
    mark_unencodable,
    qualified_name,
    type_name,
)
from ._codec import codec_for, fingerprint
from ._journal import Replay, fold
from ._runtime import DurableStream, StreamSink

logger = logging.getLogger("trioflow.durable")


async def new_row(
    store: Store,
    name: str,
    workflow: Any,
    start_event: StartEvent,
    *,
    lifecycle: bool = False,
) -> RunRow:
    """The row of a new run of ``workflow`` (served as ``name``), numbered by ``store``, with
    its graph's fingerprint (what a resumption checks)."""
    return RunRow(
        uuid.uuid4().hex,
        await store.next_number(),
        name,
        RunStatus.RUNNING.value,
        dumps(mark_unencodable(encode_event_data(start_event))),
        lifecycle,
        0,
        None,
        None,
        time.time(),
        None,
        fingerprint=fingerprint(workflow),
    )


class RowSink:
    """A durable run's `StreamSink` on a store: each event is numbered, encoded once and
    appended as a row by the task that writes it, so that it is committed in order with the
    journal. A writer waits for the disk (`Store.room`)."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        workflow_name: str,
        *,
        seq: int = 0,
        tracebacks: bool = False,
    ):
        self.seq = seq
        #: Failures are written with their traceback text (`encode_envelope`).
        self.tracebacks = tracebacks
        self.run_id = run_id
        self.workflow_name = workflow_name
        self._store = store
        self._kinds: dict[type[Event], EventKind] = {}
        self._fail: Callable[[Exception], bool] = lambda _: False

    def attach(self, fail: Callable[[Exception], bool]) -> None:
        self._fail = fail

    def has_room(self) -> bool:
        return not self._store.full

    async def wait_for_room(self) -> None:
        await self._store.room()

    def write(self, seq: int, event: Event) -> None:
        cls = type(event)
        kind = self._kinds.get(cls) or self._kinds.setdefault(cls, event_kind(cls))
        envelope = encode_envelope(seq, event, tracebacks=self.tracebacks)
        try:
            json = dumps(envelope)
        except EncodeError as error:
            json = unencodable(self._fail, self.run_id, self.workflow_name, envelope, error)
        self._store.append(NewEvent(self.run_id, event_row(seq, kind, json), kind))
        self.seq = seq


def unencodable(
    fail: Callable[[Exception], bool],
    run_id: str,
    workflow_name: str,
    envelope: dict[str, Any],
    error: EncodeError,
) -> bytes:
    """The JSON of an event `dumps` refused: marked, failing the run (``fail``) if it still
    runs, since whoever reads the stream does not get what it streamed."""
    failure = EncodeError(
        f"the {envelope['type']} event (seq {envelope['seq']}) cannot be encoded as JSON: {error}",
        error.field,
    )
    if not fail(failure):  # decided: say what its readers miss
        logger.warning(
            "trioflow: run %s of %s: %s; it is sent with a marker in its place",
            run_id,
            workflow_name,
            failure,
        )
    return dumps(mark_unencodable(envelope))


class TeeStream(DurableStream):
    """A durable run's stream that a consumer in the process reads as well: each event goes
    to the sink (the store) and into the stream's own bounded buffer in one step, so that
    `WorkflowHandler.stream_events` gets it at write time, and the reader and the store see
    the writers' events in one order. A writer waits for room in both: the disk, and the
    reader (or, with nobody reading while ``result()`` waits, the buffer is emptied as in
    memory)."""

    def __init__(self, capacity: int, sink: StreamSink) -> None:
        super().__init__(capacity, sink)
        self._to_buffer = self._buffer.put_nowait
        self.send_nowait = self._send_to_both  # type: ignore[assignment]
        #: Events recorded by writers cancelled while they waited for room in the buffer
        #: (the run ended): the reader gets them before the end, as the store has them.
        self._late: list[Event] = []

    def _send_to_both(self, event: Event) -> None:
        if self.suspended:
            return
        sink = self.sink
        if not sink.has_room():
            raise trio.WouldBlock
        self._to_buffer(event)  # WouldBlock while the buffer is full: nothing written yet
        sink.write(sink.seq + 1, event)

    def write_nowait(self, event: Event) -> None:
        # For writers that cannot wait: WouldBlock (the router then makes room or says so)
        # leaves the sink untouched.
        if not self.suspended:
            self._to_buffer(event)
            sink = self.sink
            sink.write(sink.seq + 1, event)
        self.written += 1

    def make_room_if_unread(self) -> bool:
        # The memory stream's rule: DurableStream, which has no reader, always has room.
        return EventStream.make_room_if_unread(self)

    async def write_when_full(self, event: Event) -> None:
        started = trio.current_time()
        try:
            await self.sink.wait_for_room()
            if self.suspended:
                return
            # Recorded, and queued for the buffer, with no checkpoint between: a blocked
            # writer keeps its place in the buffer's queue (first in, first into the
            # buffer), and while one waits the buffer stays full for everyone else, so the
            # reader gets events in the order the store has them.
            sink = self.sink
            sink.write(sink.seq + 1, event)
            self._notify()  # `wait_closed` may have to drain for a stream nobody reads
            try:
                await self._buffer.put(event)
            except trio.Cancelled:
                self._late.append(event)
                raise
            except trio.ClosedResourceError:
                raise WorkflowRuntimeError("the run has ended; its stream is closed") from None
        finally:
            self.waited += trio.current_time() - started
        self.written += 1

    def close(self, terminal: StopEvent, trailing: Sequence[Event] = ()) -> None:
        self._close_for_reader(terminal, [*self._late, *trailing])
        self._record_end(terminal, trailing)


# -- the end of a run --


def error_json(error: BaseException, failed_step: str | None) -> dict[str, Any]:
    """A run's error as the store and ``GET /runs/{id}`` give it."""
    described = encode_exception(error)
    if failed_step is not None:
        described["step"] = failed_step
    return described


def stop_names(result: object) -> dict[str, Any] | None:
    """When ``result`` is a workflow's own stop event: its class's ``type``,
    ``qualified_name`` and ``bases``; else None."""
    if not isinstance(result, StopEvent):
        return None
    cls = type(result)
    return {
        "type": type_name(cls),
        "qualified_name": qualified_name(cls),
        "bases": list(event_bases(cls)),
    }


def run_ended(handler: Any, seq: int) -> RunEnded:
    """What the store keeps of a run that has ended (``handler``, a `WorkflowHandler`),
    whose last event is ``seq``."""
    result = error = result_type = None
    try:
        value = handler.result_nowait()
    except BaseException as raised:  # the run's own error, kept by its handler
        error = dumps(error_json(raised, handler.failed_step))
    else:
        result = dumps(mark_unencodable(encode_value(value)))
        names = stop_names(value)
        result_type = None if names is None else dumps(names).decode()
    ended_at = handler.ended_at or time.time()
    return RunEnded(handler.run_id, handler.status.value, result, error, ended_at, seq, result_type)


# -- runs whose process stopped --


@attrs.frozen
class Resume:
    """What a run of an earlier process is resumed from."""

    row: RunRow
    workflow: Any
    start_event: StartEvent
    #: The seq of its last committed event.
    last_seq: int
    replay: Replay
    #: Its process crashed while one of its steps ran: a recovery (``max_recoveries``).
    crashed: bool

    @property
    def time_used(self) -> float:
        """Seconds of its timeout gone (its timeout counts wall time)."""
        return max(0.0, time.time() - self.row.started_at)


async def unfinished(
    store: Store,
    workflows: Mapping[str, Any],
    *,
    max_recoveries: int,
    others: str = "fail",
    busy: Collection[str] = (),
    limit: int | None = None,
    unserved_after: float | None = None,
    cancelled_only: bool = False,
) -> list[Resume]:
    """The runs ``store`` has as running (their process stopped before they ended), to be
    resumed from their journals. One that cannot be resumed ends instead, recorded with a
    `WorkflowFailedEvent` saying why and status ``failed``: its workflow has changed
    (`ReplayError`), it was resumed ``max_recoveries`` times already (`WorkerLost`), it
    predates journals (`RunInterrupted`); or as cancelled, when its caller had cancelled it.
    A run of a workflow not in ``workflows`` fails too (``others="fail"``: a server that
    no longer serves it) or is left for later (``"keep"``: an embedded caller resumes the runs
    of the workflows it names). Runs in ``busy`` are left alone (under way in this process).

    On a store shared by processes, these are the runs this process claims (`Store.claim`,
    up to ``limit``): waiting to be claimed, or whose process died; only those of workflows in
    ``workflows`` with the same graph (a process with other code leaves them to the others),
    and with ``unserved_after``, runs that no process serving their graph claimed for that
    many seconds, which fail. A run that waited to be claimed has no journal: it starts from
    its start event.
    """
    served = {name: fingerprint(workflow) for name, workflow in workflows.items()}
    found = []
    claimed = await store.claim(
        served,
        limit=limit,
        busy=busy,
        unserved_after=unserved_after,
        cancelled_only=cancelled_only,
    )
    handled: set[str] = set()
    try:
        for row in claimed:
            if row.workflow not in workflows and others == "keep":
                continue
            found.append(await _resume_or_end(store, row, served, workflows, max_recoveries))
            handled.add(row.run_id)
    except Exception:
        # (A read failed: the database is gone for now.) The runs claimed and not handled go
        # back, for a later claim; those handled end, or are the caller's to start.
        await store.release([row.run_id for row in claimed if row.run_id not in handled])
        raise
    return [resume for resume in found if resume is not None]


async def _resume_or_end(
    store: Store,
    row: RunRow,
    served: Mapping[str, str],
    workflows: Mapping[str, Any],
    max_recoveries: int,
) -> Resume | None:
    """What the unfinished run of ``row`` resumes from; None if it ends instead (its end is
    appended: see `unfinished`)."""
    last = await store.last_seq(row.run_id)
    if last and await ended_on_stream(store, row.run_id, last):
        return None
    try:
        if store.shared and served.get(row.workflow) != row.fingerprint:
            raise ReplayError(
                f"no process serving workflow {row.workflow!r} with the graph it started on "
                "claimed it within unserved_grace"
            )
        return await _resumable(store, row, last, workflows, max_recoveries)
    except (ReplayError, WorkerLost, RunInterrupted) as error:
        interrupt(store, row, last, error)
    except WorkflowCancelledError as error:
        interrupt(store, row, last, error, WorkflowCancelledEvent(), RunStatus.CANCELLED)
    return None


async def _resumable(
    store: Store,
    row: RunRow,
    last: int,
    workflows: Mapping[str, Any],
    max_recoveries: int,
) -> Resume:
    """What ``row``'s run resumes from.

    Raises:
        RunInterrupted, ReplayError, WorkerLost: it cannot be resumed (the message says why).
        WorkflowCancelledError: its caller had cancelled it.
    """
    workflow = workflows.get(row.workflow)
    if not row.fingerprint:
        raise RunInterrupted(
            "the process running it stopped (a crash, a kill) before it ended, and it "
            "has no journal to resume from (a store of an older trioflow)"
        )
    if workflow is None:
        raise ReplayError(
            f"its process stopped, and this server no longer serves workflow {row.workflow!r}"
        )
    if fingerprint(workflow) != row.fingerprint:
        raise ReplayError(
            f"its process stopped, and workflow {row.workflow!r} has changed since it "
            "started (its steps or their events): its journal does not fit the new graph, "
            "so it is not resumed"
        )
    try:
        start_event = decode_start_event(workflow.graph.start_event_type, loads(row.start_event))
    except (WireError, BadJsonError) as error:
        raise ReplayError(f"its start event cannot be read back: {error}") from None
    records = await store.journal(row.run_id)
    replay = fold(records, codec_for(workflow), [spec.name for spec in workflow.graph.steps])
    if replay.cancelled or row.cancel_requested:
        # Its caller cancelled it; its process stopped before it recorded the end.
        raise WorkflowCancelledError(f"{row.workflow} run {row.run_id} was cancelled")
    # A crash counts against max_recoveries when one of the run's steps was running: not a
    # stop, nor a crash while the run only waited for an answer.
    crashed = replay.executing and not replay.stopped
    if crashed and row.recoveries >= max_recoveries:
        raise WorkerLost(
            f"its process stopped while one of its steps ran {row.recoveries + 1} times; "
            f"it was resumed {max_recoveries} times already (max_recoveries)"
        )
    if not records:  # submitted, never started (its process died first, or it was queued)
        logger.info("trioflow: starting run %s of %s", row.run_id, row.workflow)
        return Resume(row, workflow, start_event, last, replay, crashed=False)
    logger.info(
        "trioflow: resuming run %s of %s (%d unfinished steps; recovery %d)",
        row.run_id,
        row.workflow,
        len(replay.pending),
        row.recoveries + 1,
    )
    return Resume(row, workflow, start_event, last, replay, crashed)


def interrupt(
    store: Store,
    row: RunRow,
    last: int,
    error: Exception,
    ended: StopEvent | None = None,
    status: RunStatus = RunStatus.FAILED,
) -> None:
    """End ``row``'s run, which stopped with its process and is not resumed: with a
    `WorkflowFailedEvent` for ``error``, or ``ended`` with ``status``."""
    seq = last + 1
    if ended is None:
        ended = WorkflowFailedEvent(step_name="", exception=error)
    json = dumps(encode_envelope(seq, ended))
    store.append(NewEvent(row.run_id, event_row(seq, event_kind(type(ended)), json)))
    failure = dumps(encode_exception(error))
    store.append(RunEnded(row.run_id, status.value, None, failure, time.time(), seq))
    logger.log(
        logging.INFO if status is RunStatus.CANCELLED else logging.WARNING,
        "trioflow: run %s of %s %s: %s",
        row.run_id,
        row.workflow,
        "ends as its caller asked" if status is RunStatus.CANCELLED else "is not resumed",
        error,
    )


#: The status a run's terminal event says it ended with.
_ENDED_BY = {
    "WorkflowFailedEvent": RunStatus.FAILED,
    "WorkflowCancelledEvent": RunStatus.CANCELLED,
    "WorkflowTimedOutEvent": RunStatus.TIMED_OUT,
}


async def ended_on_stream(store: Store, run_id: str, last: int) -> bool:
    """Whether the run's last committed event is its terminal event (its process died after
    committing it, before its end): then it ended as that event says, and readers that saw the
    event are not told otherwise. Its end is recorded; the result of a completed run is its
    stop event's data (``result`` of a plain `StopEvent`)."""
    rows = await store.events(run_id, after=last - 1, limit=1)
    if not rows or not rows[0].flags & TERMINAL:  # (none: purged meanwhile)
        return False
    (row,) = rows
    status = _ENDED_BY.get(row.type, RunStatus.COMPLETED)
    data = bytes(envelope_data(row.body))
    result = error = None
    if status is RunStatus.COMPLETED:
        result = dumps(loads(data).get("result")) if row.type == "StopEvent" else data
    else:  # the exception its terminal event carries (a cancel or a timeout carries none)
        exception = loads(data).get("exception")
        if isinstance(exception, dict) and isinstance(exception.get("type"), str):
            error = dumps(exception)
        else:
            error = dumps({"type": "RunInterrupted", "message": "its end was not recorded"})
    store.append(RunEnded(run_id, status.value, result, error, time.time(), last))
    return True


__all__: Sequence[str] = [
    "Resume",
    "RowSink",
    "TeeStream",
    "ended_on_stream",
    "error_json",
    "interrupt",
    "new_row",
    "run_ended",
    "stop_names",
    "unencodable",
    "unfinished",
]
