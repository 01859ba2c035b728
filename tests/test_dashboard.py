"""The dashboard (``GET /``) driven in headless Chromium against an in-process server.

One Chromium serves the whole module (tests/_browser.py); each test starts its own server on a
free port with the example workflows and opens the page in a fresh tab. The page is driven
the way a user would: click a workflow, fill the start form, press the buttons.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from _browser import Browser, Chromium, Page, connect, launch_chromium, require_chromium

import trioflow
from trioflow.examples import WORKFLOWS

JsonValue = Any


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    with launch_chromium(require_chromium()) as process:
        yield process


@pytest.fixture
async def browser(chromium: Chromium) -> AsyncIterator[Browser]:
    async with connect(chromium) as connection:
        yield connection


@asynccontextmanager
async def running_server(
    workflows: Mapping[str, trioflow.Workflow] = WORKFLOWS, **options: Any
) -> AsyncIterator[str]:
    """Serve ``workflows`` (the examples unless told) on a free port; yield the base URL."""
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(trioflow.serve, workflows, port=0, **options)
        )
        yield binds[0]
        nursery.cancel_scope.cancel()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async with running_server() as url:
        yield url


# -- driving the page -------------------------------------------------------------------------


def js(value: JsonValue) -> str:
    """A Python value as a JavaScript literal (JSON is valid JavaScript)."""
    return json.dumps(value)


async def open_dashboard(browser: Browser, url: str) -> Page:
    """Load the page and wait until it lists the workflows and shows the first one."""
    page = await browser.new_page(url)
    await page.wait_for("document.querySelectorAll('#workflows [data-name]').length > 0")
    await page.wait_for("document.querySelector('#start-form input') !== null")
    return page


async def select(page: Page, name: str) -> None:
    """Click a workflow in the list and wait for its start form."""
    # Cleared first, so that the wait below sees this click's rendering, not an earlier one.
    await page.evaluate("document.getElementById('wf-name').textContent = ''")
    await page.evaluate(f"document.querySelector('#workflows [data-name={js(name)}]').click()")
    await page.wait_for(
        f"document.getElementById('wf-name').textContent === {js(name)}"
        " && document.querySelector('#start-form input') !== null"
    )


async def fill(page: Page, form: str, **fields: str | bool) -> None:
    """Set inputs of a form by field name, as typing, ticking or choosing would."""
    for name, value in fields.items():
        found = await page.evaluate(
            f"""(() => {{
                const inputs = [...document.querySelectorAll('#{form} [name={js(name)}]')];
                const input = inputs[0];
                if (!input) return false;
                if (input.type === 'radio') {{
                    const choice = inputs.find(i => i.value === String({js(value)}));
                    if (!choice) return false;
                    choice.click();  // as a user would: input and change events
                    return true;
                }}
                if (input.type === 'checkbox') input.checked = {js(value)};
                else input.value = {js(value)};
                input.dispatchEvent(new Event('input', {{ bubbles: true }}));
                return true;
            }})()"""
        )
        assert found, f"#{form} has no input for {name}"


async def start_run(page: Page, **fields: str | bool) -> str:
    """Fill the start form, press Start, and return the run id the page shows."""
    await fill(page, "start-form", **fields)
    await page.evaluate("document.getElementById('run-id').textContent = ''")
    await page.evaluate("document.getElementById('start').click()")
    run_id: str = await page.wait_for("document.getElementById('run-id').textContent")
    return run_id


async def wait_for_status(page: Page, status: str) -> None:
    await page.wait_for(f"document.getElementById('run-status').textContent === {js(status)}")


async def text(page: Page, element_id: str) -> str:
    value: str = await page.evaluate(f"document.getElementById({js(element_id)}).textContent")
    return value


async def visible(page: Page, element_id: str) -> bool:
    shown: bool = await page.evaluate(f"!document.getElementById({js(element_id)}).hidden")
    return shown


#: The event log's model, every entry of it: the page draws only the rows in view, so the DOM
#: does not hold them all (`window.trioflowDashboard`, the page's debug surface).
LOG = "window.trioflowDashboard.log()"


async def logged_events(page: Page) -> list[tuple[int, str]]:
    """(seq, type) of every event of the event log, in its order."""
    rows: list[list[JsonValue]] = await page.evaluate(
        f"{LOG}.filter(e => !e.sent && !e.gap).map(e => [e.seq, e.type])"
    )
    return [(int(seq), str(kind)) for seq, kind in rows]


async def sent_answers(page: Page) -> list[list[str]]:
    """(type, data) of each answer the page sent, as its event log shows them."""
    answers: list[list[str]] = await page.evaluate(
        f"{LOG}.filter(e => e.sent).map(e => [e.type, e.text])"
    )
    return answers


async def select_row(page: Page, index: int) -> JsonValue:
    """Scroll the event log to its entry ``index``, click that row, and return the detail
    pane's text once it shows that entry."""
    # Every row is as tall as the first: the entry's row is at the top of the view there.
    await page.evaluate(
        "(() => { const list = document.getElementById('events');"
        f" list.scrollTop = {index} * list.querySelector('li').offsetHeight; }})()"
    )
    row = f"document.querySelector('#events li[data-index=\"{index}\"]')"
    await page.wait_for(row)
    await page.evaluate(f"{row}.click()")
    pane = "document.getElementById('event-detail')"
    return await page.wait_for(
        f"!{pane}.hidden && {pane}.dataset.index === '{index}' && {pane}.textContent"
    )


async def result(page: Page) -> JsonValue:
    assert await visible(page, "result")
    return json.loads(await text(page, "result"))


def assert_in_order(events: list[tuple[int, str]], terminal: str) -> None:
    """Every event once, in order, ending with ``terminal``. The seqs may have gaps: a run the
    page starts records its lifecycle events too (for the graph), which the log leaves out."""
    seqs = [seq for seq, _ in events]
    assert seqs == sorted(set(seqs))
    assert seqs[0] >= 1
    assert events[-1][1] == terminal
    assert terminal not in [kind for _, kind in events[:-1]]


async def assert_no_errors(page: Page) -> None:
    await page.evaluate("0")  # a round trip, so that messages logged before it have arrived
    assert page.errors == []


# -- tests --------------------------------------------------------------------------------------


async def test_page_lists_workflows_and_shows_the_graph(server: str, browser: Browser) -> None:
    """The page lists the served workflows, shows a graph and its start form, logs no errors."""
    page = await open_dashboard(browser, server + "/")
    names = await page.evaluate(
        "[...document.querySelectorAll('#workflows [data-name]')].map(e => e.dataset.name)"
    )
    assert names == list(WORKFLOWS)

    await select(page, "research")
    assert "Plan three searches" in await text(page, "wf-doc")
    steps = await page.evaluate(
        "[...document.querySelectorAll('#steps tbody tr')].map(r => r.cells[0].textContent)"
    )
    assert steps == ["plan", "search", "write"]
    inputs = await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#start-form input')]"
        ".map(i => [i.name, [i.type, i.value]]))"
    )
    assert inputs == {"topic": ["text", "structured concurrency"], "pace": ["number", "1"]}

    await select(page, "flaky")
    inputs = await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#start-form input')]"
        ".map(i => [i.name, i.type === 'checkbox' ? i.checked : i.value]))"
    )
    assert inputs == {"failures": "1", "recover": True, "pace": "1"}
    # Nothing is loaded from anywhere but the server itself.
    foreign = await page.evaluate(
        "performance.getEntriesByType('resource').map(e => e.name)"
        f".filter(n => !n.startsWith({js(server)}))"
    )
    assert foreign == []
    await assert_no_errors(page)


async def test_research_run_streams_progress_tokens_and_result(
    server: str, browser: Browser
) -> None:
    """A research run started from the form shows its events live, bars, tokens and the result."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "research")
    run_id = await start_run(page, topic="nurseries", pace="0.05")
    assert run_id
    await wait_for_status(page, "completed")

    events = await logged_events(page)
    assert_in_order(events, "StopEvent")
    kinds = [kind for _, kind in events]
    assert kinds.count("Progress") == 13  # plan once, three searches four times each
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        stream = await client.get(
            f"/runs/{run_id}/events", headers={"accept": "application/x-ndjson"}
        )
    assert events == [(e["seq"], e["type"]) for e in map(json.loads, stream.text.splitlines())]
    answer = (await result(page))["answer"]
    assert answer.startswith("nurseries keeps every task inside a scope")
    assert kinds.count("Token") == len(answer.split())
    assert await text(page, "tokens") == answer
    bars = await page.evaluate(
        "[...document.querySelectorAll('#bars .pct')].map(e => e.textContent)"
    )
    assert bars == ["100%"] * 4  # plan, and one per search
    assert not await visible(page, "error")
    assert not await page.evaluate("document.getElementById('cancel').disabled === false")
    await assert_no_errors(page)


async def test_approval_run_asks_and_takes_the_answer(server: str, browser: Browser) -> None:
    """An approval run shows the input request while live, sends the answer, then completes."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "approval")
    await start_run(page, action="ship v2", pace="0")
    await page.wait_for("!document.getElementById('input-request').hidden")

    assert await text(page, "input-question") == "May I ship v2?"
    assert await text(page, "run-status") == "waiting for input"
    assert [kind for _, kind in await logged_events(page)][-1] == "ApprovalRequired"
    answer_inputs = await page.evaluate(
        "[...document.querySelectorAll('#answer-form input')].map(i => [i.name, i.type])"
    )
    # The required boolean is an explicit choice: yes or no, as two radios.
    assert answer_inputs == [["approved", "radio"], ["approved", "radio"], ["comment", "text"]]

    await fill(page, "answer-form", approved=True, comment="go ahead")
    await page.evaluate("document.getElementById('answer').click()")
    await wait_for_status(page, "completed")

    assert await result(page) == {"action": "ship v2", "done": True, "comment": "go ahead"}
    assert not await visible(page, "input-request")
    events = await logged_events(page)
    assert_in_order(events, "StopEvent")
    assert await sent_answers(page) == [["Approval", 'approved=true  comment="go ahead"']]
    assert [kind for _, kind in events].count("Progress") == 6  # prepare 3, carry out 3
    await assert_no_errors(page)


