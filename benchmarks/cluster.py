"""Processes sharing one PostgreSQL store: claims, fan-out to another node, failover.

    python -m benchmarks.cluster --store postgresql://user@host/empty_db [--runs 1000]
        [--events 20000] [--kills 5] [--json FILE]

On real ``trioflow serve`` and ``trioflow worker`` processes (the `Emitter` workflow of
`benchmarks._trioflow_serving`), on an empty database (its tables are created; runs are added):

1. **Claims.** Two workers (``--max-runs 64`` each); ``--runs`` runs of no events are
   submitted for any process to claim, in one commit. The rate is the runs over the time from
   that commit until every one of them has ended (claimed, run, its end committed), read from
   the database. Each run must have been claimed once (its epoch is 1).
2. **Fan-out.** A node that serves HTTP and runs runs, and an HTTP node (``--max-runs 0``).
   A run of ``--events`` events of 100 bytes is started on the first and read (NDJSON) by a
   client of each node at once: the owner's client reads what its process commits; the other
   node's reads the database, woken by notifications. Events per second for each client, from
   the start to its last line; medians of 3.
3. **Failover.** An HTTP node and two workers. A run writing an event every 20 ms is followed
   from the HTTP node; its worker is killed (``kill -9``) and replaced. The time from the kill
   to the next event the client receives (the other worker claimed the run, replayed its
   journal and wrote on): median and worst of ``--kills``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import trio

from benchmarks._http_common import python, server_process
from benchmarks._suite import ROOT
from benchmarks._trioflow_serving import WORKFLOWS, Emit
from trioflow._durable import new_row
from trioflow._store import NewRun, open_postgres

APP = "benchmarks._trioflow_serving:WORKFLOWS"


@contextmanager
def worker(store: str, name: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``trioflow worker`` as node ``name``, once it runs; stopped on the way out."""
    process = subprocess.Popen(
        python("-m", "trioflow", "worker", APP, "--store", store, "--node-id", name, *args),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("trioflow: worker"):
            raise RuntimeError(f"worker {name} did not start: {line!r}")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def node(store: str, name: str, *args: str) -> Any:
    """``trioflow serve`` as node ``name`` on a free port (its `Server`)."""
    argv = python("-m", "trioflow", "serve", APP, "--port", "0", "--store", store)
    return server_process([*argv, "--node-id", name, *args], "dashboard at")


# -- 1. claims --


async def submit(store_url: str, runs: int) -> float:
    """Submit ``runs`` runs of no events in one commit; the time it returned."""
    store = await open_postgres(store_url, node="benchmark")
    try:
        workflow = WORKFLOWS["emit"]
        for _ in range(runs):
            row = await new_row(store, "emit", workflow, Emit(n=0))
            store.append(NewRun(row, queued=True))
        await store.drain()
        return time.perf_counter()
    finally:
        await store.aclose()


async def ended(store_url: str) -> tuple[int, int, int]:
    """Runs ended, runs in all, and the highest epoch (claims of one run)."""
    store = await open_postgres(store_url, node="benchmark-reader")
    try:
        counts: tuple[int, int, int] = await store._read(
            lambda db: db.execute(
                "SELECT count(*) FILTER (WHERE status <> 'running'), count(*),"
                " coalesce(max(epoch), 0) FROM tf_runs"
            ).fetchone()
        )
        return counts
    finally:
        await store.aclose()


def claims(store: str, runs: int) -> dict[str, Any]:
    with (
        worker(store, "bench-w1", "--max-runs", "64"),
        worker(store, "bench-w2", "--max-runs", "64"),
    ):
        before, _, _ = trio.run(ended, store)
        submitted = trio.run(submit, store, runs)
        while True:
            done, _total, epochs = trio.run(ended, store)
            if done == before + runs:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - submitted
    return {
        "runs": runs,
        "seconds": elapsed,
        "runs_per_second": runs / elapsed,
        "max_epoch": epochs,
    }


# -- 2. fan-out --


async def read_all(url: str, run_id: str, began: float, events: int) -> float:
    async with (
        httpx.AsyncClient(base_url=url, timeout=300) as client,
        client.stream("GET", f"/runs/{run_id}/events", params={"format": "ndjson"}) as stream,
    ):
        lines = 0
        async for line in stream.aiter_lines():
            if line.strip():
                lines += 1
    if lines != events + 1:
        raise RuntimeError(f"{url}: read {lines} lines, expected {events + 1}")
    return events / (time.perf_counter() - began)


async def fan_out_once(owner: str, other: str, events: int) -> tuple[float, float]:
    rates: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=owner, timeout=60) as client:
        began = time.perf_counter()
        response = await client.post("/workflows/emit/runs", json={"n": events, "size": 100})
        run_id = response.json()["run_id"]

    async def read(name: str, url: str) -> None:
        rates[name] = await read_all(url, run_id, began, events)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, "owner", owner)
        nursery.start_soon(read, "other", other)
    return rates["owner"], rates["other"]


