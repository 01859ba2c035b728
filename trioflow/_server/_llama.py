"""LlamaIndex clients' routes: what llama-agents-server serves, on trioflow's runs.

``trioflow serve --llama-compat`` (``WorkflowApp(llama_compat=True)``) adds these routes to the
app's own, so that ``llama-agents-client``'s ``WorkflowClient`` and the TypeScript
``@llamaindex/workflows-client`` (generated from the same OpenAPI document) drive trioflow
runs: a LlamaIndex front end works unchanged. They are a second face of the same runs, not a
second server: a run started here is in ``GET /runs`` too, and the other way round.

What the names mean here:

- A *handler* is a run; its ``handler_id`` and ``run_id`` are both the run's id.
- An event travels as LlamaIndex's envelope, ``{"value": fields, "type": class name,
  "qualified_name": module path, "types": its event base classes or null}``, and its
  *sequence* is its seq minus one (LlamaIndex counts from 0, trioflow from 1).
- *Internal* events (``include_internal=true``) are trioflow's lifecycle events; runs started
  here record them, as llama-agents-server records its own.
- Statuses: ``running`` (waiting for input included), ``completed``, ``failed`` (a timeout
  too, as there), ``cancelled``.

The request bodies are read as llama-agents-client writes them: a start event as bare fields
or as an envelope (LlamaIndex's dict-like events nest their fields under ``"_data"``), an
event sent in as an envelope or its JSON text. What trioflow does not do is refused with a
clear 400: restoring a serialized LlamaIndex ``Context``, and a ``handler_id`` chosen by the
client (trioflow names its runs). With these routes served, every error of the app carries
LlamaIndex's ``"detail"`` besides trioflow's ``"error"`` (`Request.detail_errors`), and
``GET /health`` answers in LlamaIndex's words.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from .. import (
    Event,
    RunStatus,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowRuntimeError,
)
from .._store import EventKind
from .._wire import (
    BadJsonError,
    WireError,
    decode_event,
    decode_start_event,
    described_event_types,
    direction_of,
    dumps,
    get_workflow_representation,
    loads,
    model_schema,
    qualified_name,
    streamed_event_types,
    type_name,
)
from ._asgi import HttpError, Request
from ._feed import Entry, EventsExpired, TooManyWatchers
from ._options import LIST_LIMIT_MAX, ServerOptions
from ._record import RunRecord
from ._registry import RunRegistry
from ._stored import StoredRecord, ended_as
from ._streaming import NDJSON_HEADERS, SSE_HEADERS, expired_json, stream_feed


class WorkflowApp(Protocol):
    """What these routes use of a `WorkflowApp` (which imports this module)."""

    @property
    def options(self) -> ServerOptions: ...

    @property
    def _sendable(self) -> Mapping[str, Mapping[str, type[Event]]]: ...

    def _health_fields(self, request: Request) -> dict[str, Any]: ...

    def _workflow(self, name: str) -> tuple[str, Workflow]: ...

    def _runs(self) -> RunRegistry: ...

    async def _start(
        self,
        name: str,
        workflow: Workflow,
        start_event: StartEvent,
        *,
        abandon_after: float | None = None,
        lifecycle: bool = False,
    ) -> RunRecord: ...

    async def _submit(
        self, name: str, workflow: Workflow, start_event: StartEvent, *, lifecycle: bool
    ) -> str: ...


#: LlamaIndex's name for each status.
_STATUS = {
    RunStatus.RUNNING: "running",
    RunStatus.COMPLETED: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.TIMED_OUT: "failed",
    RunStatus.CANCELLED: "cancelled",
}


# -- workflows --


async def _health(app: WorkflowApp, request: Request, args: list[str]) -> None:
    health = app._health_fields(request)  # trioflow's answer: its status is the state
    healthy = health["status"] == "ok"
    health = {**health, "status": "healthy" if healthy else "unhealthy", "state": health["status"]}
    await request.respond_json(200 if healthy else 503, health)


async def _schema(app: WorkflowApp, request: Request, args: list[str]) -> None:
    _, workflow = app._workflow(args[0])
    graph = workflow.graph
    await request.respond_json(
        200,
        {
            "start": model_schema(graph.start_event_type, "in"),
            "stop": model_schema(graph.stop_event_type, "out"),
        },
    )


async def _event_schemas(app: WorkflowApp, request: Request, args: list[str]) -> None:
    _, workflow = app._workflow(args[0])
    await request.respond_json(
        200, {"events": [model_schema(t, direction_of(t)) for t in _event_types(workflow)]}
    )


async def _representation(app: WorkflowApp, request: Request, args: list[str]) -> None:
    _, workflow = app._workflow(args[0])
    await request.respond_json(200, {"graph": _graph(workflow)})


# -- runs --


async def _run_nowait(app: WorkflowApp, request: Request, args: list[str]) -> None:
    record = await _start(app, request, args[0])
    await request.respond(200, _handler_data(record))


async def _run(app: WorkflowApp, request: Request, args: list[str]) -> None:
    registry = app._runs()
    started = await _start(app, request, args[0])
    run_id = started.run_id
    record: RunRecord | StoredRecord | None = started
    while True:
        if isinstance(record, StoredRecord):  # another process runs it
            record = await registry.ended_elsewhere(run_id)
        if record is None:
            raise HttpError(404, "unknown_run", "Handler not found: the run was purged")
        if isinstance(record, RunRecord):
            # Its caller reads no events: holding them for a first client (as for a run
            # started to be streamed) would stall a run of more than `retain` events until
            # one comes or `hold_for_first_client` passes. Clients that do stream it start
            # where they attach.
            record.feed.stop_holding()
            await record.done.wait()
            if record.store is not None:  # answered once a crash cannot change the outcome
                await record.settled.wait()
            if record.suspended and record.store.shared and not registry.closing:  # type: ignore[union-attr]
                record = await registry.find(run_id)  # it goes on in another process
                continue
        break
    completed = record.status is RunStatus.COMPLETED
    # (Still running: suspended by a shutdown, to resume at the next start.)
    code = 200 if completed else 503 if record.status is RunStatus.RUNNING else 500
    await request.respond(code, _handler_data(record))


async def _handlers(app: WorkflowApp, request: Request, args: list[str]) -> None:
    statuses = set(_list_param(request, "status"))
    unknown = statuses - set(_STATUS.values())
    if unknown:
        known = ", ".join(sorted(set(_STATUS.values())))
        raise HttpError(
            400, "bad_request", f"status must be one of {known}, got {sorted(unknown)[0]!r}"
        )
    names = set(_list_param(request, "workflow_name"))
    # LlamaIndex's route answers every handler at once and has no paging; on a store that is
    # every run ever kept, which would all be read into memory for one answer. So it answers
    # the newest `LIST_LIMIT_MAX` that match (the most a page of GET /runs holds), the store
    # read a page at a time, filtered as it is read; older runs are still found by id
    # (GET /handlers/{id}) and listed by GET /runs, which pages.
    wanted = [status for status, name in _STATUS.items() if name in statuses]
    workflow = next(iter(names)) if len(names) == 1 else None
    found: list[RunRecord | StoredRecord] = []
    before: int | None = None
    while len(found) < LIST_LIMIT_MAX:
        records, before = await app._runs().page(
            LIST_LIMIT_MAX, before=before, workflow=workflow, statuses=wanted
        )
        found += [record for record in records if not names or record.workflow_name in names]
        if before is None:
            break
    parts: list[bytes] = []
    for record in found[:LIST_LIMIT_MAX]:
        parts += [b"," if parts else b"", *_handler_data(record)]
    await request.respond(200, [b'{"handlers":[', *parts, b"]}"])


async def _handler(app: WorkflowApp, request: Request, args: list[str]) -> None:
    await _answer_handler(app, request, args[0], bare_result=False)


async def _result(app: WorkflowApp, request: Request, args: list[str]) -> None:
    # LlamaIndex's deprecated form: the result itself, not the stop event's envelope.
    await _answer_handler(app, request, args[0], bare_result=True)


async def _answer_handler(
    app: WorkflowApp, request: Request, run_id: str, *, bare_result: bool
) -> None:
    record = await _record(app, run_id)
    status = record.status
    # As llama-agents-server answers: 202 while running, 500 once failed or cancelled.
    code = 202 if status is RunStatus.RUNNING else 200 if status is RunStatus.COMPLETED else 500
    await request.respond(code, _handler_data(record, bare_result=bare_result))


async def _cancel(app: WorkflowApp, request: Request, args: list[str]) -> None:
    record = await _record(app, args[0])
    purge = _bool_param(request, "purge", False)
    if isinstance(record, StoredRecord) and record.runs_elsewhere:
        cancelled = await record.request_cancel()  # committed, for the process that runs it
    else:
        cancelled = record.cancel()
    if isinstance(record, RunRecord) and record.store is not None:
        if cancelled:
            await record.committed()  # a crash now does not resume it
        elif not purge:
            await record.settled.wait()  # the refusal says the outcome a crash keeps
            if record.suspended:  # none here: it goes on at the next start
                raise HttpError(
                    503,
                    "shutting_down",
                    "the server is shutting down: its run goes on at the next start",
                )
    if purge:
        await app._runs().forget(record)
        await request.respond_json(200, {"status": "deleted"})
    elif cancelled:
        await request.respond_json(200, {"status": "cancelled"})
    else:
        raise HttpError(
            404,  # what llama-agents-server answers for a handler that has ended
            "run_ended",
            f"handler {record.run_id} has ended{ended_as(record)}: only a running handler "
            "can be cancelled (purge=true forgets it)",
        )


async def _send(app: WorkflowApp, request: Request, args: list[str]) -> None:
    record = await _record(app, args[0])
    body = await request.json(app.options.max_body)
    if not isinstance(body, dict) or not body.get("event"):
        raise HttpError(400, "bad_request", 'the body must be {"event": {"type": ..., ...}}')
    step = body.get("step")
    if step is not None and not isinstance(step, str):
        raise HttpError(400, "bad_request", f"step must be a step's name, got {step!r}")
    elsewhere = isinstance(record, StoredRecord) and record.runs_elsewhere
    if not elsewhere and (
        not isinstance(record, RunRecord) or record.handler.status is not RunStatus.RUNNING
    ):
        raise _ended(record)
    try:
        name, fields = _envelope(body["event"], "event", bare=False)
        if name is None:
            raise WireError('the event needs its "type" (the class name)', "event.type")
        wire = {"type": name, "data": fields}
        event = decode_event(app._sendable[record.workflow_name], wire)
    except WireError as error:
        raise HttpError(400, "invalid_event", str(error)) from None
    if isinstance(record, StoredRecord):  # to the process that runs it, once committed
        if step:  # checked here, as the process that runs it would check it
            graph = app._workflow(record.workflow_name)[1].graph
            index = graph.step_index(step)
            if index is None or index not in graph.routes_for(type(event)):
                refusal = "has no step named" if index is None else "has no such step taking"
                raise HttpError(
                    400,
                    "event_not_accepted",
                    f"{record.workflow_name} {refusal} {step!r} (for {type(event).__name__})",
                )
        if not await record.send(dumps({**wire, "step": step or None})):
            raise _ended(await _record(app, record.run_id))
        await request.respond_json(200, {"status": "sent"})
        return
    assert isinstance(record, RunRecord)
    try:
        await record.handler.send_event(event, step or None)
    except WorkflowRuntimeError as error:
        if record.handler.status is not RunStatus.RUNNING:
            raise _ended(record) from None
        raise HttpError(400, "event_not_accepted", str(error)) from None
    await request.respond_json(200, {"status": "sent"})


async def _stream(app: WorkflowApp, request: Request, args: list[str]) -> None:
    record = await _record(app, args[0])
    feed = record.feed
    sse = _bool_param(request, "sse", True)
    form = _LlamaForm(
        sse=sse,
        qualified=_bool_param(request, "include_qualified_name", True),
        retry_ms=app.options.retry_ms,
    )
    after = _after_sequence(request, sse)
    last = feed.known_last
    after = last if after is None else after + 1  # "now", or LlamaIndex's count
    if after > last:
        raise HttpError(
            400,
            "bad_request",
            f"sequence {after - 1} is beyond the run's last event ({last - 1})",
        )
    try:
        await stream_feed(
            request,
            feed,
            form,
            after=after,
            # The lifecycle events are what LlamaIndex calls internal: left out unless asked.
            lifecycle=record.lifecycle and not _bool_param(request, "include_internal", False),
            ping_interval=app.options.ping_interval,
        )
    except EventsExpired as expired:
        raise HttpError(
            410,
            "events_expired",
            f"events after sequence {expired.after - 1} are no longer kept (a run keeps its "
            f"last `retain` events): the oldest kept is sequence {expired.oldest - 1}; ask for "
            f"after_sequence={expired.oldest - 2} to continue from there",
        ) from None
    except TooManyWatchers as full:
        raise HttpError(429, "too_many_clients", str(full), [(b"retry-after", b"1")]) from None


class _LlamaForm:
    """A stream of LlamaIndex envelopes: SSE ``id: <sequence>`` and ``data: <envelope>``, or
    one envelope per line. The envelope is cut from the entry's own JSON (its ``"data"``) and
    the kind's names, made once per kind: no event is encoded again."""

    def __init__(self, *, sse: bool, qualified: bool, retry_ms: int) -> None:
        self.headers = SSE_HEADERS if sse else NDJSON_HEADERS
        self.keep_alive = b": ping\n\n" if sse else b" "
        self._sse = sse
        self._qualified = qualified
        self._retry = b"retry: %d\n" % retry_ms if sse else b""
        self._tails: dict[EventKind, bytes] = {}

    def batch(self, entries: list[Entry]) -> bytes:
        parts: list[bytes | memoryview] = [self._first()]
        for entry in entries:
            kind = entry.kind
            tail = self._tails.get(kind) or self._tails.setdefault(kind, self._tail(kind))
            if self._sse:
                parts += [b"id: %d\ndata: " % (entry.seq - 1)]
            parts += [b'{"value":', entry.event_data(), tail, b"\n\n" if self._sse else b"\n"]
        return b"".join(parts)

    def expired(self, error: EventsExpired) -> bytes:
        if self._sse:
            return self._first() + b"event: expired\ndata: %s\n\n" % expired_json(error)
        return expired_json(error) + b"\n"

    def _first(self) -> bytes:
        retry, self._retry = self._retry, b""
        return retry

    def _tail(self, kind: EventKind) -> bytes:
        names = _names(kind.type_name, kind.qualified_name, kind.bases, self._qualified)
        return b"," + dumps(names)[1:]


