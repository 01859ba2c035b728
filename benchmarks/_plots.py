"""The plots: PNG pictures of a results file (matplotlib, the ``plot`` extra).

`draw` takes the results as ``python -m benchmarks --json`` writes them and draws every plot it
has data for, skipping the others:

- ``memory_rss.png``: RSS over time with a slow consumer, trioflow against the anchor (both
  variants), from the ``memory`` measurements at the largest size present;
- ``backpressure_rates.png``: producer rate against consumer rate over time, and RSS, for
  trioflow and the anchor, from ``backpressure``;
- ``http_backpressure.png``: the same over HTTP, each server streaming to a slow client, from
  ``http_backpressure`` (producer and consumer rates, the server's RSS).

Series come from the last run of a measurement, figures in titles from the medians. Each picture
carries a footnote with the date, the versions and the machine. matplotlib is imported inside
`draw`, so the suite runs without the extra; figures are standalone ``Figure`` objects on the
Agg canvas (no GUI, no pyplot state).
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Results = dict[str, Any]
Measurement = dict[str, Any]

#: One color per implementation (and anchor variant), the same in every picture.
COLORS = {
    "trioflow": "#1f77b4",
    "anchor": "#d62728",
    "anchor (yield)": "#ff7f0e",
    "anchor (noyield)": "#d62728",
    "floor": "#2ca02c",
}
CONSUMER = "#333333"
#: What the anchor's variants are, for legends.
VARIANTS = {
    "yield": "its writer awaits asyncio.sleep(0) after each write",
    "noyield": "its writer never yields",
}
DPI = 120
#: Inches kept free under the plots for the footnote's two lines.
FOOTNOTE = 0.34


def draw(results: Results, folder: Path) -> list[Path]:
    """Draw every plot the results have data for into ``folder``; return the files."""
    try:
        import matplotlib  # noqa: F401  (only to fail early, with advice)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the benchmark plots need matplotlib, the 'plot' extra: pip install -e '.[plot]'",
            name="matplotlib",
        ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[str, Callable[[Results], Figure | None]]] = [
        ("memory_rss.png", _memory_rss),
        ("backpressure_rates.png", _backpressure_rates),
        ("http_backpressure.png", _http_backpressure),
    ]
    drawn = []
    for name, plot in plots:
        figure = plot(results)
        if figure is None:
            continue
        _footnote(figure, results)
        path = folder / name
        figure.savefig(path, dpi=DPI)
        drawn.append(path)
    return drawn


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    # The constrained layout keeps FOOTNOTE inches at the bottom free for the footnote.
    bottom = FOOTNOTE / height
    layout = ConstrainedLayoutEngine(rect=(0, bottom, 1, 1 - bottom))
    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)  # attaches itself: savefig renders with Agg
    return figure


def _label(spec: dict[str, Any]) -> str:
    variant = _params(spec).get("variant")
    return f"{spec['impl']} ({variant})" if variant else str(spec["impl"])


def _params(spec: dict[str, Any]) -> dict[str, Any]:
    """A measurement's parameters (``n``, ``variant``, ``rate``...): the spec's ``params``, or
    the spec itself in results from before the parameters had a field of their own."""
    params: dict[str, Any] = spec.get("params", spec)
    return params


def _found(results: Results, scenario: str, *series: str) -> list[Measurement]:
    """The successful measurements of ``scenario`` that carry all of ``series``."""
    return [
        m
        for m in results.get("measurements", [])
        if m["spec"]["scenario"] == scenario
        and m["status"] == "ok"
        and all(m["metrics"].get(s) for s in series)
    ]


def _xy(series: Sequence[Sequence[float]], minus: float = 0.0) -> tuple[list[float], list[float]]:
    return [p[0] for p in series], [p[1] - minus for p in series]


def _quick(results: Results) -> str:
    return " [--quick: tiny sizes, not a measurement]" if results.get("quick") else ""


def _footnote(figure: Figure, results: Results) -> None:
    env: dict[str, Any] = results.get("environment", {})
    # Results from before the environment recorded its date: say when it was drawn instead.
    date = env.get("date") or f"drawn {datetime.date.today().isoformat()}"
    versions = ", ".join(f"{d} {v}" for d, v in env.get("versions", {}).items() if v)
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions += f", matplotlib {metadata.version('matplotlib')}"
    machine = f"Python {env.get('python', '?')} on {env.get('platform', '?')}"
    machine += f", {env.get('cpus', '?')} CPUs" + (f" ({env['cpu']})" if env.get("cpu") else "")
    figure.text(
        0.005,
        0.005,
        f"{date} · {machine}\n{versions}",
        fontsize=7,
        color="#555555",
        ha="left",
        va="bottom",
    )


def _memory_rss(results: Results) -> Figure | None:
    found = _found(results, "memory", "rss_series")
    if not found:
        return None
    n = max(_params(m["spec"])["n"] for m in found)
    largest = sorted(
        (m for m in found if _params(m["spec"])["n"] == n),
        key=lambda m: _label(m["spec"]) != "trioflow",
    )
    slow = _params(largest[0]["spec"])["slow_seconds"]
    figure = _figure(9, 5.2)
    ax = figure.subplots()
    for m in largest:
        label, metrics = _label(m["spec"]), m["metrics"]
        x, y = _xy(metrics["rss_series"], metrics.get("rss_baseline_mib", 0.0))
        ax.plot(
            x,
            y,
            label=f"{label}: peak +{metrics['rss_growth_mib']:,.1f} MiB, "
            f"run {metrics['seconds']:.1f} s"
            + (
                f"\n    ({VARIANTS[v]})" if (v := _params(m["spec"])["variant"]) in VARIANTS else ""
            ),
            color=COLORS.get(label),
            # trioflow's flat line would hide under the others: draw it last and thicker.
            linewidth=2.4 if label == "trioflow" else 1.6,
            zorder=3 if label == "trioflow" else 2,
        )
    ax.axvline(slow, color="#888888", linestyle=":", linewidth=1)
    ax.annotate(
        f" consumer speeds up ({slow:g} s)",
        (slow, 1),
        xycoords=("data", "axes fraction"),
        va="top",
        fontsize=8,
        color="#555555",
    )
    ax.set_title(
        f"RSS over time with a slow consumer: {n:,} events of 1 KiB{_quick(results)}\n"
        f"(the consumer sleeps 1 ms per event for its first {slow:g} s, then reads at full speed)",
        fontsize=11,
    )
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("RSS above the baseline before the run (MiB)")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(0, 0.93), fontsize=9)
    return figure


def _rates(ax: Axes, m: Measurement) -> None:
    """Producer and consumer rate over time, with the steady window shaded."""
    metrics, label = m["metrics"], _label(m["spec"])
    if "steady_from_s" in metrics:
        ax.axvspan(
            metrics["steady_from_s"],
            metrics["steady_to_s"],
            color="#dddddd",
            alpha=0.6,
            linewidth=0,
            label="steady state (ratio taken here)",
        )
    producer, consumer = metrics["producer_series"], metrics["consumer_series"]
    width = _window(producer, consumer)
    ax.stairs(
        *_stairs(producer, width),
        baseline=0,
        color=COLORS.get(label),
        linewidth=1.8,
        label="producer (writes returned)",
    )
    ax.stairs(
        *_stairs(consumer, width),
        baseline=0,
        color=CONSUMER,
        linestyle="--",
        linewidth=1.4,
        label="consumer (events received)",
    )
    ax.set_ylabel("events per second")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")


def _window(*series: Sequence[Sequence[float]]) -> float:
    """The width of the rate windows: the spacing of their midpoints (or, for a lone window,
    one that starts at zero)."""
    gaps = [b[0] - a[0] for s in series for a, b in itertools.pairwise(s)]
    return min(gaps) if gaps else 2 * min(s[0][0] for s in series if s)


def _stairs(series: Sequence[Sequence[float]], width: float) -> tuple[list[float], list[float]]:
    """Values and edges for ``Axes.stairs``: each rate holds over its whole window (a lone
    window's spike stays visible, as a line through midpoints would not). Windows are
    ``width`` wide and follow each other; the last may be shorter (its midpoint tells)."""
    edges = [series[0][0] - width / 2] if series else [0.0]
    for t, _ in series:
        edges.append(t + (t - edges[-1]))
    return [p[1] for p in series], edges


def _rss(ax: Axes, m: Measurement, key: str, baseline: float, what: str) -> None:
    metrics, label = m["metrics"], _label(m["spec"])
    ax.plot(*_xy(metrics[key], baseline), color=COLORS.get(label), linewidth=2)
    ax.set_ylabel(f"{what} above baseline (MiB)")
    ax.set_xlabel("time since the run started (s)")
    # A flat line at +0.3 MiB would otherwise be magnified into noise: show at least 10 MiB,
    # and a little below zero, so a line at zero does not hide in the axis.
    _rss_scale(ax, max(10.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)


def _first(metrics: dict[str, Any], *keys: str) -> float | None:
    return next((float(metrics[k]) for k in keys if k in metrics), None)


def _rss_scale(ax: Axes, top: float) -> None:
    ax.set_ylim(-0.03 * top, top)


def _backpressure_rates(results: Results) -> Figure | None:
    def title(spec: dict[str, Any]) -> str:
        params = _params(spec)
        return (
            f"Backpressure in-process: a step writes {params['n']:,} events of 1 KiB as fast as"
            f" it can;\nthe consumer reads {params['rate']:,.0f} events/s{_quick(results)}"
        )

    return _rate_columns(results, "backpressure", "rss_series", "RSS", title)


def _http_backpressure(results: Results) -> Figure | None:
    def title(spec: dict[str, Any]) -> str:
        rate = (
            f", the client reads {_params(spec)['rate']:,.0f} events/s"
            if _params(spec).get("rate")
            else ""
        )
        return (
            f"Backpressure over HTTP, a slow client streaming {_params(spec)['n']:,} events{rate}"
            f"{_quick(results)}"
        )

    return _rate_columns(results, "http_backpressure", "server_rss_series", "server RSS", title)


def _rate_columns(
    results: Results,
    scenario: str,
    rss_key: str,
    rss_what: str,
    title: Callable[[dict[str, Any]], str],
) -> Figure | None:
    """One column per implementation: producer and consumer rate on top, RSS below."""
    found = sorted(
        _found(results, scenario, "producer_series", "consumer_series"),
        key=lambda m: m["spec"]["impl"] != "trioflow",
    )
    if not found:
        return None
    figure = _figure(5.2 * len(found), 6.4)
    axes = figure.subplots(2, len(found), sharex="col", squeeze=False, height_ratios=[3, 2])
    for column, m in enumerate(found):
        metrics = m["metrics"]
        top, bottom = axes[0][column], axes[1][column]
        _rates(top, m)
        # The in-process scenario's names first, then those of http_backpressure.
        ratio = _first(metrics, "steady_ratio", "producer_ratio")
        producer = _first(metrics, "steady_producer_rate", "producer_rate")
        consumer = _first(metrics, "steady_consumer_rate", "client_rate")
        heading = _label(m["spec"])
        if ratio is not None:
            heading += f": producer / consumer {ratio:,.2f}x"
        if producer is not None and consumer is not None:
            heading += f"\n({producer:,.0f} vs {consumer:,.0f} events/s in the steady state)"
        top.set_title(heading, fontsize=10)
        rss = metrics.get(rss_key)
        if rss:
            # "rss_series" comes with "rss_baseline_mib" (taken before the run) and
            # "rss_growth_mib"; a series without them is taken relative to its first sample.
            prefix = rss_key.removesuffix("_series")
            baseline = metrics.get(f"{prefix}_baseline_mib", rss[0][1])
            growth = metrics.get(f"{prefix}_growth_mib", max(p[1] for p in rss) - baseline)
            _rss(bottom, m, rss_key, baseline, rss_what)
            bottom.set_title(f"{rss_what}: peak +{growth:,.1f} MiB", fontsize=10)
        else:
            bottom.set_axis_off()
    # One RSS scale for all: a flat line and a growing one, side by side, compare honestly.
    shown = [ax for ax in axes[1] if ax.axison]
    if shown:
        top_mib = max(ax.get_ylim()[1] for ax in shown)
        for ax in shown[1:]:
            ax.sharey(shown[0])
        _rss_scale(shown[0], top_mib)
    figure.suptitle(title(found[0]["spec"]), fontsize=11)
    return figure
