"""The OpenAPI 3.1 document of a `WorkflowApp`: ``GET /openapi.json``.

Every route the app serves is here, ``HEAD`` wherever ``GET`` is, with its parameters, its
answers and every error status it can answer (``{"error": {"code", "message"}}``). The schemas
of the workflows come from `_wire`'s `JsonSchemas`, from the same field types the decoder
checks: ``POST /workflows/{name}/runs`` has one path per workflow, so that each workflow's
start event is its own request body; each workflow's stream (``<name>-Events``: a ``oneOf``
of the envelopes of its event types, discriminated by ``type``) and the events its runs can
be sent (``<name>-SentEvent``) are components that the start's 201 answer links to.

The document depends only on what an app is made with (its workflows and options), so it is
built once per app and kept, as JSON text, for as long as the app lives.
"""

from __future__ import annotations

import functools
import itertools
import json
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from .. import Event, RunStatus, Workflow, __version__
from .._wire import JsonSchemas, any_envelope, dumps, streamed_event_types
from .._wire import qualified_name as _qualified_name
from .._wire import type_name as _type_name
from ._options import LIST_LIMIT, LIST_LIMIT_MAX, ServerOptions

Schema = dict[str, Any] | bool


class WorkflowApp(Protocol):
    """What the document is made of: a `WorkflowApp` (which imports this module)."""

    @property
    def workflows(self) -> Mapping[str, Workflow]: ...

    @property
    def options(self) -> ServerOptions: ...

    @property
    def _sendable(self) -> Mapping[str, Mapping[str, type[Event]]]:
        """The event types each workflow's runs take, by name: the tables the app decodes
        with, made once."""
        ...


_DOCUMENTS: weakref.WeakKeyDictionary[WorkflowApp, bytes] = weakref.WeakKeyDictionary()

#: The document's own components; no event type takes these names.
_FIXED = (
    "Error",
    "Health",
    "WorkflowList",
    "WorkflowGraph",
    "RunStarted",
    "Run",
    "RunList",
    "EventAccepted",
    "Cancelling",
    "Envelope",
    "SentEvent",
    "LlamaEnvelope",
    "LlamaHandler",
    "LlamaHandlerList",
    "LlamaHealth",
)
_REF = "#/components/schemas/"


def openapi_json(app: WorkflowApp) -> bytes:
    """The OpenAPI document of ``app`` as JSON text, built on first use and kept."""
    text = _DOCUMENTS.get(app)
    if text is None:
        text = _DOCUMENTS[app] = dumps(_build(app))
    return text


def openapi_document(app: WorkflowApp, prefix: str = "") -> dict[str, Any]:
    """A fresh copy of the OpenAPI document of ``app``, its paths under ``prefix`` (where the
    app is mounted: ``"/flows"``), for the caller to change or merge as it likes."""
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ValueError(f"prefix must start with '/' and not end with one, got {prefix!r}")
    document: dict[str, Any] = json.loads(openapi_json(app))
    if prefix:
        document["paths"] = {prefix + path: item for path, item in document["paths"].items()}
    return document


# --- The document -------------------------------------------------------------------------


def _build(app: WorkflowApp) -> dict[str, Any]:
    schemas = JsonSchemas(_REF, reserved=_FIXED)
    for name, schema in _fixed_schemas().items():
        schemas.define(name, [name], functools.partial(_given, schema))
    schemas.define("Envelope", ["Envelope"], lambda: _all_events(app, schemas))
    schemas.define("SentEvent", ["SentEvent"], lambda: _all_sent(app, schemas))
    secured = app.options.token is not None
    compat = app.options.llama_compat
    if compat:
        for name, schema in _llama_schemas().items():
            schemas.define(name, [name], functools.partial(_given, schema))
    paths = _paths(app, schemas, secured)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "trioflow",
            "version": __version__,
            "summary": "Event-driven workflows on trio: runs, their live event streams, "
            "and the events sent into them.",
            "description": _DESCRIPTION,
        },
        "tags": [
            {"name": "workflows", "description": "The workflows served, and starting runs."},
            {"name": "runs", "description": "Runs: status, event streams, events in, cancel."},
            {"name": "server", "description": "The dashboard, this document, health."},
            *(
                [
                    {
                        "name": "llama-compat",
                        "description": "llama-agents-server's routes, for LlamaIndex "
                        "clients (`llama_compat`): the same runs, as handlers. Their errors "
                        'also carry LlamaIndex\'s `"detail"`.',
                    }
                ]
                if compat
                else []
            ),
        ],
        "paths": paths,
        "components": {"schemas": schemas.definitions},
    }
    if secured:
        document["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The server's token: Authorization: Bearer <token>.",
            },
            "token": {
                "type": "apiKey",
                "in": "query",
                "name": "token",
                "description": "The server's token as ?token=<token> (for EventSource, which "
                "cannot send headers).",
            },
        }
    return document


