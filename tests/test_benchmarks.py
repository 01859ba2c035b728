"""The benchmark suite still runs, every scenario of it (speed is measured in benchmarks/, never
asserted here): `python -m benchmarks --quick`, as CI runs it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from benchmarks import _registry as registry

ROOT = Path(__file__).resolve().parent.parent


def test_quick_suite_runs_every_scenario(tmp_path: Path) -> None:
    """--quick runs every planned measurement of every implementation without an error, and
    reports each one; with the bench extra installed (CI has it) the anchor runs too."""
    anchor = importlib.util.find_spec("workflows") is not None
    if not anchor and not os.environ.get("CI"):
        pytest.skip("the bench extra is not installed: pip install -e '.[bench]'")
    results = tmp_path / "quick.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    measured = json.loads(results.read_text())["measurements"]
    # Every planned measurement is reported, in the planned order, with its one run.
    planned = [attrs.asdict(spec) for spec in registry.specs(True)]
    assert [m["spec"] for m in measured] == planned
    statuses = {(m["spec"]["scenario"], m["spec"]["impl"]): m["status"] for m in measured}
    assert all(status == "ok" for status in statuses.values()), statuses
    assert all(len(m["runs"]) == 1 for m in measured), [m["spec"] for m in measured]
    scenarios = {scenario for scenario, _ in statuses}
    assert scenarios == set(registry.names())
    assert {impl for _, impl in statuses} == {"trioflow", "anchor", "floor"}
    # Every figure the registry judges is there, measured (--quick: one size each).
    checks = json.loads(results.read_text())["checks"]
    assert len(checks) == sum(len(scenario.judged) for scenario in registry.SCENARIOS)
    assert all(check["measured"] != "-" for check in checks), checks


async def test_the_in_process_store_benchmark_runs(tmp_path: Path) -> None:
    """`benchmarks.store_inprocess` reads every event of both runs (tiny sizes: its figures
    mean nothing here)."""
    from benchmarks import store_inprocess

    results = await store_inprocess.measure(f"sqlite:///{tmp_path}/bench.db", 50, 10, 1)
    assert set(results) == {"memory", "sqlite", "sqlite_over_memory"}
    assert results["sqlite"]["events_per_second"] > 0


def test_instruction_counts_run_each_default_measurement() -> None:
    """`python -m benchmarks.instructions` measures processes of its own (``--one``) under
    valgrind: each default measurement runs there at a tiny size (valgrind itself is not
    needed for that), and an unknown scenario is refused with the known ones."""
    from benchmarks import instructions

    for measurement in instructions.DEFAULT:
        done = subprocess.run(
            instructions.one_command(measurement, 50),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (measurement, done.stderr[-2000:])
    with pytest.raises(SystemExit, match="unknown scenario 'nope'"):
        instructions.measure("nope:trioflow")