async def test_cancel_ends_a_waiting_run(server: str, browser: Browser) -> None:
    """Cancel on a run that waits for its answer ends it as cancelled."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "approval")
    await start_run(page, pace="0")
    await page.wait_for("!document.getElementById('input-request').hidden")

    await page.evaluate("document.getElementById('cancel').click()")
    await wait_for_status(page, "cancelled")

    assert_in_order(await logged_events(page), "WorkflowCancelledEvent")
    assert not await visible(page, "input-request")
    assert not await visible(page, "result")
    assert await page.evaluate("document.getElementById('cancel').disabled")
    await assert_no_errors(page)


async def test_failed_run_shows_the_error(server: str, browser: Browser) -> None:
    """A flaky run that fails every attempt and does not recover shows the step's error."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "flaky")
    await start_run(page, failures="5", recover=False, pace="0")
    await wait_for_status(page, "failed")

    error = await text(page, "error")
    assert "FlakyError" in error
    assert "attempt 3 of 5 planned failures" in error
    # The step that failed the run, and the one whose failure its error handler re-raised.
    assert await text(page, "error-step") == (
        "in step recover, attempt 1, re-raising the failure of step attempt (attempt 3)"
    )
    # The traceback, shown open under the error: where it was raised, and (a note) that the
    # error handler re-raised what step 'attempt' raised.
    trace = await page.evaluate("document.querySelector('#error pre.traceback').textContent")
    assert trace.startswith("Traceback (most recent call last):")
    assert "raised in step 'recover'" in trace
    assert "while handling the failure of step 'attempt'" in trace
    assert await page.evaluate("document.querySelector('#error details').open")
    events = await logged_events(page)
    assert_in_order(events, "WorkflowFailedEvent")
    failures = await page.evaluate(
        f"{LOG}.filter(e => e.type === 'StepFailedEvent')"
        ".map(e => [e.index, e.text.includes('step_name=\"attempt\"'), e.traceback])"
    )
    # Three failed attempts, then the error handler re-raises: a failed step too.
    assert [attempt for _, attempt, _ in failures] == [True, True, True, False]
    assert all(trace.startswith("Traceback (most recent call last):") for *_, trace in failures)
    # Each failure's traceback is in the detail pane of its row.
    await select_row(page, failures[0][0])
    shown = await page.evaluate("document.querySelector('#event-detail pre.traceback').textContent")
    assert shown == failures[0][2]
    assert "attempt 1 of 5 planned failures" in shown
    assert not await visible(page, "result")
    await assert_no_errors(page)


async def test_a_phones_width_is_one_column_without_sideways_scrolling(
    server: str, browser: Browser
) -> None:
    """At 375 px the lists stack above the workflow, nothing makes the page wider than the
    screen, and a run still starts and completes from the page."""
    page = await browser.new_page(server + "/", width=375, height=800)
    await page.wait_for("document.querySelectorAll('#workflows [data-name]').length > 0")
    await page.wait_for("document.querySelector('#start-form input') !== null")
    await select(page, "flaky")
    await start_run(page, failures="0", recover=True, pace="0")
    await wait_for_status(page, "completed")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    stacked = await page.evaluate(
        "document.querySelector('#workflows').getBoundingClientRect().bottom <= "
        "document.querySelector('#wf-name').getBoundingClientRect().top"
    )
    assert stacked
    # The log's rows are one line each, seq, time and type: the data is in the detail pane.
    assert await page.evaluate(
        "(d => d.length > 0 && d.every(e => getComputedStyle(e).display === 'none'))"
        "([...document.querySelectorAll('#events li .data')])"
    )
    detail = await select_row(page, 0)
    assert '"succeeded_on_attempt": 1' in detail
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await assert_no_errors(page)


# -- the event log: a large run, the detail pane, times, the keyboard ----------------------------


class Tick(trioflow.Event):
    """One of many events."""

    n: int


class Ticks(trioflow.StartEvent):
    """Start: how many events to write."""

    count: int = 10_000


class ChattyFlow(trioflow.Workflow):
    """Writes ``count`` events to the stream as fast as it can."""

    @trioflow.step
    async def chatter(self, ctx: trioflow.Context, ev: Ticks) -> trioflow.StopEvent:
        for n in range(ev.count):
            await ctx.write_event_to_stream(Tick(n=n))
        return trioflow.StopEvent(result={"written": ev.count})


LARGE = 10_000
#: The most rows (and other elements) the event log may hold at once.
FEW_ROWS = 100
ROWS = "document.querySelectorAll('#events li').length"


def row_of(index: int) -> str:
    return f"document.querySelector('#events li[data-index=\"{index}\"]')"


async def test_a_large_run_keeps_few_rows_in_the_page(browser: Browser) -> None:
    """10,000 events: the log's model holds every one, in order, while the page holds only the
    rows in view and a few more; scrolled to the top it shows the first, to the bottom the
    last, and a row selected shows its event whole."""
    # With the server's defaults: the page's one stream is the run's first client, for which
    # the run keeps its events, however many more than `retain` (1,024) it writes.
    async with running_server({"chatty": ChattyFlow(timeout=120)}) as url:
        page = await open_dashboard(browser, url + "/")
        # The most elements the log ever holds, sampled at every frame from here on.
        await page.evaluate(
            """(() => { window.mostInLog = 0;
                const sample = () => {
                    const count = document.getElementById('events').querySelectorAll('*').length;
                    window.mostInLog = Math.max(window.mostInLog, count);
                    requestAnimationFrame(sample);
                };
                requestAnimationFrame(sample); })()"""
        )
        await start_run(page, count=str(LARGE))
        await page.wait_for(f"{LOG}.length === {LARGE + 1}", timeout=60)
        await wait_for_status(page, "completed")
        entries = await page.evaluate(f"{LOG}.map(e => [e.seq, e.type, e.data?.n ?? null])")
        seqs = [seq for seq, _, _ in entries]
        assert seqs == sorted(set(seqs))  # in order, none twice
        assert [n for _, kind, n in entries[:-1] if kind == "Tick"] == list(range(LARGE))
        assert entries[-1][1] == "StopEvent"

        # It followed the stream to its end, and drew only what is in view.
        last = row_of(LARGE)
        assert await page.wait_for(f"{last}?.dataset.type") == "StopEvent"
        assert 0 < await page.evaluate(ROWS) <= FEW_ROWS
        await page.evaluate("document.getElementById('events').scrollTop = 0")
        assert await page.wait_for(f"{row_of(0)}?.dataset.seq") == str(seqs[0])
        assert not await page.evaluate(last)  # dropped once out of view
        assert 0 < await page.evaluate(ROWS) <= FEW_ROWS
        await page.evaluate("(l => { l.scrollTop = l.scrollHeight; })(events)")
        assert await page.wait_for(f"{last}?.dataset.seq") == str(seqs[-1])
        assert not await page.evaluate(row_of(0))

        detail = await select_row(page, 5000)
        assert f"seq {seqs[5000]}" in detail
        assert json.loads(
            await page.evaluate("document.querySelector('#event-detail .json').textContent")
        ) == {"n": 5000}
        assert await page.evaluate(f"{row_of(5000)}.getAttribute('aria-selected')") == "true"
        assert 0 < await page.evaluate(ROWS) <= FEW_ROWS
        assert await page.evaluate("window.mostInLog") <= 4 * FEW_ROWS  # rows and their spans
        await assert_no_errors(page)


