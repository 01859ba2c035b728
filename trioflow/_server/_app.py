"""`WorkflowApp`: the ASGI app that serves workflows over HTTP.

Routes, authentication and CORS live here; streaming is in `_streaming`, the runs in
`_registry`, the JSON forms of events in `_wire`. The app's runs live in a nursery that
`WorkflowApp.running` opens and closes: the app's own ASGI lifespan enters it, and so does the
lifespan of a Starlette or FastAPI app that mounts it (`WorkflowApp.lifespan`), since a mounted
app gets no ASGI lifespan of its own.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from importlib import resources
from types import TracebackType
from typing import Any
from urllib.parse import quote

import trio

from .. import Event, RunStatus, StartEvent, Workflow, WorkflowRuntimeError
from .._errors import require_trio
from .._store import Store, StoreError, StoreUnavailable, open_engine
from .._wire import WireError, decode_event, decode_start_event, describe_workflow, dumps
from .._wire import sendable_event_types as _sendable_event_types
from ._asgi import HttpError, Receive, Request, Scope, Send
from ._feed import EventsExpired, TooManyWatchers
from ._group import RunGroupBlock
from ._llama import LLAMA_ROUTES
from ._openapi import openapi_document, openapi_json
from ._options import LIST_LIMIT, LIST_LIMIT_MAX, LOOPBACK_NAMES, node_name
from ._options import ServerOptions as ServerOptions
from ._record import RunRecord
from ._registry import RunRegistry, ShuttingDown, TooManyRuns
from ._stored import StoredRecord, ended_as
from ._streaming import NdjsonForm, SseForm, StreamForm, stream_feed

logger = logging.getLogger("trioflow.server")

#: The `WorkflowApp`\ s running inside the app that `serve` serves. `serve` sets a list here in
#: the task that runs that app's ASGI lifespan, and `WorkflowApp.running` entered there (the
#: served app's own lifespan, or the lifespan of a Starlette or FastAPI app that mounts it)
#: adds its app: `serve` then shuts those apps' runs down first, and raises their fatal
#: exceptions, whatever the app it serves is.
served_apps: ContextVar[list[WorkflowApp] | None] = ContextVar("served_apps", default=None)


def _hostname(host: str) -> str:
    """The name in a Host header as DNS compares names: without its port, in lower case and
    without the root's trailing dot (``LocalHost.:8000`` -> ``localhost``, ``[::1]:8000`` ->
    ``::1``). A port that is not digits, or anything after ``]``, makes no name: ``""``."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else rest or None
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, None
    if port is not None and not (port.isascii() and port.isdigit()):
        return ""
    return name.lower().removesuffix(".")


