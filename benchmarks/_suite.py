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

import concurrent.futures
import json
import statistics
import subprocess
import sys
import tempfile
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

    def batch_line(self) -> str:
        """This measurement as a line of ``python -m benchmarks._scenario --batch``'s input."""
        fields = attrs.asdict(self)
        del fields["repeat"]
        return json.dumps(fields)


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
    outcome.metrics = _medians(outcome.runs)
    return outcome


def _medians(runs: list[Metrics]) -> Metrics:
    return {
        key: statistics.median(run[key] for run in runs)
        if isinstance(value, int | float)
        else runs[-1][key]
        for key, value in runs[0].items()
    }


def measure_once_each(specs: Sequence[Spec], timeout: float) -> list[Outcome]:
    """Run each of ``specs`` once (``--quick``), in as many subprocesses as there are
    implementations, side by side: the measurements of one implementation run one after another
    in one process (``python -m benchmarks._scenario --batch``), since at tiny sizes a process
    start per measurement would cost more than the measurements. ``timeout``: seconds per
    measurement, summed over a process's measurements. Outcomes in the order of ``specs``."""
    groups: dict[str, list[Spec]] = {}
    for spec in specs:
        groups.setdefault(spec.impl, []).append(spec)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(groups) or 1) as pool:
        done = pool.map(lambda group: _batch(group, timeout), groups.values())
        by_spec = {id(o.spec): o for outcomes in done for o in outcomes}
    return [by_spec[id(spec)] for spec in specs]


def _batch(specs: list[Spec], timeout: float) -> list[Outcome]:
    limit = timeout * len(specs)
    failure = ""
    with tempfile.TemporaryDirectory() as folder:
        results = Path(folder) / "results.jsonl"
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks._scenario", "--batch", str(results)],
                cwd=ROOT,
                input="".join(spec.batch_line() + "\n" for spec in specs),
                capture_output=True,
                text=True,
                timeout=limit,
            )
            if proc.returncode != 0:
                failure = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            stderr = proc.stderr
        except subprocess.TimeoutExpired as exc:
            failure = f"timed out after {limit:.0f} s"
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        lines = results.read_text().splitlines() if results.exists() else []
    replies: list[dict[str, Any]] = [json.loads(line) for line in lines]
    outcomes = []
    for i, spec in enumerate(specs):
        outcome = Outcome(spec)
        reply = replies[i] if i < len(replies) else None
        if reply is None:
            outcome.status = f"error: {failure or 'no result'}"
        elif reply["ok"]:
            outcome.runs.append(reply["metrics"])
            outcome.metrics = _medians(outcome.runs)
        elif "missing" in reply:
            outcome.status = "not installed"
        else:
            outcome.status = f"error: {reply['error']}"
        took = f"{reply['seconds']:.1f} s" if reply is not None else "-"
        print(
            f"  {spec.scenario:<17} {spec.label:<19} n={spec.n:<7} run 1/1 {took}"
            + ("" if outcome.ok else f"  {outcome.status}"),
            file=sys.stderr,
            flush=True,
        )
        outcomes.append(outcome)
    if failure or any(o.status.startswith("error") for o in outcomes):
        print(stderr, file=sys.stderr)
    return outcomes


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