async def test_a_run_whose_first_events_are_not_kept_shows_the_rest_and_says_so(
    browser: Browser,
) -> None:
    """A run opened after the server let its first events go (answered 410 from seq 1): the
    log says which are not kept and shows the rest, the run's end and result included, with
    no error; the graph says its counts leave those events out."""
    async with running_server(
        {"chatty": ChattyFlow(timeout=120)}, retain=50, hold_for_first_client=0
    ) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            started = await client.post("/workflows/chatty/runs?lifecycle=1", json={"count": 300})
            run_id = started.json()["run_id"]
            with trio.fail_after(10):
                while (await client.get(f"/runs/{run_id}")).json()["status"] == "running":
                    await trio.sleep(0.05)
            first_seq = (await client.get(f"/runs/{run_id}")).json()["first_seq"]
        assert first_seq > 200  # the server keeps the last 50 or so
        for older_server in (False, True):
            page = await browser.new_page("about:blank")
            if older_server:
                # A server that does not say which events it keeps: the page asks from seq 1,
                # is answered 410 (which the browser logs), and goes on from the oldest kept.
                await page.send(
                    "Page.addScriptToEvaluateOnNewDocument",
                    {
                        "source": """
                const fetched = window.fetch;
                window.fetch = async (...args) => {
                    const response = await fetched(...args);
                    if (!/\\/runs\\/[0-9a-f]+$/.test(new URL(response.url).pathname)) {
                        return response;
                    }
                    const info = await response.json();
                    delete info.first_seq;
                    return new Response(JSON.stringify(info), { headers: response.headers });
                };"""
                    },
                )
            await page.goto(f"{url}/#/runs/{run_id}")
            await wait_for_status(page, "completed")
            assert await result(page) == {"written": 300}
            gaps = await page.evaluate(f"{LOG}.filter(e => e.gap).map(e => [e.data, e.text])")
            assert gaps == [
                [
                    {"first": 1, "last": first_seq - 1},
                    f"events 1 to {first_seq - 1} are no longer kept by the server (its retain)",
                ]
            ]
            events = await logged_events(page)
            assert events[0][0] == first_seq  # the rest, from the oldest kept, to the end
            assert_in_order(events, "StopEvent")
            await page.wait_for("!document.getElementById('graph-note').hidden")
            assert f"up to seq {first_seq - 1}" in await text(page, "graph-note")
            await page.evaluate("0")
            refused = [e for e in page.errors if "status of 410" in e]
            assert (len(refused) > 0) == older_server
            assert [e for e in page.errors if e not in refused] == []
            await page.close()


async def test_a_step_failures_traceback_is_in_its_rows_detail(
    server: str, browser: Browser
) -> None:
    """A flaky run that fails (three planned failures, no recovery): a StepFailedEvent's row
    is one line like any other, and selected, its detail shows its data and its traceback."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "flaky")
    await start_run(page, failures="3", recover=False, pace="0")
    await wait_for_status(page, "failed")
    index = await page.evaluate(f"{LOG}.findIndex(e => e.type === 'StepFailedEvent')")
    assert index >= 0
    assert await page.evaluate(f"{row_of(index)}.offsetHeight === {row_of(0)}.offsetHeight")
    assert (
        await page.evaluate("document.querySelectorAll('#events pre, #events details').length") == 0
    )

    detail = await select_row(page, index)
    assert detail.startswith("StepFailedEvent")
    trace = await page.evaluate("document.querySelector('#event-detail pre.traceback').textContent")
    assert trace.startswith("Traceback (most recent call last):")
    assert "FlakyError: attempt 1 of 3 planned failures" in trace
    data = json.loads(
        await page.evaluate("document.querySelector('#event-detail .json').textContent")
    )
    assert data["step_name"] == "attempt"
    assert data["exception"] == {"type": "FlakyError", "message": "attempt 1 of 3 planned failures"}
    # An event without a traceback shows none; the run's error box keeps its own, open.
    await select_row(page, 0)
    assert not await page.evaluate("document.querySelector('#event-detail pre.traceback')")
    assert await page.evaluate("document.querySelector('#error details').open")
    await assert_no_errors(page)


#: 2025-12-01 16:40:00.123 UTC, in seconds since the epoch.
FIRST_TIME = 1764607200.123


async def test_event_times_are_shown_when_the_server_sends_them(
    server: str, browser: Browser
) -> None:
    """An envelope's "time" shows in its row as the local clock time with milliseconds, and in
    the detail pane with the offset from the run's first event; without one, nothing shows."""
    page = await open_dashboard(browser, server + "/")
    await page.send("Emulation.setTimezoneOverride", {"timezoneId": "UTC"})
    # Known times instead of the server's: a quarter of a second apart from FIRST_TIME, on
    # every event but the last, which has none (as from a server that sends no times).
    await page.evaluate(
        f"""(() => {{
            const Original = window.EventSource;
            window.EventSource = class extends Original {{
                set onmessage(handler) {{
                    let count = 0;
                    super.onmessage = (message) => {{
                        const envelope = JSON.parse(message.data);
                        if (envelope.type !== 'StopEvent') {{
                            envelope.time = {FIRST_TIME} + 0.25 * count;
                            // (lifecycle events, for the graph, are not in the log)
                            if (!/^Step(Started|Finished)Event$/.test(envelope.type)) count++;
                        }} else {{
                            delete envelope.time;
                        }}
                        handler({{ data: JSON.stringify(envelope) }});
                    }};
                }}
            }};
        }})()"""
    )
    await select(page, "research")
    await start_run(page, pace="0")
    await wait_for_status(page, "completed")
    count = await page.evaluate(f"{LOG}.length")
    last_time = f"{row_of(count - 1)}?.querySelector('.time').textContent"
    assert await page.wait_for(f"{last_time} === ''")  # the StopEvent came without one
    await select_row(page, 1)
    times = await page.evaluate(
        "[0, 1, 2].map(i => document.querySelector(`#events li[data-index='${i}'] .time`)"
        ".textContent)"
    )
    assert times == ["16:40:00.123", "16:40:00.373", "16:40:00.623"]
    shown = await page.evaluate("document.querySelector('#event-detail .time').textContent")
    assert shown == "16:40:00.373 (+0.250 s)"
    await select_row(page, count - 1)
    assert await page.evaluate("document.querySelector('#event-detail .time').textContent") == ""
    await assert_no_errors(page)


async def selected(page: Page) -> JsonValue:
    """Which entry the log has selected, as its rows, the list and the detail pane say."""
    return await page.evaluate(
        """(() => {
            const pane = document.getElementById('event-detail');
            return {
                rows: [...document.querySelectorAll('#events li.selected')]
                    .filter(r => r.getAttribute('aria-selected') === 'true')
                    .map(r => Number(r.dataset.index)),
                active: document.getElementById('events')
                    .getAttribute('aria-activedescendant'),
                pane: pane.hidden ? null : Number(pane.dataset.index),
            };
        })()"""
    )


def is_selected(index: int) -> str:
    return (
        f"document.querySelector('#events li.selected')?.dataset.index === '{index}'"
        f" && document.getElementById('event-detail').dataset.index === '{index}'"
    )


async def test_the_event_log_is_driven_from_the_keyboard(server: str, browser: Browser) -> None:
    """With the log focused, Down and Up move the selection (the detail follows), Home and End
    go to either end, Escape closes the detail and Enter opens it again. The answer the page
    sent is an entry too, at the time it was sent."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "approval")
    await start_run(page, pace="0")
    await page.wait_for("!document.getElementById('input-request').hidden")
    before = await page.evaluate("Date.now() / 1000")
    await fill(page, "answer-form", approved=True)
    await page.evaluate("document.getElementById('answer').click()")
    await wait_for_status(page, "completed")
    after = await page.evaluate("Date.now() / 1000")
    entries = await page.evaluate(f"{LOG}.map(e => [e.type, e.sent, e.time])")
    last = len(entries) - 1

    await page.evaluate("document.getElementById('events').focus()")
    await press(page, "ArrowDown")  # nothing selected: the first row in view
    await page.wait_for(is_selected(0))
    assert await selected(page) == {"rows": [0], "active": "event-0", "pane": 0}
    await press(page, "ArrowDown")
    await press(page, "ArrowDown")
    await press(page, "ArrowUp")
    await page.wait_for(is_selected(1))
    assert await selected(page) == {"rows": [1], "active": "event-1", "pane": 1}
    await press(page, "End")
    await page.wait_for(is_selected(last))
    await press(page, "ArrowDown")  # stays on the last
    await press(page, "Home")
    await page.wait_for(is_selected(0))
    await press(page, "ArrowUp")  # stays on the first
    await press(page, "Escape")
    await page.wait_for("document.getElementById('event-detail').hidden")
    assert await selected(page) == {"rows": [], "active": None, "pane": None}
    await press(page, "Enter")
    await page.wait_for(is_selected(0))

    # The answer sent: its row and its detail, timed by the browser's clock.
    sent = next(i for i, (_, was_sent, _) in enumerate(entries) if was_sent)
    assert entries[sent][0] == "Approval"
    assert before <= entries[sent][2] <= after
    for _ in range(sent):
        await press(page, "ArrowDown")
    await page.wait_for(is_selected(sent))
    detail = await page.evaluate("document.getElementById('event-detail').textContent")
    assert detail.startswith("Approval (sent)")
    assert "sent from this page" in detail
    assert json.loads(
        await page.evaluate("document.querySelector('#event-detail .json').textContent")
    ) == {"approved": True}
    # A click selects too, and Close closes.
    await page.evaluate(f"{row_of(2)}.click()")
    await page.wait_for(is_selected(2))
    await page.evaluate("document.querySelector('#event-detail .close').click()")
    await page.wait_for("document.getElementById('event-detail').hidden")
    await assert_no_errors(page)


async def test_bad_start_fields_show_the_servers_message(server: str, browser: Browser) -> None:
    """A start the server refuses (422) shows its message, naming the field, in the page."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "research")
    await page.evaluate("document.getElementById('raw-toggle').click()")
    await page.evaluate("""document.getElementById('raw-input').value = '{"pace": "fast"}'""")
    await page.evaluate("document.getElementById('start').click()")

    message = await page.wait_for(
        "!document.getElementById('api-error').hidden"
        " && document.getElementById('api-error').textContent"
    )
    assert "pace" in message
    assert "422" in message
    assert not await visible(page, "run")