class WorkflowApp:
    """An ASGI app serving ``workflows`` over HTTP (see the README's HTTP section).

    Args:
        workflows: one `Workflow` (served under its class name) or a mapping of names to
            workflows.
        retain, ..., llama_compat: the fields of `ServerOptions`, which defines them
            (their defaults and validation; ``tests/test_typing.py`` keeps these in step).

    Runs started over HTTP live in a nursery owned by the app, opened by `running`: the ASGI
    lifespan protocol enters it (hypercorn speaks it; see `serve`), and so does the lifespan of
    a Starlette or FastAPI app the app is mounted in (`lifespan`). Mounted, the app answers
    under the mount's prefix (the scope's ``root_path``): its ``Location`` headers and its
    dashboard's requests included.
    """

    # Each option spelt out, so that type checkers catch a misspelt one (and show the
    # defaults); `ServerOptions` stays their definition and validates them.
    def __init__(
        self,
        workflows: Workflow | Mapping[str, Workflow],
        *,
        retain: int = 1024,
        retain_bytes: int = 4 * 1024 * 1024,
        max_clients_per_run: int = 128,
        hold_for_first_client: float = 10.0,
        max_runs: int = 64,
        keep_finished: int = 100,
        keep_finished_bytes: int = 64 * 1024 * 1024,
        max_body: int = 1024 * 1024,
        token: str | None = None,
        allowed_hosts: str | Iterable[str] = LOOPBACK_NAMES,
        cors_origins: str | Iterable[str] = (),
        ping_interval: float = 15.0,
        retry_ms: int = 2000,
        abandon_after: float | None = None,
        shutdown_grace: float = 5.0,
        body_timeout: float = 30.0,
        keep_alive_timeout: float = 5.0,
        max_connections: int = 1000,
        store: str = "memory:",
        max_recoveries: int = 3,
        node_id: str | None = None,
        lease: float = 15.0,
        unserved_grace: float = 600.0,
        llama_compat: bool = False,
        hide_tracebacks: bool = False,
    ) -> None:
        self.workflows = _named(workflows)
        self.options = ServerOptions(
            retain=retain,
            retain_bytes=retain_bytes,
            max_clients_per_run=max_clients_per_run,
            hold_for_first_client=hold_for_first_client,
            max_runs=max_runs,
            keep_finished=keep_finished,
            keep_finished_bytes=keep_finished_bytes,
            max_body=max_body,
            token=token,
            allowed_hosts=allowed_hosts,
            cors_origins=cors_origins,
            ping_interval=ping_interval,
            retry_ms=retry_ms,
            abandon_after=abandon_after,
            shutdown_grace=shutdown_grace,
            body_timeout=body_timeout,
            keep_alive_timeout=keep_alive_timeout,
            max_connections=max_connections,
            store=store,
            max_recoveries=max_recoveries,
            node_id=node_id,
            lease=lease,
            unserved_grace=unserved_grace,
            llama_compat=llama_compat,
            hide_tracebacks=hide_tracebacks,
        )
        self._registry: RunRegistry | None = None
        self._running = False  # between entering and leaving `running`
        self._hosts = frozenset(_hostname(name) for name in self.options.allowed_hosts)
        self._token = None if self.options.token is None else self.options.token.encode()
        self._dashboard: bytes | None = None
        self._sendable = {name: _sendable_event_types(wf) for name, wf in self.workflows.items()}
        # LlamaIndex's routes first: its /health answers in its own words.
        self._routes: tuple[tuple[tuple[str, ...], Mapping[str, _Endpoint]], ...] = (
            (*LLAMA_ROUTES, *_ROUTES) if self.options.llama_compat else _ROUTES
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        require_trio("WorkflowApp")  # its runs live in a trio nursery the lifespan opens
        if scope["type"] == "http":
            request = Request.from_scope(scope, receive, send)
            request.body_timeout = self.options.body_timeout
            request.http_version = scope.get("http_version", "1.1")
            # LlamaIndex clients read an error's message from "detail".
            request.detail_errors = self.options.llama_compat
            await self._http(request)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            # Refused before accepting: the server answers 403, and nothing is logged.
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1003})
        else:
            raise ValueError(f"trioflow serves HTTP only, not {scope['type']!r}")

    def running(self) -> AbstractAsyncContextManager[None]:
        """Run the app: ``async with app.running():`` opens the nursery its runs live in, and
        leaving the block shuts them down (`shutdown`) and closes it.

        The app's own ASGI lifespan enters it, so a server that speaks the lifespan protocol
        (hypercorn, `serve`) needs nothing more. A mounted app gets no lifespan of its own:
        enter it in the host app's lifespan, ``Starlette(..., lifespan=app.lifespan)``, or
        ``async with app.running():`` inside a lifespan of your own. Until then requests that
        need runs are answered 503 ``not_started``.

        An app runs once at a time (it may run again once the block is left, with a fresh set
        of runs); entering it while it runs raises `RuntimeError`.
        """
        return _Running(self)

    def lifespan(self, app: object) -> AbstractAsyncContextManager[None]:
        """`running`, as the ``lifespan`` of a Starlette or FastAPI app that mounts this one
        (it is given that app, and ignores it)::

            app = Starlette(routes=[Mount("/flows", app=wf_app)], lifespan=wf_app.lifespan)
        """
        return self.running()

    async def shutdown(self) -> None:
        """Start no more runs, cancel the running ones, and wait until their terminal events
        are recorded, so that open streams end with them; at most
        `ServerOptions.shutdown_grace` seconds."""
        await self._shutdown()

    async def _shutdown(self, by: float | None = None) -> None:
        """`shutdown`, over by ``by`` (trio's clock) when given: `serve`'s own deadline. What
        follows the runs when the app stops (its store's drain) keeps to that deadline."""
        if self._registry is not None:
            await self._registry.shutdown(self.options.shutdown_grace, by=by)

    def openapi(self, prefix: str = "") -> dict[str, Any]:
        """The OpenAPI 3.1 document that ``GET /openapi.json`` answers, as a new dict, its
        paths under ``prefix`` (where the app is mounted: ``"/flows"``), to merge into the
        document of the app it is mounted in."""
        return openapi_document(self, prefix)

    async def wait_fatal(self) -> BaseException:
        """Wait until a run raises a `BaseException` that is no `Exception` (a step's
        ``SystemExit`` or ``KeyboardInterrupt``), and return it.

        Such an exception stops the app, as a signal stops a server: it starts no more runs
        (503), cancels the others and ends their streams. `serve` waits here to shut the server
        down, then raises the exception; an app served otherwise can do the same.

        Raises:
            RuntimeError: the app has not started (neither its ASGI lifespan nor `running`
                has run).
        """
        if self._registry is None:
            raise RuntimeError(
                "the app has not started: neither its ASGI lifespan nor running() has run"
            )
        return await self._registry.wait_fatal()

    # -- lifespan --

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            raise RuntimeError(f"expected lifespan.startup, got {message['type']!r}")
        if self._running:  # told to the server, which says it as it fails to start
            await send({"type": "lifespan.startup.failed", "message": _ALREADY_RUNNING})
            return
        running = self.running()
        try:
            await running.__aenter__()
        except Exception as error:  # its store cannot be opened, say: the server must not start
            await send({"type": "lifespan.startup.failed", "message": str(error)})
            raise  # `serve` raises it as itself
        try:
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            if message["type"] != "lifespan.shutdown":
                raise RuntimeError(f"expected lifespan.shutdown, got {message['type']!r}")
        except BaseException as error:
            await running.__aexit__(type(error), error, error.__traceback__)
            raise
        await running.__aexit__(None, None, None)
        await send({"type": "lifespan.shutdown.complete"})

    # -- requests --

    async def _http(self, request: Request) -> None:
        try:
            self._check_host(request)
            self._cors(request)
            if request.method == "OPTIONS" and self.options.cors_origins:
                await self._preflight(request)
                return
            self._check_origin(request)
            if request.path.strip("/") != "health":  # a load balancer's probe has no token
                self._authenticate(request)
            await self._route(request)
        except HttpError as error:
            if not request.started:  # a stream that has begun cannot turn into an error
                await request.respond_error(error)
        except StoreUnavailable as error:  # for now: the client may ask again
            if not request.started:
                await request.respond_error(
                    HttpError(503, "store_unavailable", str(error), [(b"retry-after", b"1")])
                )
        except StoreError as error:  # it failed for good: the server is stopping (no bug)
            if not request.started:
                await request.respond_error(_shutting_down(str(error)))
        except Exception:
            # One bad request never takes the server down; the traceback goes to the log.
            logger.exception("trioflow: error answering %s %s", request.method, request.path)
            if not request.started:
                await request.respond_error(
                    HttpError(500, "internal_error", "the server failed to answer; see its log")
                )

    def _check_host(self, request: Request) -> None:
        # Against DNS rebinding: a page whose name was pointed at this machine reaches it as
        # same-origin, but its Host header still names the page's site.
        if "*" in self._hosts:
            return
        if _hostname(request.headers.get("host", "")) not in self._hosts:
            raise HttpError(
                403,
                "forbidden_host",
                "this server does not answer for that Host; allow it with allowed_hosts "
                "(--allowed-host)",
            )

    def _check_origin(self, request: Request) -> None:
        # Against cross-site requests: a browser says where a request comes from. A page of
        # another origin may not start, answer or cancel runs unless CORS allows that origin.
        origin = request.headers.get("origin")
        if request.method in ("GET", "HEAD") or origin is None:
            return
        allowed = self.options.cors_origins
        same_origin = origin.partition("://")[2] == request.headers.get("host")
        if not (same_origin or origin in allowed or "*" in allowed):
            raise HttpError(
                403, "forbidden_origin", f"requests from {origin} are not allowed (see CORS)"
            )

    def _authenticate(self, request: Request) -> None:
        if self._token is None:
            return
        # Compare raw bytes: a header arrives as latin-1, a query parameter as UTF-8.
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = credentials.strip().encode("latin-1")
        else:
            given = request.query.get("token", "").encode()
        if not hmac.compare_digest(given, self._token):
            raise HttpError(
                401,
                "unauthorized",
                "this server needs a token: Authorization: Bearer <token>, or ?token=<token>",
                [(b"www-authenticate", b"Bearer")],
            )

    def _cors(self, request: Request) -> None:
        origin = request.headers.get("origin")
        allowed = self.options.cors_origins
        if origin is None or not (origin in allowed or "*" in allowed):
            return
        request.extra_headers += [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"vary", b"origin"),
        ]

    async def _preflight(self, request: Request) -> None:
        await request.respond(
            204,
            b"",
            headers=[
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", b"authorization, content-type, last-event-id"),
                (b"access-control-max-age", b"600"),
            ],
        )

    async def _route(self, request: Request) -> None:
        parts = [part for part in request.path.split("/") if part]
        for pattern, methods in self._routes:
            args = _match(pattern, parts)
            if args is None:
                continue
            route = methods.get("GET" if request.head else request.method)
            if route is None:
                allow = ", ".join(["HEAD", *methods] if "GET" in methods else methods).encode()
                raise HttpError(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed on {request.path}; use {allow.decode()}",
                    [(b"allow", allow)],
                )
            await route(self, request, args)
            return
        raise HttpError(404, "not_found", f"no such endpoint: {request.path}")

    # -- endpoints --

    async def _get_dashboard(self, request: Request, args: list[str]) -> None:
        if self._dashboard is None:
            self._dashboard = (resources.files("trioflow._server") / "dashboard.html").read_bytes()
        await request.respond(
            200,
            self._dashboard,
            b"text/html; charset=utf-8",
            [
                (
                    b"content-security-policy",
                    b"default-src 'self'; script-src 'unsafe-inline'; "
                    b"style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
                ),
                (b"x-frame-options", b"DENY"),  # frame-ancestors for older browsers
            ],
        )

    async def _list_workflows(self, request: Request, args: list[str]) -> None:
        await request.respond_json(200, {"workflows": list(self.workflows)})

    async def _describe_workflow(self, request: Request, args: list[str]) -> None:
        name, workflow = self._workflow(args[0])
        await request.respond_json(200, describe_workflow(name, workflow))

    async def _start_run(self, request: Request, args: list[str]) -> None:
        name, workflow = self._workflow(args[0])
        abandon_after = self._abandon_after(request)
        data = await request.json(self.options.max_body)
        try:
            start_event = decode_start_event(workflow.graph.start_event_type, data)
        except WireError as error:
            raise HttpError(422, "invalid_fields", str(error)) from None
        lifecycle = _flag(request, "lifecycle")
        if await self._runs().runs_here():
            record = await self._start(
                name, workflow, start_event, abandon_after=abandon_after, lifecycle=lifecycle
            )
            run_id = record.run_id
        else:  # a process sharing the store with room runs it
            run_id = await self._submit(name, workflow, start_event, lifecycle=lifecycle)
        location = f"{quote(request.root_path)}/runs/{run_id}".encode()
        await request.respond_json(201, {"run_id": run_id}, [(b"location", location)])

    async def _list_runs(self, request: Request, args: list[str]) -> None:
        query = request.query
        limit = _int_param(query, "limit", low=1, high=LIST_LIMIT_MAX) or LIST_LIMIT
        before = _int_param(query, "cursor", low=0, high=2**62)
        workflow = query.get("workflow")
        if workflow is not None:
            self._workflow(workflow)
        statuses = _statuses(query.get("status", ""))
        records, following = await self._runs().page(
            limit, before=before, workflow=workflow, statuses=statuses
        )
        await request.respond_json(
            200,
            {
                "runs": [record.summary() for record in records],
                "next_cursor": None if following is None else str(following),
            },
        )

    async def _run_status(self, request: Request, args: list[str]) -> None:
        await request.respond(200, (await self._record(args[0])).describe())

    async def _run_events(self, request: Request, args: list[str]) -> None:
        record = await self._record(args[0])
        after = _after(request)
        accept = request.headers.get("accept", "")
        ndjson = request.query.get("format") == "ndjson" or (
            "application/x-ndjson" in accept and "text/event-stream" not in accept
        )
        named = _flag(request, "named", default=True)
        form: StreamForm = (
            NdjsonForm() if ndjson else SseForm(named=named, retry_ms=self.options.retry_ms)
        )
        try:
            await stream_feed(
                request,
                record.feed,
                form,
                after=after,
                types=_types(request),
                lifecycle=record.lifecycle,
                with_lifecycle=_flag(request, "lifecycle"),
                ping_interval=self.options.ping_interval,
            )
        except EventsExpired as expired:
            raise HttpError(410, "events_expired", str(expired)) from None
        except TooManyWatchers as full:
            raise HttpError(429, "too_many_clients", str(full), [(b"retry-after", b"1")]) from None
        except ValueError as error:
            raise HttpError(400, "bad_request", str(error)) from None

    async def _send_event(self, request: Request, args: list[str]) -> None:
        record = await self._record(args[0])
        body = await request.json(self.options.max_body)
        if isinstance(record, StoredRecord) and record.runs_elsewhere:
            # To its inbox in the store, for the process that runs it: accepted once committed.
            self._decode_sent(record, body)
            if not await record.send(dumps(body)):
                raise _run_ended(await self._record(args[0]))
            await request.respond_json(202, {"run_id": record.run_id, "accepted": True})
            return
        # (The handler's status: decided, maybe before its end is committed. A refusal
        # acknowledges nothing, so it need not wait for the commit.)
        if not isinstance(record, RunRecord) or record.handler.status is not RunStatus.RUNNING:
            raise _run_ended(record)
        event = self._decode_sent(record, body)
        try:
            await record.handler.send_event(event)
        except WorkflowRuntimeError as error:
            # The outcome may have been decided while the body was read: then the run, not
            # the event, is what is wrong.
            if record.handler.status is not RunStatus.RUNNING:
                raise HttpError(409, "run_ended", str(error)) from None
            raise HttpError(422, "event_not_accepted", str(error)) from None
        await request.respond_json(202, {"run_id": record.run_id, "accepted": True})

    def _decode_sent(self, record: RunRecord | StoredRecord, body: Any) -> Event:
        """The event a client sent to ``record``'s run, or 422 saying why it is none."""
        try:
            return decode_event(self._sendable[record.workflow_name], body)
        except WireError as error:
            raise HttpError(422, "invalid_event", str(error)) from None

    async def _cancel_run(self, request: Request, args: list[str]) -> None:
        record = await self._record(args[0])
        if isinstance(record, StoredRecord) and record.runs_elsewhere:
            # Asked through the store, of the process that runs it: once committed.
            if not await record.request_cancel():
                raise _run_ended(await self._record(args[0]))
            await request.respond_json(202, {"run_id": record.run_id, "cancelling": True})
            return
        if not record.cancel():  # the outcome was decided already, by something else
            if isinstance(record, RunRecord) and record.store is not None:
                await record.settled.wait()  # the refusal says the outcome a crash keeps
                if record.suspended:  # none here: it goes on at the next start
                    raise _shutting_down("its run goes on at the next start")
            raise _run_ended(record)
        if isinstance(record, RunRecord):
            await record.committed()  # on a store: a crash now does not resume it
        await request.respond_json(202, {"run_id": record.run_id, "cancelling": True})

    async def _get_openapi(self, request: Request, args: list[str]) -> None:
        if not request.root_path:
            await request.respond(200, openapi_json(self))
            return
        # Mounted: the paths stay the app's own, and the server's URL is where it is mounted,
        # which a client resolves against the document's own URL (as FastAPI does).
        document = openapi_document(self)
        document["servers"] = [{"url": quote(request.root_path)}]
        await request.respond(200, dumps(document))

    async def _health(self, request: Request, args: list[str]) -> None:
        health = self._health_fields(request)
        await request.respond_json(200 if health["status"] == "ok" else 503, health)

    def _health_fields(self, request: Request) -> dict[str, Any]:
        """What ``GET /health`` says: ``status`` (`_state`), and to those with the token (or
        on a server without one) the runs running and ``max_runs``."""
        health: dict[str, Any] = {"status": self._state}
        try:
            self._authenticate(request)
        except HttpError:  # anyone may know whether it serves; only the token shows the runs
            pass
        else:
            registry = self._registry
            health["running"] = 0 if registry is None else registry.running
            health["max_runs"] = self.options.max_runs
        return health

    # -- lookups --

    @property
    def _state(self) -> str:
        """``ok``, ``not_started`` or ``shutting_down``: what ``GET /health`` says."""
        if self._registry is None:
            return "not_started"
        return "shutting_down" if self._registry._closing else "ok"

    async def _start(
        self,
        name: str,
        workflow: Workflow,
        start_event: StartEvent,
        *,
        abandon_after: float | None = None,
        lifecycle: bool = False,
    ) -> RunRecord:
        """Start a run, or say why not: 429 at ``max_runs``, 503 shutting down."""
        try:
            return await self._runs().start(
                name,
                workflow,
                start_event,
                abandon_after=abandon_after,
                lifecycle=lifecycle,
            )
        except TooManyRuns as busy:
            raise HttpError(429, "too_many_runs", str(busy), [(b"retry-after", b"1")]) from None
        except ShuttingDown as closing:
            raise HttpError(503, "shutting_down", str(closing)) from None

    async def _submit(
        self, name: str, workflow: Workflow, start_event: StartEvent, *, lifecycle: bool
    ) -> str:
        """Submit a run for a process sharing the store to run (503 shutting down)."""
        try:
            return await self._runs().submit(name, workflow, start_event, lifecycle=lifecycle)
        except ShuttingDown as closing:
            raise HttpError(503, "shutting_down", str(closing)) from None

    def _runs(self) -> RunRegistry:
        if self._registry is None:
            raise HttpError(
                503,
                "not_started",
                "the app has not started: serve it with an ASGI server that runs the lifespan "
                "protocol (hypercorn does; see trioflow.serve), or, mounted in another app, "
                "enter it in that app's lifespan (lifespan=wf_app.lifespan, or "
                "async with wf_app.running())",
            )
        return self._registry

    def _workflow(self, name: str) -> tuple[str, Workflow]:
        try:
            return name, self.workflows[name]
        except KeyError:
            known = ", ".join(self.workflows)
            raise HttpError(
                404, "unknown_workflow", f"no workflow named {name!r} (served: {known})"
            ) from None

    async def _record(self, run_id: str) -> RunRecord | StoredRecord:
        record = await self._runs().find(run_id)
        if record is None:
            raise HttpError(404, "unknown_run", f"no run with id {run_id!r}")
        return record

    def _abandon_after(self, request: Request) -> float | None:
        given = request.query.get("abandon_after")
        if given is None:
            return self.options.abandon_after
        try:
            seconds = float(given)
        except ValueError:
            seconds = -1.0
        if not (0 <= seconds < math.inf):
            raise HttpError(
                400, "bad_request", f"abandon_after must be seconds >= 0, got {given!r}"
            )
        return seconds