_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"token": []}]

_DESCRIPTION = """\
Workflows served over HTTP by trioflow. JSON everywhere; errors are
`{"error": {"code": "...", "message": "..."}}` with a fitting status. `HEAD` is answered
wherever `GET` is, as `GET` would be but without the body; a method a path does not take is
answered 405 with `Allow`, and an unknown path 404 `not_found`. Every answer may also be 403
(`forbidden_host`: a Host the server does not answer for; `forbidden_origin`: a POST from a
browser page of another origin), 401 when the server has a token and the request does not
carry it, and 500 on an unexpected error.

A run's events travel as envelopes `{"seq", "type", "qualified_name", "time", "data"}` (`seq`
counts from 1 within a run; `time`: when the event entered the stream, seconds since the
epoch): `Envelope` has each served event type's `data`, and `<workflow>-Events` each
workflow's. Start events and events sent in are checked strictly against their field
types: their schemas say what the server takes (`format` and `contentEncoding` are annotations:
Python's `fromisoformat`, `b64decode`, `UUID` and `Decimal` judge those strings; a number
`3.0` is an integer to JSON Schema but no `int` to the server)."""


def _paths(app: WorkflowApp, schemas: JsonSchemas, secured: bool) -> dict[str, Any]:
    names = list(app.workflows)
    paths: dict[str, dict[str, Any]] = {
        "/": {"get": _dashboard()},
        "/workflows": {"get": _list_workflows()},
        "/workflows/{name}": {"get": _describe_workflow(names)},
    }
    operation_ids: set[str] = set()
    for name in names:
        operation_id = _unique(f"startRun_{_component(name)}", operation_ids)
        paths[f"/workflows/{quote(name, safe='')}/runs"] = {
            "post": _start_run(name, app, schemas, operation_id)
        }
    run_id = [_param("run_id", "path", {"type": "string"}, "The run's id.", required=True)]
    paths |= {
        "/runs": {"get": _list_runs(names)},
        "/runs/{run_id}": {"parameters": run_id, "get": _get_run()},
        "/runs/{run_id}/events": {
            "parameters": run_id,
            "get": _stream_events(),
            "post": _send_event(app),
        },
        "/runs/{run_id}/cancel": {"parameters": run_id, "post": _cancel_run()},
        "/openapi.json": {"get": _openapi()},
        "/health": {"get": _health(secured)},
    }
    if app.options.llama_compat:
        paths |= _llama_paths(names)
    for item in paths.values():
        for method, operation in list(item.items()):
            if method in ("get", "post"):
                _add_common_errors(operation, method, secured)
        if "get" in item:
            item["head"] = _head_of(item["get"])
    return paths


