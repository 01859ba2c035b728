"""Shared vocabulary of the benchmark implementations.

An implementation of a scenario is a function ``(Params) -> Metrics`` in one of the modules
``_trioflow*``, ``_anchor*`` and ``_floor*``, that runs one measurement in the current process.
`benchmarks._registry` names it (``"module:function"``) for its scenario; ``_scenario`` looks it
up there, runs it once and prints the metrics as JSON.

Metrics map names to numbers (each figure is reported as the median over the repetitions) or to
lists (a series for the plots, such as ``[[seconds, rss_mib], ...]``, kept from the last run).
"""

from __future__ import annotations

import gc
import math
import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import attrs

Metrics = dict[str, Any]


@attrs.frozen
class Params:
    """What one measurement is asked to do: the one declaration of a measurement's parameters
    (the registry sets them, ``python -m benchmarks._scenario`` takes each as ``--<name>``)."""

    n: int
    # which variant of an implementation (the implementation's function says what it means).
    variant: str = ""
    # memory: how long the consumer stays slow (1 ms per event) before it drains fast.
    slow_seconds: float = 2.0
    # events per second at which a paced side (a slow consumer, a paced writer) goes; 0: none.
    rate: float = 0.0
    # clients watching one run (serving scenarios).
    clients: int = 1
    # payload bytes per event, where a scenario lets you choose.
    size: int = 0
    # runs of the workflow within one measurement, where a scenario times several (chain, fanin).
    runs: int = 1


Scenario = Callable[[Params], Metrics]

# Seconds the slow consumer sleeps per event during its slow phase.
SLOW_SLEEP = 0.001


def payload() -> str:
    """A fresh 1 KiB string: every event gets its own object, as real payloads would."""
    return os.urandom(512).hex()


def even(n: int) -> int:
    """Round up to an even hop count: a ping-pong round trip is two hops."""
    return n + (n % 2)


def stream_metrics(
    n: int, elapsed: float, first_latency: float, first_write_at: float, loop_done_at: float
) -> Metrics:
    """The figures every stream scenario reports (times in seconds in, milliseconds out)."""
    return {
        "events": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "first_ms": first_latency * 1e3,
        "loop_ms": (loop_done_at - first_write_at) * 1e3,
    }


#: The width of a rate window of the backpressure series, in seconds.
WINDOW = 0.1


def rate_figures(
    start: float, written: Sequence[float], received: Sequence[float], window: float = WINDOW
) -> Metrics:
    """The backpressure figures from the write and receipt timestamps (``time.perf_counter()``
    values; ``start``: when the run began). Shared by the scenarios of every implementation.

    A step writes 1 KiB events as fast as it can; the consumer reads them at a fixed, slower
    rate (``--rate``, paced to a schedule). If the stream pushes back, the producer's rate
    follows the consumer's once the buffer is full and memory stays flat; if it does not, the
    producer runs at its own speed and the events pile up in memory. The scenarios
    (``_trioflow_backpressure``, ``_anchor_backpressure``) record when each event was written
    and when it was received; the figures are computed from those timestamps here, so both
    implementations are measured with the same ruler:

    - ``producer_series`` / ``consumer_series``: ``[[seconds, events_per_s], ...]``, events
      counted in consecutive 100 ms windows from the start of the run (for the plots);
    - ``steady_ratio``: producer rate / consumer rate over the second half of the producer's
      activity (from halfway between its first and last write to its last write). The first
      half holds the start-up burst that fills the buffer; and a producer that does not wait
      finishes long before the consumer, so "the second half of the whole run" would compare a
      consumer with an idle producer;
    - RSS growth and RSS over time come from ``_scenario.with_rss``.
    """
    if not written or not received:
        raise ValueError("backpressure: no events were written or received")
    end = max(written[-1], received[-1]) - start
    first, last = written[0], written[-1]
    # The producer's steady state: the second half of its activity (see above).
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


def current_rss() -> int:
    """This process's resident memory now, in bytes (Linux: ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_now() -> tuple[int, int]:
    """RSS in bytes and the objects the garbage collector tracks, after a collection."""
    gc.collect()
    return current_rss(), len(gc.get_objects())


def parked_metrics(
    n: int,
    before: tuple[int, int],
    after: tuple[int, int],
    tasks: int,
    start_s: float,
    cancel_s: float,
) -> Metrics:
    return {
        "runs": n,
        "start_ms": start_s * 1e3,
        "cancel_ms": cancel_s * 1e3,
        "rss_kib_per_run": (after[0] - before[0]) / 1024 / n,
        "objects_per_run": (after[1] - before[1]) / n,
        "tasks_per_run": tasks / n,
    }


def chain_metrics(n: int, times: list[float], tasks: list[int]) -> Metrics:
    run = statistics.median(times)
    return {
        "steps": n,
        "runs": len(times),
        "run_ms": run * 1e3,
        "first_run_ms": times[0] * 1e3,
        "us_per_step": run / n * 1e6,
        "tasks_per_run": statistics.median(tasks),
    }


def fanin_metrics(n: int, times: list[float]) -> Metrics:
    run = statistics.median(times)
    return {
        "events": n,
        "runs": len(times),
        "run_ms": run * 1e3,
        "rate": n / run,
    }