_ALREADY_RUNNING = (
    "this WorkflowApp is running already: enter running() or its lifespan once at a time (a "
    "mounted app takes lifespan=wf_app.lifespan or async with wf_app.running() in the host "
    "app's lifespan, not both)"
)


class _Running:
    """The ``async with`` of `WorkflowApp.running`: the app's runs are a run group's
    (`open_run_group`'s block, the one place a nursery of runs is opened), entered once at a
    time, and known to `serve` when entered in the lifespan it runs (`served_apps`).
    """

    def __init__(self, app: WorkflowApp) -> None:
        self._app = app
        self._block: RunGroupBlock | None = None
        self._store: Store | None = None

    async def __aenter__(self) -> None:
        app = self._app
        require_trio("WorkflowApp.running()")  # before trio.open_nursery() fails obscurely
        if app._running or self._block is not None:
            raise RuntimeError(_ALREADY_RUNNING)
        app._running = True
        try:
            self._store = await _open_store(app.options)
            # The app's runs are a run group's, without the events kept as objects (clients
            # get JSON) and with a step's SystemExit left to `serve`, which shuts down first.
            self._block = RunGroupBlock(
                app.options,
                keep_events=False,
                stops_on_fatal=False,
                store=self._store,
                workflows=app.workflows,
            )
            await self._block.__aenter__()
        except BaseException:
            app._running = False
            self._block = None
            await self._close_store()
            raise
        app._registry = self._block.registry
        served = served_apps.get()
        if served is not None:
            served.append(app)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        body_error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        assert self._block is not None
        try:
            await self._block.__aexit__(exc_type, body_error, traceback)
        finally:
            self._app._running = False
            self._block = None
            await self._close_store()
        return False

    async def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with trio.CancelScope(shield=True):
                await store.aclose()