# -- the pieces --


async def _start(app: WorkflowApp, request: Request, name: str) -> RunRecord | StoredRecord:
    """Start a run of workflow ``name`` from a LlamaIndex run request's body (on a store that
    processes share, maybe in another process: then its record is the store's)."""
    name, workflow = app._workflow(name)
    body = await request.json(app.options.max_body)
    start_event = _start_event(workflow, body)
    if not await app._runs().runs_here():
        return await _record(app, await app._submit(name, workflow, start_event, lifecycle=True))
    return await app._start(
        name, workflow, start_event, abandon_after=app.options.abandon_after, lifecycle=True
    )


def _start_event(workflow: Workflow, body: Any) -> Any:
    if not isinstance(body, dict):
        raise HttpError(400, "bad_request", 'the body must be a JSON object {"start_event": ...}')
    if body.get("context"):
        raise HttpError(
            400,
            "unsupported",
            "trioflow does not restore a serialized LlamaIndex Context: leave context out",
        )
    if body.get("handler_id"):
        raise HttpError(
            400,
            "unsupported",
            "trioflow names its runs itself: leave handler_id out (the answer has the run's "
            "handler_id)",
        )
    start_type = workflow.graph.start_event_type
    given = body.get("start_event", body.get("kwargs"))
    try:
        fields: dict[str, Any] = {}
        if given is not None:
            name, fields = _envelope(given, "start_event", bare=True)
            accepted = ("StartEvent", type_name(start_type), qualified_name(start_type))
            if name is not None and name not in accepted:
                raise WireError(
                    f"{type(workflow).__name__} starts with {type_name(start_type)}, not {name}",
                    "start_event.type",
                )
        return decode_start_event(start_type, fields)
    except WireError as error:
        raise HttpError(400, "invalid_fields", str(error)) from None


