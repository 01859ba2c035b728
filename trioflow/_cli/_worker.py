"""``trioflow worker``: a process that runs the runs of a store shared by processes, without
HTTP (the other processes serve them). It claims what it has room for, as ``trioflow serve``
does, until SIGINT or SIGTERM: then it stops its runs, which other processes go on with."""

from __future__ import annotations

import sys

import trio

from trioflow import WorkflowApp

from .._server._options import node_name
from ._signals import STOP_SIGNALS, stop_on_signals

#: The `ServerOptions` a worker takes (the others are about serving HTTP).
WORKER_OPTIONS = (
    "store",
    "max_runs",
    "max_recoveries",
    "node_id",
    "lease",
    "unserved_grace",
    "shutdown_grace",
)


async def work(app: WorkflowApp) -> int:
    """Run ``app``'s share of its store's runs until SIGINT or SIGTERM (a second one exits at
    once), or until a run raises a ``SystemExit`` or ``KeyboardInterrupt``, which it raises
    once it has stopped."""
    fatal: list[BaseException] = []
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        stopping = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signals, signals, lambda _: stopping.set(), "worker")
            async with app.running():

                async def stop_on_fatal() -> None:
                    fatal.append(await app.wait_fatal())
                    stopping.set()

                nursery.start_soon(stop_on_fatal)
                print(
                    f"trioflow: worker {node_name(app.options)} runs {', '.join(app.workflows)}"
                    f" ({app.options.max_runs} at once; Ctrl-C stops)",
                    flush=True,
                )
                await stopping.wait()
            nursery.cancel_scope.cancel()
    if fatal:
        raise fatal[0]
    print("trioflow: stopped", flush=True, file=sys.stdout)
    return 0