def _flag(request: Request, name: str, *, default: bool = False) -> bool:
    """A yes/no query parameter: ``1``, ``true``, ``yes`` or ``0``, ``false``, ``no``."""
    given = request.query.get(name)
    if given is None:
        return default
    if given.lower() in ("1", "true", "yes"):
        return True
    if given.lower() in ("0", "false", "no"):
        return False
    raise HttpError(400, "bad_request", f"{name} must be 1 or 0 (true or false), got {given!r}")


def _types(request: Request) -> frozenset[str] | None:
    """``?types=Token,Progress``: the names (short or qualified) of the events a stream sends,
    its terminal event aside; None: every event but the lifecycle ones."""
    given = request.query.get("types")
    if given is None:
        return None
    names = frozenset(name.strip() for name in given.split(",") if name.strip())
    if not names:
        raise HttpError(400, "bad_request", "types names one or more event types: ?types=A,B")
    return names


def _int_param(query: Mapping[str, str], name: str, *, low: int, high: int) -> int | None:
    """The integer query parameter ``name``, from ``low`` to ``high``; None if not given."""
    given = query.get(name)
    if given is None:
        return None
    if not (given.isascii() and given.isdigit() and len(given) <= 19 and low <= int(given) <= high):
        raise HttpError(
            400, "bad_request", f"{name} must be an integer from {low} to {high}, got {given!r}"
        )
    return int(given)


