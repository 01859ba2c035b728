"""The suite's vocabulary: what a measurement is (`Spec`), what came of it (`Outcome`), and
how a figure is judged against a target (`Check`). Shared by ``__main__`` and the
``_report_<topic>`` modules, each of which plans, describes and judges its own scenarios.

A report module exposes:

- ``SCENARIOS``: the scenario names it covers (``--only`` takes these);
- ``specs(quick: bool) -> list[Spec]``: what to measure (``quick``: tiny sizes that only check
  that everything runs);
- ``describe(outcome: Outcome) -> str``: one line for the table, for its own scenarios;
- ``checks(outcomes: Sequence[Outcome]) -> list[Check]``: figures and ratios, with targets.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from benchmarks._common import Metrics

ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Spec:
    """One measurement: an implementation running a scenario at a size."""

    scenario: str
    impl: str
    n: int
    variant: str = ""
    slow_seconds: float = 2.0
    rate: float = 0.0
    clients: int = 1
    size: int = 0
    #: Runs to take the median of; None: the suite's --repeat.
    repeat: int | None = None

    @property
    def label(self) -> str:
        return f"{self.impl} ({self.variant})" if self.variant else self.impl

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "benchmarks._scenario", self.impl, self.scenario]
        args += ["--n", str(self.n), "--slow-seconds", str(self.slow_seconds)]
        args += ["--rate", str(self.rate), "--clients", str(self.clients)]
        args += ["--size", str(self.size)]
        return [*args, "--variant", self.variant] if self.variant else args


@attrs.define
class Outcome:
    spec: Spec
    status: str = "ok"  # "ok", "not installed" or "error: ..."
    metrics: Metrics = attrs.Factory(dict)  # medians over the runs; series from the last run
    runs: list[Metrics] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@attrs.frozen
class Check:
    name: str
    measured: str
    target: str
    status: str  # PASS, MISS, why it could not be judged, or "" for information only


def measure(spec: Spec, repeat: int, timeout: float) -> Outcome:
    """Run ``spec`` ``repeat`` times, each in a fresh subprocess, and take the medians."""
    outcome = Outcome(spec)
    for rep in range(repeat):
        print(
            f"  {spec.scenario:<17} {spec.label:<19} n={spec.n:<7} run {rep + 1}/{repeat} ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                # cwd=ROOT: `-m` puts it first on sys.path, so this checkout's packages are used.
                spec.argv(),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            outcome.status = f"error: timed out after {timeout:.0f} s"
            print("timed out", file=sys.stderr)
            return outcome
        print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            outcome.status = f"error: {last}"
            print(proc.stderr, file=sys.stderr)
            return outcome
        reply: dict[str, Any] = json.loads(lines[-1])
        if not reply["ok"]:
            outcome.status = "not installed"
            return outcome
        outcome.runs.append(reply["metrics"])
    outcome.metrics = {
        key: statistics.median(run[key] for run in outcome.runs)
        if isinstance(value, int | float)
        else outcome.runs[-1][key]
        for key, value in outcome.runs[0].items()
    }
    return outcome


def judge(
    name: str,
    needs: Sequence[Outcome | None],
    value: Callable[[list[Metrics]], float],
    unit: str,
    target: str = "",
    passes: Callable[[float], bool] | None = None,
) -> Check | None:
    """Judge ``value`` of the metrics of ``needs``; None if one of them was not planned."""
    metrics: list[Metrics] = []
    for o in needs:
        if o is None:
            return None
        if not o.ok:
            return Check(name, "-", target, f"n/a ({o.spec.impl} {o.status})")
        metrics.append(o.metrics)
    v = value(metrics)
    status = "" if passes is None else "PASS" if passes(v) else "MISS"
    return Check(name, f"{v:,.2f}{unit}", target, status)


def find(
    outcomes: Sequence[Outcome], scenario: str, label: str, n: int | None = None
) -> Outcome | None:
    """The outcome of ``scenario`` for the implementation ``label`` (and size ``n``)."""
    for o in outcomes:
        if o.spec.scenario == scenario and o.spec.label == label and n in (None, o.spec.n):
            return o
    return None