async def test_token_is_passed_on_and_its_absence_reported(browser: Browser) -> None:
    """With a token, /?token= runs end to end; without it the server refuses the page (401)."""
    async with running_server(token="secret") as url:
        page = await open_dashboard(browser, url + "/?token=secret")
        await select(page, "research")
        await start_run(page, pace="0")
        await wait_for_status(page, "completed")
        assert_in_order(await logged_events(page), "StopEvent")
        assert "answer" in await result(page)
        await assert_no_errors(page)

        # The token guards every endpoint, the page included: without it the browser shows
        # the server's 401 error, which says how to pass the token.
        anonymous = await browser.new_page(url + "/")
        text = await anonymous.wait_for("document.body && document.body.innerText")
        assert '"code":"unauthorized"' in text
        assert "?token=<token>" in text


# -- runs: the list, their own URLs, and answering them ------------------------------------------


async def api_status(url: str, run_id: str) -> JsonValue:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.get(f"/runs/{run_id}")
        response.raise_for_status()
        return response.json()


async def test_reload_keeps_the_run(server: str, browser: Browser) -> None:
    """A run has its own URL: reloading the page shows the same run, its events and status."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "approval")
    run_id = await start_run(page, action="ship v3", pace="0")
    await wait_for_status(page, "waiting for input")
    assert await page.evaluate("location.hash") == f"#/runs/{run_id}"
    before = await logged_events(page)

    await page.reload()
    await page.wait_for(f"document.getElementById('run-id').textContent === {js(run_id)}")
    await wait_for_status(page, "waiting for input")
    await page.wait_for(f"{LOG}.filter(e => !e.sent).length >= {len(before)}")
    assert await logged_events(page) == before  # replayed from the first event, none twice
    assert await text(page, "input-question") == "May I ship v3?"
    assert await text(page, "run-workflow") == "approval"
    assert await text(page, "wf-name") == "approval"  # the run's workflow is shown too

    # Answered after the reload, finished, and reloaded again: the outcome is still there.
    await fill(page, "answer-form", approved=False)
    await page.evaluate("document.getElementById('answer').click()")
    await wait_for_status(page, "completed")
    finished = await logged_events(page)
    await page.reload()
    await page.wait_for(f"document.getElementById('run-id').textContent === {js(run_id)}")
    await wait_for_status(page, "completed")
    assert await logged_events(page) == finished
    assert await result(page) == {"action": "ship v3", "done": False, "comment": ""}
    assert not await visible(page, "input-request")
    await assert_no_errors(page)

    # The link, shared: a new tab shows the run, and /#/workflows/<name> a workflow.
    shared = await browser.new_page(f"{server}/#/runs/{run_id}")
    await shared.wait_for(f"document.getElementById('run-id').textContent === {js(run_id)}")
    await wait_for_status(shared, "completed")
    assert await logged_events(shared) == finished
    await shared.evaluate("location.hash = '#/workflows/flaky'")
    await shared.wait_for("document.getElementById('wf-name').textContent === 'flaky'")
    assert await text(shared, "run-id") == run_id  # the run stays shown below
    await assert_no_errors(shared)


async def test_run_started_over_the_api_is_listed_opened_and_answered(
    server: str, browser: Browser
) -> None:
    """A run started by another client shows in the runs list as waiting for input; opened
    from there, it is answered from the page with an explicit choice, and completes."""
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        started = await client.post("/workflows/approval/runs", json={"action": "merge", "pace": 0})
        run_id = started.json()["run_id"]
    page = await open_dashboard(browser, server + "/")
    row = f"document.querySelector('#runs-list [data-run-id={js(run_id)}]')"
    await page.wait_for(f"{row}?.dataset.status === 'waiting'")
    assert await page.evaluate(f"{row}.querySelector('.badge').textContent") == (
        "waiting for input"
    )
    assert await page.evaluate(f"{row}.querySelector('.wf').textContent") == "approval"

    await page.evaluate(f"{row}.querySelector('a').click()")
    await page.wait_for(f"document.getElementById('run-id').textContent === {js(run_id)}")
    await wait_for_status(page, "waiting for input")
    await page.wait_for("!document.getElementById('input-request').hidden")
    assert await text(page, "input-question") == "May I merge?"
    assert await page.evaluate(f"{row}.classList.contains('selected')")
    assert not await page.evaluate("document.getElementById('cancel').disabled")

    await fill(page, "answer-form", approved=True)
    await page.evaluate("document.getElementById('answer').click()")
    await wait_for_status(page, "completed")
    assert await result(page) == {"action": "merge", "done": True, "comment": ""}
    assert await sent_answers(page) == [["Approval", "approved=true"]]
    # The list follows: the row is completed too.
    await page.wait_for(f"{row}?.dataset.status === 'completed'")
    assert (await api_status(server, run_id))["status"] == "completed"
    await assert_no_errors(page)


async def test_a_boolean_answer_needs_an_explicit_choice(server: str, browser: Browser) -> None:
    """The answer's boolean has no preselected value: Send is disabled and the form refuses to
    submit until yes or no is chosen, so nothing is sent by default."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "approval")
    run_id = await start_run(page, pace="0")
    await page.wait_for("!document.getElementById('input-request').hidden")

    checked = await page.evaluate(
        "[...document.querySelectorAll('#answer-form [name=approved]')].map(i => i.checked)"
    )
    assert checked == [False, False]
    assert await page.evaluate("document.getElementById('answer').disabled")
    assert not await page.evaluate("document.getElementById('answer-form').checkValidity()")
    # Enter in the form (a submit) and the button itself: neither sends anything.
    await page.evaluate("document.getElementById('answer-form').requestSubmit()")
    await page.evaluate("document.getElementById('answer').click()")
    await page.evaluate("new Promise((resolve) => setTimeout(resolve, 0))")  # let handlers run
    assert await sent_answers(page) == []
    assert await visible(page, "input-request")
    status = await api_status(server, run_id)
    assert (status["status"], status["waiting_for_input"]) == ("running", True)

    await fill(page, "answer-form", approved=False)
    assert not await page.evaluate("document.getElementById('answer').disabled")
    await page.evaluate("document.getElementById('answer-form').requestSubmit()")
    await wait_for_status(page, "completed")
    assert await result(page) == {"action": "deploy to production", "done": False, "comment": ""}
    await assert_no_errors(page)


async def test_runs_list_pages_and_filters(server: str, browser: Browser) -> None:
    """The list shows the newest runs first, a page at a time ("More" follows next_cursor),
    and filters by workflow and status, "waiting for input" included."""
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        ids = []
        for _ in range(22):
            started = await client.post("/workflows/research/runs", json={"pace": 0})
            ids.append(started.json()["run_id"])
        started = await client.post("/workflows/approval/runs", json={"pace": 0})
        waiting = started.json()["run_id"]
    page = await open_dashboard(browser, server + "/")
    listed = "[...document.querySelectorAll('#runs-list [data-run-id]')].map(e => e.dataset.runId)"
    await page.wait_for(f"{listed}.length === 20")
    assert await page.evaluate(listed) == [waiting, *ids[::-1][:19]]
    assert await visible(page, "runs-more")
    await page.evaluate("document.getElementById('runs-more').click()")
    await page.wait_for(f"{listed}.length === 23")
    assert await page.evaluate(listed) == [waiting, *ids[::-1]]
    assert not await visible(page, "runs-more")

    await page.evaluate(
        """(() => { const s = document.getElementById('runs-workflow');
                    s.value = 'approval'; s.dispatchEvent(new Event('change')); })()"""
    )
    await page.wait_for(f"{listed}.length === 1")
    assert await page.evaluate(listed) == [waiting]
    await page.evaluate(
        """(() => { const w = document.getElementById('runs-workflow'); w.value = '';
                    const s = document.getElementById('runs-status'); s.value = 'running';
                    s.dispatchEvent(new Event('change')); })()"""
    )
    await page.wait_for(f"{listed}.length === 1")  # the research runs have completed
    assert await page.evaluate(listed) == [waiting]
    # Runs that run without asking anything are running, not waiting for input; the one
    # waiting is found beyond the first page of running runs.
    slow = []
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        for _ in range(21):
            started = await client.post("/workflows/research/runs", json={"pace": 100})
            slow.append(started.json()["run_id"])
    await page.wait_for(f"{listed}.length === 20")
    assert await page.evaluate(listed) == slow[::-1][:20]
    await page.evaluate(
        """(() => { const s = document.getElementById('runs-status'); s.value = 'waiting';
                    s.dispatchEvent(new Event('change')); })()"""
    )
    await page.wait_for(f"{listed}.length === 1")
    assert await page.evaluate(listed) == [waiting]
    await assert_no_errors(page)