def _envelope(given: Any, where: str, *, bare: bool) -> tuple[str | None, dict[str, Any]]:
    """The type name (None if not given) and the fields of an event as a LlamaIndex client
    sends it, either as JSON text: an envelope ``{"value": fields, "type": name}`` (or
    ``"qualified_name"``; ``"data"`` for ``"value"`` in older clients), or where ``bare``
    (a start event) its fields alone. As llama-agents-server reads them, a start event is an
    envelope when it has ``"value"``, or both ``"type"`` and ``"qualified_name"``.

    Raises:
        WireError: it is not a JSON object, or its fields are not one.
    """
    if isinstance(given, str):
        try:
            given = loads(given.encode())
        except (BadJsonError, WireError) as error:
            raise WireError(f"not valid JSON text: {error}", where) from None
    if not isinstance(given, dict):
        raise WireError(f"expected a JSON object, got {dumps(given)[:60].decode()}", where)
    enveloped = "value" in given or ("type" in given and "qualified_name" in given)
    if bare and not enveloped:
        return None, _unwrapped(given, where)
    name = given.get("type") or given.get("qualified_name")
    if name is not None and not isinstance(name, str):
        raise WireError(f"type must be a class name, got {dumps(name).decode()}", where)
    value = given["value"] if "value" in given else given.get("data")
    return name, _unwrapped({} if value is None else value, where)


