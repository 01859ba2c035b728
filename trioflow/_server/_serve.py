"""`serve`: a `WorkflowApp` on hypercorn, with a graceful shutdown that always ends.

A library function: it installs no signal handlers and never exits the process, so it can run
inside any trio program. Whoever embeds it decides what stops it (``shutdown_trigger``, or
cancelling it); the ``trioflow serve`` command turns SIGINT and SIGTERM into that trigger.

hypercorn speaks HTTP/1.1 and HTTP/2 on each connection; `serve` does the rest of what
``hypercorn.trio.serve`` would: it listens, runs the app's ASGI lifespan, and accepts the
connections (`Connections`: at most ``max_connections``, and all of them ended once the
shutdown's grace period is over, which hypercorn cannot do with a client that stopped reading).

Shutting down takes at most ``shutdown_grace`` seconds in all, whatever the clients do. First
the app's part (`WorkflowApp.shutdown`): the cancelled runs end, their slow clients holding them
back for at most half the grace, then no more. Then the connections' part, until the grace is
over: they finish their responses, the streams up to their runs' terminal events, and those
still open then are closed.

hypercorn is imported when `serve` is called, so ``import trioflow`` stays light for programs
that only run workflows in-process.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import trio

from .. import Workflow
from ._app import WorkflowApp
from ._asgi import Message
from ._options import LOOPBACK_NAMES


async def serve(
    workflows: Workflow | Mapping[str, Workflow] | WorkflowApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve workflows over HTTP until shut down.

    Args:
        workflows: a `Workflow`, a mapping of names to workflows, or a `WorkflowApp`.
        host: the address to listen on (loopback unless you say otherwise).
        port: the port; 0 picks a free one (see ``task_status``).
        shutdown_trigger: an async callable whose return starts a graceful shutdown. Without
            one the server runs until cancelled (which stops it at once, runs included).
        task_status: receives the bound addresses (``["http://127.0.0.1:8000"]``) once the
            server listens, as with ``await nursery.start(serve, ...)``.
        **options: `ServerOptions` fields, when ``workflows`` is not already an app.

    Shutting down cancels the running runs (each stream ends with its
    `WorkflowCancelledEvent`), stops listening, lets open responses finish, then returns:
    within ``shutdown_grace`` seconds whatever the clients do (see the module's docstring).

    Raises:
        BaseException: a run's ``SystemExit`` or ``KeyboardInterrupt`` (any `BaseException`
            that is no `Exception`), as itself, once it has shut the server down gracefully.
    """
    from hypercorn.config import Config

    from ._connections import Connections

    if isinstance(workflows, WorkflowApp):
        if options:
            raise TypeError("pass options to WorkflowApp(...) when you pass an app to serve()")
        app = workflows
    else:
        options.setdefault("allowed_hosts", hosts_for(host))
        app = WorkflowApp(workflows, **options)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.keep_alive_timeout = app.options.keep_alive_timeout
    config.accesslog = None
    sockets = config.create_sockets().insecure_sockets
    fatal: list[BaseException] = []
    try:
        listeners = [_listen(sock, config.backlog) for sock in sockets]
        async with trio.open_nursery() as nursery:
            stop_app = await nursery.start(_run_lifespan, app)
            connections = Connections(app, config, app.options.max_connections)
            try:
                accepting = await nursery.start(connections.accept, listeners, nursery)
                task_status.started([_address(sock) for sock in sockets])
                await _wait_for_stop(app, shutdown_trigger or trio.sleep_forever, fatal)
                deadline = trio.current_time() + app.options.shutdown_grace
                await app.shutdown()  # within the grace: the runs' ends are in their feeds
                accepting.cancel()
                await connections.finish(deadline)
            finally:
                connections.close_all()  # when cancelled: at once, whatever the clients do
            stop_app.set()
    finally:
        for sock in sockets:
            sock.close()
    if fatal:
        raise fatal[0]


async def _wait_for_stop(
    app: WorkflowApp, trigger: Callable[[], Awaitable[object]], fatal: list[BaseException]
) -> None:
    """Return once ``trigger`` has returned or a run has raised a fatal exception (kept in
    ``fatal``)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_then_cancel, trigger, nursery.cancel_scope)
        nursery.start_soon(_then_cancel, partial(_catch_fatal, app, fatal), nursery.cancel_scope)


async def _then_cancel(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def _catch_fatal(app: WorkflowApp, fatal: list[BaseException]) -> None:
    fatal.append(await app.wait_fatal())


async def _run_lifespan(
    app: WorkflowApp, *, task_status: trio.TaskStatus[trio.Event] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the app's ASGI lifespan (its runs live in the nursery it holds); once it has
    started, report an event whose setting shuts it down."""
    to_app, app_receives = trio.open_memory_channel[Message](1)
    app_sends, from_app = trio.open_memory_channel[Message](1)
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, scope, app_receives.receive, app_sends.send)
        await _lifespan_step(to_app, from_app, "startup")
        task_status.started(stop)
        await stop.wait()
        await _lifespan_step(to_app, from_app, "shutdown")


async def _lifespan_step(
    to_app: trio.MemorySendChannel[Message],
    from_app: trio.MemoryReceiveChannel[Message],
    step: str,
) -> None:
    await to_app.send({"type": f"lifespan.{step}"})
    answer = await from_app.receive()
    if answer["type"] != f"lifespan.{step}.complete":
        raise RuntimeError(f"the app answered lifespan.{step} with {answer!r}")


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
