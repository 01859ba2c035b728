"""The ``trioflow`` command line."""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.metadata
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from trioflow import Event, Workflow, WorkflowApp, WorkflowValidationError, serve

from .._core._graph import InvalidGraph, WorkflowGraph, graph_of
from .._server._serve import hosts_for
from .._store import StoreError
from .._wire import WireError, describe_workflow
from ._draw import to_dot, to_mermaid
from ._logs import add_log_level_flag, configure_logging
from ._options import add_server_flags, server_options
from ._run import run_and_stream, start_fields
from ._signals import STOP_SIGNALS, stop_on_signals
from ._worker import WORKER_OPTIONS, work


class UsageError(Exception):
    """A command's input is wrong: said in one line, without a traceback."""


def _describe(event: Event) -> str:
    # Declared fields, plus a StartEvent's free-form ones.
    fields = {k: v for k, v in vars(event).items() if not k.startswith("_")}
    fields.update(getattr(event, "_extra", {}))
    return f"{type(event).__name__:<16} " + "  ".join(f"{k}={v!r}" for k, v in fields.items())


def resolve(spec: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted) and return the attribute. The current
    directory is importable, as with ``python -m``.

    Raises:
        UsageError: the spec is malformed, or the module or attribute is missing.
        WorkflowValidationError: importing the module built a workflow whose graph is invalid.
    """
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise UsageError(f"expected module:attribute (like myapp.flows:MyFlow), got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module named (or a package on its path) missing is a usage error; a
        # missing dependency inside the user's module is theirs to see in full.
        if exc.name is not None and (
            exc.name == module_name or module_name.startswith(exc.name + ".")
        ):
            raise UsageError(f"no module named {exc.name!r}") from None
        raise
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target


def load_workflows(spec: str) -> Workflow | Mapping[str, Workflow]:
    """`resolve` ``spec`` to a workflow (a class is instantiated) or a mapping of names to
    workflows.

    Raises:
        UsageError: as `resolve`, or the attribute is neither.
        WorkflowValidationError: the workflow's graph is invalid.
    """
    target = resolve(spec)
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


def load_one(spec: str, name: str | None) -> tuple[str, Workflow]:
    """The one workflow ``spec`` names: itself, or ``name`` from a mapping (which may be left
    out when the mapping holds just one)."""
    workflows = load_workflows(spec)
    if isinstance(workflows, Workflow):
        return type(workflows).__name__, workflows
    if name is None and len(workflows) == 1:
        name = next(iter(workflows))
    if name is None or name not in workflows:
        choices = ", ".join(workflows)
        said = "pass --name" if name is None else f"no workflow named {name!r}"
        raise UsageError(f"{spec} holds {len(workflows)} workflows: {said} (one of {choices})")
    return name, workflows[name]


def _validate(spec: str) -> int:
    """Check every workflow ``spec`` names; print each problem; exit 1 if there are any."""
    try:
        target = resolve(spec)
    except WorkflowValidationError as error:  # raised while importing the module
        return _report_problems(spec, error)
    if isinstance(target, Mapping):
        items = list(target.items())
    else:
        items = [(getattr(target, "__name__", type(target).__name__), target)]
    failed = 0
    for name, item in items:
        cls = item if isinstance(item, type) else type(item)
        if not issubclass(cls, Workflow):
            raise UsageError(f"{spec}: {name!r} is {cls.__name__}, not a Workflow")
        try:
            graph = _checked_graph(item)
        except WorkflowValidationError as error:
            failed = _report_problems(name, error)
            continue
        print(f"{name}: ok ({len(graph.steps)} steps, {len(graph.event_types())} event types)")
    return failed


def _checked_graph(item: Workflow | type[Workflow]) -> WorkflowGraph:
    """The graph of a workflow, the checks it skips skipped, or of a class, every check."""
    if isinstance(item, Workflow):
        return item.graph
    try:
        graph = graph_of(item)
    except InvalidGraph as invalid:
        problems = invalid.problems_with(frozenset())
        raise WorkflowValidationError(invalid.workflow_name, problems) from None
    if graph.findings:
        raise WorkflowValidationError(graph.workflow_name, graph.problems(frozenset()))
    return graph


def _report_problems(name: str, error: WorkflowValidationError) -> int:
    print(f"{name}: {len(error.problems)} problem(s)", file=sys.stderr)
    for problem in error.problems:
        print(f"  - {problem}", file=sys.stderr)
    return 1


def _draw(spec: str, name: str | None, form: str) -> int:
    served_as, workflow = load_one(spec, name)
    graph = describe_workflow(served_as, workflow)
    if form == "json":
        print(json.dumps(graph, indent=2, ensure_ascii=False))
    else:
        print(to_mermaid(graph) if form == "mermaid" else to_dot(graph), end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    _, workflow = load_one(args.target, args.name)
    data: dict[str, Any] = {}
    if args.input is not None:
        data = _read_input(args.input)
    pairs: dict[str, str] = {}
    for pair in args.param:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise UsageError(f"-p takes key=value, got {pair!r}")
        pairs[key] = value
    data.update(start_fields(workflow.graph.start_event_type, pairs))
    try:
        run = partial(
            run_and_stream, workflow, data, ndjson=args.ndjson, show_traceback=args.traceback
        )
        return trio.run(run)
    except WireError as error:
        raise UsageError(f"the start event does not take these fields: {error}") from None


def _read_input(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as error:
            raise UsageError(f"cannot read {text[1:]}: {error.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as error:  # bad JSON, or an integer too long to convert
        raise UsageError(f"--input is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise UsageError("--input must be a JSON object of start-event fields")
    return data


async def _demo(topic: str, pace: float) -> int:
    from ..examples import Research, ResearchFlow

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


async def _serve(app: WorkflowApp, host: str, port: int) -> int:
    """Serve ``app`` until SIGINT or SIGTERM (graceful), or a second one (at once)."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        stopping = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop_on_signals, signals, lambda _: stopping.set(), "serve")
                try:
                    await _serve_until(app, host, port, stopping)
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            bind_error = _bind_error(group)
            if bind_error is not None:
                print(
                    f"trioflow serve: error: {_cannot_bind(bind_error, host, port)}",
                    file=sys.stderr,
                )
                return 1
            store_error = _store_error(group)
            if store_error is not None:  # the store is in use, or no trioflow store
                print(f"trioflow serve: error: {store_error}", file=sys.stderr)
                return 1
            raise _alone(group) from None  # a step's SystemExit or KeyboardInterrupt, as itself
    print("trioflow: stopped", flush=True)
    return 0