def _unwrapped(fields: Any, where: str) -> dict[str, Any]:
    """The fields of a LlamaIndex event as it dumps itself: a dict-like event (its
    ``StartEvent``, ``HumanResponseEvent``) keeps the fields it does not declare under
    ``"_data"``."""
    if not isinstance(fields, dict):
        raise WireError(
            f"the fields must be a JSON object, got {dumps(fields)[:60].decode()}", where
        )
    extra = fields.get("_data")
    if not isinstance(extra, dict):
        return fields
    return {**{k: v for k, v in fields.items() if k != "_data"}, **extra}


def _handler_data(record: RunRecord | StoredRecord, *, bare_result: bool = False) -> list[bytes]:
    """The run as LlamaIndex's ``HandlerData``, in parts (its result shared, not copied);
    with ``bare_result``, the result itself rather than the stop event's envelope (LlamaIndex's
    deprecated ``GET /results/{id}``)."""
    status = record.status
    ended = None if record.ended_at is None else _iso(record.ended_at)
    head = {
        "handler_id": record.run_id,
        "workflow_name": record.workflow_name,
        "run_id": record.run_id,
        "status": _STATUS[status],
        "started_at": _iso(record.started_at),
        "updated_at": ended or _iso(record.started_at),  # its last change of status
        "completed_at": ended,
        "error": None,
        "result_unreadable": False,
    }
    result, error = record.outcome_json()
    if error is not None and status is not RunStatus.CANCELLED:
        described = loads(error)
        head["error"] = f"{described['type']}: {described['message']}"
    if result is None:
        return [dumps({**head, "result": None})]
    if bare_result:
        return [dumps(head)[:-1], b',"result":', result, b"}"]
    own = record.result_names()
    if own is not None:  # a workflow's own stop event: the result is its fields
        value, names = [result], {**own, "types": own["bases"] or None}
        del names["bases"]
    else:  # the result of a plain StopEvent
        value = [b'{"result":', result, b"}"]
        names = _names(type_name(StopEvent), qualified_name(StopEvent), (), True)
    return [dumps(head)[:-1], b',"result":{"value":', *value, b",", dumps(names)[1:], b"}"]


