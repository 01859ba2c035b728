"""The ``trioflow`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import trio

from trioflow import Event, Workflow, WorkflowApp, serve


class UsageError(Exception):
    """A command's input is wrong: said in one line, without a traceback."""


def _describe(event: Event) -> str:
    # Declared fields, plus a StartEvent's free-form ones.
    fields = {k: v for k, v in vars(event).items() if not k.startswith("_")}
    fields.update(getattr(event, "_extra", {}))
    return f"{type(event).__name__:<16} " + "  ".join(f"{k}={v!r}" for k, v in fields.items())


def load_workflows(spec: str) -> Workflow | Mapping[str, Workflow]:
    """Import ``module:attr`` (``attr`` may be dotted) and check that it is a workflow or a
    mapping of names to workflows. The current directory is importable, as with ``python -m``.

    Raises:
        UsageError: the module or attribute is missing, or is not what is needed.
    """
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise UsageError(f"expected module:attribute (like myapp.flows:MyFlow), got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(f"no module named {exc.name!r}") from None
        raise
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(target, type) and issubclass(target, Workflow):
        target = target()
    if isinstance(target, Workflow):
        return target
    if (
        isinstance(target, Mapping)
        and target
        and all(isinstance(w, Workflow) for w in target.values())
    ):
        return target
    raise UsageError(
        f"{spec} is {type(target).__name__}, not a Workflow or a mapping of names to workflows"
    )


async def _demo(topic: str, pace: float) -> int:
    from .examples import Research, ResearchFlow

    started = trio.current_time()
    print(f"trioflow demo: streaming the events of ResearchFlow(topic={topic!r}) as they happen\n")
    async with ResearchFlow(timeout=60).start(Research(topic=topic, pace=pace)) as handler:
        async for event in handler.stream_events():
            elapsed = trio.current_time() - started
            print(f"{elapsed:6.2f}s  {_describe(event)}", flush=True)
        try:
            result = await handler.result()
        except Exception as exc:
            print(f"\nthe run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    print(f"\nresult: {result!r}")
    return 0


async def _serve(app: WorkflowApp, host: str, port: int, token: bool) -> int:
    async with trio.open_nursery() as nursery:
        try:
            binds = await nursery.start(partial(serve, app, host=host, port=port))
        except OSError as error:  # the address is taken, or cannot be bound
            print(f"trioflow serve: error: {error}", file=sys.stderr)
            return 1
        print(f"trioflow: serving {', '.join(app.workflows)}", flush=True)
        query = "?token=<your token>" if token else ""
        for bind in binds:
            print(f"trioflow: dashboard at {bind}/{query}  (Ctrl-C stops)", flush=True)
    print("trioflow: stopped", flush=True)
    return 0


def _app(args: argparse.Namespace) -> WorkflowApp:
    return WorkflowApp(
        load_workflows(args.target),
        token=args.token or None,
        cors_origins=tuple(args.cors_origin),
        retain=args.retain,
        max_runs=args.max_runs,
        max_body=args.max_body,
        ping_interval=args.ping_interval,
        abandon_after=args.abandon_after,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trioflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run an example workflow, streaming its events live")
    demo.add_argument("--topic", default="structured concurrency", help="what to research")
    demo.add_argument(
        "--pace", type=float, default=1.0, help="scale the pretend work (0 = no waiting)"
    )
    srv = commands.add_parser("serve", help="serve workflows over HTTP, with a dashboard at /")
    srv.add_argument("target", help="module:attr, a Workflow or a mapping of names to workflows")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (8000; 0 picks a free one)")
    srv.add_argument(
        "--token",
        default=os.environ.get("TRIOFLOW_TOKEN", ""),
        help="require this bearer token on every request (default: $TRIOFLOW_TOKEN)",
    )
    srv.add_argument(
        "--cors-origin", action="append", default=[], help="allow this browser origin (repeat)"
    )
    srv.add_argument("--retain", type=int, default=1024, help="events kept per run (1024)")
    srv.add_argument("--max-runs", type=int, default=64, help="runs at once (64; then 429)")
    srv.add_argument("--max-body", type=int, default=1 << 20, help="largest body (1 MiB; 413)")
    srv.add_argument("--ping-interval", type=float, default=15.0, help="SSE keep-alive seconds")
    srv.add_argument(
        "--abandon-after",
        type=float,
        default=None,
        help="cancel a run this many seconds after its last client left (default: never)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trioflow`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.pace < 0:
            parser.error("--pace must be >= 0")
        return trio.run(_demo, args.topic, args.pace)
    if args.command == "serve":
        try:
            app = _app(args)  # ValueError and TypeError: options out of range
        except (UsageError, ValueError, TypeError) as error:
            print(f"trioflow serve: error: {error}", file=sys.stderr)
            return 2
        return trio.run(_serve, app, args.host, args.port, bool(args.token))
    raise AssertionError(args.command)  # pragma: no cover (argparse enforces the choices)


if __name__ == "__main__":
    sys.exit(main())
