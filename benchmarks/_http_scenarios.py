"""The serving scenarios, written once against a `Target`: how to start a server for the
``Emitter`` workflow and how to talk to it. ``_trioflow_serving`` and ``_anchor_serving`` each
define a target; everything the client does is then the same code for both.

Every scenario starts its server in a child process on 127.0.0.1 (a free port), runs one small
warm-up run so that neither server pays for first-request work inside the figure, measures, and
stops the server (``--quick`` alone keeps one server per target for all its scenarios:
`servers_kept`). The client is this (trio) process, reading with httpx (`_http_client`); on 2
cores that is one core for the server and one for the client.

- ``serve``: one client; time from the POST that starts a run of ``n`` ticks (``size`` bytes of
  payload each) to the arrival of its StopEvent. ``rate`` is ticks per second over that time,
  ``first_ms`` the time from the POST to the first tick.
- ``serve_fanout``: ``clients`` clients watch one run. The run first asks for input
  (InputRequiredEvent) and waits; once every client's response has started (the server has
  attached them all) the answer is POSTed and the run writes its ``n`` ticks. Every client must
  receive every tick. ``rate`` is ticks delivered per second summed over the clients, from the
  answer to the last client's StopEvent. All 100 clients live in this one process, which
  measured at about 90% of a core against trioflow: that figure is a floor set by the client.
- ``sse_latency``: one client attached before the run starts writing (same gate); the step
  writes ``n`` ticks paced at ``rate`` per second (a sleep after each write, so each tick is
  delivered on a quiet server: the latency of one event, not of a queue). Each tick carries the
  server's ``perf_counter()`` taken just before its write; the client subtracts it from its own
  at arrival: p50, p99 and max in microseconds.
- ``http_backpressure``: one client that reads ``rate`` ticks per second (``size``-byte
  payloads), with a small socket receive buffer, while the step writes as fast as it may. The
  producer's rate comes from the write times the ticks carry: over the second half of the
  ticks (the first half lets every buffer between the step and the client fill) it is compared
  with the client's own rate over the same ticks. The server process's RSS is sampled every
  20 ms (psutil, from a thread here); ``server_rss_growth_mib`` is its peak minus its value
  just before the run was started (after the warm-up). Series for the plots, with t in
  seconds after the answer that starts the writes: ``server_rss_series`` ``[[t, MiB]]``;
  ``producer_series`` and ``consumer_series`` ``[[t, ticks/s]]`` in 0.1 s bins;
  ``written_series`` and ``received_series`` ``[[t, ticks so far]]``, the same two as
  cumulative counts (the gap between them is what the server holds).
"""

from __future__ import annotations

import bisect
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import attrs
import httpx
import trio

from benchmarks._common import Metrics, Params
from benchmarks._http_client import TIMEOUT, Reading, read_stream
from benchmarks._http_common import (
    MIB,
    RssSampler,
    Server,
    check_shared_clock,
    percentile,
    rate_series,
    server,
)

#: Seconds any one scenario may take, server start excluded, beyond twice its paced part
#: (``n / rate``). Should the suite's own limit (60 s with --quick) kill this process first, the
#: server still gets its SIGTERM (`server_process`).
TIME_LIMIT = 50.0
#: Ticks of the unmeasured warm-up run.
WARM_UP = 50
#: The slow client's socket receive buffer (the kernel doubles it). Small, so that what the
#: client has not read yet stays in the server, where the comparison is.
SLOW_RCVBUF = 32 * 1024
#: Width of the bins of the producer and consumer rate series.
BIN_SECONDS = 0.1
#: How often the server's RSS is sampled.
RSS_EVERY = 0.02
#: Points kept of the RSS series.
MAX_POINTS = 500


@attrs.frozen
class Target:
    """A server for the ``Emitter`` workflow (start fields ``n``, ``size``, ``interval``,
    ``gated``) and the requests that drive it."""

    #: The server's command line, and the text on its stdout that precedes its URL.
    argv: tuple[str, ...]
    marker: str
    #: POST a run with these start fields; its id.
    start: Callable[[httpx.AsyncClient, Mapping[str, Any]], Awaitable[str]]
    #: Path of the run's SSE stream, from its first event.
    events_path: Callable[[str], str]
    #: Answer the run's input request (the ``Go`` event), which starts its writes.
    answer: Callable[[httpx.AsyncClient, str], Awaitable[None]]
    #: Clients attached to the run, if the server says.
    watchers: Callable[[httpx.AsyncClient, str], Awaitable[int]] | None = None