# -- the graph, live ------------------------------------------------------------------------------


async def graph_states(page: Page) -> dict[str, str]:
    """Each step node's state, by step name."""
    states: dict[str, str] = await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#graph [data-step]')]"
        ".map(e => [e.dataset.step, e.dataset.state]))"
    )
    return states


async def edge_counts(page: Page) -> dict[str, int]:
    """The count shown on each edge, by "source→target" (0: none shown)."""
    counts: dict[str, str | None] = await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#graph [data-edge]')]"
        ".map(e => [e.dataset.edge, e.dataset.count ?? null]))"
    )
    return {edge: int(count or 0) for edge, count in counts.items()}


def step_is(name: str, *states: str) -> str:
    node = f"document.querySelector('#graph [data-step={js(name)}]')"
    return f"{js(list(states))}.includes({node}?.dataset.state)"


async def test_the_workflows_graph_is_drawn(server: str, browser: Browser) -> None:
    """The selected workflow's graph: one node per step and per event type, its edges, each
    node titled; idle until a run is open."""
    page = await open_dashboard(browser, server + "/")
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        for name in WORKFLOWS:
            graph = (await client.get(f"/workflows/{name}")).json()
            await select(page, name)
            drawn = await page.evaluate(
                "({steps: [...document.querySelectorAll('#graph [data-step]')]"
                ".map(e => e.dataset.step), events: [...document.querySelectorAll("
                "'#graph [data-event]')].map(e => e.dataset.event), edges: [...document"
                ".querySelectorAll('#graph [data-edge]')].map(e => e.dataset.edge),"
                " titles: [...document.querySelectorAll('#graph .node')]"
                ".every(n => n.querySelector('title')?.textContent)})"
            )
            assert sorted(drawn["steps"]) == sorted(step["name"] for step in graph["steps"])
            assert sorted(drawn["events"]) == sorted(event["name"] for event in graph["events"])
            edges = [f"{e['source']}\u2192{e['target']}" for e in graph["graph"]["edges"]]
            assert sorted(drawn["edges"]) == sorted(edges)
            assert drawn["titles"]
            assert set((await graph_states(page)).values()) == {"idle"}
            # Laid out in layers: the start event above its step, that step above what it returns.
            tops = await page.evaluate(
                "Object.fromEntries([...document.querySelectorAll('#graph .node')]"
                ".map(n => [n.dataset.step ?? n.dataset.event ?? n.dataset.external,"
                " n.getBoundingClientRect().top]))"
            )
            first = graph["steps"][0]
            assert tops[first["accepts"][0]] < tops[first["name"]]
    assert await edge_counts(page) == dict.fromkeys(await edge_counts(page), 0)
    await assert_no_errors(page)


async def test_the_graph_shows_a_running_step_then_a_finished_one(
    server: str, browser: Browser
) -> None:
    """A research run: the search step runs (with its three workers), then every step is done;
    the edges count the events that went along them."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "research")
    await start_run(page, pace="0.5")
    await page.wait_for(step_is("search", "running"))
    workers = await page.evaluate(
        "document.querySelector('#graph [data-step=search]').dataset.workers"
    )
    assert 1 <= int(workers) <= 3
    assert (await graph_states(page))["plan"] == "done"
    await wait_for_status(page, "completed")
    await page.wait_for(f"{step_is('write', 'done')} && {step_is('search', 'done')}")
    assert await graph_states(page) == {"plan": "done", "search": "done", "write": "done"}
    counts = await edge_counts(page)
    assert counts["Research\u2192plan"] == 1
    assert counts["plan\u2192Query"] == counts["Query\u2192search"] == 3
    assert counts["search\u2192Findings"] == counts["Findings\u2192write"] == 3
    assert counts["write\u2192StopEvent"] == 1
    assert counts["write\u2192Token"] == len((await result(page))["answer"].split())
    assert not await visible(page, "graph-note")
    await assert_no_errors(page)


async def test_the_graph_shows_retries_and_the_failed_step(server: str, browser: Browser) -> None:
    """A flaky run that never succeeds: the step retries, then it and the error handler that
    re-raised are failed; the failures are counted on the edge to StepFailedEvent."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "flaky")
    await start_run(page, failures="5", recover=False, pace="0")
    await page.wait_for(step_is("attempt", "retrying"))  # 0.3 s between attempts
    await wait_for_status(page, "failed")
    await page.wait_for(f"{step_is('attempt', 'failed')} && {step_is('recover', 'failed')}")
    counts = await edge_counts(page)
    assert counts["Job\u2192attempt"] == 1
    assert counts["attempt\u2192StepFailedEvent"] == 3
    assert counts["StepFailedEvent\u2192recover"] == 1
    assert counts["attempt\u2192StopEvent"] == counts["recover\u2192StopEvent"] == 0
    await assert_no_errors(page)


async def test_the_graph_counts_an_event_two_steps_may_return_by_its_sender(
    server: str, browser: Browser
) -> None:
    """StopEvent may come from the flaky step or its error handler: the edge from the one
    that returned it counts it (from StepFinishedEvent's ``returned``), the other none."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "flaky")
    await start_run(page, failures="3", recover=True, pace="0")
    await wait_for_status(page, "completed")
    await page.wait_for(step_is("recover", "done"))
    counts = await edge_counts(page)
    assert (counts["attempt\u2192StopEvent"], counts["recover\u2192StopEvent"]) == (0, 1)
    assert counts["attempt\u2192StepFailedEvent"] == 3

    await start_run(page, failures="1", recover=True, pace="0")
    await wait_for_status(page, "completed")
    await page.wait_for(step_is("attempt", "done"))
    counts = await edge_counts(page)
    assert (counts["attempt\u2192StopEvent"], counts["recover\u2192StopEvent"]) == (1, 0)
    await assert_no_errors(page)


async def test_the_graph_shows_a_step_waiting_for_input(server: str, browser: Browser) -> None:
    """An approval run: its step waits for input while the request is pending, runs on once
    answered, and is done; a run started without lifecycle events shows no step states."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "approval")
    await start_run(page, pace="0")
    await page.wait_for(step_is("prepare", "waiting"))
    assert (await edge_counts(page))["prepare\u2192ApprovalRequired"] == 1
    # On the timeline too, its running bar is marked as waiting.
    await page.wait_for("document.querySelector('#timeline [data-bar=prepare][data-waiting=true]')")
    await fill(page, "answer-form", approved=True)
    await page.evaluate("document.getElementById('answer').click()")
    await wait_for_status(page, "completed")
    await page.wait_for(step_is("prepare", "done"))

    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        started = await client.post("/workflows/research/runs", json={"pace": 0})
        run_id = started.json()["run_id"]
    await page.evaluate(f"location.hash = {js('#/runs/' + run_id)}")
    await wait_for_status(page, "completed")
    await page.wait_for("!document.getElementById('graph-note').hidden")
    assert set((await graph_states(page)).values()) == {"idle"}
    # Nor a timeline: it says why instead.
    await page.wait_for("!document.getElementById('timeline-note').hidden")
    assert "without ?lifecycle=1" in await text(page, "timeline-note")
    assert await page.evaluate("document.querySelectorAll('#timeline [data-bar]').length") == 0
    # Its StepFailedEvents alone make no step "failed" (the first two attempts were retried).
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        started = await client.post(
            "/workflows/flaky/runs", json={"failures": 3, "recover": False, "pace": 0}
        )
        flaky = started.json()["run_id"]
    await page.evaluate(f"location.hash = {js('#/runs/' + flaky)}")
    await wait_for_status(page, "failed")
    await page.wait_for("!document.getElementById('graph-note').hidden")
    assert set((await graph_states(page)).values()) == {"idle"}
    await assert_no_errors(page)


# -- the timeline -------------------------------------------------------------------------------


async def timeline_bars(page: Page) -> list[dict[str, str]]:
    """Each bar of the timeline: step, attempt, status, retried, start and end (seconds from
    the run's first event), title, in drawing order."""
    bars: list[dict[str, str]] = await page.evaluate(
        "[...document.querySelectorAll('#timeline [data-bar]')].map(b => ({step: b.dataset.bar,"
        " attempt: b.dataset.attempt, status: b.dataset.status, retried: b.dataset.retried,"
        " start: b.dataset.start, end: b.dataset.end,"
        " title: b.querySelector('title').textContent}))"
    )
    return bars


async def timeline_lanes(page: Page, step: str) -> int:
    """How many lanes a step's bars take on the timeline (their distinct heights)."""
    lanes: int = await page.evaluate(
        f"new Set([...document.querySelectorAll('#timeline [data-bar={js(step)}] rect')]"
        ".map(r => r.y.baseVal.value)).size"
    )
    return lanes