# --- Operations ---------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return _operation(
        "dashboard",
        "server",
        "The dashboard",
        "One static page: lists the workflows, starts and watches runs, answers input "
        "requests. Open it as `/?token=...` on a server with a token.",
        {
            "200": {
                "description": "The page.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
    )


def _list_workflows() -> dict[str, Any]:
    return _operation(
        "listWorkflows",
        "workflows",
        "The workflows served",
        "Their names, as the paths below take them.",
        {"200": _json("The names.", _ref("WorkflowList"))},
    )


def _describe_workflow(names: list[str]) -> dict[str, Any]:
    return _operation(
        "describeWorkflow",
        "workflows",
        "A workflow's graph",
        "Its steps (accepts, returns, workers, retry, timeout, error handler), its event types "
        "with their kind and fields, and the start event's fields as `input`.",
        {
            "200": _json("The graph.", _ref("WorkflowGraph")),
            "404": _error("`unknown_workflow`: no workflow by that name."),
        },
        parameters=[
            _param(
                "name",
                "path",
                {"type": "string", "enum": names},
                "A workflow's name.",
                required=True,
            )
        ],
    )


def _start_run(
    name: str, app: WorkflowApp, schemas: JsonSchemas, operation_id: str
) -> dict[str, Any]:
    start_type = app.workflows[name].graph.start_event_type
    events, sent = _workflow_events(name, app, schemas), _workflow_sent(name, app, schemas)
    max_body = app.options.max_body
    return _operation(
        operation_id,
        "workflows",
        f"Start a run of {name}",
        f"The body is the fields of the start event `{_type_name(start_type)}` (an empty body "
        "is `{}`), checked strictly against their types. The run outlives the request; read "
        f"its events at `/runs/{{run_id}}/events` (envelopes: `{_name_of(events)}`), send it "
        f"events at `POST /runs/{{run_id}}/events` (`{_name_of(sent)}`).",
        {
            "201": {
                **_json("The run has started.", _ref("RunStarted")),
                "headers": {"Location": _header("The run's status: `/runs/{run_id}`.")},
                "links": {
                    "status": _link("getRun", "The run's status, result or error."),
                    "events": _link(
                        "streamRunEvents",
                        f"The run's stream: envelopes as in `{_name_of(events)}`.",
                    ),
                    "send": _link("sendRunEvent", f"Events the run takes: `{_name_of(sent)}`."),
                    "cancel": _link("cancelRun", "Cancel the run."),
                },
            },
            "400": _error(
                "`bad_json`: the body is not JSON (RFC 8259, strictly: no NaN, no duplicate "
                "keys, at most 128 levels deep); `bad_request`: a bad `abandon_after`; "
                "`disconnected`: the client left before sending the body."
            ),
            "408": _error("`body_timeout`: the body did not arrive within `body_timeout`."),
            "413": _error(f"`payload_too_large`: the body is larger than {max_body} bytes."),
            "422": _error(
                "`invalid_fields`: a field that does not fit its type, an unknown or a missing "
                "field (the message names it); `unsupported_value`: a lone surrogate or an "
                "integer too long to convert."
            ),
            "429": {
                **_error(
                    f"`too_many_runs`: {app.options.max_runs} runs (`max_runs`) are running "
                    "(on a store that processes share, the run is submitted for any process "
                    "with room instead)."
                ),
                "headers": {"Retry-After": _header("Seconds to wait.", {"type": "integer"})},
            },
            "503": _error(
                "`shutting_down`: the server starts no more runs; `not_started`: the app's "
                "ASGI lifespan has not run."
            ),
        },
        parameters=[
            _param(
                "abandon_after",
                "query",
                {"type": "number", "minimum": 0},
                "Cancel the run once its last client has left and none came back within this "
                "many seconds (the server's `abandon_after` otherwise).",
            ),
            _param(
                "lifecycle",
                "query",
                {"type": "string", "enum": ["1", "0", "true", "false", "yes", "no"]},
                "`1`: the run's lifecycle events (step started, finished, retried) go to its "
                "stream too, for clients that ask for them with `?types=`.",
            ),
        ],
        body={
            "required": False,
            "content": {"application/json": {"schema": schemas.fields(start_type, "in")}},
        },
    )


def _list_runs(names: list[str]) -> dict[str, Any]:
    return _operation(
        "listRuns",
        "runs",
        "The runs the server knows",
        "Newest first, a page at a time: pass `next_cursor` as `cursor` for the next page "
        "(null: the last page). Each run as `GET /runs/{run_id}` has it, without its result, "
        "its error's message cut to 200 characters.",
        {
            "200": _json("A page of runs.", _ref("RunList")),
            "400": _error("`bad_request`: a bad `limit`, `cursor` or `status`."),
            "404": _error("`unknown_workflow`: `workflow` names no workflow served."),
            "503": _error("`not_started`: the app's ASGI lifespan has not run."),
        },
        parameters=[
            _param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX, "default": LIST_LIMIT},
                "Runs per page.",
            ),
            _param(
                "cursor",
                "query",
                {"type": "integer", "minimum": 0, "maximum": 2**62},
                "The `next_cursor` of the previous page.",
            ),
            _param(
                "workflow", "query", {"type": "string", "enum": names}, "Only this workflow's runs."
            ),
            {
                **_param(
                    "status",
                    "query",
                    {"type": "array", "items": {"enum": _STATUSES}},
                    "Only runs with one of these statuses, comma-separated: `running,failed`.",
                ),
                "style": "form",
                "explode": False,
            },
        ],
    )


def _get_run() -> dict[str, Any]:
    return _operation(
        "getRun",
        "runs",
        "A run's status",
        "With its result or error as soon as its outcome is decided.",
        {
            "200": _json("The run.", _ref("Run")),
            "404": _error("`unknown_run`: no such run, or one forgotten (`keep_finished`)."),
            "503": _error("`not_started`: the app's ASGI lifespan has not run."),
        },
    )


