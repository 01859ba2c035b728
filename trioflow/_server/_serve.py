"""`serve`: a `WorkflowApp` on hypercorn's trio worker, with a graceful shutdown.

A library function: it installs no signal handlers and never exits the process, so it can run
inside any trio program. Whoever embeds it decides what stops it (``shutdown_trigger``, or
cancelling it); the ``trioflow serve`` command turns SIGINT and SIGTERM into that trigger.

hypercorn is imported when `serve` is called, so ``import trioflow`` stays light for programs
that only run workflows in-process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import trio

from .. import Workflow
from ._app import WorkflowApp
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

    Shutting down stops listening, cancels the running runs (each stream ends with its
    `WorkflowCancelledEvent`), lets open streams finish, then returns.

    Raises:
        BaseException: a run's ``SystemExit`` or ``KeyboardInterrupt`` (any `BaseException`
            that is no `Exception`), as itself, once it has shut the server down gracefully.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    if isinstance(workflows, WorkflowApp):
        if options:
            raise TypeError("pass options to WorkflowApp(...) when you pass an app to serve()")
        app = workflows
    else:
        options.setdefault("allowed_hosts", hosts_for(host))
        app = WorkflowApp(workflows, **options)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = app.options.shutdown_grace
    config.accesslog = None
    fatal: list[BaseException] = []
    await hypercorn_serve(
        app,  # type: ignore[arg-type]  # hypercorn's scope TypedDicts; ours is a mapping
        config,
        shutdown_trigger=partial(_shut_down, app, shutdown_trigger or trio.sleep_forever, fatal),
        task_status=task_status,
        mode="asgi",
    )
    if fatal:
        raise fatal[0]


async def _shut_down(
    app: WorkflowApp, trigger: Callable[[], Awaitable[object]], fatal: list[BaseException]
) -> None:
    """hypercorn's shutdown trigger: return (which stops hypercorn) once ``trigger`` has
    returned or a run has raised a fatal exception (kept in ``fatal``), and the app has
    cancelled its runs and recorded their ends."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_then_cancel, trigger, nursery.cancel_scope)
        nursery.start_soon(_then_cancel, partial(_catch_fatal, app, fatal), nursery.cancel_scope)
    await app.shutdown()


async def _then_cancel(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def _catch_fatal(app: WorkflowApp, fatal: list[BaseException]) -> None:
    fatal.append(await app.wait_fatal())


def hosts_for(host: str) -> tuple[str, ...]:
    """Host names to answer for when bound to ``host``: the loopback names and the bound name
    itself; any name when bound to every interface (the operator chose to be reachable by
    whatever name the network gives)."""
    if host in ("0.0.0.0", "::", ""):
        return ("*",)
    return tuple(dict.fromkeys((*LOOPBACK_NAMES, host.strip("[]"))))
