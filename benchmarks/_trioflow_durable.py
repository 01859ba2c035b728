"""trioflow on a durable store (SQLite, in a temporary folder), as scenarios of the suite: the
standalone scripts' own measurements, called with the suite's sizes (each script's docstring
says what it measures and how; ``python -m benchmarks.durability`` runs the three at their own
sizes and is what the README's durable-runs sections quote). The anchor has no durable store to
set against these, so they are trioflow's alone, SQLite against memory:

- **durable_stream** (`benchmarks.store_inprocess`): one step writes ``n`` events of ``size``
  bytes, read in process with ``stream_events()``; ``runs`` pairs of runs (memory, then SQLite).
- **durable_serve** (`benchmarks.store_throughput`): the same over HTTP, a real ``trioflow serve``
  per store and one NDJSON client; ``runs`` pairs of runs.
- **recovery** (`benchmarks.store_recovery`): ``n`` runs wait for an answer; the server is killed
  (SIGKILL) and started again ``runs`` times: until it listens, and until a resumed stream gives
  its first new event (medians).

Rates are medians over the runs, ratios the median over the pairs (the machine is shared: a pair
cancels its drift).
"""

from __future__ import annotations

import tempfile
from typing import Any

import trio

from benchmarks import store_inprocess, store_recovery, store_throughput
from benchmarks._common import Metrics, Params


def _paired(results: dict[str, Any]) -> Metrics:
    memory, sqlite = results["memory"], results["sqlite"]
    return {
        "memory_rate": memory["events_per_second"],
        "sqlite_rate": sqlite["events_per_second"],
        "sqlite_over_memory": results["sqlite_over_memory"],
    }


def durable_stream(p: Params) -> Metrics:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        return _paired(trio.run(store_inprocess.measure, url, p.n, p.size, p.runs))


def durable_serve(p: Params) -> Metrics:
    with tempfile.TemporaryDirectory() as folder:
        stores = {"memory": "memory:", "sqlite": f"sqlite:///{folder}/bench.db"}
        return _paired(store_throughput.measure(stores, p.n, p.size, p.runs))


def recovery(p: Params) -> Metrics:
    with tempfile.TemporaryDirectory() as folder:
        found = store_recovery.measure(f"sqlite:///{folder}/bench.db", p.n, p.runs)
    return {
        "runs": found["runs"],
        "listening_ms": found["listening_seconds"] * 1e3,
        "streaming_ms": found["streaming_seconds"] * 1e3,
    }
