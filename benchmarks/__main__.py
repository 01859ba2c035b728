"""trioflow vs llama-index-workflows (the anchor) vs bare trio (the floor), side by side.

    python -m benchmarks [--quick] [--repeat N] [--memory-repeat N] [--only SCENARIO] [--json PATH]

e.g. ``python -m benchmarks --json benchmarks/results/latest.json`` (that folder is git-ignored).

Every measurement runs in a fresh subprocess (``python -m benchmarks._scenario ...``), so peak
RSS and warm caches never leak from one measurement into the next. Each figure is the median over
the repetitions. An implementation whose package is missing is reported as "not installed" and
the ratios that need it are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from benchmarks._common import Metrics

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_NAMES = ("routing", "stream", "memory")


@attrs.frozen
class Spec:
    """One measurement: an implementation running a scenario at a size."""

    scenario: str
    impl: str
    n: int
    variant: str = ""
    slow_seconds: float = 2.0

    @property
    def label(self) -> str:
        return f"{self.impl} ({self.variant})" if self.variant else self.impl

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "benchmarks._scenario", self.impl, self.scenario]
        args += ["--n", str(self.n), "--slow-seconds", str(self.slow_seconds)]
        return [*args, "--variant", self.variant] if self.variant else args


@attrs.define
class Outcome:
    spec: Spec
    status: str = "ok"  # "ok", "not installed" or "error: ..."
    metrics: Metrics = attrs.Factory(dict)  # medians over the runs
    runs: list[Metrics] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@attrs.frozen
class Sizes:
    hops: int  # routing, trioflow and floor
    anchor_hops: int  # routing, anchor: it is slow, and its rate is what matters
    ticks: int  # stream
    blobs: tuple[int, ...]  # memory: events of 1 KiB
    slow_seconds: float  # memory: how long the consumer is slow


FULL = Sizes(
    hops=200_000, anchor_hops=20_000, ticks=50_000, blobs=(200_000, 400_000), slow_seconds=2.0
)
QUICK = Sizes(hops=2_000, anchor_hops=500, ticks=2_000, blobs=(5_000,), slow_seconds=0.2)


def plan(sizes: Sizes, only: Sequence[str]) -> list[Spec]:
    specs = [
        Spec("routing", "trioflow", sizes.hops),
        Spec("routing", "anchor", sizes.anchor_hops),
        Spec("routing", "floor", sizes.hops, "buffer0"),
        Spec("routing", "floor", sizes.hops, "buffer1"),
        Spec("stream", "trioflow", sizes.ticks),
        Spec("stream", "anchor", sizes.ticks),
        Spec("stream", "floor", sizes.ticks),
    ]
    for n in sizes.blobs:
        slow = sizes.slow_seconds
        specs.append(Spec("memory", "trioflow", n, slow_seconds=slow))
        specs.append(Spec("memory", "anchor", n, "yield", slow))
        specs.append(Spec("memory", "anchor", n, "noyield", slow))
    return [s for s in specs if not only or s.scenario in only]


def measure(spec: Spec, repeat: int, timeout: float) -> Outcome:
    outcome = Outcome(spec)
    for rep in range(repeat):
        print(
            f"  {spec.scenario:<8} {spec.label:<19} n={spec.n:<7} run {rep + 1}/{repeat} ",
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
        key: statistics.median(run[key] for run in outcome.runs) for key in outcome.runs[0]
    }
    return outcome


# --- the report -------------------------------------------------------------------------------


def describe(outcome: Outcome) -> str:
    if not outcome.ok:
        return outcome.status
    m = outcome.metrics
    if outcome.spec.scenario == "routing":
        return f"{m['rate']:>12,.0f} hops/s"
    if outcome.spec.scenario == "stream":
        first = f"first event {m['first_ms']:,.2f} ms (writer loop {m['loop_ms']:,.0f} ms)"
        return f"{m['rate']:>12,.0f} events/s   {first}"
    return f"{m['rss_growth_mib']:>12,.1f} MiB RSS growth   ({m['seconds']:.1f} s)"


@attrs.frozen
class Check:
    name: str
    measured: str
    target: str
    status: str  # PASS, MISS, why it could not be judged, or "" for information only


def _check(
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


def checks(outcomes: Sequence[Outcome]) -> list[Check]:
    speed = {(o.spec.scenario, o.spec.label): o for o in outcomes if o.spec.scenario != "memory"}

    def faster(scenario: str, than: str, target: float | None) -> Check | None:
        unit = "hops/s" if scenario == "routing" else "events/s"
        return _check(
            f"{scenario} {unit}: trioflow / {than}",
            [speed.get((scenario, "trioflow")), speed.get((scenario, than))],
            lambda m: m[0]["rate"] / m[1]["rate"],
            "x",
            "" if target is None else f">= {target:g}x",
            None if target is None else lambda v: v >= target,
        )

    found = [
        faster("routing", "anchor", 50),
        faster("routing", "floor (buffer0)", 1.5),
        faster("routing", "floor (buffer1)", 1.5),
        faster("stream", "anchor", 15),
        faster("stream", "floor", None),
        _check(
            "stream first event: trioflow",
            [speed.get(("stream", "trioflow"))],
            lambda m: m[0]["first_ms"],
            " ms",
            "<= 5 ms",
            lambda v: v <= 5,
        ),
        # Information, no target: how late the anchor delivers (DESIGN.md: only after the loop).
        _check(
            "stream first event: anchor, ms after its writer loop ended",
            [speed.get(("stream", "anchor"))],
            lambda m: m[0]["first_ms"] - m[0]["loop_ms"],
            " ms",
        ),
    ]
    for o in outcomes:
        if o.spec.scenario == "memory" and o.spec.impl == "trioflow":
            found.append(
                _check(
                    f"memory RSS growth: trioflow, N={o.spec.n:,}",
                    [o],
                    lambda m: m[0]["rss_growth_mib"],
                    " MiB",
                    "<= 8 MiB",
                    lambda v: v <= 8,
                )
            )
    return [c for c in found if c is not None]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def report(outcomes: Sequence[Outcome], found: Sequence[Check], quick: bool) -> str:
    measured = _table(
        ["scenario", "implementation", "n", "runs", "result (median)"],
        [
            [o.spec.scenario, o.spec.label, f"{o.spec.n:,}", str(len(o.runs)), describe(o)]
            for o in outcomes
        ],
    )
    judged = _table(
        ["check", "measured", "target", "status"],
        [[c.name, c.measured, c.target, c.status] for c in found],
    )
    note = (
        "\n(--quick: tiny sizes, to check that every benchmark runs; the targets mean nothing here)"
        if quick
        else ""
    )
    return f"{measured}\n\n{judged}{note}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": {
            d: _version(d) for d in ("trioflow", "trio", "llama-index-workflows", "psutil")
        },
    }


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one run each: check that every benchmark runs",
    )
    parser.add_argument(
        "--repeat", type=_positive, help="runs per speed figure (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--memory-repeat", type=_positive, default=1, help="runs per memory figure (default 1)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIO_NAMES,
        default=[],
        help="run only this scenario (repeatable)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH"
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds per subprocess (default 600; 60 with --quick)"
    )
    args = parser.parse_args(argv)
    repeat: int = args.repeat or (1 if args.quick else 3)
    timeout: float = args.timeout or (60.0 if args.quick else 600.0)

    sizes = QUICK if args.quick else FULL
    specs = plan(sizes, args.only)
    print(f"{len(specs)} measurements, each in a fresh subprocess:", file=sys.stderr)
    outcomes = [
        measure(s, args.memory_repeat if s.scenario == "memory" else repeat, timeout) for s in specs
    ]
    found = checks(outcomes)
    print(report(outcomes, found, args.quick))

    if args.json is not None:
        results = {
            "environment": environment(),
            "quick": args.quick,
            "sizes": attrs.asdict(sizes),
            "measurements": [attrs.asdict(o) for o in outcomes],
            "checks": [attrs.asdict(c) for c in found],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 1 if any(o.status.startswith("error") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