async def _serve_until(app: WorkflowApp, host: str, port: int, stopping: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, app, host=host, port=port, shutdown_trigger=stopping.wait)
        )
        print(f"trioflow: serving {', '.join(app.workflows)}", flush=True)
        query = "?token=<your token>" if app.options.token else ""
        for bind in binds:
            print(f"trioflow: dashboard at {bind}/{query}  (Ctrl-C stops)", flush=True)


def _bind_error(group: BaseExceptionGroup[BaseException]) -> OSError | None:
    """The `OSError` that kept the server from listening, if that is what ``group`` holds
    (nested in the groups of hypercorn's nurseries and ours)."""
    errors, rest = group.split(OSError)
    if errors is None or rest is not None:
        return None
    first: OSError | ExceptionGroup[OSError] = errors
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _store_error(group: BaseExceptionGroup[BaseException]) -> StoreError | None:
    """The `StoreError` that kept the server from starting, if that is all ``group`` holds."""
    errors, rest = group.split(StoreError)
    if errors is None or rest is not None:
        return None
    first: BaseException = errors
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, StoreError)
    return first


def _cannot_bind(error: OSError, host: str, port: int) -> str:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return f"address {address} is in use"
    return f"cannot listen on {address}: {error.strerror or error}"


def _alone(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception in ``group`` (and its nested groups), or the group itself: what
    `serve` raised (a step's ``SystemExit``) leaves the command as itself."""
    while len(group.exceptions) == 1:
        (only,) = group.exceptions
        if not isinstance(only, BaseExceptionGroup):
            return only
        group = only
    return group


def _app(workflows: Workflow | Mapping[str, Workflow], args: argparse.Namespace) -> WorkflowApp:
    options = server_options(args)
    # As with serve(): the loopback names and the --host name; --allowed-host adds to them.
    given = options.get("allowed_hosts", ())
    options["allowed_hosts"] = tuple(dict.fromkeys((*hosts_for(args.host), *given)))
    return WorkflowApp(workflows, **options)


def _worker_app(
    workflows: Workflow | Mapping[str, Workflow], args: argparse.Namespace
) -> WorkflowApp:
    options = server_options(args)
    store = options.get("store", "memory:")
    if not store.lower().startswith(("postgresql:", "postgres:")):
        raise ValueError(
            "a worker runs the runs of a store that processes share: give --store "
            f"postgresql://... (or $TRIOFLOW_STORE), got {store!r}"
        )
    if options.get("max_runs", 1) < 1:
        raise ValueError("a worker runs at least one run at once: --max-runs must be >= 1")
    return WorkflowApp(workflows, **options)


async def _work(app: WorkflowApp) -> int:
    """`work`, with a store that cannot be opened said in one line."""
    try:
        return await work(app)
    except BaseExceptionGroup as group:
        store_error = _store_error(group)
        if store_error is None:
            raise _alone(group) from None  # a step's SystemExit or KeyboardInterrupt
        print(f"trioflow worker: error: {store_error}", file=sys.stderr)
        return 1
    except StoreError as error:
        print(f"trioflow worker: error: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trioflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run an example workflow, streaming its events live")
    demo.add_argument("--topic", default="structured concurrency", help="what to research")
    demo.add_argument(
        "--pace", type=float, default=1.0, help="scale the pretend work (0 = no waiting)"
    )
    add_log_level_flag(demo)
    srv = commands.add_parser("serve", help="serve workflows over HTTP, with a dashboard at /")
    srv.add_argument("target", help="module:attr, a Workflow or a mapping of names to workflows")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    srv.add_argument("--port", type=_port, default=8000, help="port (8000; 0 picks a free one)")
    add_server_flags(srv)
    add_log_level_flag(srv)
    worker = commands.add_parser(
        "worker",
        help="run the runs of a store that processes share (postgresql://...), without HTTP",
    )
    worker.add_argument("target", help="module:attr, a Workflow or a mapping of names to workflows")
    add_server_flags(worker, only=WORKER_OPTIONS)
    add_log_level_flag(worker)
    run = commands.add_parser("run", help="run a workflow, streaming its events live")
    run.add_argument("target", help="module:attr, a Workflow or a mapping of names to workflows")
    run.add_argument("--name", help="which workflow of a mapping")
    run.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE",
        help="a start-event field (JSON unless the field is a str; repeat)",
    )  # fmt: skip
    run.add_argument("--input", metavar="JSON|@FILE", help="start-event fields as a JSON object")
    run.add_argument(
        "--ndjson", action="store_true",
        help="print only the HTTP envelopes, one JSON object per line (the stop event's holds "
        "the result)",
    )  # fmt: skip
    run.add_argument(
        "--traceback", action=argparse.BooleanOptionalAction, default=True,
        help="when a step fails the run, print its traceback on stderr before the one-line "
        "error, which is printed either way (default: on)",
    )  # fmt: skip
    add_log_level_flag(run)
    draw = commands.add_parser("draw", help="print a workflow's graph")
    draw.add_argument("target", help="module:attr, a Workflow or a mapping of names to workflows")
    draw.add_argument("--name", help="which workflow of a mapping")
    draw.add_argument("--format", choices=("mermaid", "dot", "json"), default="mermaid")
    validate = commands.add_parser("validate", help="check workflows' graphs; list every problem")
    validate.add_argument("target", help="module:attr: a Workflow (class) or a mapping of them")
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("trioflow")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        from .. import __version__

        return f"{__version__} (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trioflow`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("demo", "run", "serve", "worker"):  # the commands that run workflows
        configure_logging(args.log_level)
    if args.command == "demo":
        if args.pace < 0:
            parser.error("--pace must be >= 0")
        return trio.run(_demo, args.topic, args.pace)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "draw":
            return _draw(args.target, args.name, args.format)
        if args.command == "validate":
            return _validate(args.target)
    except UsageError as error:
        print(f"trioflow {args.command}: error: {error}", file=sys.stderr)
        return 2
    except WorkflowValidationError as error:
        return _report_problems(args.target, error)
    if args.command in ("serve", "worker"):
        try:
            workflows = load_workflows(args.target)
        except UsageError as error:
            print(f"trioflow {args.command}: error: {error}", file=sys.stderr)
            return 2
        except WorkflowValidationError as error:
            return _report_problems(args.target, error)
        try:
            app = _app(workflows, args) if args.command == "serve" else _worker_app(workflows, args)
        except (ValueError, TypeError) as error:  # options out of range
            print(f"trioflow {args.command}: error: {error}", file=sys.stderr)
            return 2
        try:
            if args.command == "serve":
                return trio.run(_serve, app, args.host, args.port)
            return trio.run(_work, app)
        except KeyboardInterrupt:  # a step's, raised once the process has stopped
            print(f"trioflow {args.command}: interrupted", file=sys.stderr)
            return 128 + signal.SIGINT
    raise AssertionError(args.command)  # pragma: no cover (argparse enforces the choices)


if __name__ == "__main__":
    sys.exit(main())


def _port(text: str) -> int:
    """A TCP port number, 0 to 65535 (argparse reports a ValueError as a bad value)."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


_port.__name__ = "port"  # what argparse names in its error: "invalid port value"
