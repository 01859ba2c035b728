"""Time from a restart to resumed runs streaming again, on real ``trioflow serve`` processes.

    python -m benchmarks.store_recovery [--runs 10] [--repeat 5] [--json FILE]

A server on ``sqlite:///<temp dir>/bench.db`` serves the example workflows, and ``--runs`` runs
of ``approval`` each wait for their answer. Then, ``--repeat`` times: the server is killed with
SIGKILL and started again on the same file, and from the moment the new process is spawned two
times are taken: until it listens (Python's start, opening the store and resuming every run
included), and until a client that resumes one run's stream with ``Last-Event-ID`` reads its
first new event (the `StepFailedEvent` of the attempt the kill lost). Medians are reported.
Runs that wait for an answer do not count against ``max_recoveries``, so every cycle resumes
them all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

import httpx

from benchmarks._http_common import python, server_process

APP = "trioflow.examples:WORKFLOWS"


def quiet_seq(client: httpx.Client, run_id: str) -> int:
    """The run's last seq once it has stopped writing (it waits for its answer)."""
    seq = -1
    while True:
        now = client.get(f"/runs/{run_id}").json()["seq"]
        if now == seq:
            return int(seq)
        seq = now
        time.sleep(0.05)  # a poll between two reads of the run, not a measured wait


def first_new_event(client: httpx.Client, run_id: str, after: int) -> str:
    """The type of the first event after seq ``after`` in the run's stream."""
    headers = {"last-event-id": str(after)}
    with client.stream("GET", f"/runs/{run_id}/events", headers=headers) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                return line[len("event: ") :]
    raise RuntimeError(f"run {run_id}'s stream ended with nothing after seq {after}")


def measure(store: str, runs: int, repeat: int) -> dict[str, Any]:
    argv = python("-m", "trioflow", "serve", APP, "--port", "0", "--store", store)
    with (
        server_process(argv, "dashboard at") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        started = [
            client.post("/workflows/approval/runs", json={"action": f"ship {i}", "pace": 0})
            for i in range(runs)
        ]
        run_ids = [response.json()["run_id"] for response in started]
        seqs = [quiet_seq(client, run_id) for run_id in run_ids]
        server.process.kill()
        server.process.wait()
    listening: list[float] = []
    streaming: list[float] = []
    for _ in range(repeat):
        began = time.perf_counter()
        with (
            server_process(argv, "dashboard at") as server,
            httpx.Client(base_url=server.url, timeout=60) as client,
        ):
            listening.append(time.perf_counter() - began)
            kind = first_new_event(client, run_ids[0], seqs[0])
            streaming.append(time.perf_counter() - began)
            if kind != "StepFailedEvent":
                raise RuntimeError(f"the resumed run went on with {kind}, not StepFailedEvent")
            statuses = {client.get(f"/runs/{run_id}").json()["status"] for run_id in run_ids}
            if statuses != {"running"}:
                raise RuntimeError(f"resumed runs are {statuses}, not all running")
            seqs = [quiet_seq(client, run_id) for run_id in run_ids]
            server.process.kill()
            server.process.wait()
    return {
        "runs": runs,
        "listening_seconds": statistics.median(listening),
        "streaming_seconds": statistics.median(streaming),
        "listening_all": listening,
        "streaming_all": streaming,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = measure(f"sqlite:///{folder}/bench.db", args.runs, args.repeat)
    print(f"{report['runs']} waiting runs, kill -9, restart (medians of {args.repeat}):")
    print(f"  listening again after     {report['listening_seconds'] * 1000:8.0f} ms")
    print(f"  first resumed event after {report['streaming_seconds'] * 1000:8.0f} ms")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)


if __name__ == "__main__":
    main()
