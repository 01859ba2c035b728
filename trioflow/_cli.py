"""The ``trioflow`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from trioflow import Event


def _describe(event: Event) -> str:
    # Declared fields, plus a StartEvent's free-form ones.
    fields = {k: v for k, v in vars(event).items() if not k.startswith("_")}
    fields.update(getattr(event, "_extra", {}))
    return f"{type(event).__name__:<16} " + "  ".join(f"{k}={v!r}" for k, v in fields.items())


async def _demo(topic: str, pace: float) -> int:
    from ._demo import Research, ResearchFlow

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trioflow`` command."""
    parser = argparse.ArgumentParser(prog="trioflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run an example workflow, streaming its events live")
    demo.add_argument("--topic", default="structured concurrency", help="what to research")
    demo.add_argument(
        "--pace", type=float, default=1.0, help="scale the pretend work (0 = no waiting)"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.pace < 0:
            parser.error("--pace must be >= 0")
        return trio.run(_demo, args.topic, args.pace)
    raise AssertionError(args.command)  # pragma: no cover (argparse enforces the choices)


if __name__ == "__main__":
    sys.exit(main())
