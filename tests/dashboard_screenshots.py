"""Not a test: the dashboard's screenshots in ``docs/dashboard/``, made again from the page.

    .venv/bin/python tests/dashboard_screenshots.py [OUTPUT_FOLDER]

It serves the example workflows on a free port, drives the page in headless Chromium
(``tests/_browser.py``) as the browser tests do, and saves one PNG per view: the workflows and
runs, a run with its graph and timeline, a failure with its traceback, a run waiting for input,
the event log with an event opened, a phone's width, and dark mode.
"""

from __future__ import annotations

import base64
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from _browser import Browser, Page, open_browser

import trioflow
from trioflow.examples import WORKFLOWS

FOLDER = Path(__file__).resolve().parent.parent / "docs" / "dashboard"


async def shoot(page: Page, path: Path, *selectors: str, pad: int = 12) -> None:
    """Save the part of the page that holds ``selectors`` (all of it without any)."""
    params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
    if selectors:
        box = await page.evaluate(
            f"""(() => {{
                const rects = {json.dumps(list(selectors))}
                    .flatMap(s => [...document.querySelectorAll(s)])
                    .filter(e => e.offsetParent !== null || e.tagName === 'BODY')
                    .map(e => e.getBoundingClientRect());
                const x = Math.min(...rects.map(r => r.left)) + scrollX;
                const y = Math.min(...rects.map(r => r.top)) + scrollY;
                return {{ x, y, width: Math.max(...rects.map(r => r.right)) + scrollX - x,
                          height: Math.max(...rects.map(r => r.bottom)) + scrollY - y }};
            }})()"""
        )
        params["clip"] = {
            "x": max(0, box["x"] - pad),
            "y": max(0, box["y"] - pad),
            "width": box["width"] + 2 * pad,
            "height": box["height"] + 2 * pad,
            "scale": 1,
        }
    result = await page.send("Page.captureScreenshot", params)
    png = base64.b64decode(result["data"])
    await trio.Path(path).write_bytes(png)
    print(f"{path} ({len(png) // 1024} KiB)")


async def click(page: Page, selector: str) -> None:
    await page.evaluate(f"document.querySelector({json.dumps(selector)}).click()")


async def open_workflow(page: Page, name: str) -> None:
    await click(page, f"#workflows [data-name={name}] button")
    await page.wait_for(f"document.getElementById('wf-name').textContent === {json.dumps(name)}")


async def start(page: Page, **fields: str | bool) -> None:
    for name, value in fields.items():
        await page.evaluate(
            f"""(() => {{ const i = document.querySelector('#start-form [name={name}]');
                if (i.type === 'checkbox') i.checked = {json.dumps(value)};
                else i.value = {json.dumps(value)}; }})()"""
        )
    await page.evaluate("document.getElementById('run-id').textContent = ''")
    await click(page, "#start")
    await page.wait_for("document.getElementById('run-id').textContent")


async def status_is(page: Page, status: str) -> None:
    await page.wait_for(
        f"document.getElementById('run-status').textContent === {json.dumps(status)}", timeout=60
    )


async def settle(page: Page) -> None:
    """Two animation frames: what was drawn at the next frame is on screen. The focus is
    taken away first: a click made by script leaves the outline a keyboard user would see."""
    await page.evaluate(
        "document.activeElement?.blur();"
        " new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
    )


async def views(browser: Browser, url: str, folder: Path) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(3):  # a few finished runs for the list
            await client.post("/workflows/research/runs", json={"pace": 0})
        await client.post(
            "/workflows/flaky/runs", json={"failures": 5, "recover": False, "pace": 0}
        )
        await client.post("/workflows/approval/runs", json={"action": "deploy", "pace": 0})

    page = await browser.new_page(url + "/", width=1280, height=1000)
    await page.wait_for("document.querySelectorAll('#runs-list [data-run-id]').length === 5")
    await open_workflow(page, "research")
    await settle(page)
    await shoot(page, folder / "workflows.png", "aside", "#workflow")

    await start(page, pace="0.6")
    await page.wait_for("document.querySelector('#graph [data-state=running]') !== null")
    await page.wait_for("document.querySelectorAll('#bars .bar').length >= 3")
    await settle(page)
    await shoot(page, folder / "run-live.png", "#run", "#timeline-panel", "#graph-box")
    await status_is(page, "completed")
    await page.wait_for("document.querySelectorAll('#timeline [data-bar]').length >= 5")
    await settle(page)
    await shoot(page, folder / "run.png", "#graph-box", "#run", "#timeline-panel")

    await open_workflow(page, "flaky")
    await start(page, failures="5", recover=False, pace="0.5")
    await status_is(page, "failed")
    await page.wait_for("document.querySelectorAll('#timeline [data-bar]').length === 4")
    await settle(page)
    await shoot(page, folder / "failure.png", "#run", "#timeline-panel")
    await page.wait_for("document.querySelector('#events li[data-type=StepFailedEvent]')")
    await click(page, "#events li[data-type=StepFailedEvent]")
    await page.wait_for("!document.getElementById('event-detail').hidden")
    await settle(page)
    await shoot(page, folder / "events.png", "#log")

    await open_workflow(page, "approval")
    await start(page, pace="0")
    await status_is(page, "waiting for input")
    await page.wait_for("!document.getElementById('input-request').hidden")
    await settle(page)
    await shoot(page, folder / "input.png", "#graph-box", "#run")

    await page.send(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    await settle(page)
    await shoot(
        page, folder / "dark.png", "header", "aside", "#workflow", "#run", "#timeline-panel"
    )
    await page.close()

    phone = await browser.new_page(url + "/", width=375, height=800)
    await phone.wait_for("document.querySelectorAll('#runs-list [data-run-id]').length >= 5")
    await click(phone, "#runs-list [data-run-id] a")
    await phone.wait_for("document.getElementById('run-id').textContent")
    await phone.wait_for("document.getElementById('run-status').textContent !== 'running'")
    await settle(phone)
    await shoot(phone, folder / "phone.png", "header", "main")
    await phone.close()


async def main(folder: Path) -> None:
    await trio.Path(folder).mkdir(parents=True, exist_ok=True)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(trioflow.serve, WORKFLOWS, port=0))
        async with open_browser() as browser:
            await views(browser, binds[0], folder)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER)
