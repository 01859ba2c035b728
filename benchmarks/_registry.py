"""The suite: every scenario, declared once, in `SCENARIOS`.

A `Scenario` says what it measures (``about``), at which sizes (``n``: full and ``--quick``),
with which parameters (``params``, ``quick_params``: fields of `benchmarks._common.Params`), by
which implementations (`Impl`: ``trioflow``, ``anchor`` or ``floor``, a variant, and the function
that runs it, ``"module:function"``, imported only in the measuring subprocess), how one result
reads in the table (``describe``) and how its figures are judged (``judged``: `Figure` and
`Ratio`, with a `Target` or for information). ``rss``: sample the process's RSS during the
measurement (a thread; speed scenarios go without). ``repeat``: runs to take the median of,
where the suite's ``--repeat`` would be too many (memory figures are not noisy the way speed is;
some scenarios take seconds a run).

Nothing else lists scenarios: ``python -m benchmarks`` plans from here (`specs`),
``python -m benchmarks._scenario`` finds the function to run here (`implementation`), and
``--only`` takes the names here. The durable-store scripts (``store_inprocess``,
``store_throughput``, ``store_recovery``) are also scenarios here (``durable_stream``,
``durable_serve``, ``recovery``, through ``_trioflow_durable``), and stay runnable alone
(``durability`` runs the three at their own sizes). Standalone scripts with figures of their
own stay standalone (``server_bounds``, ``cluster``, ``_http2_stalled``, a browser benchmark).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from benchmarks._common import Metrics, Params
from benchmarks._suite import (
    Figure,
    Judged,
    Ratio,
    Spec,
    at_least,
    at_most,
    between,
)

IMPLS = ("trioflow", "anchor", "floor")


@attrs.frozen
class Sizes:
    """``n`` for a full run (one measurement per size) and for ``--quick``."""

    full: tuple[int, ...]
    quick: int


def sizes(full: int | tuple[int, ...], quick: int) -> Sizes:
    return Sizes(full if isinstance(full, tuple) else (full,), quick)


@attrs.frozen
class Impl:
    """An implementation of a scenario: ``impl``'s function ``run`` (``"module:function"``),
    with ``variant`` (its label: ``impl (variant)``); ``n``, ``params`` and ``repeat`` override
    the scenario's for it."""

    impl: str
    run: str
    variant: str = ""
    n: Sizes | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict)
    quick_params: Mapping[str, Any] = attrs.field(factory=dict)
    repeat: int | None = None

    @property
    def label(self) -> str:
        return f"{self.impl} ({self.variant})" if self.variant else self.impl


@attrs.frozen
class Scenario:
    name: str
    about: str
    n: Sizes
    impls: tuple[Impl, ...]
    describe: Callable[[Metrics], str]
    judged: tuple[Judged, ...] = ()
    params: Mapping[str, Any] = attrs.field(factory=dict)
    quick_params: Mapping[str, Any] = attrs.field(factory=dict)
    repeat: int | None = None
    rss: bool = False

    def specs(self, quick: bool) -> list[Spec]:
        planned = []
        for impl in self.impls:
            n = impl.n or self.n
            fields = {**self.params, **impl.params}
            if quick:
                fields |= {**self.quick_params, **impl.quick_params}
            for size in (n.quick,) if quick else n.full:
                params = Params(n=size, variant=impl.variant, **fields)
                repeat = impl.repeat if impl.repeat is not None else self.repeat
                planned.append(Spec(self.name, impl.impl, params, repeat))
        return planned


def _duration(us: float) -> str:
    if us < 1e3:
        return f"{us:.1f} µs"
    if us < 1e6:
        return f"{us / 1e3:.1f} ms"
    return f"{us / 1e6:.2f} s"


# -- how one result reads in the table --


def _hops(m: Metrics) -> str:
    return f"{m['rate']:>12,.0f} hops/s"


def _profile(m: Metrics) -> str:
    if "trio_pct" not in m:  # the driver: no samples, a rate
        return f"{m['rate']:>12,.0f} hops/s without trio (a hand-written driver)"
    return (
        f"trio {m['trio_pct']:.0f}% (scheduler {m['scheduler_pct']:.0f}%, trio calls in tasks"
        f" {m['trio_in_task_pct']:.0f}%), runtime {m['runtime_pct']:.0f}%, program"
        f" {m['user_pct']:.0f}%; {m['samples']:.0f} samples at {m['rate']:,.0f}/s"
    )


