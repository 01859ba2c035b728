"""Processes sharing one PostgreSQL store, for real: an HTTP node (``trioflow serve --max-runs
0``) and workers (``trioflow worker``), one of which is killed (``kill -9``) or paused
(SIGSTOP) while it runs a run. A client streaming the run from the HTTP node sees it finish on
the other worker, each event once. Every wait polls what the processes say, with a deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from _http import TESTS, serve_process
from _postgres import fresh_database, require_postgres

TARGET = "_http:DURABLE_FLOWS"


@contextmanager
def worker_process(url: str, name: str, log: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``trioflow worker`` on ``url`` as node ``name`` (a 1 s lease), once it runs; its log in
    ``log``. Killed when the block exits, if it still runs."""
    with (
        log.open("w") as errors,
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trioflow",
                "worker",
                TARGET,
                "--store",
                url,
                "--node-id",
                name,
                "--lease",
                "1",
                "--log-level",
                "info",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=TESTS,
        ) as process,
    ):
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first.startswith(f"trioflow: worker {name} runs "), log.read_text()
            yield process
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # (in case a failed test left it stopped)
                process.kill()
            process.wait(timeout=30)


def poll(read: Callable[[], Any], until: Callable[[Any], bool], *, limit: float = 60) -> Any:
    """``read()`` every 50 ms until ``until(value)``; fails after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = read()
        if until(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r} after {limit} s"
        time.sleep(0.05)


def ended(client: httpx.Client, run_id: str) -> dict[str, Any]:
    """The status of a run whose stream has ended, once its end is committed (with its
    terminal event, or in a commit just after it)."""
    status: dict[str, Any] = poll(
        lambda: client.get(f"/runs/{run_id}").json(), lambda s: s["status"] != "running"
    )
    return status


class Stream:
    """An SSE stream of a run read line by line, as far as asked."""

    def __init__(self, client: httpx.Client, run_id: str) -> None:
        self._context = client.stream("GET", f"/runs/{run_id}/events")
        self._lines = self._context.__enter__().iter_lines()
        self.messages: list[dict[str, str]] = []

    def read_until(self, stop: Callable[[dict[str, str]], bool]) -> None:
        fields: dict[str, str] = {}
        for line in self._lines:
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields:
                self.messages.append(fields)
                if stop(fields):
                    return
            fields = {}

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def check_chain(messages: list[dict[str, str]], log: Path, hops: int) -> list[int]:
    """The stream of a chain of ``hops`` that lost a worker: every seq once, every hop's
    tick, one StepFailedEvent (WorkerLost) per hop that ran twice (at most the one in flight),
    and one end. Returns the hops that ran twice."""
    ids = [int(m["id"]) for m in messages]
    assert ids == list(range(1, len(ids) + 1))  # no gap, no duplicate
    assert messages[-1]["event"] == "StopEvent"
    ran = [int(line) for line in log.read_text().split()]
    again = [i for i in set(ran) if ran.count(i) > 1]
    assert sorted(set(ran)) == list(range(1, hops + 1))
    assert len(ran) - hops == len(again) <= 1
    ticks = [json.loads(m["data"])["data"]["n"] for m in messages if m["event"] == "Tick"]
    assert sorted(set(ticks)) == list(range(1, hops + 1))
    lost = [json.loads(m["data"])["data"] for m in messages if m["event"] == "StepFailedEvent"]
    assert [failed["exception"]["type"] for failed in lost] == ["WorkerLost"] * len(again)
    return again


def test_kill_9_of_the_owner_mid_stream_the_run_finishes_on_another_worker(
    tmp_path: Path,
) -> None:
    """``kill -9`` of the worker running a run: the other worker claims it at once (the dead
    one's liveness lock went with it) and resumes it from its journal; a client streaming the
    run from the HTTP node, on one connection, sees every event once, the lost hop again after
    a StepFailedEvent, and the end; an answer and a cancel still reach runs that moved."""
    hops, log = 40, tmp_path / "hops.log"
    with (
        fresh_database() as url,
        serve_process(TARGET, "--store", url, "--max-runs", "0", "--node-id", "http") as (_, base),
        httpx.Client(base_url=base, timeout=60) as client,
        worker_process(url, "w1", tmp_path / "w1.log") as first,
    ):
        start = {"hops": hops, "log": str(log), "pause": 0.03}
        run_id = client.post("/workflows/chain/runs", json=start).json()["run_id"]
        waiting = client.post("/workflows/gate/runs", json={}).json()["run_id"]
        stream = Stream(client, run_id)
        try:
            stream.read_until(lambda m: int(m["id"]) >= 10)
            assert client.get(f"/runs/{run_id}").json()["node"] == "w1"
            poll(lambda: client.get(f"/runs/{waiting}").json()["seq"], lambda seq: seq >= 2)
            with worker_process(url, "w2", tmp_path / "w2.log"):
                first.kill()
                first.wait(timeout=30)
                stream.read_until(lambda m: False)  # to its end, on w2
                status = ended(client, run_id)
                assert (status["status"], status["result"], status["node"]) == (
                    "completed",
                    hops,
                    None,
                )
                poll(
                    lambda: client.get(f"/runs/{waiting}").json()["node"],
                    lambda value: value == "w2",
                )
                go = {"type": "Go", "data": {"count": 1}}
                assert client.post(f"/runs/{waiting}/events", json=go).status_code == 202
                poll(
                    lambda: client.get(f"/runs/{waiting}").json()["status"],
                    lambda value: value == "completed",
                )
        finally:
            stream.close()
    check_chain(stream.messages, log, hops)


def test_a_paused_owner_loses_its_run_and_its_late_writes_are_fenced(tmp_path: Path) -> None:
    """A worker paused (SIGSTOP) past its lease keeps its liveness lock, so its run waits for
    the lease to run out, then the other worker claims it. Woken up (SIGCONT), the paused one
    writes what its step was doing: dropped by the fence, never committed over the new
    owner's; it says so and stops the run. The stream has every event once."""
    hops, log = 30, tmp_path / "hops.log"
    with (
        fresh_database() as url,
        serve_process(TARGET, "--store", url, "--max-runs", "0", "--node-id", "http") as (_, base),
        httpx.Client(base_url=base, timeout=60) as client,
        worker_process(url, "w2", tmp_path / "w2.log", "--max-runs", "1"),
    ):
        # w2 (room for one run) is busy with a run waiting for an answer, so that w1 gets the
        # chain; once the answer lets it end, w2 has room to take the chain over.
        blocker = client.post("/workflows/gate/runs", json={}).json()["run_id"]
        poll(lambda: client.get(f"/runs/{blocker}").json()["node"], lambda value: value == "w2")
        with worker_process(url, "w1", tmp_path / "w1.log") as paused:
            start = {"hops": hops, "log": str(log), "pause": 0.05}
            run_id = client.post("/workflows/chain/runs", json=start).json()["run_id"]
            stream = Stream(client, run_id)
            try:
                stream.read_until(lambda m: int(m["id"]) >= 8)
                assert client.get(f"/runs/{run_id}").json()["node"] == "w1"
                go = {"type": "Go", "data": {"count": 1}}
                assert client.post(f"/runs/{blocker}/events", json=go).status_code == 202
                poll(
                    lambda: client.get(f"/runs/{blocker}").json()["status"],
                    lambda value: value == "completed",
                )
                paused.send_signal(signal.SIGSTOP)
                poll(
                    lambda: client.get(f"/runs/{run_id}").json()["node"],
                    lambda value: value == "w2",
                )
                paused.send_signal(signal.SIGCONT)
                stream.read_until(lambda m: False)
            finally:
                stream.close()
            w1_log = tmp_path / "w1.log"
            poll(w1_log.read_text, lambda text: "no longer this process's" in text)
        status = ended(client, run_id)
        assert (status["status"], status["result"]) == ("completed", hops)
    check_chain(stream.messages, log, hops)


def test_the_cluster_demo_runs_a_run_across_its_nodes(tmp_path: Path) -> None:
    """``scripts/cluster-demo``, as the README tells it: it starts PostgreSQL, two nodes and a
    worker, and says where they are; a run started on one node is followed to its end on the
    other; Ctrl-C stops everything and removes the database."""
    require_postgres()  # (.ci/run installs the server the demo uses)
    ports = [str(free_port()), str(free_port())]
    env = {**os.environ, "TRIOFLOW_VENV": sys.prefix, "PORT_A": ports[0], "PORT_B": ports[1]}
    with subprocess.Popen(
        ["bash", str(TESTS.parent / "scripts" / "cluster-demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    ) as demo:
        try:
            assert demo.stdout is not None
            said: list[str] = []
            while not said or not said[-1].startswith("Logs: "):
                line = demo.stdout.readline()
                assert line, "".join(said)
                said.append(line)
            folder = Path(said[-1].split()[1]).parent
            assert f"http://127.0.0.1:{ports[1]}/" in "".join(said)
            with (
                httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", timeout=30) as a,
                httpx.Client(base_url=f"http://127.0.0.1:{ports[1]}", timeout=30) as b,
            ):
                run_id = a.post("/workflows/research/runs", json={"pace": 0}).json()["run_id"]
                with b.stream("GET", f"/runs/{run_id}/events") as response:
                    events = [line for line in response.iter_lines() if line.startswith("event:")]
                assert events[-1] == "event: StopEvent"
                assert ended(b, run_id)["status"] == "completed"
            demo.send_signal(signal.SIGINT)
            rest, _ = demo.communicate(timeout=60)
        finally:
            if demo.poll() is None:  # (a check failed): it stops what it started, then
                demo.send_signal(signal.SIGINT)
                try:
                    demo.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    demo.kill()
    assert demo.returncode == 0, rest
    assert "the database is removed" in rest
    assert not folder.exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
