"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import subprocess
import sys


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
