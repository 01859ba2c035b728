"""The benchmark scenarios still run (their speed is measured in benchmarks/, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("impl", "scenario", "extra"),
    [
        ("trioflow", "routing", []),
        ("trioflow", "stream", []),
        ("trioflow", "memory", ["--slow-seconds", "0.05"]),
        ("floor", "routing", ["--variant", "buffer0"]),
        ("floor", "stream", []),
    ],
)
def test_scenario_runs_and_reports(impl: str, scenario: str, extra: list[str]) -> None:
    """Each trioflow and floor scenario runs at a tiny size and prints one JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._scenario", impl, scenario, "--n", "400", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"] is True, result
    assert result["metrics"], result