def _stream_events() -> dict[str, Any]:
    stream_headers = {
        "Cache-Control": _header("`no-store`."),
        "X-Accel-Buffering": _header("`no`: proxies pass each event on at once."),
    }
    return _operation(
        "streamRunEvents",
        "runs",
        "A run's event stream",
        "Server-sent events by default: per event `id: <seq>`, `event: <type>` (left out with "
        "`?named=0`) and `data: <envelope>`; the first event's block also carries `retry:`; "
        "an idle stream carries a `: ping` comment. With `Accept: application/x-ndjson` or "
        "`?format=ndjson`: one envelope per line (an idle stream carries a space). The stream "
        "ends after the run's terminal event. Resume with `Last-Event-ID` or `?after=`. If "
        "the server has to drop events a slow client has not taken (at shutdown only), its "
        'stream ends with `event: expired` and `data: {"error": {"code": "events_expired", '
        "...}}` (NDJSON: that object as the last line).",
        {
            "200": {
                "description": "The stream, flushed event by event.",
                "headers": stream_headers,
                "content": {
                    "text/event-stream": {
                        "schema": {
                            "type": "string",
                            "description": "SSE; each `data:` line is an `Envelope`.",
                        }
                    },
                    "application/x-ndjson": {
                        "schema": {
                            "description": "One line: an `Envelope`, or the error that ends "
                            "a stream whose events expired.",
                            "oneOf": [_ref("Envelope"), _ref("Error")],
                        }
                    },
                },
            },
            "204": {"description": "Nothing follows: the stream ended at or before `after`."},
            "400": _error("`bad_request`: `Last-Event-ID` or `after` is no seq number."),
            "404": _error("`unknown_run`: no such run, or one forgotten (`keep_finished`)."),
            "410": _error(
                "`events_expired`: the events after `after` are no longer retained; the "
                "message names the oldest seq kept (ask for `after=<oldest - 1>` to accept "
                "the gap)."
            ),
            "429": {
                **_error("`too_many_clients`: `max_clients_per_run` clients stream this run."),
                "headers": {"Retry-After": _header("Seconds to wait.", {"type": "integer"})},
            },
            "503": _error("`not_started`: the app's ASGI lifespan has not run."),
            "505": _error(
                "`http2_not_supported`: a stream over HTTP/2 under a server other than "
                "hypercorn; ask over HTTP/1.1."
            ),
        },
        parameters=[
            _param(
                "after",
                "query",
                {**_SEQ, "default": 0},
                "Resume after this seq (`Last-Event-ID` wins).",
            ),
            _param(
                "Last-Event-ID",
                "header",
                _SEQ,
                "Resume after this seq (browsers send it when they reconnect).",
            ),
            _param(
                "format",
                "query",
                {"type": "string", "enum": ["ndjson"]},
                "`ndjson` for NDJSON whatever `Accept` says; otherwise `Accept` decides.",
            ),
            _param(
                "named",
                "query",
                {"type": "string", "default": "1"},
                "`0`, `false` or `no`: leave out `event:`, so that every event reaches "
                "`EventSource.onmessage`.",
            ),
            _param(
                "types",
                "query",
                {"type": "string"},
                "Comma-separated event type names (short or qualified; `LifecycleEvent` for "
                "every lifecycle event): only those events, and the terminal event. Without "
                "it, every event but the lifecycle ones.",
            ),
            _param(
                "lifecycle",
                "query",
                {"type": "string", "default": "0"},
                "`1`, `true` or `yes`: the lifecycle events too (those of a run started "
                "with `?lifecycle=1`), besides every event (or those `types` names), in one "
                "stream.",
            ),
        ],
    )


def _send_event(app: WorkflowApp) -> dict[str, Any]:
    return _operation(
        "sendRunEvent",
        "runs",
        "Send an event into a run",
        '`{"type": "<event type name>", "data": {...fields}}`: an answer to an input request '
        "(a `HumanResponseEvent`) or another event the run's workflow takes, by its short "
        "name (its qualified name where short names clash). `data` may be left out for an "
        "event without required fields. Each workflow's are `<workflow>-SentEvent`.",
        {
            "202": _json("The run took the event.", _ref("EventAccepted")),
            "400": _error(
                "`bad_json`: the body is not JSON; `disconnected`: the client left before "
                "sending the body."
            ),
            "404": _error("`unknown_run`: no such run, or one forgotten (`keep_finished`)."),
            "408": _error("`body_timeout`: the body did not arrive within `body_timeout`."),
            "409": _error("`run_ended`: the run's outcome is decided; it takes no events."),
            "413": _error(
                f"`payload_too_large`: the body is larger than {app.options.max_body} bytes."
            ),
            "422": _error(
                "`invalid_event`: an unknown type or fields that do not fit; "
                "`event_not_accepted`: no step takes the event and no step waits for it; "
                "`unsupported_value`: a lone surrogate or an integer too long to convert."
            ),
            "503": _error("`not_started`: the app's ASGI lifespan has not run."),
        },
        body={"required": True, "content": {"application/json": {"schema": _ref("SentEvent")}}},
    )