def _names(
    name: str, qualified: str, bases: tuple[str, ...], qualified_too: bool
) -> dict[str, Any]:
    return {
        "qualified_name": qualified if qualified_too else None,
        "type": name,
        "types": list(bases) or None,
    }


def _ended(record: RunRecord | StoredRecord) -> HttpError:
    return HttpError(409, "run_ended", f"handler {record.run_id} has ended{ended_as(record)}")


async def _record(app: WorkflowApp, run_id: str) -> RunRecord | StoredRecord:
    record = await app._runs().find(run_id)
    if record is None:
        raise HttpError(404, "unknown_run", f"Handler not found: no run with id {run_id!r}")
    return record


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _bool_param(request: Request, name: str, default: bool) -> bool:
    """A true/false query parameter as llama-agents-server reads one: ``true`` or not."""
    given = request.query.get(name)
    return default if given is None else given.lower() == "true"


def _list_param(request: Request, name: str) -> list[str]:
    """A filter given once per value (``?status=running&status=failed``); blanks ignored."""
    return [value.strip() for value in request.query_all(name) if value.strip()]


def _after_sequence(request: Request, sse: bool) -> int | None:
    """Where a stream resumes, in LlamaIndex's count: ``Last-Event-ID`` over SSE (ignored
    unless a sequence, as there), else ``?after_sequence=``: a sequence (-1: from the start)
    or ``now`` (None, the default)."""
    if sse:
        last = request.headers.get("last-event-id", "").strip()
        if _SEQUENCE.fullmatch(last):
            return max(int(last), -1)
    given = request.query.get("after_sequence", "now").strip()
    if given.lower() == "now":
        return None
    if not (_SEQUENCE.fullmatch(given) and int(given) >= -1):
        raise HttpError(
            400, "bad_request", f"after_sequence must be now, -1 or a sequence; got {given!r}"
        )
    return int(given)