def _stream(m: Metrics) -> str:
    first = f"first event {m['first_ms']:,.2f} ms (writer loop {m['loop_ms']:,.0f} ms)"
    return f"{m['rate']:>12,.0f} events/s   {first}"


def _memory(m: Metrics) -> str:
    return f"{m['rss_growth_mib']:>12,.1f} MiB RSS growth   ({m['seconds']:.1f} s)"


def _latency(m: Metrics) -> str:
    return "   ".join(
        f"{name} {_duration(m[key]):>8}"
        for name, key in (("p50", "p50_us"), ("p99", "p99_us"), ("max", "max_us"))
    )


def _cancel(m: Metrics) -> str:
    return (
        f"cancel {m['cancel_ms']:.2f} ms (async steps {m['async_ms']:.2f} ms, "
        f"run over {m['exit_ms']:.2f} ms); "
        f"tasks left {m['tasks_left']:g}; threads left {m['threads_left']:g}"
    )


def _backpressure(m: Metrics) -> str:
    return (
        f"producer {m['steady_producer_rate']:,.0f} ev/s vs consumer "
        f"{m['steady_consumer_rate']:,.0f} ev/s (ratio {m['steady_ratio']:,.2f}); "
        f"RSS +{m['rss_growth_mib']:,.1f} MiB"
    )


def _serve(m: Metrics) -> str:
    return f"{m['rate']:>12,.0f} events/s   first event {m['first_ms']:,.1f} ms after the POST"


def _fanout(m: Metrics) -> str:
    return (
        f"{m['rate']:>12,.0f} events/s summed over {m['clients']:.0f} clients"
        f" ({m['rate_per_client']:,.0f} each)   first event {m['first_ms']:,.1f} ms"
    )


def _sse_latency(m: Metrics) -> str:
    return f"{m['p50_us']:>12,.0f} µs p50   p99 {m['p99_us']:,.0f} µs   max {m['max_us']:,.0f} µs"


def _http_backpressure(m: Metrics) -> str:
    return (
        f"{m['producer_rate']:>12,.0f} events/s written for a client reading"
        f" {m['client_rate']:,.0f}/s ({m['producer_ratio']:.2f}x)   server RSS"
        f" +{m['server_rss_growth_mib']:,.1f} MiB   up to {m['lag_events']:,.0f} events ahead"
    )


def _tiny(m: Metrics) -> str:
    return f"{m['rate']:>12,.0f} runs/s   ({m['us_per_run']:,.1f} µs a run)"


def _chain(m: Metrics) -> str:
    return (
        f"{m['run_ms']:>9,.1f} ms a run ({m['us_per_step']:,.1f} µs a step; first run"
        f" {m['first_run_ms']:,.1f} ms)   {m['tasks_per_run']:,.0f} tasks a run"
        f"   built in {m['build_s']:,.2f} s"
    )


def _parked(m: Metrics) -> str:
    return (
        f"cancel all {m['cancel_ms']:>8,.1f} ms   {m['rss_kib_per_run']:,.1f} KiB and"
        f" {m['objects_per_run']:,.0f} objects a run, {m['tasks_per_run']:,.1f} tasks"
        f"   (all parked after {m['start_ms']:,.0f} ms)"
    )


def _fanin(m: Metrics) -> str:
    return f"{m['run_ms']:>9,.2f} ms a run   ({m['rate']:,.0f} events/s)"


def _durable(m: Metrics) -> str:
    return (
        f"{m['sqlite_rate']:>12,.0f} events/s on SQLite, {m['memory_rate']:,.0f} in memory"
        f"   (SQLite / memory {m['sqlite_over_memory']:.2f}, paired runs)"
    )


def _recovery(m: Metrics) -> str:
    return (
        f"listening {m['listening_ms']:>6,.0f} ms, first resumed event {m['streaming_ms']:,.0f} ms"
        f" after the restart ({m['runs']:.0f} waiting runs)"
    )


# -- the scenarios --