def _statuses(given: str) -> list[RunStatus]:
    """``?status=running,failed`` as statuses (none: any)."""
    statuses = []
    for name in filter(None, given.split(",")):
        try:
            statuses.append(RunStatus(name))
        except ValueError:
            known = ", ".join(status.value for status in RunStatus)
            raise HttpError(
                400, "bad_request", f"status must be one or more of {known}, got {name!r}"
            ) from None
    return statuses


def _shutting_down(why: str) -> HttpError:
    return HttpError(503, "shutting_down", f"the server is shutting down: {why}")


def _run_ended(record: RunRecord | StoredRecord) -> HttpError:
    return HttpError(409, "run_ended", f"run {record.run_id} has ended{ended_as(record)}")


def _after(request: Request) -> int:
    """Where a stream resumes: ``Last-Event-ID`` (a browser reconnecting) over ``?after=``."""
    given = (request.headers.get("last-event-id") or request.query.get("after") or "0").strip()
    if not (given.isascii() and given.isdigit() and len(given) <= 18):
        raise HttpError(400, "bad_request", f"an event id is a seq number >= 0, got {given!r}")
    return int(given)


def _match(pattern: tuple[str, ...], parts: list[str]) -> list[str] | None:
    if len(pattern) != len(parts):
        return None
    args = []
    for expected, part in zip(pattern, parts, strict=True):
        if expected == "*":
            args.append(part)
        elif expected != part:
            return None
    return args