async def test_the_timeline_shows_attempts_retries_and_failures(
    server: str, browser: Browser
) -> None:
    """A flaky run that fails: a bar per attempt of the step, in time order, each failed,
    the first two marked retried with the retry's wait after them, then the error handler's
    failed attempt; a reload draws the same bars at the same times (the server's)."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "flaky")
    await start_run(page, failures="3", recover=False, pace="0.1")
    await wait_for_status(page, "failed")
    await page.wait_for("document.querySelectorAll('#timeline [data-bar]').length === 4")
    bars = await timeline_bars(page)
    assert [(b["step"], b["attempt"], b["status"], b["retried"]) for b in bars] == [
        ("attempt", "1", "failed", "true"),
        ("attempt", "2", "failed", "true"),
        ("attempt", "3", "failed", "false"),
        ("recover", "1", "failed", "false"),
    ]
    times = [(float(b["start"]), float(b["end"])) for b in bars]
    assert times[0][0] >= 0
    for (start, end), (later, _) in itertools.pairwise(times):
        assert start <= end <= later  # each attempt after the one before it
    assert "FlakyError: attempt 3 of 3 planned failures" in bars[2]["title"]
    waits = await page.evaluate(
        "[...document.querySelectorAll('#timeline [data-wait]')].map(w => w.dataset.wait)"
    )
    assert waits == ["attempt", "attempt"]
    assert await page.evaluate("document.querySelector('#timeline .end') !== null")

    await page.reload()
    await wait_for_status(page, "failed")
    await page.wait_for("document.querySelectorAll('#timeline [data-bar]').length === 4")
    assert await timeline_bars(page) == bars
    await assert_no_errors(page)


async def test_the_timeline_shows_running_attempts_grow_then_end(
    server: str, browser: Browser
) -> None:
    """A research run: while its searches run, their bars run side by side and grow; once
    the run completes every bar has returned, one per step execution."""
    page = await open_dashboard(browser, server + "/")
    await select(page, "research")
    await start_run(page, pace="1.5")  # searches of 0.9 s: several redraws while they run
    running = "[...document.querySelectorAll('#timeline [data-bar=search][data-status=running]')]"
    await page.wait_for(f"{running}.length > 0")
    width = f"Math.max(...{running}.map(b => b.querySelector('rect').width.baseVal.value))"
    first = await page.evaluate(width)
    await page.wait_for(f"{running}.length > 0 && {width} > {first}")  # it grows as time goes
    await wait_for_status(page, "completed")
    # One bar per step execution (write runs once per Findings, and answers on the third);
    # tiny neighbours are drawn as one bar that says how many it holds.
    executions = (
        "[...document.querySelectorAll('#timeline [data-bar]')].reduce((n, b) =>"
        " ({...n, [b.dataset.bar]: (n[b.dataset.bar] ?? 0) + Number(b.dataset.bars ?? 1)}), {})"
    )
    await page.wait_for(f"{executions}.write === 3")
    assert await page.evaluate(executions) == {"plan": 1, "search": 3, "write": 3}
    statuses = {b["status"] for b in await timeline_bars(page)}
    assert statuses == {"ok"}
    rows = await page.evaluate(
        "[...document.querySelectorAll('#timeline [data-row]')].map(r => r.dataset.row)"
    )
    assert rows == ["plan", "search", "write"]
    # The three searches ran at once: side by side, in three lanes.
    assert await timeline_lanes(page, "search") == 3
    await assert_no_errors(page)


# -- the keyboard ---------------------------------------------------------------------------------

#: CDP's description of each key pressed: its code, Windows key code, and the text it types.
#: Each key's code, Windows virtual key code (CDP's key events need it besides the key's
#: name) and the text it types.
KEYS = {
    "Tab": ("Tab", 9, ""),
    "Enter": ("Enter", 13, "\r"),
    " ": ("Space", 32, " "),
    "ArrowDown": ("ArrowDown", 40, ""),
    "ArrowUp": ("ArrowUp", 38, ""),
    "Home": ("Home", 36, ""),
    "End": ("End", 35, ""),
    "Escape": ("Escape", 27, ""),
}


async def press(page: Page, key: str, *, shift: bool = False) -> None:
    """Press and release a key as the keyboard does (Tab, Enter, " " for Space)."""
    code, key_code, typed = KEYS[key]
    event: dict[str, Any] = {
        "key": key,
        "code": code,
        "windowsVirtualKeyCode": key_code,
        "modifiers": 8 if shift else 0,
    }
    # A key that types ("keyDown" with its text) also sends keypress: Enter's click is there.
    down = {**event, "type": "keyDown", "text": typed} if typed else {**event, "type": "rawKeyDown"}
    await page.send("Input.dispatchKeyEvent", down)
    await page.send("Input.dispatchKeyEvent", {**event, "type": "keyUp"})


async def type_text(page: Page, text: str) -> None:
    """Type into the focused field, key by key."""
    for char in text:
        await page.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": char, "text": char})
        await page.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": char})


#: The focused element, named for the assertions: step:<name>, workflow:<name>, run:<id>,
#: <form>:<field> (radios: <form>:<field>=<value>), #<id>, or "body" when nothing is.
FOCUSED = """(() => {
    const e = document.activeElement;
    if (!e || e === document.body) return "body";
    if (e.dataset.step) return `step:${e.dataset.step}`;
    const item = e.closest("[data-name], [data-run-id]");
    if (item?.dataset.name) return `workflow:${item.dataset.name}`;
    if (item?.dataset.runId) return `run:${item.dataset.runId}`;
    if (e.form && e.name) {
        return `${e.form.id}:${e.name}` + (e.type === "radio" ? `=${e.value}` : "");
    }
    return e.id ? `#${e.id}` : e.tagName;
})()"""


async def focused(page: Page) -> str:
    name: str = await page.evaluate(FOCUSED)
    return name


async def tab_through(page: Page, count: int, *, shift: bool = False) -> list[tuple[str, str]]:
    """Press Tab (Shift+Tab) ``count`` times: each element reached and its outline style."""
    reached = []
    for _ in range(count):
        await press(page, "Tab", shift=shift)
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        reached.append((await focused(page), outline))
    return reached


async def test_the_keyboard_reaches_every_control_in_order(server: str, browser: Browser) -> None:
    """From the page's top, Tab goes through the skip link, the workflows, the filters, the runs
    and More, the graph's steps and the start form, each focus outlined; Shift+Tab goes back.
    The skip link jumps to the workflow; More hands the focus on to the first run it brought,
    and a focused run keeps the focus when the list is refreshed."""
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        ids = []
        for _ in range(21):
            started = await client.post("/workflows/research/runs", json={"pace": 0})
            ids.append(started.json()["run_id"])
    page = await open_dashboard(browser, server + "/")
    await page.wait_for("document.querySelectorAll('#runs-list [data-run-id]').length === 20")
    await page.wait_for("!document.getElementById('runs-more').hidden")
    order = [
        "#skip",
        *(f"workflow:{name}" for name in WORKFLOWS),
        "#runs-workflow",
        "#runs-status",
        *(f"run:{run_id}" for run_id in ids[::-1][:20]),
        "#runs-more",
        "step:plan",
        "step:search",
        "step:write",
        "start-form:topic",
        "start-form:pace",
        "#start",
        "#raw-toggle",
    ]
    reached = await tab_through(page, len(order))
    assert [name for name, _ in reached] == order
    # The skip link is outlined while focused too; the others all draw the page's outline.
    assert {outline for _, outline in reached} == {"solid"}
    back = await tab_through(page, len(order) - 1, shift=True)
    assert [name for name, _ in back] == order[-2::-1]

    # The skip link: the workflow's heading, then its graph.
    await press(page, "Enter")
    assert await focused(page) == "#wf-name"
    assert (await tab_through(page, 1))[0][0] == "step:plan"
    label = await page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert label == "step plan"
    assert await page.evaluate("document.activeElement.getAttribute('role')") == "img"

    # More, pressed: the last page hides it, and the focus goes to the run it brought.
    assert (await tab_through(page, 1, shift=True))[0][0] == "#runs-more"
    await press(page, " ")
    await page.wait_for(f"{FOCUSED} === {js('run:' + ids[0])}")
    assert not await visible(page, "runs-more")
    # The list is rebuilt every 2 s: the focus stays on that run, in its new row.
    await page.evaluate("window.focusedRow = document.activeElement")
    await page.wait_for("!document.contains(window.focusedRow)")
    assert await focused(page) == f"run:{ids[0]}"
    await assert_no_errors(page)


async def test_a_run_is_started_and_answered_by_keyboard_alone(
    server: str, browser: Browser
) -> None:
    """Tab, Enter, Space and typing: choose the approval workflow, fill its start form, Start;
    the focus moves to the run, then on to Cancel and the answer; "yes" and Send, and the run
    completes with the focus on the run's heading rather than on the hidden form."""
    page = await open_dashboard(browser, server + "/")
    assert [name for name, _ in await tab_through(page, 3)] == [
        "#skip",
        "workflow:research",
        "workflow:approval",
    ]
    await press(page, "Enter")
    await page.wait_for("document.getElementById('wf-name').textContent === 'approval'")
    assert await focused(page) == "workflow:approval"
    assert [name for name, _ in await tab_through(page, 5)] == [
        "workflow:flaky",
        "#runs-workflow",
        "#runs-status",
        "step:prepare",
        "start-form:action",
    ]
    await type_text(page, "ship by keyboard")  # focused by Tab, the default is selected
    assert [name for name, _ in await tab_through(page, 1)] == ["start-form:pace"]
    await type_text(page, "0")
    assert [name for name, _ in await tab_through(page, 1)] == ["#start"]
    await press(page, "Enter")

    await page.wait_for("!document.getElementById('input-request').hidden")
    assert await focused(page) == "#run-title"  # the run's panel, which the run goes on in
    assert [name for name, _ in await tab_through(page, 2)] == [
        "#cancel",
        "answer-form:approved=true",
    ]
    assert await page.evaluate("document.getElementById('answer').disabled")
    await press(page, " ")  # yes
    assert not await page.evaluate("document.getElementById('answer').disabled")
    assert [name for name, _ in await tab_through(page, 1)] == ["answer-form:comment"]
    await type_text(page, "by keyboard")
    assert [name for name, _ in await tab_through(page, 1)] == ["#answer"]
    await press(page, " ")

    await wait_for_status(page, "completed")
    assert await result(page) == {
        "action": "ship by keyboard",
        "done": True,
        "comment": "by keyboard",
    }
    assert await sent_answers(page) == [["Approval", 'approved=true  comment="by keyboard"']]
    await page.wait_for(f"{FOCUSED} === '#run-title'")
    # Cancel is disabled and the answer hidden now: next comes the event log, which scrolls.
    assert [name for name, _ in await tab_through(page, 1)] == ["#events"]
    assert (
        await page.evaluate("document.activeElement.getAttribute('aria-label')")
        == "events of the run"
    )
    node = "document.querySelector('#graph [data-step=prepare]')"
    await page.wait_for(f"{node}.getAttribute('aria-label') === 'step prepare: done'")
    assert await page.evaluate(f"{node}.querySelector('title').textContent") == "step prepare: done"
    await assert_no_errors(page)


