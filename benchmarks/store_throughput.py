"""Serving throughput on a durable store against memory, on real ``trioflow serve`` processes.

    python -m benchmarks.store_throughput [--events 20000] [--size 100] [--repeat 3]
        [--json FILE] [--store postgresql://user@host/db]

For each store (``memory:``, then ``sqlite:///<temp dir>/bench.db``), one server serves the
``Emitter`` workflow of `benchmarks._trioflow_serving`; a client starts runs of ``--events``
events of ``--size`` bytes and reads each run's NDJSON stream to its end. A run's rate is its
events over the time from the POST that starts it to its last line; the median of
``--repeat`` runs is reported per store, and SQLite's ratio to memory as the median over pairs
of runs taken one after the other (both servers run side by side, idle but for the run). On
SQLite each event is
committed (group commit) before any client gets it, so this is the cost of durability as a
client sees it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from typing import Any

import httpx
import trio

from benchmarks._http_common import python, server_process

APP = "benchmarks._trioflow_serving:WORKFLOWS"


async def one_run(url: str, events: int, size: int) -> float:
    """Events per second of one run, from its start to its last streamed line."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        began = time.perf_counter()
        response = await client.post("/workflows/emit/runs", json={"n": events, "size": size})
        response.raise_for_status()
        run_id = response.json()["run_id"]
        lines = 0
        path = f"/runs/{run_id}/events"
        async with client.stream("GET", path, params={"format": "ndjson"}) as stream:
            async for line in stream.aiter_lines():
                if line.strip():
                    lines += 1
        elapsed = time.perf_counter() - began
    if lines != events + 1:  # the events and the terminal one
        raise RuntimeError(f"read {lines} lines, expected {events + 1}")
    return events / elapsed


def measure(stores: dict[str, str], events: int, size: int, repeat: int) -> dict[str, Any]:
    """Each store's median rate, and the median of SQLite's ratio to memory over pairs of
    runs taken one after the other (the machine is shared: pairs cancel its drift)."""
    rates: dict[str, list[float]] = {name: [] for name in stores}
    with ExitStack() as servers:
        urls = {
            name: servers.enter_context(
                server_process(
                    python("-m", "trioflow", "serve", APP, "--port", "0", "--store", store),
                    "dashboard at",
                )
            ).url
            for name, store in stores.items()
        }
        for url in urls.values():
            trio.run(one_run, url, min(events, 1000), size)  # warm up
        for _ in range(repeat):
            for name, url in urls.items():
                rates[name].append(trio.run(one_run, url, events, size))
    return paired(rates)


def paired(rates: dict[str, list[float]]) -> dict[str, Any]:
    """Each store's median rate, and SQLite's ratio to memory as the median over the pairs
    of runs taken one after the other (the machine is shared: pairs cancel its drift)."""
    ratios = [s / m for s, m in zip(rates["sqlite"], rates["memory"], strict=True)]
    return {
        **{
            name: {"events_per_second": statistics.median(r), "runs": r}
            for name, r in rates.items()
        },
        "sqlite_over_memory": round(statistics.median(ratios), 3),
    }


def report(results: dict[str, Any], json_path: str | None, **about: Any) -> None:
    """Print `paired`'s ``results``, and write them with ``about`` to ``json_path``."""
    # The durable side is keyed "sqlite"; named by its engine when `about` says which.
    engine = str(about.get("store", "sqlite")).partition(":")[0]
    for name, label in (("memory", "memory"), ("sqlite", engine)):
        rate = results[name]["events_per_second"]
        print(f"{label:>10}: {rate:>10,.0f} events/s (median)")
    print(f"{engine} / memory (median of paired runs): {results['sqlite_over_memory']:.2f}")
    if json_path:
        with open(json_path, "w") as out:
            json.dump({**about, **results}, out, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--store",
        help="the durable store to set against memory (default: a SQLite file in a temporary "
        "folder), e.g. an empty PostgreSQL database: postgresql://user@host/db",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        durable = args.store or f"sqlite:///{folder}/bench.db"
        # (Keyed "sqlite" whatever the engine: the key of the durable side in `paired`.)
        stores = {"memory": "memory:", "sqlite": durable}
        results = measure(stores, args.events, args.size, args.repeat)
    report(results, args.json, events=args.events, size=args.size, store=durable)


if __name__ == "__main__":
    main()
