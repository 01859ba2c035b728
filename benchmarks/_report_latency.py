"""Write-to-receipt latency and cancellation: plan, describe, judge.

What is measured, and how, is in the docstrings of ``_trioflow_latency`` (trioflow),
``_anchor_latency`` (how the anchor differs) and ``_floor_latency`` (bare trio).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from benchmarks._suite import Check, Outcome, Spec, find, judge

SCENARIOS = ("latency", "cancel")


def specs(quick: bool) -> list[Spec]:
    # Every run takes well under a second at these sizes: the process start dominates.
    events, rounds = (200, 3) if quick else (20_000, 100)
    planned = []
    for variant in ("", "burst"):
        planned += [Spec("latency", impl, events, variant) for impl in ("trioflow", "anchor")]
        planned.append(Spec("latency", "floor", events, variant))
    planned += [Spec("cancel", "trioflow", rounds), Spec("cancel", "anchor", rounds)]
    return planned


def _duration(us: float) -> str:
    if us < 1e3:
        return f"{us:.1f} µs"
    if us < 1e6:
        return f"{us / 1e3:.1f} ms"
    return f"{us / 1e6:.2f} s"


def describe(outcome: Outcome) -> str:
    m = outcome.metrics
    if outcome.spec.scenario == "latency":
        return "   ".join(
            f"{name} {_duration(m[key]):>8}"
            for name, key in (("p50", "p50_us"), ("p99", "p99_us"), ("max", "max_us"))
        )
    return (
        f"cancel {m['cancel_ms']:.2f} ms (async steps {m['async_ms']:.2f} ms, "
        f"run over {m['exit_ms']:.2f} ms); "
        f"tasks left {m['tasks_left']:g}; threads left {m['threads_left']:g}"
    )


def checks(outcomes: Sequence[Outcome]) -> list[Check]:
    def lower(key: str, variant: str, than: str) -> Check | None:
        # Lower is better, so the ratio says how many times lower trioflow's figure is.
        suffix = f" ({variant})" if variant else ""
        return judge(
            f"latency {key.removesuffix('_us')}{suffix}: {than} / trioflow",
            [
                find(outcomes, "latency", than + suffix),
                find(outcomes, "latency", "trioflow" + suffix),
            ],
            lambda m: m[0][key] / m[1][key],
            "x",
        )

    def figure(name: str, scenario: str, label: str, key: str, unit: str) -> Check | None:
        return judge(name, [find(outcomes, scenario, label)], lambda m: m[0][key], unit)

    def left(what: str, label: str, target: bool) -> Check | None:
        outcome = find(outcomes, "cancel", label)
        check = judge(
            f"cancel {what} left: {label}",
            [outcome],
            lambda m: m[0][f"{what}_left"],
            "",
            "== 0" if target else "",
            (lambda v: v == 0) if target else None,
        )
        if check is None or outcome is None or not outcome.ok:
            return check
        # A count: judge's two decimals would only say that it is not one.
        return attrs.evolve(check, measured=f"{outcome.metrics[f'{what}_left']:g}")

    found = [
        lower("p50_us", "", "anchor"),
        lower("p99_us", "", "anchor"),
        lower("p50_us", "", "floor"),
        lower("p99_us", "", "floor"),
        figure("latency p99: trioflow", "latency", "trioflow", "p99_us", " µs"),
        left("tasks", "trioflow", True),
        left("threads", "trioflow", True),
        figure("cancel to every step's exit: trioflow", "cancel", "trioflow", "cancel_ms", " ms"),
        figure("cancel to every step's exit: anchor", "cancel", "anchor", "cancel_ms", " ms"),
        figure("cancel to async steps' exit: trioflow", "cancel", "trioflow", "async_ms", " ms"),
        figure("cancel to async steps' exit: anchor", "cancel", "anchor", "async_ms", " ms"),
        left("tasks", "anchor", False),
        left("threads", "anchor", False),
    ]
    return [c for c in found if c is not None]
