"""Shared vocabulary of the benchmark implementations.

Every implementation module (``_trioflow``, ``_anchor``, ``_floor``, and any
``_<impl>_<topic>`` module beside them) exposes ``SCENARIOS``, a mapping from scenario name to a
function that runs one measurement in the current process and returns its metrics.
``_scenario`` picks one, runs it once and prints the metrics as JSON.

Metrics map names to numbers (each figure is reported as the median over the repetitions) or to
lists (a series for the plots, such as ``[[seconds, rss_mib], ...]``, kept from the last run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import attrs

Metrics = dict[str, Any]


@attrs.frozen
class Params:
    """What one measurement is asked to do."""

    n: int
    # memory: how long the consumer stays slow (1 ms per event) before it drains fast.
    slow_seconds: float = 2.0
    # anchor memory: "yield" (writer awaits asyncio.sleep(0) after each write) or "noyield".
    variant: str = ""
    # events per second at which a paced side (a slow consumer, a paced writer) goes; 0: none.
    rate: float = 0.0
    # clients watching one run (serving scenarios).
    clients: int = 1
    # payload bytes per event, where a scenario lets you choose.
    size: int = 0


Scenario = Callable[[Params], Metrics]
Scenarios = Mapping[str, Scenario]

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