def _cancel_run() -> dict[str, Any]:
    return _operation(
        "cancelRun",
        "runs",
        "Cancel a run",
        "Its stream ends with `WorkflowCancelledEvent`.",
        {
            "202": _json("The run is being cancelled.", _ref("Cancelling")),
            "404": _error("`unknown_run`: no such run, or one forgotten (`keep_finished`)."),
            "409": _error("`run_ended`: the run's outcome was decided already."),
            "503": _error("`not_started`: the app's ASGI lifespan has not run."),
        },
    )


def _openapi() -> dict[str, Any]:
    return _operation(
        "openapi",
        "server",
        "This document",
        "OpenAPI 3.1, with the JSON Schemas (2020-12) of each workflow's start event, events "
        "and the events its runs take.",
        {"200": _json("The document.", {"type": "object"})},
    )


def _health(secured: bool) -> dict[str, Any]:
    health = _operation(
        "health",
        "server",
        "Whether the server serves",
        "For load balancers and probes: it needs no token. Without the server's token (when "
        "it has one) the answer holds the status only; with it, or on a server without one, "
        "also the runs running and `max_runs`.",
        {
            "200": _json("The server serves.", _ref("Health")),
            "503": _json(
                "`shutting_down`: it starts no more runs; `not_started`: the app's ASGI "
                "lifespan has not run.",
                _ref("Health"),
            ),
        },
    )
    if secured:
        health["security"] = [{}, *_SECURITY]  # the token is optional here
    return health


def _add_common_errors(operation: dict[str, Any], method: str, secured: bool) -> None:
    responses = operation["responses"]
    if secured and "security" not in operation:
        # On each operation, not the document: it stays when the paths are merged into the
        # document of an app this one is mounted in.
        operation["security"] = _SECURITY
        responses["401"] = {
            **_error("`unauthorized`: the request does not carry the server's token."),
            "headers": {"WWW-Authenticate": _header("`Bearer`.")},
        }
    responses["403"] = _error(
        "`forbidden_host`: the server does not answer for this Host (`allowed_hosts`)"
        + (
            "; `forbidden_origin`: a browser page of another origin (CORS)."
            if method == "post"
            else "."
        )
    )
    responses["500"] = _error("`internal_error`: the server failed to answer; see its log.")


def _head_of(get: dict[str, Any]) -> dict[str, Any]:
    """``HEAD``: answered as ``GET`` would be, without the body."""
    head = {key: value for key, value in get.items() if key not in ("responses", "operationId")}
    head["operationId"] = f"{get['operationId']}Head"
    head["summary"] = f"{get['summary']} (headers only)"
    head["responses"] = {
        status: {key: value for key, value in response.items() if key != "content"}
        for status, response in get["responses"].items()
    }
    return head