def serve(target: Target, p: Params) -> Metrics:
    return _in_server(target, _serve, p)


def serve_fanout(target: Target, p: Params) -> Metrics:
    return _in_server(target, _fanout, p)


def sse_latency(target: Target, p: Params) -> Metrics:
    return _in_server(target, _latency, p)


def http_backpressure(target: Target, p: Params) -> Metrics:
    return _in_server(target, _backpressure, p)


Run = Callable[[Target, Server, Params], Awaitable[Metrics]]


def _in_server(target: Target, run: Run, p: Params) -> Metrics:
    check_shared_clock()
    with server(target.argv, target.marker) as running:
        return trio.run(_bounded, run, target, running, p)


async def _bounded(run: Run, target: Target, server: Server, p: Params) -> Metrics:
    with trio.fail_after(TIME_LIMIT + (2 * p.n / p.rate if p.rate > 0 else 0.0)):
        return await run(target, server, p)


def _client(url: str, *, rcvbuf: int = 0) -> httpx.AsyncClient:
    options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)] if rcvbuf else []
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        socket_options=options,
    )
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=TIMEOUT)


async def _warm_up(target: Target, client: httpx.AsyncClient, size: int) -> None:
    run = await target.start(client, {"n": WARM_UP, "size": size})
    reading = Reading()
    await read_stream(client, target.events_path(run), reading)
    _expect(reading, WARM_UP)


def _expect(reading: Reading, n: int) -> None:
    if reading.ticks != n:
        raise RuntimeError(f"a client received {reading.ticks} ticks, not {n}")


async def _gated(
    target: Target,
    client: httpx.AsyncClient,
    run: str,
    readings: list[Reading],
    *,
    rate: float = 0.0,
) -> tuple[float, float]:
    """Attach one client per reading to the gated ``run``, answer it once all are attached,
    and read to the end. Returns (seconds the attaching took, perf_counter of the answer)."""
    path = target.events_path(run)
    attached = 0
    all_attached = trio.Event()

    def connected() -> None:
        nonlocal attached
        attached += 1
        if attached == len(readings):
            all_attached.set()

    async with trio.open_nursery() as nursery:
        began = time.perf_counter()
        for reading in readings:
            nursery.start_soon(
                partial(read_stream, client, path, reading, connected=connected, rate=rate)
            )
        await all_attached.wait()
        attaching = time.perf_counter() - began
        if target.watchers is not None and (seen := await target.watchers(client, run)) != len(
            readings
        ):
            raise RuntimeError(f"the server sees {seen} watchers, not {len(readings)}")
        answered = time.perf_counter()
        await target.answer(client, run)
    return attaching, answered


async def _serve(target: Target, server: Server, p: Params) -> Metrics:
    async with _client(server.url) as client:
        await _warm_up(target, client, p.size)
        posted = time.perf_counter()
        run = await target.start(client, {"n": p.n, "size": p.size})
        reading = Reading()
        await read_stream(client, target.events_path(run), reading)
    _expect(reading, p.n)
    elapsed = reading.stopped - posted
    return {
        "events": p.n,
        "size": p.size,
        "seconds": elapsed,
        "rate": p.n / elapsed,
        "first_ms": (reading.first - posted) * 1e3,
    }


async def _fanout(target: Target, server: Server, p: Params) -> Metrics:
    async with _client(server.url) as client:
        await _warm_up(target, client, p.size)
        run = await target.start(client, {"n": p.n, "size": p.size, "gated": True})
        readings = [Reading() for _ in range(p.clients)]
        attaching, answered = await _gated(target, client, run, readings)
    for reading in readings:
        _expect(reading, p.n)
    elapsed = max(r.stopped for r in readings) - answered
    return {
        "clients": p.clients,
        "events": p.n,
        "seconds": elapsed,
        "rate": p.clients * p.n / elapsed,
        "rate_per_client": p.n / elapsed,
        "first_ms": statistics.median(r.first - answered for r in readings) * 1e3,
        "attach_ms": attaching * 1e3,
    }


