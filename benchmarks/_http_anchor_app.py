"""The anchor's server for the serving scenarios, run as a child process::

    python -m benchmarks._http_anchor_app

llama-index-workflows ships no server of its own any more: ``workflows.server`` re-exports
``WorkflowServer`` from llama-agents-server (the ``server`` extra), a Starlette app that keeps
each run's events in a workflow store (in memory by default) and streams them to any number of
clients. ``WorkflowServer.serve()`` would run it on uvicorn; here it runs on hypercorn's asyncio
worker instead (``hypercorn.asyncio.serve``), the same HTTP/1.1 stack trioflow runs on through
hypercorn's trio worker, so the comparison is of the two libraries and their servers, not of
two HTTP implementations. Access logging is off, as in ``trioflow serve``.

It binds a free port on 127.0.0.1 itself and prints ``anchor: serving at http://127.0.0.1:PORT``
once that socket listens (connections wait in the backlog until hypercorn accepts them).
SIGTERM stops it (hypercorn's own handler).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from benchmarks._anchor_serving import Emitter, Go

try:
    from llama_agents.server import WorkflowServer
except ImportError as error:
    raise SystemExit(
        "the anchor's server needs llama-agents-server: pip install -e '.[bench]'"
    ) from error


def app() -> Any:  # a Starlette app: hypercorn's ASGI types and Starlette's do not meet
    """The anchor's ASGI app, serving ``Emitter`` as ``emit``."""
    server = WorkflowServer()
    # Go is only awaited (ctx.wait_for_event), never in a step's signature: register it so
    # that POST /events/{handler_id} can decode it.
    server.add_workflow("emit", Emitter(timeout=None), additional_events=[Go])
    return server.app


async def main() -> None:
    config = Config()  # hypercorn's defaults, as `trioflow serve` has them (backlog 100)
    config.accesslog = None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As hypercorn sets up the sockets it binds itself (accepted sockets inherit this on Linux).
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(config.backlog)
    config.bind = [f"fd://{listener.fileno()}"]
    host, port = listener.getsockname()
    print(f"anchor: serving at http://{host}:{port}", flush=True)
    await serve(app(), config, mode="asgi")


if __name__ == "__main__":
    asyncio.run(main())
