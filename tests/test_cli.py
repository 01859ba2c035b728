"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import httpx
import pytest


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trioflow", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_streams_events_and_prints_the_result() -> None:
    """`trioflow demo` prints progress, tokens, the stop event, then the result; exit 0."""
    done = run_cli("demo", "--pace", "0", "--topic", "trio")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    kinds = [line.split()[1] for line in lines if line[:8].strip().endswith("s")]
    assert kinds[0] == "Progress"
    assert kinds.count("Progress") == 13
    assert "Token" in kinds
    assert kinds[-1] == "StopEvent"
    assert lines[-1].startswith("result: {'answer': 'trio keeps every task")


def test_demo_rejects_negative_pace() -> None:
    """A bad option gives a one-line usage error and exit code 2, not a traceback."""
    done = run_cli("demo", "--pace", "-1")
    assert done.returncode == 2
    assert "--pace must be >= 0" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_the_dashboard_address_and_stops_gracefully(signum: int) -> None:
    """`trioflow serve` serves the examples and prints where; on SIGINT or SIGTERM an open
    stream ends with its run's WorkflowCancelledEvent and the process exits with 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trioflow", "serve", "trioflow.examples:WORKFLOWS", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "trioflow: serving research, approval, flaky\n"
        line = process.stdout.readline()
        address = re.fullmatch(r"trioflow: dashboard at (http://127\.0\.0\.1:\d+)/  .*\n", line)
        assert address, line
        with httpx.Client(base_url=address[1], timeout=30) as client:
            started = client.post("/workflows/approval/runs", json={"pace": 0})
            assert started.status_code == 201
            run_id = started.json()["run_id"]
            ndjson = {"accept": "application/x-ndjson"}
            with client.stream("GET", f"/runs/{run_id}/events", headers=ndjson) as events:
                types = []
                for line in events.iter_lines():
                    types.append(json.loads(line)["type"])
                    if types[-1] == "ApprovalRequired":
                        process.send_signal(signum)  # the run now waits for an answer
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert types[-2:] == ["ApprovalRequired", "WorkflowCancelledEvent"]
    assert process.returncode == 0, err
    assert out.endswith("trioflow: stopped\n")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nowhere.at.all:X", "no module named 'nowhere'"),
        ("trioflow.examples:Nope", "module 'trioflow.examples' has no attribute 'Nope'"),
        ("trioflow.examples:Progress", "not a Workflow or a mapping of names to workflows"),
        ("trioflow.examples", "expected module:attribute"),
    ],
)
def test_serve_reports_a_bad_target_in_one_line(target: str, message: str) -> None:
    """A missing module or attribute, or one that is no workflow: one line, exit code 2."""
    done = run_cli("serve", target, "--port", "0")
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_serve_rejects_bad_options() -> None:
    """Out-of-range options are refused before anything listens."""
    done = run_cli("serve", "trioflow.examples:WORKFLOWS", "--retain", "0")
    assert done.returncode == 2
    assert "retain must be an int >= 1" in done.stderr
