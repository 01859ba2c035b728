"""What durability costs, in one run: every figure the README's durable-runs sections quote.

    python -m benchmarks.durability [--repeat 5] [--json FILE]

1. Serving throughput on SQLite against memory (`benchmarks.store_throughput`: real
   ``trioflow serve`` processes, one run of 20,000 events to an NDJSON client), with the
   target of SQLite at 0.7x of memory or better.
2. A durable run in process against a memory run (`benchmarks.store_inprocess`).
3. The time from a ``kill -9`` and a restart to resumed runs streaming again
   (`benchmarks.store_recovery`).
4. The in-process hop and stream rates of memory runs, which durable runs must leave as they
   were (``python -m benchmarks --only routing --only stream``; compare with the README's
   figures, or with the same command on an earlier commit).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from typing import Any

import trio

from benchmarks import store_inprocess, store_recovery, store_throughput

#: SQLite's serving throughput as a share of memory's that the project aims at.
TARGET = 0.7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        stores = {"memory": "memory:", "sqlite": f"sqlite:///{folder}/serve.db"}
        report["serving"] = store_throughput.measure(stores, 20_000, 100, args.repeat)
        report["in_process"] = trio.run(
            store_inprocess.measure, f"sqlite:///{folder}/inprocess.db", 50_000, 100, args.repeat
        )
        report["recovery"] = store_recovery.measure(f"sqlite:///{folder}/recovery.db", 10, 5)
    suite = ["--only", "routing", "--only", "stream", "--repeat", str(args.repeat)]
    memory_rates = subprocess.run(
        [sys.executable, "-m", "benchmarks", *suite],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    serving, in_process, recovery = report["serving"], report["in_process"], report["recovery"]
    ratio = serving["sqlite_over_memory"]
    verdict = "PASS" if ratio >= TARGET else "MISS"
    print("serving over HTTP (20,000 x 100 B events, one NDJSON client; medians):")
    for name in ("memory", "sqlite"):
        print(f"  {name:>7}: {serving[name]['events_per_second']:>10,.0f} events/s")
    print(f"  sqlite / memory: {ratio:.2f} (target {TARGET}: {verdict})")
    print("in process (50,000 x 100 B events read by stream_events(); medians):")
    for name in ("memory", "sqlite"):
        print(f"  {name:>7}: {in_process[name]['events_per_second']:>10,.0f} events/s")
    print(f"  sqlite / memory: {in_process['sqlite_over_memory']:.2f}")
    print("kill -9 and a restart with 10 waiting runs (medians of 5):")
    print(f"  listening again after     {recovery['listening_seconds'] * 1000:6.0f} ms")
    print(f"  first resumed event after {recovery['streaming_seconds'] * 1000:6.0f} ms")
    print("memory runs in process (python -m benchmarks --only routing --only stream):")
    print(memory_rates)
    if args.json:
        report["memory_rates"] = memory_rates
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)


if __name__ == "__main__":
    main()