def _named(workflows: Workflow | Mapping[str, Workflow]) -> dict[str, Workflow]:
    if isinstance(workflows, Workflow):
        return {type(workflows).__name__: workflows}
    if not isinstance(workflows, Mapping) or not workflows:
        raise TypeError(
            f"serve a Workflow or a non-empty mapping of names to workflows, got {workflows!r}"
        )
    named = dict(workflows)
    for name, workflow in named.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise TypeError(f"a workflow's name must be a non-empty string without '/': {name!r}")
        if not isinstance(workflow, Workflow):
            raise TypeError(f"{name!r} is not a Workflow instance: {workflow!r}")
    return named


_Endpoint = Callable[[WorkflowApp, Request, list[str]], Awaitable[None]]
_ROUTES: tuple[tuple[tuple[str, ...], Mapping[str, _Endpoint]], ...] = (
    ((), {"GET": WorkflowApp._get_dashboard}),
    (("workflows",), {"GET": WorkflowApp._list_workflows}),
    (("workflows", "*"), {"GET": WorkflowApp._describe_workflow}),
    (("workflows", "*", "runs"), {"POST": WorkflowApp._start_run}),
    (("runs",), {"GET": WorkflowApp._list_runs}),
    (("runs", "*"), {"GET": WorkflowApp._run_status}),
    (("runs", "*", "events"), {"GET": WorkflowApp._run_events, "POST": WorkflowApp._send_event}),
    (("runs", "*", "cancel"), {"POST": WorkflowApp._cancel_run}),
    (("openapi.json",), {"GET": WorkflowApp._get_openapi}),
    (("health",), {"GET": WorkflowApp._health}),
)


async def _open_store(options: ServerOptions) -> Store | None:
    """The store named by `ServerOptions.store`, opened (as this process's node, on a store
    that processes share); None for ``memory:``."""
    return await open_engine(options.store, node=node_name(options), lease=options.lease)
