"""Routing, stream throughput and memory under a slow consumer: plan, describe, judge."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks._suite import Check, Outcome, Spec, find, judge

SCENARIOS = ("routing", "stream", "memory")


def specs(quick: bool) -> list[Spec]:
    hops, anchor_hops, ticks = (2_000, 500, 2_000) if quick else (200_000, 20_000, 50_000)
    blobs, slow = ((5_000,), 0.2) if quick else ((100_000, 200_000, 400_000), 2.0)
    planned = [
        Spec("routing", "trioflow", hops),
        Spec("routing", "anchor", anchor_hops),
        Spec("routing", "floor", hops, "buffer0"),
        Spec("routing", "floor", hops, "buffer1"),
        Spec("stream", "trioflow", ticks),
        Spec("stream", "anchor", ticks),
        Spec("stream", "floor", ticks),
    ]
    for n in blobs:
        # Memory figures are not noisy the way speed is: one run each.
        planned.append(Spec("memory", "trioflow", n, slow_seconds=slow, repeat=1))
        planned.append(Spec("memory", "anchor", n, "yield", slow, repeat=1))
        planned.append(Spec("memory", "anchor", n, "noyield", slow, repeat=1))
    return planned


def describe(outcome: Outcome) -> str:
    m = outcome.metrics
    if outcome.spec.scenario == "routing":
        return f"{m['rate']:>12,.0f} hops/s"
    if outcome.spec.scenario == "stream":
        first = f"first event {m['first_ms']:,.2f} ms (writer loop {m['loop_ms']:,.0f} ms)"
        return f"{m['rate']:>12,.0f} events/s   {first}"
    return f"{m['rss_growth_mib']:>12,.1f} MiB RSS growth   ({m['seconds']:.1f} s)"


def checks(outcomes: Sequence[Outcome]) -> list[Check]:
    def faster(scenario: str, than: str, target: float | None) -> Check | None:
        unit = "hops/s" if scenario == "routing" else "events/s"
        return judge(
            f"{scenario} {unit}: trioflow / {than}",
            [find(outcomes, scenario, "trioflow"), find(outcomes, scenario, than)],
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
        judge(
            "stream first event: trioflow",
            [find(outcomes, "stream", "trioflow")],
            lambda m: m[0]["first_ms"],
            " ms",
            "<= 5 ms",
            lambda v: v <= 5,
        ),
        # Information, no target: how late the anchor delivers (DESIGN.md: only after the loop).
        judge(
            "stream first event: anchor, ms after its writer loop ended",
            [find(outcomes, "stream", "anchor")],
            lambda m: m[0]["first_ms"] - m[0]["loop_ms"],
            " ms",
        ),
    ]
    for o in outcomes:
        if o.spec.scenario == "memory" and o.spec.impl == "trioflow":
            found.append(
                judge(
                    f"memory RSS growth: trioflow, N={o.spec.n:,}",
                    [o],
                    lambda m: m[0]["rss_growth_mib"],
                    " MiB",
                    "<= 8 MiB",
                    lambda v: v <= 8,
                )
            )
    return [c for c in found if c is not None]