def _llama_paths(names: list[str]) -> dict[str, Any]:
    """llama-agents-server's routes (`_llama`), as its clients call them."""
    name = _param(
        "name", "path", {"type": "string", "enum": names}, "A workflow's name.", required=True
    )
    handler_id = [_param("handler_id", "path", {"type": "string"}, "A run's id.", required=True)]
    unknown = {"404": _error("No such workflow or run (`detail` says which).")}
    handler = _json("The run, as a handler.", _ref("LlamaHandler"))
    run_body = {
        "required": False,
        "content": {
            "application/json": {
                "schema": _object(
                    {
                        "start_event": {
                            "description": "The start event: its fields, or an envelope "
                            '`{"value", "type"}`, or either as JSON text.'
                        },
                        "kwargs": {"type": "object", "description": "Fields, when no start_event."},
                        "context": {"description": "Refused (400) unless empty."},
                        "handler_id": {"description": "Refused (400): trioflow names runs."},
                    },
                    [],
                )
            }
        },
    }
    bad = {
        "400": _error("A start event that does not fit, or what trioflow does not do."),
        "413": _error("`payload_too_large`: the body is larger than `max_body`."),
        "429": _error("`too_many_runs`: the server runs `max_runs` runs already."),
        "503": _error("`shutting_down`, or `not_started`: the app's lifespan has not run."),
    }
    flag = {"type": "string", "enum": ["true", "false"]}

    def operation(op: str, summary: str, responses: dict[str, Any], **more: Any) -> Any:
        return _operation(f"llama_{op}", "llama-compat", summary, summary + ".", responses, **more)

    paths: dict[str, Any] = {
        "/health": {
            "get": operation(
                "health",
                "Whether the server serves, in LlamaIndex's words",
                {
                    "200": _json("Healthy.", _ref("LlamaHealth")),
                    "503": _json("Unhealthy; `state` says why.", _ref("LlamaHealth")),
                },
            )
            | {"security": []}  # a probe needs no token
        },
        "/workflows/{name}/run": {
            "post": operation(
                "run",
                "Start a run and answer when it ends",
                {
                    "200": handler,
                    "500": _json("It did not complete.", _ref("LlamaHandler")),
                    **bad,
                    **unknown,
                },
                parameters=[name],
                body=run_body,
            )
        },
        "/workflows/{name}/run-nowait": {
            "post": operation(
                "runNowait",
                "Start a run",
                {"200": handler, **bad, **unknown},
                parameters=[name],
                body=run_body,
            )
        },
    }
    for route, op, summary in (
        ("schema", "schema", "JSON Schemas of the start and stop events"),
        ("events", "eventSchemas", "JSON Schemas of the workflow's event types"),
        ("representation", "representation", "The graph as LlamaIndex's WorkflowGraph"),
    ):
        paths[f"/workflows/{{name}}/{route}"] = {
            "get": operation(
                op,
                summary,
                {"200": _json(summary + ".", {"type": "object"}), **unknown},
                parameters=[name],
            )
        }
    paths |= {
        "/events/{handler_id}": {
            "parameters": handler_id,
            "get": operation(
                "stream",
                "A run's events as LlamaIndex envelopes",
                {
                    "200": {
                        "description": "SSE (`id:` the sequence, `data:` an envelope), or "
                        "NDJSON with `sse=false`.",
                        "content": {
                            "text/event-stream": {"schema": {"type": "string"}},
                            "application/x-ndjson": {
                                "schema": {
                                    "description": "One line: a `LlamaEnvelope`.",
                                    **_ref("LlamaEnvelope"),
                                }
                            },
                        },
                    },
                    "204": {"description": "The run ended and every event was read."},
                    "400": _error("A bad `after_sequence`."),
                    "410": _error("`events_expired`: the events asked for are not retained."),
                    "429": _error("`too_many_clients`: the run has `max_clients_per_run`."),
                    **unknown,
                },
                parameters=[
                    _param("sse", "query", flag, "SSE (the default) or NDJSON."),
                    _param(
                        "after_sequence",
                        "query",
                        {"type": "string"},
                        "`now` (the default), or a sequence: -1 for every event.",
                    ),
                    _param("include_internal", "query", flag, "Lifecycle events too."),
                    _param("include_qualified_name", "query", flag, "Qualified names."),
                ],
            ),
            "post": operation(
                "send",
                "Send an event into a run",
                {
                    "200": _json("Sent.", _object({"status": {"const": "sent"}}, ["status"])),
                    "400": _error("An event that does not fit, or a step that does not exist."),
                    "409": _error("The run has ended."),
                    **unknown,
                },
                body={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _object({"event": {}, "step": {"type": "string"}}, ["event"])
                        }
                    },
                },
            ),
        },
        "/handlers": {
            "get": operation(
                "handlers",
                f"The newest runs the server knows, at most {LIST_LIMIT_MAX}",
                {
                    "200": _json("The runs.", _ref("LlamaHandlerList")),
                    "400": _error("A bad status."),
                },
                parameters=[
                    _param(
                        "status",
                        "query",
                        {"type": "array", "items": {"enum": _LLAMA_STATUSES}},
                        "Filter.",
                    ),
                    _param(
                        "workflow_name",
                        "query",
                        {"type": "array", "items": {"type": "string"}},
                        "Filter.",
                    ),
                ],
            )
        },
    }
    for route, op in (("/handlers/{handler_id}", "handler"), ("/results/{handler_id}", "result")):
        paths[route] = {
            "parameters": handler_id,
            "get": operation(
                op,
                "A run, as a handler",
                {
                    "200": handler,
                    "202": _json("Still running.", _ref("LlamaHandler")),
                    "500": _json("Failed or cancelled.", _ref("LlamaHandler")),
                    **unknown,
                },
            ),
        }
    paths["/handlers/{handler_id}/cancel"] = {
        "parameters": handler_id,
        "post": operation(
            "cancel",
            "Cancel a run",
            {
                "200": _json(
                    "Cancelled, or forgotten with `purge=true`.",
                    _object({"status": {"enum": ["cancelled", "deleted"]}}, ["status"]),
                ),
                "404": _error("No such run, or it has ended (without `purge`)."),
            },
            parameters=[_param("purge", "query", flag, "Also forget the run.")],
        ),
    }
    return paths


_LLAMA_STATUSES = ["running", "completed", "failed", "cancelled"]