#: A sequence as text: ASCII digits only (``str.isdigit`` takes ``²`` and ``٣`` too).
_SEQUENCE = re.compile(r"-?[0-9]{1,18}")


# -- schemas and the graph --


def _event_types(workflow: Workflow) -> list[type[Event]]:
    """Every event type a run of ``workflow`` is known to take or stream."""
    return list(dict.fromkeys([*described_event_types(workflow), *streamed_event_types(workflow)]))


def _graph(workflow: Workflow) -> dict[str, Any]:
    """The workflow as LlamaIndex's ``WorkflowGraph`` (`get_workflow_representation`)."""
    return get_workflow_representation(workflow).to_dict()


# -- the routes --

_Endpoint = Callable[[WorkflowApp, Request, list[str]], Awaitable[None]]

#: llama-agents-server's routes. ``GET /workflows`` is the app's own: the same answer.
LLAMA_ROUTES: tuple[tuple[tuple[str, ...], Mapping[str, _Endpoint]], ...] = (
    (("health",), {"GET": _health}),
    (("workflows", "*", "run"), {"POST": _run}),
    (("workflows", "*", "run-nowait"), {"POST": _run_nowait}),
    (("workflows", "*", "schema"), {"GET": _schema}),
    (("workflows", "*", "events"), {"GET": _event_schemas}),
    (("workflows", "*", "representation"), {"GET": _representation}),
    (("events", "*"), {"GET": _stream, "POST": _send}),
    (("handlers",), {"GET": _handlers}),
    (("handlers", "*"), {"GET": _handler}),
    (("handlers", "*", "cancel"), {"POST": _cancel}),
    (("results", "*"), {"GET": _result}),
)
