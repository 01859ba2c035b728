"""Instructions per hop, per streamed event and per tiny run, counted by valgrind: figures that
do not move with the load on a shared machine, for comparing two versions of a hot path.

    python -m benchmarks.instructions [--json FILE] [--jobs 2] [MEASUREMENT ...]

A MEASUREMENT is ``SCENARIO:IMPL`` or ``SCENARIO:IMPL:VARIANT`` (as in the suite's registry:
``stream:trioflow``, ``stream:floor:api``, ``routing:floor``); without any, `DEFAULT`. Each runs
twice under ``valgrind --tool=callgrind`` (``python -m benchmarks.instructions --one ...``, at
the two sizes of `SIZES`), and the difference of the instructions counted, over the difference
of the sizes, is the instructions a unit (a hop, an event, a run) costs, without what a process
costs to start and end. Wall time measured on a busy machine moves by 10 to 30% between runs;
these counts repeat to within about 2% (the same floor hop counted twice: 36,100 and 35,892
instructions). They are no time: a cache miss costs more than an instruction, and Python's
garbage collector is counted where it runs.

The stream's writer and reader yield to the scheduler once a millisecond (`YIELD_EVERY`), a
rate set in real time: valgrind runs the program about 50 times slower, so it would yield 50
times as often. Here the yields are left out (`YIELD_EVERY` is set to a day), a
fraction of a per cent at full speed.

Needs valgrind (Debian's ``valgrind`` package); about 5 minutes for `DEFAULT` on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

#: Small and large sizes of each scenario: large enough that the difference is the unit cost.
SIZES = {"routing": (20_000, 60_000), "stream": (20_000, 60_000), "tiny": (500, 2_000)}
DEFAULT = (
    "routing:trioflow",
    "routing:floor",
    "routing:floor:api",
    "stream:trioflow",
    "stream:floor",
    "stream:floor:api",
    "stream:floor:channel",
    "tiny:trioflow",
    "tiny:floor",
)
_COLLECTED = re.compile(rb"Collected : (\d+)")


def parse(measurement: str) -> tuple[str, str, str]:
    """``SCENARIO:IMPL[:VARIANT]`` as its three parts (no variant: ``""``)."""
    scenario, impl, variant = [*measurement.split(":"), ""][:3]
    return scenario, impl, variant


def one_command(measurement: str, n: int) -> list[str]:
    """The command line of the measured process: ``measurement`` at size ``n``, nothing
    printed (`_one`)."""
    return [sys.executable, "-m", "benchmarks.instructions", "--one", *parse(measurement), str(n)]


def _count(measurement: str, n: int) -> int:
    """Instructions valgrind counts in one process running ``measurement`` at size ``n``."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        *one_command(measurement, n),
    ]
    done = subprocess.run(command, capture_output=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}"
        )
    return int(found.group(1))


def measure(measurement: str) -> dict[str, object]:
    """The instructions a unit of ``measurement`` (``SCENARIO:IMPL[:VARIANT]``) costs."""
    scenario = parse(measurement)[0]
    if scenario not in SIZES:
        raise SystemExit(f"unknown scenario {scenario!r}: one of {sorted(SIZES)}")
    small, large = SIZES[scenario]
    counts = [_count(measurement, n) for n in (small, large)]
    return {
        "measurement": measurement,
        "sizes": [small, large],
        "instructions": counts,
        "per_unit": round((counts[1] - counts[0]) / (large - small)),
    }


def _one(scenario: str, impl: str, variant: str, n: int) -> None:
    """The measured process: one measurement, nothing printed."""
    from benchmarks._common import Params
    from benchmarks._scenario import load
    from trioflow._core import _stream

    _stream.YIELD_EVERY = 86_400.0  # see the module docstring
    run = load(scenario, impl, variant)
    if run is None:
        raise SystemExit(f"{impl} is not installed")
    run(Params(n=n, variant=variant))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("measurements", nargs="*", metavar="MEASUREMENT")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--one", nargs=4, metavar=("SCENARIO", "IMPL", "VARIANT", "N"))
    args = parser.parse_args()
    if args.one:
        scenario, impl, variant, n = args.one
        _one(scenario, impl, variant, int(n))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    wanted = args.measurements or list(DEFAULT)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(measure, wanted))
    for result in results:
        print(f"{result['measurement']:<24} {result['per_unit']:>10,} instructions a unit")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)
            file.write("\n")


if __name__ == "__main__":
    main()
