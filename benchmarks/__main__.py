"""trioflow vs llama-index-workflows (the anchor) vs bare trio (the floor), side by side.

    python -m benchmarks [--quick] [--repeat N] [--only SCENARIO] [--json PATH] [--plots DIR]

e.g. ``python -m benchmarks --json benchmarks/results/latest.json`` (that folder is git-ignored).
The scenarios are planned, described and judged by the ``_report_<topic>`` modules (see
``_suite``).

Every measurement runs in a fresh subprocess (``python -m benchmarks._scenario ...``), so peak
RSS and warm caches never leak from one measurement into the next. Each figure is the median over
the repetitions. ``--quick`` (tiny sizes, a check that every scenario runs, whose figures mean
nothing) runs each measurement once, those of one implementation one after another in one
process, the implementations side by side. An implementation whose package is missing is
reported as "not installed" and the ratios that need it are skipped.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

import benchmarks
from benchmarks._suite import Check, Outcome, measure, measure_once_each


def reports() -> list[ModuleType]:
    """The ``_report_<topic>`` modules, each planning, describing and judging its scenarios."""
    return [
        importlib.import_module(f"benchmarks.{module.name}")
        for module in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name)
        if module.name.startswith("_report_")
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def report(
    outcomes: Sequence[tuple[ModuleType, Outcome]], found: Sequence[Check], quick: bool
) -> str:
    measured = _table(
        ["scenario", "implementation", "n", "runs", "result (median)"],
        [
            [
                o.spec.scenario,
                o.spec.label,
                f"{o.spec.n:,}",
                str(len(o.runs)),
                module.describe(o) if o.ok else o.status,
            ]
            for module, o in outcomes
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
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "versions": {
            d: _version(d)
            for d in (
                "trioflow",
                "trio",
                "hypercorn",
                "llama-index-workflows",
                "llama-agents-server",
                "psutil",
            )
        },
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


def main(argv: Sequence[str] | None = None) -> int:
    modules = reports()
    names = [name for module in modules for name in module.SCENARIOS]
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
        "--only", action="append", choices=names, default=[], help="only this scenario (repeat)"
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
    args = parser.parse_args(argv)
    repeat: int = args.repeat or (1 if args.quick else 3)
    timeout: float = args.timeout or (60.0 if args.quick else 600.0)

    planned = [
        (module, spec)
        for module in modules
        for spec in module.specs(args.quick)
        if not args.only or spec.scenario in args.only
    ]
    if args.quick:
        print(
            f"{len(planned)} measurements, once each, one process per implementation:",
            file=sys.stderr,
        )
        once = measure_once_each([spec for _, spec in planned], timeout)
        outcomes = [(module, o) for (module, _), o in zip(planned, once, strict=True)]
    else:
        print(f"{len(planned)} measurements, each in a fresh subprocess:", file=sys.stderr)
        outcomes = [
            (module, measure(spec, spec.repeat or repeat, timeout)) for module, spec in planned
        ]
    found = [
        check
        for module in modules
        for check in module.checks([o for m, o in outcomes if m is module])
    ]
    print(report(outcomes, found, args.quick))

    results = {
        "environment": environment(),
        "quick": args.quick,
        "measurements": [attrs.asdict(o) for _, o in outcomes],
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
    return 1 if any(o.status.startswith("error") for _, o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
