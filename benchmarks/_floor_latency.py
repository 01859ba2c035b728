"""The floor's write-to-receipt latency: bare trio, no workflow runtime in between.

One task sends ``n`` small attrs events through a bounded memory channel to a consumer task,
awaiting ``trio.sleep(0)`` after each send (``--variant burst``: not). The buffer holds 256
events, as trioflow's default ``stream_buffer`` does. ``send()`` is a full checkpoint even when
there is room (it yields to the scheduler), so even the burst writer lets the consumer run at
every event; trioflow's write does not yield while there is room, which is why it can beat this
floor.
The time is taken just before ``send()``, after the event is built, and the consumer notes its
clock as soon as ``receive()`` hands the event over.

``latency_metrics`` and ``cancel_metrics`` (the figures trioflow and the anchor report; the
floor has no cancel scenario) live here because this module needs nothing but trio, so the
anchor's module can import them without trioflow.
"""

from __future__ import annotations

import statistics
import time

import attrs
import trio

from benchmarks._common import Metrics, Params

BUFFER = 256
# The writer's two ways of writing: a checkpoint after each event, or back to back.
VARIANTS = ("", "burst")


@attrs.frozen
class Stamp:
    i: int


def check_variant(variant: str) -> bool:
    """Whether the writer pauses (awaits a checkpoint) after each event."""
    if variant not in VARIANTS:
        raise ValueError(f"latency variant must be one of {VARIANTS}, not {variant!r}")
    return variant != "burst"


def latency_metrics(latencies: list[float]) -> Metrics:
    """p50, p99 and max of ``latencies`` (seconds) in microseconds, and how many there were."""
    # "inclusive": the sample is the whole population of this run's events.
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "events": len(latencies),
        "p50_us": cuts[49] * 1e6,
        "p99_us": cuts[98] * 1e6,
        "max_us": max(latencies) * 1e6,
    }


def cancel_metrics(
    steps: int,
    to_last_async: list[float],
    to_last_step: list[float],
    to_run_over: list[float],
    tasks_left: int,
    threads_left: int,
) -> Metrics:
    """The cancel figures: medians over the rounds of the seconds from cancelling to the last
    async step's exit, to the last step's exit and to the run being over, in milliseconds."""
    return {
        "rounds": len(to_last_step),
        "steps": steps,
        "async_ms": statistics.median(to_last_async) * 1e3,
        "cancel_ms": statistics.median(to_last_step) * 1e3,
        "exit_ms": statistics.median(to_run_over) * 1e3,
        "tasks_left": tasks_left,
        "threads_left": threads_left,
    }


async def _latency(n: int, pause: bool) -> Metrics:
    send, receive = trio.open_memory_channel[Stamp | None](BUFFER)
    written_at = [0.0] * n
    latencies: list[float] = []

    async def produce() -> None:
        async with send:
            for i in range(n):
                ev = Stamp(i=i)
                written_at[i] = time.perf_counter()
                await send.send(ev)
                if pause:
                    await trio.sleep(0)
            await send.send(None)  # the terminal event

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with receive:
            async for ev in receive:
                now = time.perf_counter()
                if ev is None:
                    break
                latencies.append(now - written_at[ev.i])
    assert len(latencies) == n, (len(latencies), n)
    return latency_metrics(latencies)


def latency(p: Params) -> Metrics:
    return trio.run(_latency, p.n, check_variant(p.variant))
