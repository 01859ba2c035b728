"""`serve`: a `WorkflowApp`, or any ASGI app, on hypercorn, with a graceful shutdown that always
ends.

A library function: it installs no signal handlers and never exits the process, so it can run
inside any trio program. Whoever embeds it decides what stops it (``shutdown_trigger``, or
cancelling it); the ``trioflow serve`` command turns SIGINT and SIGTERM into that trigger.

hypercorn speaks HTTP/1.1 and HTTP/2 on each connection; `serve` does the rest of what
``hypercorn.trio.serve`` would: it listens, runs the app's ASGI lifespan, and accepts the
connections (`Connections`: at most ``max_connections``, and all of them ended once the
shutdown's grace period is over, which hypercorn cannot do with a client that stopped reading).

Shutting down takes at most ``shutdown_grace`` seconds in all, whatever the clients do. First
the workflow apps' part (`WorkflowApp.shutdown`): the cancelled runs end, their slow clients
holding them back for at most half the grace, then no more. Then the connections' part, until
the grace is over: they finish their responses, the streams up to their runs' terminal events,
and those still open then are closed. Last, the app's lifespan shuts down: a workflow app on a
store commits what its runs wrote last, within what is left of the same grace (a store that
cannot commit does not add a grace of its own).

The app served may be any ASGI app: a Starlette or FastAPI app with a `WorkflowApp` mounted
in it, or a `WorkflowApp` wrapped in middleware. `serve` learns which workflow apps run inside
it as its lifespan starts: each one whose `WorkflowApp.running` is entered in that lifespan's
task (the app's own lifespan, or the host app's ``lifespan=wf_app.lifespan``) tells it through
`served_apps`, so its runs are shut down first, as above, and its fatal exceptions raised. A
workflow app started anywhere else is the host's business: its runs end when its ``running()``
block is left, which for a host lifespan is after the connections have closed.

hypercorn is imported when `serve` is called, so ``import trioflow`` stays light for programs
that only run workflows in-process.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import Any, overload

import attrs
import trio

from .. import Workflow
from ._app import WorkflowApp, served_apps
from ._asgi import Message, Receive, Scope, Send
from ._options import LOOPBACK_NAMES, ServerOptions

logger = logging.getLogger("trioflow.server")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The options `serve` takes for an app that is no `WorkflowApp`: how it serves connections.
#: The others are the workflow app's own (its body timeout, its token...), which it applies to
#: its requests wherever it is mounted; `serve` cannot apply them to another app's routes.
SERVER_OPTIONS = ("shutdown_grace", "keep_alive_timeout", "max_connections")


# The overloads spell the options out, so that type checkers catch a misspelt one, and one an
# app does not take (a `WorkflowApp` brings its own). They mirror `ServerOptions`, the options'
# definition, as `WorkflowApp`'s keywords do (tests/test_typing.py keeps them in step); the
# implementation takes them as ``**options``, and `ServerOptions` validates them.
@overload
async def serve(
    app: WorkflowApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None: ...
@overload
async def serve(
    app: Workflow | Mapping[str, Workflow],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    retain: int = 1024,
    retain_bytes: int = 4 * 1024 * 1024,
    max_clients_per_run: int = 128,
    hold_for_first_client: float = 10.0,
    max_runs: int = 64,
    keep_finished: int = 100,
    keep_finished_bytes: int = 64 * 1024 * 1024,
    max_body: int = 1024 * 1024,
    token: str | None = None,
    allowed_hosts: str | Iterable[str] = ...,  # the loopback names and `host` (`hosts_for`)
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
) -> None: ...
@overload
async def serve(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    shutdown_grace: float = 5.0,
    keep_alive_timeout: float = 5.0,
    max_connections: int = 1000,
) -> None: ...
async def serve(
    app: Workflow | Mapping[str, Workflow] | WorkflowApp | ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve workflows, or an ASGI app holding them, over HTTP until shut down.

    Args:
        app: a `Workflow`, a mapping of names to workflows, a `WorkflowApp`, or any ASGI app:
            a Starlette or FastAPI app with a `WorkflowApp` mounted in it (its lifespan entering
            the workflow app's, ``lifespan=wf_app.lifespan``), a `WorkflowApp` in middleware.
        host: the address to listen on (loopback unless you say otherwise).
        port: the port; 0 picks a free one (see ``task_status``).
        shutdown_trigger: an async callable whose return starts a graceful shutdown. Without
            one the server runs until cancelled (which stops it at once, runs included).
        task_status: receives the bound addresses (``["http://127.0.0.1:8000"]``) once the
            server listens, as with ``await nursery.start(serve, ...)``.
        **options: `ServerOptions` fields, when ``app`` is workflows; for an ASGI app that is
            no `WorkflowApp`, only ``shutdown_grace``, ``keep_alive_timeout`` and
            ``max_connections`` (the others belong to the workflow app inside). A
            `WorkflowApp` brings its own.

    The app's ASGI lifespan starts before the server listens, and shuts down last. Shutting
    down cancels the runs of the workflow apps running in the app (each stream ends with its
    `WorkflowCancelledEvent`), stops listening, lets open responses finish, then returns:
    within ``shutdown_grace`` seconds whatever the clients do (see the module's docstring).

    Raises:
        BaseException: a run's ``SystemExit`` or ``KeyboardInterrupt`` (any `BaseException`
            that is no `Exception`), as itself, once it has shut the server down gracefully.
        Exception: what the app's lifespan failed with, as itself when it raised one (a
            `RuntimeError` saying so otherwise); the server does not start.
    """
    from hypercorn.config import Config

    from ._connections import Connections

    app, settings = _app_and_options(app, host, options)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.keep_alive_timeout = settings.keep_alive_timeout
    config.accesslog = None
    sockets = config.create_sockets().insecure_sockets
    lifespan = _Lifespan(app)
    fatal: list[BaseException] = []
    try:
        listeners = [_listen(sock, config.backlog) for sock in sockets]
        async with trio.open_nursery() as nursery:
            await nursery.start(lifespan.run)
            if lifespan.failure is None:
                connections = Connections(app, config, settings.max_connections, lifespan.state)
                try:
                    accepting = await nursery.start(connections.accept, listeners, nursery)
                    task_status.started([_address(sock) for sock in sockets])
                    await _wait_for_stop(
                        lifespan.apps, shutdown_trigger or trio.sleep_forever, fatal
                    )
                    deadline = trio.current_time() + settings.shutdown_grace
                    await _shut_down(lifespan.apps, deadline)  # the runs' ends are in their feeds
                    accepting.cancel()
                    await connections.finish(deadline)
                finally:
                    connections.close_all()  # when cancelled: at once, whatever the clients do
            lifespan.stop()
    finally:
        for sock in sockets:
            sock.close()
    if lifespan.failure is not None:
        raise lifespan.failure
    if fatal:
        raise fatal[0]


