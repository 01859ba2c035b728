"""Backpressure in action, in-process: plan, describe, judge.

A step writes 1 KiB events as fast as it can; the consumer reads them at a fixed, slower rate
(``--rate``, paced to a schedule). If the stream pushes back, the producer's rate follows the
consumer's once the buffer is full and memory stays flat; if it does not, the producer runs at
its own speed and the events pile up in memory. The scenarios (``_trioflow_backpressure``,
``_anchor_backpressure``) record when each event was written and when it was received; the
figures are computed from those timestamps here, by `rate_figures`, so both implementations are
measured with the same ruler:

- ``producer_series`` / ``consumer_series``: ``[[seconds, events_per_s], ...]``, events counted
  in consecutive 100 ms windows from the start of the run (for the plots);
- ``steady_ratio``: producer rate / consumer rate over the second half of the producer's activity
  (from halfway between its first and last write to its last write). The first half holds the
  start-up burst that fills the buffer; and a producer that does not wait finishes long before
  the consumer, so "the second half of the whole run" would compare a consumer with an idle
  producer;
- RSS growth and RSS over time come from ``_scenario.with_rss``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from benchmarks._common import Metrics
from benchmarks._suite import Check, Outcome, Spec, find, judge

SCENARIOS = ("backpressure",)

#: The consumer's pace in events per second, and the width of a rate window in seconds.
RATE = 5_000.0
WINDOW = 0.1


def specs(quick: bool) -> list[Spec]:
    # Full: 15,000 events at 5,000/s, about 3 s a run; quick: a tenth of that.
    n = 1_500 if quick else 15_000
    return [
        Spec("backpressure", "trioflow", n, rate=RATE, repeat=3),
        # One run: the anchor's figures are information, and its producer is not paced at all.
        Spec("backpressure", "anchor", n, "yield", rate=RATE, repeat=1),
    ]


def describe(outcome: Outcome) -> str:
    m = outcome.metrics
    return (
        f"producer {m['steady_producer_rate']:,.0f} ev/s vs consumer "
        f"{m['steady_consumer_rate']:,.0f} ev/s (ratio {m['steady_ratio']:,.2f}); "
        f"RSS +{m['rss_growth_mib']:,.1f} MiB"
    )


def checks(outcomes: Sequence[Outcome]) -> list[Check]:
    trioflow = find(outcomes, "backpressure", "trioflow")
    anchor = find(outcomes, "backpressure", "anchor (yield)")
    found = [
        judge(
            "backpressure: producer / consumer rate, trioflow",
            [trioflow],
            lambda m: m[0]["steady_ratio"],
            "x",
            "0.9x–1.1x",  # noqa: RUF001  (an en dash: a range, as the table prints it)
            lambda v: 0.9 <= v <= 1.1,
        ),
        judge(
            "backpressure RSS growth: trioflow",
            [trioflow],
            lambda m: m[0]["rss_growth_mib"],
            " MiB",
            "<= 8 MiB",
            lambda v: v <= 8,
        ),
        # Information: the anchor's stream is unbounded, so its producer never waits.
        judge(
            "backpressure: producer / consumer rate, anchor",
            [anchor],
            lambda m: m[0]["steady_ratio"],
            "x",
        ),
        judge(
            "backpressure RSS growth: anchor",
            [anchor],
            lambda m: m[0]["rss_growth_mib"],
            " MiB",
        ),
    ]
    return [c for c in found if c is not None]


def rate_figures(
    start: float, written: Sequence[float], received: Sequence[float], window: float = WINDOW
) -> Metrics:
    """The backpressure figures from the write and receipt timestamps (``time.perf_counter()``
    values; ``start``: when the run began). Shared by the scenarios of every implementation."""
    if not written or not received:
        raise ValueError("backpressure: no events were written or received")
    end = max(written[-1], received[-1]) - start
    first, last = written[0], written[-1]
    # The producer's steady state: the second half of its activity (see the module docstring).
    lo = first + (last - first) / 2
    span = last - lo
    produced = sum(1 for t in written if lo <= t <= last)
    consumed = sum(1 for t in received if lo <= t <= last)
    if span <= 0:
        raise ValueError(f"backpressure: all {len(written)} writes at one instant; more events")
    # A consumer that received nothing in the window (a producer done in a blink, at a tiny
    # --quick size) counts as one event, so the ratio stays finite JSON: a lower bound then.
    consumed = max(consumed, 1)
    return {
        "events": len(received),
        "seconds": end,
        "write_seconds": last - first,
        "steady_producer_rate": produced / span,
        "steady_consumer_rate": consumed / span,
        "steady_ratio": produced / consumed,
        # The steady window, in seconds from the start of the run (the plots shade it).
        "steady_from_s": lo - start,
        "steady_to_s": last - start,
        "producer_series": _series(start, end, written, window),
        "consumer_series": _series(start, end, received, window),
    }


def _series(start: float, end: float, stamps: Sequence[float], window: float) -> list[list[float]]:
    """Events per second in consecutive windows: ``[[window midpoint, rate], ...]``. The last,
    partial window is divided by its own width, and dropped if under half a window wide (a few
    events over a sliver of time make a meaningless spike)."""
    count = math.ceil(end / window)
    counts = [0] * count
    for t in stamps:
        counts[min(int((t - start) / window), count - 1)] += 1
    series = []
    for k, c in enumerate(counts):
        width = min(window, end - k * window)
        if width < window / 2:
            break
        series.append([round(k * window + width / 2, 4), round(c / width, 1)])
    return series