async def _latency(target: Target, server: Server, p: Params) -> Metrics:
    if p.rate <= 0:
        raise ValueError("sse_latency needs --rate: ticks per second the writer is paced at")
    async with _client(server.url) as client:
        await _warm_up(target, client, p.size)
        fields = {"n": p.n, "size": p.size, "interval": 1 / p.rate, "gated": True}
        run = await target.start(client, fields)
        reading = Reading(stamps=True)
        await _gated(target, client, run, [reading])
    _expect(reading, p.n)
    latencies = sorted(r - w for w, r in zip(reading.written, reading.received, strict=True))
    if latencies[0] < 0:
        raise RuntimeError(f"a tick arrived {-latencies[0] * 1e6:.0f} us before it was written")
    return {
        "events": p.n,
        "p50_us": percentile(latencies, 0.50) * 1e6,
        "p99_us": percentile(latencies, 0.99) * 1e6,
        "max_us": latencies[-1] * 1e6,
        "mean_us": statistics.fmean(latencies) * 1e6,
    }


async def _backpressure(target: Target, server: Server, p: Params) -> Metrics:
    if p.rate <= 0:
        raise ValueError("http_backpressure needs --rate: ticks per second the client reads")
    async with _client(server.url, rcvbuf=SLOW_RCVBUF) as client:
        await _warm_up(target, client, p.size)
        with RssSampler(server.process.pid, RSS_EVERY) as rss:
            run = await target.start(client, {"n": p.n, "size": p.size, "gated": True})
            reading = Reading(stamps=True)
            _, answered = await _gated(target, client, run, [reading], rate=p.rate)
    _expect(reading, p.n)
    written, received = reading.written, reading.received
    # Steady state: the second half of the ticks. By then the buffers between the step and the
    # client (the server's history and stream buffer, the sockets) have filled, if they ever do.
    # Rates are least-squares slopes of tick number over time there, not first-to-last: a
    # producer held back by a bounded buffer writes in bursts (trioflow: a client takes up to
    # ``retain`` events at once, freeing that much room), and a slope averages them out.
    half = p.n // 2
    producer = _rate(written[half:])
    consumer = _rate(received[half:])
    # How far the step was ahead of the client: ticks written but not yet received, at each
    # arrival (every tick is eventually received, so `written` is the complete record).
    lag = max(bisect.bisect_right(written, r) - (i + 1) for i, r in enumerate(received))
    baseline = rss.samples[0][1]
    step = max(1, len(rss.samples) // MAX_POINTS)
    return {
        "events": p.n,
        "size": p.size,
        "seconds": reading.stopped - answered,
        "client_rate_target": p.rate,
        "client_rate": consumer,
        "producer_rate": producer,
        "producer_ratio": producer / consumer,
        "lag_events": lag,
        "server_rss_baseline_mib": baseline / MIB,
        "server_rss_growth_mib": (max(v for _, v in rss.samples) - baseline) / MIB,
        "server_rss_series": [
            [round(t - answered, 4), round(v / MIB, 2)] for t, v in rss.samples[::step]
        ],
        "producer_series": rate_series(written, answered, BIN_SECONDS),
        "consumer_series": rate_series(received, answered, BIN_SECONDS),
        "written_series": _cumulative(written, answered),
        "received_series": _cumulative(received, answered),
    }


def _rate(times: list[float]) -> float:
    """Events per second: the least-squares slope of event number over ``times``."""
    if len(times) < 2 or times[-1] <= times[0]:  # all at once (a tiny --quick run)
        return (len(times) - 1) / 1e-6
    return statistics.linear_regression(times, range(len(times))).slope


def _cumulative(times: list[float], since: float) -> list[list[float]]:
    """``[[t, ticks so far], ...]`` (at most about `MAX_POINTS` points)."""
    step = max(1, len(times) // MAX_POINTS)
    points = [[round(times[i] - since, 4), i + 1] for i in range(0, len(times), step)]
    return [*points, [round(times[-1] - since, 4), len(times)]] if times else []
