"""A durable run in process against a memory run: one run streams events to its reader.

    python -m benchmarks.store_inprocess [--events 50000] [--size 100] [--repeat 5] [--json FILE]

One step writes ``--events`` events of ``--size`` bytes with `Context.write_event_to_stream`,
and the caller reads them with `WorkflowHandler.stream_events`: with ``Workflow.start`` (memory),
and with `RunStore.start` on ``sqlite:///<temp dir>/bench.db``, where each event is also
encoded and committed to the file (group commit) while the reader gets it at write time. A
run's rate is its events over the time from the start to the result; the median of
``--repeat`` runs is reported per store, and the ratio as the median over pairs of runs taken
one after the other.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import trio

from benchmarks.store_throughput import paired, report
from trioflow import Context, Event, StartEvent, StopEvent, Workflow, open_store, step


class Emit(StartEvent):
    n: int
    size: int


class Chunk(Event):
    text: str


class Emitter(Workflow):
    @step
    async def emit(self, ctx: Context, ev: Emit) -> StopEvent:
        text = "x" * ev.size
        for _ in range(ev.n):
            await ctx.write_event_to_stream(Chunk(text=text))
        return StopEvent(result=ev.n)


async def one_run(store: Any, events: int, size: int) -> float:
    """Events per second of one run read to its end (``store``: a `RunStore`, or None)."""
    flow = Emitter(timeout=None)
    began = time.perf_counter()
    block = (
        flow.start(n=events, size=size) if store is None else store.start(flow, n=events, size=size)
    )
    read = 0
    async with block as handler:
        async for _ in handler.stream_events():
            read += 1
        await handler.result()
    elapsed = time.perf_counter() - began
    if read != events + 1:
        raise RuntimeError(f"read {read} events, expected {events + 1}")
    return events / elapsed


async def measure(url: str, events: int, size: int, repeat: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"memory": [], "sqlite": []}
    async with open_store(url) as store:
        await one_run(None, min(events, 1000), size)  # warm up
        await one_run(store, min(events, 1000), size)
        for _ in range(repeat):
            rates["memory"].append(await one_run(None, events, size))
            rates["sqlite"].append(await one_run(store, events, size))
    return paired(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = trio.run(
            measure, f"sqlite:///{folder}/bench.db", args.events, args.size, args.repeat
        )
    report(results, args.json, events=args.events, size=args.size)


if __name__ == "__main__":
    main()
