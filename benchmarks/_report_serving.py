"""Serving over HTTP: events per second to one SSE client and to 100 on one run, write-to-receipt
latency over SSE on loopback, and backpressure from a slow HTTP client: plan, describe, judge.

trioflow runs under ``trioflow serve`` (hypercorn's trio worker), the anchor under its own
``WorkflowServer`` (llama-agents-server) on hypercorn's asyncio worker; the client is the same
httpx code for both (`_http_scenarios` says what each scenario measures and how).
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks._suite import Check, Outcome, Spec, find, judge

SCENARIOS = ("serve", "serve_fanout", "sse_latency", "http_backpressure")
IMPLS = ("trioflow", "anchor")
#: Clients on one run in ``serve_fanout`` (the issue's figure).
CLIENTS = 100
#: ``sse_latency``: the writer's pace, events per second (one every millisecond).
PACE = 1_000.0
#: ``http_backpressure``: the slow client's rate (events per second) and the payload.
SLOW_RATE = 2_000.0
KIB = 1024


def specs(quick: bool) -> list[Spec]:
    if quick:
        small, blobs, fanout, latency, slow = 500, 200, 50, 100, 400
    else:
        # Per run: serve 0.7 s (trioflow) to 2.7 s (the anchor), server start included; fan-out
        # 1 s to 6 s; latency 3.5 s (2 s of paced writes); backpressure 8 s at 2,000 events/s,
        # of which the second half is the steady state (trioflow's buffers hold about 2,400
        # events of 1 KiB). About 75 s in all on 2 cores.
        small, blobs, fanout, latency, slow = 20_000, 10_000, 2_000, 2_000, 16_000
    planned = [Spec("serve", impl, small) for impl in IMPLS]
    planned += [Spec("serve", impl, blobs, "1KiB", size=KIB) for impl in IMPLS]
    planned += [Spec("serve_fanout", impl, fanout, clients=CLIENTS) for impl in IMPLS]
    planned += [Spec("sse_latency", impl, latency, rate=PACE) for impl in IMPLS]
    # Seconds per run, and a steady state of thousands of events in each: one run.
    planned += [
        Spec("http_backpressure", impl, slow, rate=SLOW_RATE, size=KIB, repeat=1) for impl in IMPLS
    ]
    return planned


def describe(outcome: Outcome) -> str:
    m = outcome.metrics
    scenario = outcome.spec.scenario
    if scenario == "serve":
        return f"{m['rate']:>12,.0f} events/s   first event {m['first_ms']:,.1f} ms after the POST"
    if scenario == "serve_fanout":
        return (
            f"{m['rate']:>12,.0f} events/s summed over {m['clients']:.0f} clients"
            f" ({m['rate_per_client']:,.0f} each)   first event {m['first_ms']:,.1f} ms"
        )
    if scenario == "sse_latency":
        return (
            f"{m['p50_us']:>12,.0f} µs p50   p99 {m['p99_us']:,.0f} µs   max {m['max_us']:,.0f} µs"
        )
    return (
        f"{m['producer_rate']:>12,.0f} events/s written for a client reading"
        f" {m['client_rate']:,.0f}/s ({m['producer_ratio']:.2f}x)   server RSS"
        f" +{m['server_rss_growth_mib']:,.1f} MiB   up to {m['lag_events']:,.0f} events ahead"
    )


def checks(outcomes: Sequence[Outcome]) -> list[Check]:
    def of(scenario: str, label: str) -> Outcome | None:
        return find(outcomes, scenario, label)

    found = [
        judge(
            "serve events/s: trioflow / anchor",
            [of("serve", "trioflow"), of("serve", "anchor")],
            lambda m: m[0]["rate"] / m[1]["rate"],
            "x",
            ">= 1.5x",
            lambda v: v >= 1.5,
        ),
        judge(
            "serve events/s, 1 KiB events: trioflow / anchor",
            [of("serve", "trioflow (1KiB)"), of("serve", "anchor (1KiB)")],
            lambda m: m[0]["rate"] / m[1]["rate"],
            "x",
            ">= 1.5x",
            lambda v: v >= 1.5,
        ),
        # Information: both servers let many clients watch one run; trioflow encodes each event
        # once for all of them, the anchor once per client.
        judge(
            f"serve, {CLIENTS} clients on one run, events/s summed: trioflow / anchor",
            [of("serve_fanout", "trioflow"), of("serve_fanout", "anchor")],
            lambda m: m[0]["rate"] / m[1]["rate"],
            "x",
        ),
        judge(
            f"serve, {CLIENTS} clients on one run: summed events/s / one client's, trioflow",
            [of("serve_fanout", "trioflow"), of("serve", "trioflow")],
            lambda m: m[0]["rate"] / m[1]["rate"],
            "x",
        ),
        judge(
            f"serve, {CLIENTS} clients on one run: summed events/s / one client's, anchor",
            [of("serve_fanout", "anchor"), of("serve", "anchor")],
            lambda m: m[0]["rate"] / m[1]["rate"],
            "x",
        ),
        judge(
            "sse latency p50: trioflow",
            [of("sse_latency", "trioflow")],
            lambda m: m[0]["p50_us"],
            " µs",
        ),
        judge(
            "sse latency p99: trioflow",
            [of("sse_latency", "trioflow")],
            lambda m: m[0]["p99_us"],
            " µs",
        ),
        judge(
            "sse latency p99: anchor / trioflow",
            [of("sse_latency", "anchor"), of("sse_latency", "trioflow")],
            lambda m: m[0]["p99_us"] / m[1]["p99_us"],
            "x",
        ),
        judge(
            "http backpressure: producer / client rate, trioflow",
            [of("http_backpressure", "trioflow")],
            lambda m: m[0]["producer_ratio"],
            "x",
            "within 10%",
            lambda v: 0.9 <= v <= 1.1,
        ),
        # Information: the anchor's stream is unbounded, so its step runs ahead.
        judge(
            "http backpressure: producer / client rate, anchor",
            [of("http_backpressure", "anchor")],
            lambda m: m[0]["producer_ratio"],
            "x",
        ),
        judge(
            "server RSS growth: trioflow",
            [of("http_backpressure", "trioflow")],
            lambda m: m[0]["server_rss_growth_mib"],
            " MiB",
            "<= 16 MiB",
            lambda v: v <= 16,
        ),
        judge(
            "server RSS growth: anchor",
            [of("http_backpressure", "anchor")],
            lambda m: m[0]["server_rss_growth_mib"],
            " MiB",
        ),
    ]
    return [c for c in found if c is not None]
