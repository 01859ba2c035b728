"""trioflow vs llama-index-workflows (the anchor) vs bare trio (the floor), side by side.

    python -m benchmarks [--quick] [--repeat N] [--only SCENARIO] [--json PATH] [--plots DIR]
        [--markdown] [--list] [--from PATH]

e.g. ``python -m benchmarks --json benchmarks/results/full.json`` (that folder is git-ignored).
The scenarios, their sizes, implementations and targets are declared once, in
``benchmarks/_registry.py``.

Every measurement runs in a fresh subprocess (``python -m benchmarks._scenario ...``), so peak
RSS and warm caches never leak from one measurement into the next. Each figure is the median over
the repetitions; the repetitions of one scenario's measurements take turns (trioflow, the anchor,
the floor, then again), so that load from elsewhere on a shared machine falls on all of them.
``--quick`` (tiny sizes, a check that every scenario runs, whose figures mean nothing) runs
each measurement once, those of one implementation one after another in one process, the
implementations side by side. An implementation whose package is missing is
reported as "not installed" and the ratios that need it are skipped.

The report starts with a header (date, machine, versions, commit) and the JSON file holds it,
every measurement (its command line, every run's metrics, the medians) and every check, so each
figure of a report can be traced to one command and one file; ``--from PATH`` prints the report
of such a file again (``--markdown``: as Markdown tables, as the README quotes them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from benchmarks import _registry as registry
from benchmarks._common import Params
from benchmarks._suite import ROOT, Check, Outcome, Spec, measure, measure_once_each

#: The distributions whose versions the header names.
VERSIONS = (
    "trioflow",
    "trio",
    "hypercorn",
    "llama-index-workflows",
    "llama-agents-server",
    "httpx",
    "psutil",
)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:

        def cells(row: Sequence[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

        rule = "|" + "|".join("---" for _ in header) + "|"
        return "\n".join([cells(header), rule, *map(cells, rows)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def describe(outcome: Outcome) -> str:
    if not outcome.ok:
        return outcome.status
    return registry.scenario(outcome.spec.scenario).describe(outcome.metrics).strip()


def judge(outcomes: Sequence[Outcome]) -> list[Check]:
    """Every check of every scenario measured."""
    measured = {o.spec.scenario for o in outcomes}
    return [
        check
        for scenario in registry.SCENARIOS
        if scenario.name in measured
        for judged in scenario.judged
        for check in judged.judge(scenario.name, outcomes)
    ]


def header(env: dict[str, Any]) -> str:
    versions = ", ".join(f"{d} {v}" for d, v in env["versions"].items() if v)
    return "\n".join(
        [
            f"date: {env['date']} (UTC {env['time']})",
            f"machine: {env['cpus']} CPUs (nproc), {env['cpu']}; {env['platform']}",
            f"python {env['python']}; {versions}",
            f"commit: {env['commit']}",
        ]
    )


def report(
    env: dict[str, Any],
    outcomes: Sequence[Outcome],
    found: Sequence[Check],
    quick: bool,
    markdown: bool = False,
    seconds: float | None = None,
) -> str:
    measured = _table(
        ["scenario", "implementation", "n", "runs", "result (median)"],
        [
            [o.spec.scenario, o.spec.label, f"{o.spec.n:,}", str(len(o.runs)), describe(o)]
            for o in outcomes
        ],
        markdown,
    )
    judged = _table(
        ["check", "measured", "target", "status"],
        [[c.name, c.measured, c.target, c.status] for c in found],
        markdown,
    )
    took = "" if seconds is None else f"\nthe suite took {seconds:,.0f} s ({seconds / 60:.1f} min)"
    note = (
        "\n(--quick: tiny sizes, to check that every benchmark runs; the targets mean nothing here)"
        if quick
        else ""
    )
    return f"{header(env)}{took}\n\n{measured}\n\n{judged}{note}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" (with uncommitted changes)" if dirty else "")


def environment() -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC)
    return {
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "commit": _commit(),
        "versions": {d: _version(d) for d in VERSIONS},
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def outcomes_of(results: dict[str, Any]) -> list[Outcome]:
    """The outcomes a results file holds (as ``--json`` writes them)."""
    return [
        Outcome(
            Spec(m["spec"]["scenario"], m["spec"]["impl"], Params(**m["spec"]["params"])),
            m["status"],
            m["metrics"],
            m["runs"],
        )
        for m in results["measurements"]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one run each, the runs of an implementation in one process (the"
        " implementations side by side): check that every benchmark runs",
    )
    parser.add_argument(
        "--repeat", type=_positive, help="runs per speed figure (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=registry.names(),
        default=[],
        help="only this scenario (repeat)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH"
    )
    parser.add_argument(
        "--plots", type=Path, metavar="DIR", help="also draw the PNG plots into DIR (matplotlib)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds per subprocess (default 600); with --quick, per measurement (default 60)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the tables as Markdown (as the README)"
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print each planned measurement's command line (python -m benchmarks._scenario ...)"
        " and what each scenario measures, and exit",
    )
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="PATH",
        help="measure nothing: print the report of a results file written by --json",
    )
    args = parser.parse_args(argv)
    if args.source is not None:
        results = json.loads(args.source.read_text())
        outcomes = outcomes_of(results)
        print(
            report(
                results["environment"],
                outcomes,
                judge(outcomes),
                results["quick"],
                args.markdown,
                results.get("seconds"),
            )
        )
        return 0
    repeat: int = args.repeat or (1 if args.quick else 3)
    timeout: float = args.timeout or (60.0 if args.quick else 600.0)
    planned = registry.specs(args.quick, args.only)
    if args.list:
        for scenario in registry.SCENARIOS:
            if args.only and scenario.name not in args.only:
                continue
            print(f"{scenario.name}: {scenario.about}")
            for spec in planned:
                if spec.scenario == scenario.name:
                    print(f"    {spec.command()}   # x{spec.repeat or repeat}")
        return 0

    env = environment()
    print(header(env), file=sys.stderr)
    started = time.perf_counter()
    if args.quick:
        print(
            f"{len(planned)} measurements, once each, one process per implementation:",
            file=sys.stderr,
        )
        outcomes = measure_once_each(planned, timeout)
    else:
        print(f"{len(planned)} measurements, each in a fresh subprocess:", file=sys.stderr)
        outcomes = measure(planned, repeat, timeout)
    seconds = time.perf_counter() - started
    found = judge(outcomes)
    print(report(env, outcomes, found, args.quick, args.markdown, seconds))

    results = {
        "environment": env,
        "command": " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)]),
        "seconds": seconds,
        "quick": args.quick,
        "repeat": repeat,
        "scenarios": [
            {"name": s.name, "about": s.about}
            for s in registry.SCENARIOS
            if not args.only or s.name in args.only
        ],
        "measurements": [
            {**attrs.asdict(o), "label": o.spec.label, "command": o.spec.command()}
            for o in outcomes
        ],
        "checks": [attrs.asdict(c) for c in found],
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    if args.plots is not None:
        from benchmarks._plots import draw

        for path in draw(results, args.plots):
            print(f"drew {path}", file=sys.stderr)
    return 1 if any(o.status.startswith("error") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