def _app_and_options(
    app: Workflow | Mapping[str, Workflow] | WorkflowApp | ASGIApp,
    host: str,
    options: dict[str, Any],
) -> tuple[ASGIApp, ServerOptions]:
    """The app to serve and the options `serve` itself follows."""
    if isinstance(app, WorkflowApp):
        if options:
            raise TypeError("pass options to WorkflowApp(...) when you pass an app to serve()")
        return app, app.options
    if isinstance(app, Workflow | Mapping):
        options.setdefault("allowed_hosts", hosts_for(host))
        workflow_app = WorkflowApp(app, **options)
        return workflow_app, workflow_app.options
    if not callable(app):
        raise TypeError(
            f"serve a Workflow, a mapping of names to workflows or an ASGI app, got {app!r}"
        )
    others = sorted(set(options) - set(SERVER_OPTIONS))
    if others:
        raise TypeError(
            f"serve() takes only {', '.join(SERVER_OPTIONS)} for an ASGI app; "
            f"{', '.join(others)} belong to the WorkflowApp inside it: WorkflowApp(..., "
            f"{others[0]}=...)"
        )
    return app, ServerOptions(**options)


async def _wait_for_stop(
    apps: list[WorkflowApp],
    trigger: Callable[[], Awaitable[object]],
    fatal: list[BaseException],
) -> None:
    """Return once ``trigger`` has returned or a run of one of ``apps`` has raised a fatal
    exception (kept in ``fatal``)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_then_cancel, trigger, nursery.cancel_scope)
        for app in apps:
            catch = partial(_catch_fatal, app, fatal)
            nursery.start_soon(_then_cancel, catch, nursery.cancel_scope)


async def _then_cancel(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def _catch_fatal(app: WorkflowApp, fatal: list[BaseException]) -> None:
    fatal.append(await app.wait_fatal())


async def _shut_down(apps: list[WorkflowApp], deadline: float) -> None:
    """Shut the runs of ``apps`` down, all at once, each within its own grace and all of them
    by ``deadline``."""
    with trio.move_on_at(deadline):
        async with trio.open_nursery() as nursery:
            for app in apps:
                nursery.start_soon(app._shutdown, deadline)


@attrs.define(eq=False)
class _Lifespan:
    """The served app's ASGI lifespan, run in a task of its own, as hypercorn's worker runs it.

    An app that ends or raises before it answers ``lifespan.startup`` does not speak the
    protocol: it is served without (the ASGI spec says so; a warning is logged). An app that
    answers ``lifespan.startup.failed`` does not start: `failure` is what it raised (Starlette
    sends the message, then raises), or a `RuntimeError` with its message.
    """

    app: ASGIApp
    #: The lifespan's state, which every request's scope gets a copy of (Starlette's
    #: ``lifespan`` may yield some).
    state: dict[str, Any] = attrs.field(factory=dict)
    #: The workflow apps started in the lifespan's task (`served_apps`).
    apps: list[WorkflowApp] = attrs.field(factory=list)
    #: Why the lifespan failed, at startup or at shutdown.
    failure: BaseException | None = None
    _raised: BaseException | None = None
    _stopping: trio.Event = attrs.field(factory=trio.Event)

    def stop(self) -> None:
        """Shut the lifespan down (`run` returns once it has)."""
        self._stopping.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the app's lifespan, report that it started (or failed: `failure`), and once
        `stop` is called shut it down."""
        to_app, app_receives = trio.open_memory_channel[Message](1)
        app_sends, from_app = trio.open_memory_channel[Message](1)
        started = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._call, app_receives, app_sends)
            answer = await _step(to_app, from_app, "startup")
            if answer is None:
                self._unsupported()
            elif self._check(answer, "startup"):
                task_status.started()
                started = True
                await self._stopping.wait()
                self._check(await _step(to_app, from_app, "shutdown"), "shutdown")
            nursery.cancel_scope.cancel()  # an app that failed is not waited for
        if self.failure is not None and self._raised is not None:
            self.failure = self._raised  # the app's own exception says it best
        if not started:
            task_status.started()

    async def _call(
        self, receive: trio.MemoryReceiveChannel[Message], send: trio.MemorySendChannel[Message]
    ) -> None:
        served_apps.set(self.apps)  # in this task's own context: its lifespan alone sees it
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = self.state
        with send:
            try:
                await self.app(scope, receive.receive, send.send)
            except Exception as error:  # reported: see `_unsupported` and `failure`
                self._raised = error

    def _check(self, answer: Message | None, step: str) -> bool:
        if answer is not None and answer["type"] == f"lifespan.{step}.complete":
            return True
        if answer is None:
            message = f"the app ended its lifespan before it answered lifespan.{step}"
        elif answer["type"] == f"lifespan.{step}.failed":
            message = f"the app's lifespan {step} failed: {answer.get('message', '')}"
        else:
            message = f"the app answered lifespan.{step} with {answer!r}"
        self.failure = RuntimeError(message)
        return False

    def _unsupported(self) -> None:
        logger.warning(
            "trioflow: the app does not speak the ASGI lifespan protocol (it %s): serving it "
            "without; a WorkflowApp inside it answers 503 not_started until it runs",
            "returned" if self._raised is None else f"raised {self._raised!r}",
        )


async def _step(
    to_app: trio.MemorySendChannel[Message], from_app: trio.MemoryReceiveChannel[Message], step: str
) -> Message | None:
    """Send the app ``lifespan.<step>`` and return its answer (None: it ended without one)."""
    try:
        await to_app.send({"type": f"lifespan.{step}"})
        return await from_app.receive()
    except trio.EndOfChannel:
        return None


def _listen(sock: socket.socket, backlog: int) -> trio.SocketListener:
    sock.listen(backlog)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def hosts_for(host: str) -> tuple[str, ...]:
    """Host names to answer for when bound to ``host``: the loopback names and the bound name
    itself; any name when bound to every interface (the operator chose to be reachable by
    whatever name the network gives)."""
    if host in ("0.0.0.0", "::", ""):
        return ("*",)
    return tuple(dict.fromkeys((*LOOPBACK_NAMES, host.strip("[]"))))