# -- dark mode and contrast -----------------------------------------------------------------------

#: In the page: [what, contrast ratio, text colour, background] for every kind of text it
#: shows, in the colour scheme in force. A text's background is the first opaque one from it
#: up (SVG text: its node's or pill's rect). Samples are made, measured and removed again for
#: what the page shows only sometimes: each status badge, each kind of event log line, each
#: step state and event kind of the graph.
CONTRAST = """(() => {
    // Any CSS colour as [r, g, b, a] in 0..255: a pixel painted with it says.
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 1;
    const paint = canvas.getContext("2d", { willReadFrequently: true });
    const rgba = (color) => {
        paint.clearRect(0, 0, 1, 1);
        paint.fillStyle = color;
        paint.fillRect(0, 0, 1, 1);
        return [...paint.getImageData(0, 0, 1, 1).data];
    };
    const background = (node) => {
        for (let e = node; e; e = e.parentElement) {
            const color = rgba(getComputedStyle(e).backgroundColor);
            if (color[3] === 255) return color;
        }
        return [255, 255, 255, 255];
    };
    const luminance = ([r, g, b]) => {
        const lin = (c) => (c /= 255) <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    const rows = [];
    const measure = (what, node, fg, bg) => {
        if (!node) { rows.push([what, 0, "missing", ""]); return; }
        const [a, b] = [luminance(fg), luminance(bg)];
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        rows.push([what, Math.round(ratio * 100) / 100, String(fg), String(bg)]);
    };
    const text = (what, node) =>
        measure(what, node, node && rgba(getComputedStyle(node).color), node && background(node));
    const svgText = (what, node) => measure(what, node,
        node && rgba(getComputedStyle(node).fill),
        node && rgba(getComputedStyle(node.parentNode.querySelector("rect")).fill));
    const q = (selector) => document.querySelector(selector);

    text("body", document.body);
    text("skip link", q("#skip"));
    text("workflow name", q("#wf-name"));
    text("workflow doc", q("#wf-doc"));
    text("table header", q("#steps th"));
    text("table cell", q("#steps td.mono"));
    text("field label", q("#start-form label"));
    text("field type", q("#start-form label small"));
    text("input", q("#start-form input"));
    text("filter", q("#runs-workflow"));
    text("workflow", q("#workflows li:not(.selected) button"));
    text("selected workflow", q("#workflows .selected button"));
    text("run", q("#runs-list li:not(.selected) .wf"));
    text("run time", q("#runs-list li:not(.selected) .when"));
    text("open run", q("#runs-list .selected .wf"));
    text("open run time", q("#runs-list .selected .when"));
    text("button Start", q("#start"));
    text("button Cancel", q("#cancel:enabled"));
    text("button More", q("#runs-more"));
    text("button Send", q("#answer"));
    text("raw JSON", q("#raw-label"));
    text("run id", q("#run-id"));
    text("bar label", q("#bars .label"));
    text("bar percent", q("#bars .pct"));
    text("question", q("#input-question"));
    text("request details", q("#input-details"));
    text("answer label", q("#answer-form label"));
    text("result", q("#result"));
    text("error", q("#error"));
    text("api error", q("#api-error"));
    text("tokens", q("#tokens"));
    text("graph note", q("#graph-note"));
    const head = q("#run .run-head");
    for (const status of ["", "running", "waiting", "completed", "failed", "timed_out",
                          "cancelled"]) {
        const badge = el("span", { class: `badge ${status}`, text: status || "?" });
        head.append(badge);
        text(`badge ${status || "(none)"}`, badge);
        badge.remove();
    }
    const log = q("#events");
    const samples = ["event", "input_required", "human_response", "step_failed", "stop",
                     "event bad", "sent"].map((kind) => el("li", { class: kind },
        el("span", { class: "seq", text: "1" }), el("span", { class: "type", text: kind }),
        el("span", { class: "data", text: "x=1" })));
    log.append(...samples);
    for (const item of samples) item.append(el("span", { class: "time", text: "12:00:00.000" }));
    samples[0].classList.add("selected");
    for (const item of samples) {
        text(`log time ${item.className}`, item.querySelector(".time"));
        text(`log type ${item.className}`, item.querySelector(".type"));
        text(`log seq ${item.className}`, item.querySelector(".seq"));
        text(`log data ${item.className}`, item.querySelector(".data"));
    }
    for (const item of samples) item.remove();
    const graph = q("#graph");
    const step = q("#graph [data-step]");
    for (const state of ["idle", "running", "waiting", "retrying", "failed", "done",
                         "stopped"]) {
        const node = step.cloneNode(true);
        node.dataset.state = state;
        node.querySelector("text.state").textContent = state;
        graph.append(node);
        svgText(`step label ${state}`, node.querySelector("text.label"));
        svgText(`step state ${state}`, node.querySelector("text.state"));
        node.remove();
    }
    const event = q("#graph [data-event]");
    for (const kind of ["event", "start", "stop", "input_required", "human_response",
                        "step_failed"]) {
        const node = event.cloneNode(true);
        node.setAttribute("class", `node event ${kind}`);
        graph.append(node);
        svgText(`event ${kind}`, node.querySelector("text"));
        node.remove();
    }
    svgText("edge count", q("#graph .edge .count text"));
    const line = q("#timeline");
    for (const [what, node] of [["timeline axis", q("#timeline .axis text")],
                                ["timeline step", q("#timeline text.step")]]) {
        measure(what, node, node && rgba(getComputedStyle(node).fill), background(line));
    }
    for (const [status, waiting] of [["running", "false"], ["running", "true"], ["ok", "false"],
                                     ["failed", "false"], ["stopped", "false"]]) {
        const bar = svgEl("g", { "data-bar": "x", "data-status": status, "data-waiting": waiting },
                          svgEl("rect", { width: 40, height: 14 }), svgEl("text", { text: "#2" }));
        line.append(bar);
        svgText(`timeline bar ${status}${waiting === "true" ? " waiting" : ""}`,
                bar.querySelector("text"));
        bar.remove();
    }
    return rows;
})()"""

#: In the page: every colour the style sheet and the inline SVG name outside the variables of
#: :root (which the dark scheme redefines), as "selector { declaration }" or "<tag attr=value>".
HARD_CODED_COLOURS = r"""(() => {
    const colour = /#[0-9a-f]{3,8}\b|\b(rgba?|hsla?|hwb|lab|lch|oklab|oklch)\(|\b(white|black)\b/i;
    const found = [];
    const visit = (rules) => {
        for (const rule of rules) {
            if (rule.cssRules) visit(rule.cssRules);
            if (!rule.style || rule.selectorText === ":root") continue;
            for (const name of rule.style) {
                const value = rule.style.getPropertyValue(name);
                if (colour.test(value)) found.push(`${rule.selectorText} { ${name}: ${value} }`);
            }
        }
    };
    for (const sheet of document.styleSheets) visit(sheet.cssRules);
    for (const node of document.querySelectorAll("svg *")) {
        for (const name of ["fill", "stroke", "color", "style"]) {
            const value = node.getAttribute(name);
            if (value && colour.test(value)) found.push(`<${node.tagName} ${name}=${value}>`);
        }
    }
    return found;
})()"""


async def prefer_scheme(page: Page, scheme: str) -> None:
    """Emulate the system's colour scheme setting, "light" or "dark"."""
    await page.send(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )


async def body_luminance(page: Page) -> tuple[float, float]:
    """The relative luminance (0 black, 1 white) of the page's background and of its text."""
    values: list[float] = await page.evaluate(
        """[getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color]
        .map((c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number))
        .map(([r, g, b]) => (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255)"""
    )
    return values[0], values[1]