def _llama_schemas() -> dict[str, Schema]:
    string: dict[str, Any] = {"type": "string"}
    names = {"type": ["array", "null"], "items": string}
    envelope = _object(
        {
            "value": {"type": "object"},
            "type": string,
            "qualified_name": {"type": ["string", "null"]},
            "types": names,
        },
        ["value", "type"],
        "An event as LlamaIndex writes one: its fields, class name and event base classes.",
    )
    when = {"type": ["string", "null"], "format": "date-time"}
    return {
        "LlamaEnvelope": envelope,
        "LlamaHandler": _object(
            {
                "handler_id": string,
                "workflow_name": string,
                "run_id": string,
                "status": {"enum": _LLAMA_STATUSES},
                "started_at": {**string, "format": "date-time"},
                "updated_at": when,
                "completed_at": when,
                "error": {"type": ["string", "null"]},
                "result": {"oneOf": [_ref("LlamaEnvelope"), {"type": "null"}]},
                "result_unreadable": {"type": "boolean"},
            },
            ["handler_id", "workflow_name", "status", "started_at"],
            "A run as LlamaIndex's HandlerData.",
        ),
        "LlamaHandlerList": _object(
            {"handlers": {"type": "array", "items": _ref("LlamaHandler")}}, ["handlers"]
        ),
        "LlamaHealth": _object(
            {"status": {"enum": ["healthy", "unhealthy"]}, "state": string}, ["status"]
        ),
    }


# --- Schemas ------------------------------------------------------------------------------


def _workflow_events(name: str, app: WorkflowApp, schemas: JsonSchemas) -> Schema:
    """A ``$ref`` to ``<name>-Events``: the envelopes of the workflow's runs' streams."""
    return schemas.define(
        ("events", name), [_component(f"{name}-Events")], lambda: _events_of([name], app, schemas)
    )


def _workflow_sent(name: str, app: WorkflowApp, schemas: JsonSchemas) -> Schema:
    """A ``$ref`` to ``<name>-SentEvent``: what the workflow's runs take."""
    return schemas.define(
        ("sent", name),
        [_component(f"{name}-SentEvent")],
        lambda: schemas.sent_event(app._sendable[name]),  # the table the app decodes with
    )


def _events_of(names: Iterable[str], app: WorkflowApp, schemas: JsonSchemas) -> dict[str, Any]:
    """The envelopes of the event types the runs of the workflows ``names`` are known to
    stream, discriminated by ``type``, and of any other type (a step may stream anything)."""
    event_types: dict[type[Event], None] = {}
    for name in names:
        event_types.update(dict.fromkeys(streamed_event_types(app.workflows[name])))
    refs = {t: schemas.envelope(t) for t in event_types}
    short_names = [_type_name(t) for t in refs]
    mapping = {
        _type_name(t): ref["$ref"]
        for t, ref in refs.items()
        if isinstance(ref, dict) and short_names.count(_type_name(t)) == 1
    }
    return {
        "oneOf": [*refs.values(), any_envelope(_qualified_name(t) for t in refs)],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }


def _all_events(app: WorkflowApp, schemas: JsonSchemas) -> Schema:
    return {
        "description": "A stream's envelope, of any served workflow's run.",
        **_events_of(app.workflows, app, schemas),
    }


def _all_sent(app: WorkflowApp, schemas: JsonSchemas) -> Schema:
    """What some served workflow's run takes: its workflow's ``<name>-SentEvent`` (one of
    the workflows that take the same events stands for all)."""
    tables: list[Mapping[str, type[Event]]] = []
    options = []
    for name, table in app._sendable.items():
        if table not in tables:
            tables.append(table)
            options.append(_workflow_sent(name, app, schemas))
    return {
        "description": "An event sent into a run (of the run's workflow: `<name>-SentEvent`).",
        **({"anyOf": options} if len(options) > 1 else _as_dict(options[0])),
    }


