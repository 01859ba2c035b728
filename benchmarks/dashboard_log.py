"""The dashboard's event log on a large run: 10,000 events streamed into headless Chromium.

    python -m benchmarks.dashboard_log [--events 10000] [--repeat 3] [--ref REV | --page FILE]
        [--json FILE]

A workflow that writes ``--events`` events as fast as it can is served in process on a free
port; headless Chromium (/usr/bin/chromium, driven over the DevTools pipe by tests/_browser.py)
opens the dashboard, starts a run from the page, and follows it to its end. For each of
``--repeat`` runs, each in a fresh tab:

- first event to all rendered: from the first message of the log's ``EventSource`` to the first
  animation frame whose DOM holds the terminal event's row (the last row drawn, whether the page
  adds a row per event or draws the rows in view while it follows the stream);
- the longest gap between two animation frames while the run streams, and the longest
  main-thread task (a ``longtask`` ``PerformanceObserver``: tasks of 50 ms and more);
- the page's elements at the end (and those in the log, ``#events``), and what the run cost
  the page's main thread in layouts, style recalculations and script (``Performance.getMetrics``).

The instrumentation is injected with ``Page.addScriptToEvaluateOnNewDocument`` before the page's
own script runs; the page is not changed. ``--ref main`` measures the page of another commit
(``git show REV:trioflow/_server/dashboard.html``), ``--page FILE`` any file, served in place
of this checkout's. Medians are reported. Speed is never asserted in the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from functools import partial

import trio

import trioflow
from benchmarks._suite import ROOT
from trioflow import Context, Event, StartEvent, StopEvent, Workflow, step

sys.path.insert(0, str(ROOT / "tests"))
import _browser
from _browser import Browser, Page, open_browser, require_chromium

# A page that adds a row per event can keep its main thread busy for minutes on end, and
# answers no command meanwhile: give each one that long rather than the tests' 30 s.
_browser.COMMAND_TIMEOUT = 1800.0


class Tick(Event):
    """One of many events."""

    n: int


class Ticks(StartEvent):
    """Start: how many events to write."""

    count: int = 10_000


class ChattyFlow(Workflow):
    """Writes ``count`` events to the stream as fast as it can."""

    @step
    async def chatter(self, ctx: Context, ev: Ticks) -> StopEvent:
        for n in range(ev.count):
            await ctx.write_event_to_stream(Tick(n=n))
        return StopEvent(result={"written": ev.count})


#: Runs in the page before its own script: times the log's stream, the frames, the long tasks.
INSTRUMENT = r"""
(() => {
  const bench = window.__bench = { first: null, terminal: null, rendered: null, messages: 0,
                                   maxGap: 0, tasks: [] };
  // Every long task, [start, duration]: the observer may be told of them only once the
  // stream is over, so those of the stream are picked out at the end (`one_run`).
  new PerformanceObserver((list) => {
    for (const task of list.getEntries()) bench.tasks.push([task.startTime, task.duration]);
  }).observe({ type: "longtask" });
  // The log's stream (pages before 2026-12-01 opened a second one for the graph, with
  // ?types=): its listener is added before the page's onmessage, so it sees each message
  // first. Its lifecycle events (pages since) are not the log's.
  const Original = window.EventSource;
  const lifecycle = /"qualified_name":"trioflow\.(Step(Started|Finished|Retry)|WorkflowIdle)Event"/;
  window.EventSource = class extends Original {
    constructor(url, init) {
      super(url, init);
      if (String(url).includes("types=")) return;
      this.addEventListener("message", (message) => {
        if (bench.first === null) bench.first = performance.now();
        if (lifecycle.test(message.data)) return;
        bench.messages += 1;
        if (message.data.includes('"StopEvent"')) bench.terminal = performance.now();
      });
    }
  };
  // performance.now(), not the callback's argument: that is when the frame began, which can
  // be seconds before its callbacks run on a main thread busy with the stream's messages.
  let last = null;
  const frame = () => {
    const now = performance.now();
    if (bench.first !== null && bench.rendered === null) {
      if (last !== null) bench.maxGap = Math.max(bench.maxGap, now - last);
      if (bench.terminal !== null &&
          document.querySelector('#events [data-type="StopEvent"]')) bench.rendered = now;
    }
    last = now;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
})();
"""

#: Performance.getMetrics figures reported as what the run added (seconds, or counts).
COSTS = ("LayoutCount", "LayoutDuration", "RecalcStyleCount", "RecalcStyleDuration",
         "ScriptDuration", "TaskDuration")  # fmt: skip


async def metrics(page: Page) -> dict[str, float]:
    found = await page.send("Performance.getMetrics")
    return {m["name"]: m["value"] for m in found["metrics"]}


async def one_run(browser: Browser, url: str, events: int) -> dict[str, float]:
    page = await browser.new_page()
    await page.send("Performance.enable")
    await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": INSTRUMENT})
    await page.goto(url + "/")
    await page.wait_for("document.querySelector('#start-form [name=count]')")
    await page.evaluate(
        f"""(() => {{ const input = document.querySelector('#start-form [name=count]');
            input.value = '{events}'; input.dispatchEvent(new Event('input')); }})()"""
    )
    before = await metrics(page)
    await page.evaluate("document.getElementById('start').click()")
    await page.wait_for("window.__bench.rendered !== null", 1800)
    # Time for the long-task observer to hear of the last ones: two frames and a pause.
    bench = await page.evaluate(
        """new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() =>
             setTimeout(() => resolve(window.__bench), 200))))"""
    )
    during = [
        duration
        for start, duration in bench["tasks"]
        if start + duration >= bench["first"] and start <= bench["rendered"]
    ]
    after = await metrics(page)
    counts = await page.evaluate(
        "({ elements: document.getElementsByTagName('*').length,"
        " log: document.getElementById('events').getElementsByTagName('*').length })"
    )
    await page.close()
    if bench["messages"] != events + 1:
        raise RuntimeError(f"the log's stream carried {bench['messages']} of {events + 1} events")
    return {
        "first_to_rendered_ms": bench["rendered"] - bench["first"],
        "first_to_last_message_ms": bench["terminal"] - bench["first"],
        "longest_frame_gap_ms": bench["maxGap"],
        "longest_task_ms": max(during, default=0.0),
        "long_tasks": len(during),
        "elements": counts["elements"],
        "log_elements": counts["log"],
        "nodes": after["Nodes"],
        **{name: after[name] - before[name] for name in COSTS},
    }


async def measure(page_html: bytes | None, events: int, repeat: int) -> list[dict[str, float]]:
    # Every event retained: pages before 2026-12-01 (`--ref`) opened a second stream for the
    # graph, which may join after the first 1,024 events of a run this fast.
    app = trioflow.WorkflowApp({"chatty": ChattyFlow(timeout=600)}, retain=2 * events + 10)
    if page_html is not None:
        app._dashboard = page_html  # the page the server would otherwise read from its package
    runs = []
    async with trio.open_nursery() as nursery, open_browser(require_chromium()) as browser:
        binds: list[str] = await nursery.start(partial(trioflow.serve, app, port=0))
        for _ in range(repeat):
            runs.append(await one_run(browser, binds[0], events))
        nursery.cancel_scope.cancel()
    return runs


def describe(runs: list[dict[str, float]]) -> str:
    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    return (
        f"first event -> all rendered {median('first_to_rendered_ms'):,.0f} ms "
        f"(last message after {median('first_to_last_message_ms'):,.0f} ms); "
        f"longest frame gap {median('longest_frame_gap_ms'):,.0f} ms, "
        f"longest task {median('longest_task_ms'):,.0f} ms ({median('long_tasks'):.0f} tasks "
        f">= 50 ms); {median('elements'):,.0f} elements in the page, "
        f"{median('log_elements'):,.0f} in the log ({median('nodes'):,.0f} DOM nodes); "
        f"{median('LayoutCount'):,.0f} layouts ({median('LayoutDuration') * 1000:,.0f} ms), "
        f"{median('RecalcStyleCount'):,.0f} style recalcs "
        f"({median('RecalcStyleDuration') * 1000:,.0f} ms), "
        f"script {median('ScriptDuration') * 1000:,.0f} ms, "
        f"tasks {median('TaskDuration') * 1000:,.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--ref", help="measure the page of this git revision")
    which.add_argument("--page", help="measure this HTML file as the page")
    parser.add_argument("--json", help="also write each run's figures to this file")
    args = parser.parse_args()
    page_html: bytes | None = None
    label = "this checkout's page"
    if args.ref:
        page_html = subprocess.run(
            ["git", "show", f"{args.ref}:trioflow/_server/dashboard.html"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        label = f"the page of {args.ref}"
    elif args.page:
        with open(args.page, "rb") as file:
            page_html = file.read()
        label = args.page
    runs = trio.run(measure, page_html, args.events, args.repeat)
    print(f"{label}, {args.events:,} events, median of {len(runs)}: {describe(runs)}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"page": label, "events": args.events, "runs": runs}, file, indent=2)


if __name__ == "__main__":
    main()
