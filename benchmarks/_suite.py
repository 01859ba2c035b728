"""The suite's vocabulary: what a measurement is (`Spec`), what came of it (`Outcome`), how a
figure is judged against a target (`Ratio`, `Figure`, `Target`, and what they make: `Check`),
and how measurements are run (`measure`, `measure_once_each`). ``benchmarks._registry`` uses it
to declare the scenarios; ``__main__`` to run them.
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

from benchmarks._common import Metrics, Params

ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Spec:
    """One measurement: an implementation running a scenario with its parameters."""

    scenario: str
    impl: str
    params: Params
    #: Runs to take the median of; None: the suite's --repeat.
    repeat: int | None = None

    @property
    def n(self) -> int:
        return self.params.n

    @property
    def variant(self) -> str:
        return self.params.variant

    @property
    def label(self) -> str:
        return f"{self.impl} ({self.variant})" if self.variant else self.impl

    def argv(self) -> list[str]:
        """``python -m benchmarks._scenario IMPL SCENARIO --n N ...``: every parameter that is
        not its default (`Params` declares them; the scenario CLI takes each as ``--<name>``)."""
        args = [sys.executable, "-m", "benchmarks._scenario", self.impl, self.scenario]
        return [*args, *params_argv(self.params)]

    def command(self) -> str:
        """`argv` as one would type it, from the repository's root."""
        return " ".join(["python", *self.argv()[1:]])

    def batch_line(self) -> str:
        """This measurement as a line of ``python -m benchmarks._scenario --batch``'s input."""
        return json.dumps(
            {"impl": self.impl, "scenario": self.scenario, **attrs.asdict(self.params)}
        )


def params_argv(params: Params) -> list[str]:
    """The options that give ``params``: ``--n`` always, the other fields where not default."""
    args = []
    for field in attrs.fields(Params):
        value = getattr(params, field.name)
        if field.name == "n" or value != field.default:
            args += [f"--{field.name.replace('_', '-')}", str(value)]
    return args


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


def measure(specs: Sequence[Spec], repeat: int, timeout: float) -> list[Outcome]:
    """Run each of ``specs`` ``spec.repeat or repeat`` times, each run in a fresh subprocess,
    and take the medians. The runs of one scenario's measurements take turns (run 1 of each,
    then run 2 of each...), so that a spell of load from elsewhere on a shared machine falls
    on all of them rather than on one implementation's runs. Outcomes in the order of
    ``specs``."""
    outcomes = [Outcome(spec) for spec in specs]
    scenarios: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        scenarios.setdefault(outcome.spec.scenario, []).append(outcome)
    for group in scenarios.values():
        most = max(o.spec.repeat or repeat for o in group)
        for rep in range(most):
            for outcome in group:
                wanted = outcome.spec.repeat or repeat
                if rep < wanted and outcome.ok:
                    _run_once(outcome, rep, wanted, timeout)
    for outcome in outcomes:
        if outcome.ok:
            outcome.metrics = _medians(outcome.runs)
    return outcomes


def _run_once(outcome: Outcome, rep: int, repeat: int, timeout: float) -> None:
    """Run ``outcome``'s measurement once more in a fresh subprocess: a run more, or a status."""
    spec = outcome.spec
    print(
        f"  {spec.scenario:<17} {spec.label:<22} n={spec.n:<7} run {rep + 1}/{repeat} ",
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
        return
    print(f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        outcome.status = f"error: {last}"
        print(proc.stderr, file=sys.stderr)
        return
    reply: dict[str, Any] = json.loads(lines[-1])
    if not reply["ok"]:
        outcome.status = "not installed"
        return
    outcome.runs.append(reply["metrics"])


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
            f"  {spec.scenario:<17} {spec.label:<22} n={spec.n:<7} run 1/1 {took}"
            + ("" if outcome.ok else f"  {outcome.status}"),
            file=sys.stderr,
            flush=True,
        )
        outcomes.append(outcome)
    if failure or any(o.status.startswith("error") for o in outcomes):
        print(stderr, file=sys.stderr)
    return outcomes


#: What a judged figure is read from: an implementation's label in the same scenario
#: (``"floor"``, ``"anchor (yield)"``), or ``(scenario, label)`` for another scenario's.
Ref = str | tuple[str, str]
#: A figure of a measurement: a metric's name, or a function of the metrics.
Key = str | Callable[[Metrics], float]


@attrs.frozen
class Target:
    """What a figure must be: ``text`` as the table prints it, and the test."""

    text: str
    passes: Callable[[float], bool]


def at_least(x: float, unit: str = "x") -> Target:
    return Target(f">= {x:g}{unit}", lambda v: v >= x)


def at_most(x: float, unit: str = "x") -> Target:
    return Target(f"<= {x:g}{unit}", lambda v: v <= x)


def between(lo: float, hi: float, unit: str = "x") -> Target:
    return Target(f"{lo:g}{unit} to {hi:g}{unit}", lambda v: lo <= v <= hi)


def _value(key: Key, metrics: Metrics) -> float:
    return float(key(metrics) if callable(key) else metrics[key])


@attrs.frozen
class Figure:
    """One measurement's figure (``key`` of ``of``), with a target or for information.
    ``each_n``: one check per size measured (the name gets ``N=...``); ``count``: an integer."""

    name: str
    of: Ref
    key: Key
    unit: str = ""
    target: Target | None = None
    each_n: bool = False
    count: bool = False

    def judge(self, scenario: str, outcomes: Sequence[Outcome]) -> list[Check]:
        found = _find_all(outcomes, scenario, self.of)
        if not self.each_n:
            found = found[:1]
        checks = []
        for o in found:
            name = f"{self.name}, N={o.spec.n:,}" if self.each_n else self.name
            check = _judge(name, [o], lambda m: _value(self.key, m[0]), self.unit, self.target)
            if self.count and o.ok:
                check = attrs.evolve(check, measured=f"{_value(self.key, o.metrics):g}{self.unit}")
            checks.append(check)
        return checks


@attrs.frozen
class Ratio:
    """``key`` of ``over`` divided by ``key`` (or ``under_key``) of ``under``."""

    name: str
    over: Ref
    under: Ref
    key: Key
    target: Target | None = None
    under_key: Key | None = None

    def judge(self, scenario: str, outcomes: Sequence[Outcome]) -> list[Check]:
        over = _find_all(outcomes, scenario, self.over)[:1]
        under = _find_all(outcomes, scenario, self.under)[:1]
        if not over or not under:
            return []
        below = self.key if self.under_key is None else self.under_key
        return [
            _judge(
                self.name,
                [over[0], under[0]],
                lambda m: _value(self.key, m[0]) / _value(below, m[1]),
                "x",
                self.target,
            )
        ]


Judged = Figure | Ratio


def _judge(
    name: str,
    needs: Sequence[Outcome],
    value: Callable[[list[Metrics]], float],
    unit: str,
    target: Target | None,
) -> Check:
    text = "" if target is None else target.text
    for o in needs:
        if not o.ok:
            return Check(name, "-", text, f"n/a ({o.spec.label} {o.status})")
    v = value([o.metrics for o in needs])
    status = "" if target is None else "PASS" if target.passes(v) else "MISS"
    return Check(name, f"{v:,.2f}{unit}", text, status)


def _find_all(outcomes: Sequence[Outcome], scenario: str, ref: Ref) -> list[Outcome]:
    """The outcomes of ``ref`` (a label in ``scenario``, or ``(scenario, label)``), by size."""
    where, label = (scenario, ref) if isinstance(ref, str) else ref
    return [o for o in outcomes if o.spec.scenario == where and o.spec.label == label]
