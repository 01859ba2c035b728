"""Run one measurement in this (fresh) process and print its metrics as one JSON line.

    python -m benchmarks._scenario IMPL SCENARIO --n N [--variant V] [--<param> VALUE ...]

IMPL is ``trioflow``, ``anchor`` or ``floor``; the function that runs SCENARIO for it (in that
variant) is the one `benchmarks._registry` names. The options are the fields of
`benchmarks._common.Params` (``--slow-seconds``, ``--rate``, ``--clients``, ``--size``,
``--runs``), defaults as declared there; ``python -m benchmarks --list`` prints the command
line of each measurement of the suite. Prints ``{"ok": true, "metrics": {...}}``, or
``{"ok": false, "missing": "<package>"}`` (exit status 0) when the implementation's package is not
installed. Any other failure is a traceback and a non-zero exit status.

    python -m benchmarks._scenario --batch RESULTS < SPECS

runs several measurements one after another in this one process (``--quick`` uses it: at tiny
sizes a process start per measurement would cost more than the measurements). SPECS is one JSON
object per line (``impl``, ``scenario`` and the `Params` fields); for each, one JSON line is
appended to the file RESULTS as soon as it is done: the reply above plus ``seconds``, or
``{"ok": false, "error": "..."}`` (its traceback on stderr) if it raised, and the batch goes on.
The serving scenarios of one target share one server there (`servers_kept`).

For the scenarios the registry marks ``rss`` the metrics include ``rss_growth_mib``: peak RSS during
the run minus RSS just before it started. The peak is the larger of a psutil sampler (every
5 ms, in a thread) and the process's ``ru_maxrss`` high-water mark, so short spikes between
samples are not missed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable

import attrs

from benchmarks import _registry as registry
from benchmarks._common import Metrics, Params, Scenario
from benchmarks._http_common import servers_kept
from benchmarks._registry import implementation

# The third-party package each implementation needs, beyond what the floor needs.
PACKAGES = {"trioflow": "trioflow", "anchor": "workflows", "floor": "trio"}
MIB = 1024 * 1024
SAMPLE_EVERY = 0.005


def load(scenario: str, impl: str, variant: str) -> Scenario | None:
    """The function that runs ``scenario`` for ``impl`` in ``variant`` (from the registry), or
    None if the implementation's package is not installed."""
    module_name, _, function = implementation(scenario, impl, variant).run.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # Only the package itself being absent (or an empty namespace directory in its
        # place) counts as "not installed"; a broken import inside a real package gets a
        # traceback.
        package = PACKAGES[impl]
        if (exc.name or "").split(".")[0] == package and not _is_real_package(package):
            return None
        raise
    run: Scenario = getattr(module, function)
    return run


def _is_real_package(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and getattr(module, "__file__", None) is not None


def _current_rss() -> Callable[[], int]:
    try:
        import psutil
    except ModuleNotFoundError:
        return lambda: 0  # fall back on ru_maxrss alone
    process = psutil.Process()
    return lambda: int(process.memory_info().rss)


def _max_rss() -> int:
    # Linux reports ru_maxrss in KiB (macOS in bytes; this suite targets Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def with_rss(run: Scenario, params: Params) -> Metrics:
    """Run ``run`` and add its peak RSS growth in MiB, and RSS over time for the plots
    (``rss_series``: ``[[seconds, rss_mib], ...]``, at most about 500 points)."""
    rss = _current_rss()
    max_before = _max_rss()
    baseline = rss() or max_before
    peak = baseline
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        nonlocal peak
        while not done.wait(SAMPLE_EVERY):
            now = rss()
            peak = max(peak, now)
            samples.append((time.perf_counter() - started, now))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        metrics = run(params)
    finally:
        done.set()
        sampler.join()
    peak = max(peak, rss())
    if (max_after := _max_rss()) > max_before:  # the high-water mark was raised by the run
        peak = max(peak, max_after)
    step = max(1, len(samples) // 500)
    return {
        **metrics,
        "rss_growth_mib": (peak - baseline) / MIB,
        "rss_baseline_mib": baseline / MIB,
        "rss_series": [[round(t, 4), round(v / MIB, 2)] for t, v in samples[::step] if v],
    }


def run_one(run: Scenario, scenario: str, params: Params) -> Metrics:
    """Run ``run`` once in this process, with RSS sampling where the scenario measures it."""
    return with_rss(run, params) if registry.scenario(scenario).rss else run(params)


def batch(results: str, specs: list[str]) -> int:
    """Run each of ``specs`` (JSON lines) in turn in this process; see the module's docstring."""
    fields = set(attrs.fields_dict(Params))
    with open(results, "a") as out, servers_kept():
        for line in specs:
            spec = json.loads(line)
            impl, scenario = spec["impl"], spec["scenario"]
            started = time.perf_counter()
            reply: dict[str, object]
            try:
                params = Params(**{k: v for k, v in spec.items() if k in fields})
                run = load(scenario, impl, params.variant)
                if run is None:
                    reply = {"ok": False, "missing": PACKAGES[impl]}
                else:
                    reply = {"ok": True, "metrics": run_one(run, scenario, params)}
            except Exception as exc:
                traceback.print_exc()
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            reply["seconds"] = time.perf_counter() - started
            out.write(json.dumps(reply) + "\n")
            out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--batch"] and len(argv) == 2:
        return batch(argv[1], [line for line in sys.stdin if line.strip()])
    parser = argparse.ArgumentParser(prog="python -m benchmarks._scenario")
    parser.add_argument("impl", choices=registry.IMPLS)
    parser.add_argument("scenario", choices=registry.names())
    for field in attrs.fields(Params):
        required = field.default is attrs.NOTHING  # `n`, an int
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=int if required else type(field.default),
            required=required,
            default=None if required else field.default,
        )
    args = parser.parse_args(argv)
    params = Params(**{field.name: getattr(args, field.name) for field in attrs.fields(Params)})
    try:
        run = load(args.scenario, args.impl, params.variant)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    if run is None:
        print(json.dumps({"ok": False, "missing": PACKAGES[args.impl]}))
        return 0
    print(json.dumps({"ok": True, "metrics": run_one(run, args.scenario, params)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