T, A, F = "benchmarks._trioflow", "benchmarks._anchor", "benchmarks._floor"
#: ``serve_fanout``: clients on one run.
CLIENTS = 100
KIB = 1024


def _http(name: str) -> tuple[Impl, Impl]:
    return (
        Impl("trioflow", f"benchmarks._trioflow_serving:{name}"),
        Impl("anchor", f"benchmarks._anchor_serving:{name}"),
    )


def _http_variant(name: str, variant: str, **params: Any) -> tuple[Impl, Impl]:
    return (
        Impl("trioflow", f"benchmarks._trioflow_serving:{name}", variant, params=params),
        Impl("anchor", f"benchmarks._anchor_serving:{name}", variant, params=params),
    )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "routing",
        "two-step ping-pong (a step's return value is the other step's event), hops/s; the"
        " floor: two bare trio tasks handing the count to each other parked"
        " (trio.lowlevel.reschedule), the same handing on what a step made (api), and the"
        " earlier floors through memory channels",
        sizes(200_000, 2_000),
        (
            Impl("trioflow", f"{T}:routing"),
            Impl("anchor", f"{A}:routing", n=sizes(10_000, 500)),
            Impl("floor", f"{F}:routing"),
            Impl("floor", f"{F}:routing", "api"),
            Impl("floor", f"{F}:routing", "buffer0"),
            Impl("floor", f"{F}:routing", "buffer1"),
        ),
        _hops,
        (
            Ratio("routing hops/s: trioflow / anchor", "trioflow", "anchor", "rate", at_least(50)),
            Ratio(
                "routing, time a hop: trioflow / floor (best hand-off)",
                "floor",
                "trioflow",
                "rate",
                at_most(1.3),
            ),
            Ratio(
                "routing, time a hop: trioflow / floor in a hop's shape (api)",
                "floor (api)",
                "trioflow",
                "rate",
            ),
            Ratio(
                "routing hops/s: trioflow / floor (buffer0)", "trioflow", "floor (buffer0)", "rate"
            ),
            Ratio(
                "routing hops/s: trioflow / floor (buffer1)", "trioflow", "floor (buffer1)", "rate"
            ),
        ),
    ),
    Scenario(
        "profile",
        "where the time of a hop (variant hop) and of a streamed event (variant stream) goes,"
        " sampled (benchmarks._profile): trio's scheduler, trio calls made by the tasks,"
        " trioflow's runtime, the program's code, in % of the samples",
        sizes(600_000, 2_000),
        (
            Impl("floor", "benchmarks._profile:floor", "hop"),
            Impl("trioflow", "benchmarks._profile:trioflow", "hop"),
            Impl("floor", "benchmarks._profile:floor", "stream", n=sizes(3_000_000, 2_000)),
            Impl("floor", "benchmarks._profile:floor", "driver"),
            Impl("trioflow", "benchmarks._profile:trioflow", "stream", n=sizes(1_500_000, 2_000)),
        ),
        _profile,
        (
            Figure(
                "floor hop: share in trio (scheduler, trio calls)", "floor (hop)", "trio_pct", "%"
            ),
            Figure(
                "floor hop: share in trio's scheduler loop", "floor (hop)", "scheduler_pct", "%"
            ),
            Figure("trioflow hop: share in trio", "trioflow (hop)", "trio_pct", "%"),
            Figure(
                "trioflow hop: share in trioflow's runtime", "trioflow (hop)", "runtime_pct", "%"
            ),
            Figure("floor stream: share in trio", "floor (stream)", "trio_pct", "%"),
            Figure("trioflow stream: share in trio", "trioflow (stream)", "trio_pct", "%"),
            Figure(
                "trioflow stream: share in trioflow's runtime",
                "trioflow (stream)",
                "runtime_pct",
                "%",
            ),
        ),
        repeat=1,
    ),
    Scenario(
        "stream",
        "one step writes n small events to the stream, the caller reads them: events/s and"
        " the first event's latency; the floor: a bare deque of 256 with hand-off, read and"
        " written in batches, the same behind trioflow's API's shape (api), a batching trio"
        " memory channel (channel), and the earlier await-send() channel (send)",
        sizes(50_000, 2_000),
        (
            Impl("trioflow", f"{T}:stream"),
            Impl("anchor", f"{A}:stream"),
            Impl("anchor", f"{A}:stream", "yield"),
            Impl("floor", f"{F}:stream"),
            Impl("floor", f"{F}:stream", "api"),
            Impl("floor", f"{F}:stream", "channel"),
            Impl("floor", f"{F}:stream", "send"),
        ),
        _stream,
        (
            Ratio("stream events/s: trioflow / anchor", "trioflow", "anchor", "rate", at_least(15)),
            Ratio(
                "stream events/s: trioflow / anchor (yield)", "trioflow", "anchor (yield)", "rate"
            ),
            Ratio(
                "stream, time an event: trioflow / floor (batching channel)",
                "floor (channel)",
                "trioflow",
                "rate",
                at_most(1.3),
            ),
            Ratio(
                "stream, time an event: trioflow / floor (hand-off)", "floor", "trioflow", "rate"
            ),
            Ratio(
                "stream, time an event: trioflow / floor behind the API (api)",
                "floor (api)",
                "trioflow",
                "rate",
            ),
            Ratio("stream events/s: trioflow / floor (send)", "trioflow", "floor (send)", "rate"),
            Figure(
                "stream first event: trioflow", "trioflow", "first_ms", " ms", at_most(5, " ms")
            ),
            # Information: how late the anchor delivers (DESIGN.md: only after the loop).
            Figure(
                "stream first event: anchor, ms after its writer loop ended",
                "anchor",
                lambda m: m["first_ms"] - m["loop_ms"],
                " ms",
            ),
            Figure("stream first event: anchor (yield)", "anchor (yield)", "first_ms", " ms"),
        ),
    ),
    Scenario(
        "memory",
        "a step writes n events of 1 KiB, the consumer is slow (1 ms an event) for slow_seconds:"
        " peak RSS growth",
        sizes((100_000, 400_000), 5_000),
        (
            Impl("trioflow", f"{T}:memory"),
            Impl("anchor", f"{A}:memory", "yield"),
            Impl("anchor", f"{A}:memory", "noyield"),
        ),
        _memory,
        (
            Figure(
                "memory RSS growth: trioflow",
                "trioflow",
                "rss_growth_mib",
                " MiB",
                at_most(8, " MiB"),
                each_n=True,
            ),
        ),
        params={"slow_seconds": 2.0},
        quick_params={"slow_seconds": 0.2},
        repeat=1,
        rss=True,
    ),
    Scenario(
        "latency",
        "write to receipt of each event, p50 / p99 / max (the writer awaits a checkpoint"
        " between writes; variant burst: it never yields)",
        sizes(20_000, 200),
        tuple(
            Impl(impl, f"benchmarks._{impl}_latency:latency", variant)
            for variant in ("", "burst")
            for impl in IMPLS
        ),
        _latency,
        (
            Ratio("latency p50: anchor / trioflow", "anchor", "trioflow", "p50_us"),
            Ratio("latency p99: anchor / trioflow", "anchor", "trioflow", "p99_us"),
            Ratio("latency p50: floor / trioflow", "floor", "trioflow", "p50_us"),
            Ratio("latency p99: floor / trioflow", "floor", "trioflow", "p99_us"),
            Figure("latency p99: trioflow", "trioflow", "p99_us", " µs"),
        ),
    ),
    Scenario(
        "cancel",
        "a run with six steps busy (async, waiting, a thread) is cancelled: time until every"
        " step has exited; tasks and threads left (n rounds)",
        sizes(100, 3),
        (
            Impl("trioflow", "benchmarks._trioflow_latency:cancel"),
            Impl("anchor", "benchmarks._anchor_latency:cancel"),
        ),
        _cancel,
        (
            Figure(
                "cancel tasks left: trioflow",
                "trioflow",
                "tasks_left",
                "",
                at_most(0, ""),
                count=True,
            ),
            Figure(
                "cancel threads left: trioflow",
                "trioflow",
                "threads_left",
                "",
                at_most(0, ""),
                count=True,
            ),
            Figure("cancel to every step's exit: trioflow", "trioflow", "cancel_ms", " ms"),
            Figure("cancel to every step's exit: anchor", "anchor", "cancel_ms", " ms"),
            Figure("cancel to async steps' exit: trioflow", "trioflow", "async_ms", " ms"),
            Figure("cancel to async steps' exit: anchor", "anchor", "async_ms", " ms"),
            Figure("cancel tasks left: anchor", "anchor", "tasks_left", "", count=True),
            Figure("cancel threads left: anchor", "anchor", "threads_left", "", count=True),
        ),
    ),
    Scenario(
        "backpressure",
        "in-process: a step writes 1 KiB events as fast as it can, the consumer reads 5,000/s:"
        " the producer's rate against the consumer's, RSS growth",
        sizes(15_000, 1_500),
        (
            Impl("trioflow", "benchmarks._trioflow_backpressure:backpressure", repeat=3),
            # One run: the anchor's figures are information, and its producer is not paced.
            Impl("anchor", "benchmarks._anchor_backpressure:backpressure", "yield", repeat=1),
        ),
        _backpressure,
        (
            Figure(
                "backpressure: producer / consumer rate, trioflow",
                "trioflow",
                "steady_ratio",
                "x",
                between(0.9, 1.1),
            ),
            Figure(
                "backpressure RSS growth: trioflow",
                "trioflow",
                "rss_growth_mib",
                " MiB",
                at_most(8, " MiB"),
            ),
            Figure(
                "backpressure: producer / consumer rate, anchor",
                "anchor (yield)",
                "steady_ratio",
                "x",
            ),
            Figure("backpressure RSS growth: anchor", "anchor (yield)", "rss_growth_mib", " MiB"),
        ),
        params={"rate": 5_000.0},
        rss=True,
    ),
    Scenario(
        "serve",
        "over HTTP (trioflow serve; the anchor's WorkflowServer on hypercorn's asyncio worker):"
        " one SSE client reads a run of n small events (variant 1KiB: 1 KiB events)",
        sizes(20_000, 500),
        (
            *_http("serve"),
            *(
                attrs.evolve(impl, n=sizes(10_000, 200))
                for impl in _http_variant("serve", "1KiB", size=KIB)
            ),
        ),
        _serve,
        (
            Ratio("serve events/s: trioflow / anchor", "trioflow", "anchor", "rate", at_least(1.5)),
            Ratio(
                "serve events/s, 1 KiB events: trioflow / anchor",
                "trioflow (1KiB)",
                "anchor (1KiB)",
                "rate",
                at_least(1.5),
            ),
        ),
    ),
    Scenario(
        "serve_fanout",
        f"{CLIENTS} clients watch one run of n events over HTTP: events/s summed",
        sizes(2_000, 50),
        (
            Impl("trioflow", "benchmarks._trioflow_serving:serve_fanout"),
            # About 100 events/s a client: 1,000 events take 10 s a run.
            Impl("anchor", "benchmarks._anchor_serving:serve_fanout", n=sizes(1_000, 50)),
        ),
        _fanout,
        (
            # Information: trioflow encodes each event once for all clients, the anchor per client.
            Ratio(
                f"serve, {CLIENTS} clients on one run, events/s summed: trioflow / anchor",
                "trioflow",
                "anchor",
                "rate",
            ),
            Ratio(
                f"serve, {CLIENTS} clients on one run: summed events/s / one client's, trioflow",
                "trioflow",
                ("serve", "trioflow"),
                "rate",
            ),
            Ratio(
                f"serve, {CLIENTS} clients on one run: summed events/s / one client's, anchor",
                "anchor",
                ("serve", "anchor"),
                "rate",
            ),
        ),
        params={"clients": CLIENTS},
    ),
    Scenario(
        "sse_latency",
        "over HTTP, one event a millisecond: write to receipt, p50 / p99 / max",
        sizes(2_000, 100),
        _http("sse_latency"),
        _sse_latency,
        (
            Figure("sse latency p50: trioflow", "trioflow", "p50_us", " µs"),
            Figure("sse latency p99: trioflow", "trioflow", "p99_us", " µs"),
            Ratio("sse latency p99: anchor / trioflow", "anchor", "trioflow", "p99_us"),
        ),
        params={"rate": 1_000.0},
    ),
    Scenario(
        "http_backpressure",
        "over HTTP, a client reads 2,000 events/s of 1 KiB: the producer's rate against the"
        " client's, the server's RSS growth",
        sizes(16_000, 400),
        _http("http_backpressure"),
        _http_backpressure,
        (
            Figure(
                "http backpressure: producer / client rate, trioflow",
                "trioflow",
                "producer_ratio",
                "x",
                between(0.9, 1.1),
            ),
            # Information: the anchor's stream is unbounded, so its step runs ahead.
            Figure(
                "http backpressure: producer / client rate, anchor", "anchor", "producer_ratio", "x"
            ),
            Figure(
                "server RSS growth: trioflow",
                "trioflow",
                "server_rss_growth_mib",
                " MiB",
                at_most(16, " MiB"),
            ),
            Figure("server RSS growth: anchor", "anchor", "server_rss_growth_mib", " MiB"),
        ),
        params={"rate": 2_000.0, "size": KIB},
        # Seconds a run, and a steady state of thousands of events in each: one run.
        repeat=1,
    ),
    Scenario(
        "tiny",
        "a one-step workflow run to completion n times, one after another: runs/s; the floor:"
        " a nursery with one task",
        sizes(3_000, 50),
        (
            Impl("trioflow", "benchmarks._trioflow_runs:tiny"),
            Impl("anchor", "benchmarks._anchor_runs:tiny", n=sizes(1_500, 50)),
            Impl("floor", "benchmarks._floor_runs:tiny", n=sizes(50_000, 50)),
        ),
        _tiny,
        (
            Ratio("tiny runs/s: trioflow / anchor", "trioflow", "anchor", "rate", at_least(5)),
            Ratio(
                "tiny, time a run: trioflow / floor (a nursery, a task)",
                "floor",
                "trioflow",
                "rate",
            ),
        ),
    ),
    Scenario(
        "chain",
        "one run of an n-step chain (each step takes the previous one's event): time a run,"
        " tasks spawned a run, and the time to build the workflow; the floor: n parked tasks"
        " handing a value along",
        sizes(1_000, 20),
        (
            Impl("trioflow", "benchmarks._trioflow_runs:chain", params={"runs": 3}),
            # A run of the anchor's takes seconds (about 25 s at 1,000 steps): one.
            Impl("anchor", "benchmarks._anchor_runs:chain", params={"runs": 1}),
            Impl("floor", "benchmarks._floor_runs:chain", params={"runs": 5}),
        ),
        _chain,
        (
            Ratio("chain, time a run: anchor / trioflow", "anchor", "trioflow", "run_ms"),
            Ratio("chain, time a run: trioflow / floor", "trioflow", "floor", "run_ms"),
            Figure("chain: tasks a run, trioflow", "trioflow", "tasks_per_run", "", count=True),
            Figure("chain: tasks a run, anchor", "anchor", "tasks_per_run", "", count=True),
            Figure("chain: seconds to build the workflow, trioflow", "trioflow", "build_s", " s"),
            Figure("chain: seconds to build the workflow, anchor", "anchor", "build_s", " s"),
        ),
        quick_params={"runs": 1},
        repeat=1,
    ),
    Scenario(
        "parked",
        "n runs each parked in wait_for_event, then cancelled all at once: time to cancel them"
        " all, and memory per parked run (RSS growth / n; gc-tracked objects / n); the floor:"
        " n tasks in trio.sleep_forever()",
        sizes(10_000, 100),
        (
            Impl("trioflow", "benchmarks._trioflow_runs:parked"),
            Impl("anchor", "benchmarks._anchor_runs:parked"),
            Impl("floor", "benchmarks._floor_runs:parked"),
        ),
        _parked,
        (
            Ratio(
                "parked: time to cancel them all, trioflow / anchor",
                "trioflow",
                "anchor",
                "cancel_ms",
                at_most(1),
            ),
            Ratio(
                "parked: RSS per parked run, trioflow / anchor",
                "trioflow",
                "anchor",
                "rss_kib_per_run",
                at_most(0.5),
            ),
            Ratio(
                "parked: objects per parked run, trioflow / anchor",
                "trioflow",
                "anchor",
                "objects_per_run",
            ),
            Figure("parked: KiB per parked run, trioflow", "trioflow", "rss_kib_per_run", " KiB"),
            Figure("parked: KiB per parked run, anchor", "anchor", "rss_kib_per_run", " KiB"),
            Figure("parked: tasks per parked run, trioflow", "trioflow", "tasks_per_run", ""),
        ),
        # Tens of seconds a run (starting 10,000 runs is most of it): one.
        repeat=1,
    ),
    Scenario(
        "fanin",
        "a step fans out n events that one step collects (trioflow: -> list[E] and a list[E]"
        " parameter; variant collect_events, and the anchor: ctx.collect_events(ev, [E] * n)):"
        " time a run",
        sizes(1_000, 50),
        (
            Impl("trioflow", "benchmarks._trioflow_runs:fanin", params={"runs": 20}),
            Impl(
                "trioflow",
                "benchmarks._trioflow_runs:fanin",
                "collect_events",
                params={"runs": 10},
            ),
            # About 3.5 s a run at 1,000 events: 3 runs in one process, once.
            Impl("anchor", "benchmarks._anchor_runs:fanin", params={"runs": 3}, repeat=1),
        ),
        _fanin,
        (
            Ratio("fan-in, time a run: anchor / trioflow", "anchor", "trioflow", "run_ms"),
            Ratio(
                "fan-in, time a run: anchor / trioflow (collect_events)",
                "anchor",
                "trioflow (collect_events)",
                "run_ms",
            ),
        ),
        quick_params={"runs": 1},
    ),
    Scenario(
        "durable_stream",
        "trioflow on a SQLite store against memory, in process: one step writes n events of 100"
        " bytes, read with stream_events() (benchmarks.store_inprocess; runs: pairs of runs)",
        sizes(50_000, 200),
        (Impl("trioflow", "benchmarks._trioflow_durable:durable_stream"),),
        _durable,
        (
            Figure(
                "durable stream in process: SQLite / memory", "trioflow", "sqlite_over_memory", "x"
            ),
        ),
        params={"size": 100, "runs": 5},
        quick_params={"runs": 1},
        repeat=1,  # pairs of runs inside: their median is the figure
    ),
    Scenario(
        "durable_serve",
        "trioflow serve on a SQLite store against memory: one NDJSON client reads a run of n"
        " events of 100 bytes (benchmarks.store_throughput; runs: pairs of runs)",
        sizes(20_000, 200),
        (Impl("trioflow", "benchmarks._trioflow_durable:durable_serve"),),
        _durable,
        (
            Figure(
                "durable serve: SQLite / memory",
                "trioflow",
                "sqlite_over_memory",
                "x",
                at_least(0.7),
            ),
        ),
        params={"size": 100, "runs": 5},
        quick_params={"runs": 1},
        repeat=1,
    ),
    Scenario(
        "recovery",
        "trioflow serve on SQLite with n runs waiting for an answer is killed (SIGKILL) and"
        " started again, runs times: until it listens, and until a resumed stream's first new"
        " event (benchmarks.store_recovery)",
        sizes(10, 2),
        (Impl("trioflow", "benchmarks._trioflow_durable:recovery"),),
        _recovery,
        (
            Figure("recovery: restart to listening", "trioflow", "listening_ms", " ms"),
            Figure(
                "recovery: restart to the first resumed event", "trioflow", "streaming_ms", " ms"
            ),
        ),
        params={"runs": 5},
        quick_params={"runs": 1},
        repeat=1,
    ),
)


def names() -> list[str]:
    return [scenario.name for scenario in SCENARIOS]


def scenario(name: str) -> Scenario:
    for found in SCENARIOS:
        if found.name == name:
            return found
    raise KeyError(f"no scenario {name!r}; the scenarios: {', '.join(names())}")


def implementation(name: str, impl: str, variant: str) -> Impl:
    """The implementation of scenario ``name`` by ``impl`` in ``variant``."""
    found = scenario(name)
    for candidate in found.impls:
        if candidate.impl == impl and candidate.variant == variant:
            return candidate
    labels = ", ".join(candidate.label for candidate in found.impls)
    raise KeyError(
        f"scenario {name!r} has no implementation {impl!r} variant {variant!r} ({labels})"
    )


def specs(quick: bool, only: Sequence[str] = ()) -> list[Spec]:
    """Every measurement of the suite (of the scenarios ``only``, if given), in order."""
    return [
        spec for found in SCENARIOS if not only or found.name in only for spec in found.specs(quick)
    ]
