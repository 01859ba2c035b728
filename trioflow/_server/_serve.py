"""`serve`: a `WorkflowApp` on hypercorn's trio worker, with a graceful shutdown.

hypercorn is imported when `serve` is called, so ``import trioflow`` stays light for programs
that only run workflows in-process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import trio

from .._workflow import Workflow
from ._app import LOOPBACK_NAMES, WorkflowApp


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
            one, SIGINT and SIGTERM do (in the main thread).
        task_status: receives the bound addresses (``["http://127.0.0.1:8000"]``) once the
            server listens, as with ``await nursery.start(serve, ...)``.
        **options: `ServerOptions` fields, when ``workflows`` is not already an app.

    Shutting down stops listening, cancels the running runs (each stream ends with its
    `WorkflowCancelledEvent`), lets open streams finish, then returns.
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

    async def shut_down(trigger: Callable[[], Awaitable[object]]) -> None:
        await trigger()
        await app.shutdown()

    async def run(trigger: Callable[[], Awaitable[object]]) -> None:
        await hypercorn_serve(
            app,  # type: ignore[arg-type]  # hypercorn's scope TypedDicts; ours is a mapping
            config,
            shutdown_trigger=partial(shut_down, trigger),
            task_status=task_status,
            mode="asgi",
        )

    if shutdown_trigger is not None:
        await run(shutdown_trigger)
    elif threading.current_thread() is not threading.main_thread():
        await run(trio.sleep_forever)  # signals reach the main thread only
    else:
        # Listen for signals before the server starts, so an early Ctrl-C is a clean stop too.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                first = trio.Event()
                nursery.start_soon(_on_signals, signals, first)
                await run(first.wait)
                nursery.cancel_scope.cancel()


async def _on_signals(signals: AsyncIterator[int], first: trio.Event) -> None:
    """The first signal shuts down gracefully; a second one, while that is under way (slow
    clients, a step in a thread), exits at once."""
    async for signum in signals:
        if first.is_set():
            print("trioflow: signalled again, exiting now", file=sys.stderr)
            os._exit(128 + signum)
        first.set()


def hosts_for(host: str) -> tuple[str, ...]:
    """Host names to answer for when bound to ``host``: the loopback names and the bound name
    itself; any name when bound to every interface (the operator chose to be reachable by
    whatever name the network gives)."""
    if host in ("0.0.0.0", "::", ""):
        return ("*",)
    return tuple(dict.fromkeys((*LOOPBACK_NAMES, host.strip("[]"))))