def _fixed_schemas() -> dict[str, Schema]:
    string: dict[str, Any] = {"type": "string"}
    integer: dict[str, Any] = {"type": "integer"}
    number: dict[str, Any] = {"type": "number"}
    run_error = _object(
        {"type": string, "message": string, "step": string},
        ["type", "message"],
        "What ended a run: the exception's class name and message, and the step that raised.",
    )
    field = _object(
        {"name": string, "type": string, "required": {"type": "boolean"}, "default": {}},
        ["name", "type", "required"],
        "A field: `default` where the field has one with a plain JSON form.",
    )
    run_head = {
        "run_id": string,
        "workflow": string,
        "status": {"enum": _STATUSES},
        "seq": {**integer, "minimum": 0, "description": "Events streamed so far."},
        "first_seq": {
            **integer,
            "minimum": 1,
            "description": "The oldest event the server still keeps (`seq` + 1 when none): "
            "a stream from the start begins there.",
        },
        "watchers": {**integer, "minimum": 0, "description": "Clients streaming it now."},
        "started_at": {**number, "description": "Unix time."},
        "ended_at": {
            "type": ["number", "null"],
            "description": "Unix time its outcome was decided; null while it runs.",
        },
        "node": {
            "type": ["string", "null"],
            "description": "The node id of the process running it; null when none is.",
        },
        "waiting_for_input": {
            "type": "boolean",
            "description": "It runs and its newest event (lifecycle events aside) is an "
            "`InputRequiredEvent`: it waits for an answer (`POST /runs/{run_id}/events`).",
        },
    }
    return {
        "Error": _object(
            {"error": _object({"code": string, "message": string}, ["code", "message"])},
            ["error"],
            "An error: `code` for programs, `message` for people.",
        ),
        "Health": _object(
            {
                "status": {"enum": ["ok", "shutting_down", "not_started"]},
                "running": {**integer, "minimum": 0, "description": "Runs running now."},
                "max_runs": {
                    **integer,
                    "minimum": 0,
                    "description": "Runs it runs at once (0: an HTTP node of a shared store).",
                },
            },
            ["status"],
            "Whether the server serves; the counters only for those with its token.",
        ),
        "WorkflowList": _object({"workflows": {"type": "array", "items": string}}, ["workflows"]),
        "WorkflowGraph": _object(
            {
                "name": string,
                "workflow": string,
                "doc": string,
                "start_event": string,
                "stop_event": string,
                "input": {"type": "array", "items": field},
                "free_form": {"type": "boolean"},
                "steps": {"type": "array", "items": {"type": "object"}},
                "events": {
                    "type": "array",
                    "items": _object(
                        {
                            "name": string,
                            "qualified_name": string,
                            "kind": {
                                "enum": [
                                    "start",
                                    "stop",
                                    "input_required",
                                    "human_response",
                                    "step_failed",
                                    "event",
                                ]
                            },
                            "fields": {
                                "type": "array",
                                "items": field,
                            },
                        },
                        ["name", "qualified_name", "kind", "fields"],
                    ),
                },
            },
            ["name", "start_event", "stop_event", "input", "free_form", "steps", "events"],
            "A workflow's graph, for people and forms: field types as Python writes them.",
        ),
        "RunStarted": _object({"run_id": string}, ["run_id"]),
        "Run": _object(
            {
                **run_head,
                "result": {"description": "The result, once completed."},
                "error": run_error,
            },
            list(run_head),
            "A run: `result` once it completed, `error` once it failed or timed out.",
        ),
        "RunList": _object(
            {
                "runs": {"type": "array", "items": _ref("Run")},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "The `cursor` of the next page; null on the last.",
                },
            },
            ["runs", "next_cursor"],
        ),
        "EventAccepted": _object(
            {"run_id": string, "accepted": {"const": True}}, ["run_id", "accepted"]
        ),
        "Cancelling": _object(
            {"run_id": string, "cancelling": {"const": True}}, ["run_id", "cancelling"]
        ),
    }


_STATUSES = [status.value for status in RunStatus]
#: A seq number as `after` and ``Last-Event-ID`` take it: at most 18 digits.
_SEQ = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}


# --- Pieces -------------------------------------------------------------------------------


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    description: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": description,
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = responses
    return operation


def _param(
    name: str, where: str, schema: Schema, description: str, *, required: bool = False
) -> dict[str, Any]:
    param = {"name": name, "in": where, "description": description, "schema": schema}
    return param | {"required": True} if required else param


def _json(description: str, schema: Schema) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, _ref("Error"))


def _header(description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


def _link(operation_id: str, description: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "parameters": {"run_id": "$response.body#/run_id"},
        "description": description,
    }


def _object(
    properties: dict[str, Schema], required: list[str], description: str | None = None
) -> dict[str, Any]:
    # Open objects: the server may add keys to its answers.
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    return schema | {"description": description} if description else schema


def _given(schema: Schema) -> Schema:
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _name_of(ref: Schema) -> str:
    assert isinstance(ref, dict)
    return str(ref["$ref"]).removeprefix(_REF)


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name`` with a number added if it is taken already; now taken."""
    unique = next(
        n
        for n in itertools.chain([name], (f"{name}_{i}" for i in itertools.count(2)))
        if n not in taken
    )
    taken.add(unique)
    return unique


def _component(name: str) -> str:
    """``name`` as an OpenAPI component name may be spelt."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)


def _as_dict(schema: Schema) -> dict[str, Any]:
    return schema if isinstance(schema, dict) else {} if schema else {"not": {}}