def fan_out(store: str, events: int) -> dict[str, Any]:
    with node(store, "bench-owner") as owner, node(store, "bench-http", "--max-runs", "0") as other:
        trio.run(fan_out_once, owner.url, other.url, 1000)  # warm up
        samples = [trio.run(fan_out_once, owner.url, other.url, events) for _ in range(3)]
    owner_rates, other_rates = zip(*samples, strict=True)
    return {
        "events": events,
        "owner_node_events_per_second": statistics.median(owner_rates),
        "other_node_events_per_second": statistics.median(other_rates),
        "samples": samples,
    }


# -- 3. failover --


def failover(store: str, kills: int) -> dict[str, Any]:
    seconds: list[float] = []
    with ExitStack() as stack, node(store, "bench-http", "--max-runs", "0") as http:
        workers = {
            name: stack.enter_context(worker(store, name)) for name in ("bench-k0", "bench-k1")
        }
        client = stack.enter_context(httpx.Client(base_url=http.url, timeout=60))
        for kill in range(kills):
            start = {"n": 100_000, "interval": 0.02}
            run_id = client.post("/workflows/emit/runs", json=start).json()["run_id"]
            with client.stream("GET", f"/runs/{run_id}/events", params={"format": "ndjson"}) as s:
                lines = s.iter_lines()
                for _ in range(25):
                    next(lines)
                owner = client.get(f"/runs/{run_id}").json()["node"]
                killed = workers.pop(owner)
                os.kill(killed.pid, signal.SIGKILL)
                at = time.perf_counter()
                # The first event written on the other worker: its report of the lost attempt
                # (what the killed one had committed comes before it).
                for line in lines:
                    if line.strip() and json.loads(line)["type"] == "StepFailedEvent":
                        break
                seconds.append(time.perf_counter() - at)
            client.post(f"/runs/{run_id}/cancel")
            killed.wait()
            name = f"bench-k{kill + 2}"
            workers[name] = stack.enter_context(worker(store, name))
    return {
        "kills": kills,
        "median_seconds": statistics.median(seconds),
        "max_seconds": max(seconds),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="an empty PostgreSQL database's URL")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    report = {
        "claims": claims(args.store, args.runs),
        "fan_out": fan_out(args.store, args.events),
        "failover": failover(args.store, args.kills),
    }
    claimed, spread, over = report["claims"], report["fan_out"], report["failover"]
    print(
        f"claims, two workers: {claimed['runs_per_second']:,.0f} runs/s "
        f"({claimed['runs']} runs of no events, each claimed once: {claimed['max_epoch'] == 1})"
    )
    print(
        f"fan-out of {spread['events']:,} events: the owner's node "
        f"{spread['owner_node_events_per_second']:,.0f} events/s, another node "
        f"{spread['other_node_events_per_second']:,.0f} events/s (medians of 3)"
    )
    print(
        f"kill -9 of the owner to the next event on another node: median "
        f"{over['median_seconds'] * 1000:.0f} ms, worst {over['max_seconds'] * 1000:.0f} ms "
        f"({over['kills']} kills)"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)


if __name__ == "__main__":
    main()