async def test_dark_mode_follows_the_system_and_every_text_stays_readable(
    server: str, browser: Browser
) -> None:
    """The page's colours are variables only; with the system in dark mode the page is dark,
    and in both schemes every kind of text (badges, buttons, the log, the graph's states) has a
    contrast ratio of at least 4.5 against its background."""
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        await client.post("/workflows/research/runs", json={"pace": 0})
    page = await open_dashboard(browser, server + "/")
    assert await page.evaluate(HARD_CODED_COLOURS) == []
    await select(page, "approval")
    await start_run(page, pace="0")
    await page.wait_for("!document.getElementById('input-request').hidden")
    await page.wait_for(step_is("prepare", "waiting"))
    await page.wait_for("document.querySelector('#timeline text.step')")
    # The run shown, and another, in the list.
    await page.wait_for(
        "document.querySelectorAll('#runs-list li:not(.selected)').length === 1"
        " && document.querySelector('#runs-list .selected')"
    )

    await prefer_scheme(page, "dark")
    background, foreground = await body_luminance(page)
    assert background < 0.15
    assert foreground > 0.8
    assert await page.evaluate("getComputedStyle(document.documentElement).colorScheme") == (
        "light dark"
    )
    dark = await page.evaluate(CONTRAST)
    await prefer_scheme(page, "light")
    background, foreground = await body_luminance(page)
    assert background > 0.9
    assert foreground < 0.2
    light = await page.evaluate(CONTRAST)

    for rows in (dark, light):
        assert [row for row in rows if row[2] == "missing"] == []
        assert len(rows) == 95
        assert [row for row in rows if row[1] < 4.5] == []
    await assert_no_errors(page)


async def test_a_waiting_runs_bar_runs_to_the_servers_now(server: str, browser: Browser) -> None:
    """A run opened while it waits: its events are replayed at once, and its running bar
    reaches the server's clock (the Date of its answers), not the newest event's time."""
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        started = await client.post("/workflows/approval/runs?lifecycle=1", json={"pace": 0})
        run_id = started.json()["run_id"]
    page = await open_dashboard(browser, f"{server}/#/runs/{run_id}")
    await wait_for_status(page, "waiting for input")
    bar = "document.querySelector('#timeline [data-bar=prepare][data-status=running]')"
    await page.wait_for(bar)
    # A minute passes on the browser's clock, as it would while the run waits.
    await page.evaluate("Date.now = ((now) => () => now() + 60_000)(Date.now)")
    seconds = f"Number(/for ([0-9.]+) s/.exec({bar}.querySelector('title').textContent)[1])"
    await page.wait_for(f"{seconds} >= 59")
    await assert_no_errors(page)


class Maybe(trioflow.StartEvent):
    """Start: an optional boolean whose default is None."""

    flag: bool | None = None


class MaybeFlow(trioflow.Workflow):
    """Says what it was given."""

    @trioflow.step
    async def say(self, ev: Maybe) -> trioflow.StopEvent:
        return trioflow.StopEvent(result={"flag": ev.flag})


async def test_an_optional_boolean_left_alone_sends_nothing(browser: Browser) -> None:
    """A boolean whose default is None is three choices, "not set" chosen: left alone it is
    not sent (the run gets None, never False); chosen, it is sent."""
    async with running_server({"maybe": MaybeFlow()}) as url:
        page = await open_dashboard(browser, url + "/")
        choices = await page.evaluate(
            "[...document.querySelectorAll('#start-form [name=flag]')]"
            ".map(r => [r.value, r.checked, r.required])"
        )
        assert choices == [["true", False, False], ["false", False, False], ["", True, False]]
        await start_run(page)
        await wait_for_status(page, "completed")
        assert await result(page) == {"flag": None}
        await start_run(page, flag="false")
        await wait_for_status(page, "completed")
        assert await result(page) == {"flag": False}
        await assert_no_errors(page)


# -- a busy run: many workers, many progress lines, many tokens, a wide graph ----------------------


class Item(trioflow.Event):
    n: int


class Done(trioflow.Event):
    n: int


class Score(trioflow.Event):
    """Not progress, though its value is between 0 and 1: one per item."""

    value: float
    label: str


class Token(trioflow.Event):
    text: str


class BusyFlow(trioflow.Workflow):
    """Eight items worked on at once, a score per item, then many tokens."""

    @trioflow.step
    async def split(self, ctx: trioflow.Context, ev: trioflow.StartEvent) -> list[Item]:
        for n in range(20):
            await ctx.write_event_to_stream(Score(value=n / 20, label=f"item {n}"))
        return [Item(n=n) for n in range(8)]

    @trioflow.step(num_workers=8)
    async def work(self, ev: Item) -> Done:
        await trio.sleep(0.3)
        return Done(n=ev.n)

    @trioflow.step
    async def done(self, ctx: trioflow.Context, evs: list[Done]) -> trioflow.StopEvent:
        for n in range(500):
            await ctx.write_event_to_stream(Token(text=f"w{n}"))
        return trioflow.StopEvent(result=len(evs))


def wide_flow(branches: int) -> trioflow.Workflow:
    """A start step that may return any of ``branches`` event types, each its own step's."""
    source = ["import trioflow", "class Wide(trioflow.Workflow):"]
    for i in range(branches):
        source.insert(1, f"class E{i}(trioflow.Event): pass")
    returns = " | ".join(f"E{i}" for i in range(branches))
    source += [
        "    @trioflow.step",
        f"    async def begin(self, ev: trioflow.StartEvent) -> {returns}:",
        "        return E0()",
    ]
    for i in range(branches):
        source += [
            "    @trioflow.step",
            f"    async def s{i}(self, ev: E{i}) -> trioflow.StopEvent:",
            "        return trioflow.StopEvent(result=1)",
        ]
    namespace: dict[str, Any] = {}
    exec("\n".join(source), namespace)
    workflow: trioflow.Workflow = namespace["Wide"]()
    return workflow


async def select_free_form(page: Page, name: str) -> None:
    """Click a workflow whose start event takes any fields (raw JSON, no inputs)."""
    await page.wait_for(f"document.querySelector('#workflows [data-name={js(name)}] button')")
    await page.evaluate(
        f"document.querySelector('#workflows [data-name={js(name)}] button').click()"
    )
    await page.wait_for(
        f"document.getElementById('wf-name').textContent === {js(name)}"
        " && !document.getElementById('raw-input').hidden"
    )


async def test_a_busy_run_stays_readable(browser: Browser) -> None:
    """Eight workers at once sit in eight lanes of the timeline; a score per item shows a few
    lines and counts the rest; 500 tokens are all there in a block that scrolls; an edge's
    count pill is as wide as its number; a wide graph scrolls in its box, the page does not."""
    async with running_server({"busy": BusyFlow(), "wide": wide_flow(20)}) as url:
        page = await browser.new_page(url + "/")
        await select_free_form(page, "busy")
        await start_run(page)
        await wait_for_status(page, "completed")
        await page.wait_for("document.querySelectorAll('#timeline [data-bar=work]').length === 8")
        assert await timeline_lanes(page, "work") == 8
        assert await page.evaluate("document.querySelectorAll('#bars .bar').length") == 12
        assert await page.evaluate("document.querySelector('#bars .more').textContent") == (
            "and 8 more (in the event log)"
        )
        await page.wait_for("document.getElementById('tokens').textContent.endsWith('w499')")
        words = (await text(page, "tokens")).split()
        assert words == [f"w{n}" for n in range(500)]
        tokens = await page.evaluate(
            "(() => { const t = document.getElementById('tokens');"
            " return [t.scrollHeight > t.clientHeight, t.clientHeight <= 240]; })()"
        )
        assert tokens == [True, True]
        pill = "document.querySelector('#graph [data-edge=\"done\\u2192Token\"]')"
        await page.wait_for(f"{pill}?.dataset.count === '500'")
        assert await page.evaluate(f"{pill}.querySelector('rect').width.baseVal.value") >= 29

        await select_free_form(page, "wide")
        sizes = await page.evaluate(
            "(() => { const g = document.getElementById('graph');"
            " const box = document.getElementById('graph-box');"
            " return { natural: g.viewBox.baseVal.width, shown: g.getBoundingClientRect().width,"
            " scrolls: box.scrollWidth > box.clientWidth,"
            " page: document.scrollingElement.scrollWidth <= innerWidth }; })()"
        )
        assert sizes["shown"] >= 0.6 * sizes["natural"] - 1  # shrunk no further than 60%
        assert sizes["scrolls"]
        assert sizes["page"]
        await assert_no_errors(page)


async def test_a_mistyped_run_link_is_said_so_and_the_page_works(
    server: str, browser: Browser
) -> None:
    """A link with a malformed escape: the page says the run is unknown, and still shows the
    workflows."""
    page = await browser.new_page(f"{server}/#/runs/%E0%A4%A")
    await page.wait_for("!document.getElementById('api-error').hidden")
    assert "404" in await text(page, "api-error")
    await page.wait_for("document.querySelector('#start-form input') !== null")
    await page.evaluate("0")
    assert [e for e in page.errors if "status of 404" not in e] == []
