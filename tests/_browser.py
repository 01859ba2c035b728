"""A tiny Chrome DevTools Protocol client for the dashboard's browser tests.

Headless Chromium is driven over ``--remote-debugging-pipe``: it reads NUL-terminated JSON
messages on fd 3 and writes its own on fd 4. No selenium, no websockets, no extra dependency.

Two layers, so that one Chromium can serve a whole test module while every test (each in its
own ``trio.run`` under pytest-trio) talks to it with its own trio tasks:

- `Chromium` is the process: started and stopped synchronously (`launch_chromium`), it owns the
  parent's ends of the two pipes and the throwaway profile directory.
- `connect` opens a `Browser` on it for the running trio loop: a reader task dispatches replies
  to the commands waiting for them and events to the pages they belong to.

`open_browser` does both for a one-off use::

    async with open_browser() as browser:
        page = await browser.new_page("http://127.0.0.1:8000/")
        await page.wait_for("document.querySelectorAll('#workflows li').length === 3")
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio

CHROMIUM_PATH = "/usr/bin/chromium"

#: Flags for a quiet, self-contained headless browser (no network of its own, no profile reuse).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)

#: How long one CDP command may take before the test fails instead of hanging.
COMMAND_TIMEOUT = 30.0

Json = dict[str, Any]


class BrowserError(Exception):
    """Chromium answered a command with an error, or went away."""


class JavaScriptError(BrowserError):
    """An expression evaluated in the page threw (or its promise rejected)."""


def require_chromium() -> str:
    """Chromium's path; without it fail on CI (which installs it) and skip elsewhere."""
    if os.path.exists(CHROMIUM_PATH):
        return CHROMIUM_PATH
    reason = f"{CHROMIUM_PATH} is missing (Debian package 'chromium': apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must install Chromium for the dashboard tests: {reason}")
    pytest.skip(reason)


class Chromium:
    """A running headless Chromium, its debugging pipes and its profile directory."""

    def __init__(self, executable: str = CHROMIUM_PATH) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="trioflow-chromium-"))
        #: Bytes read from the browser but not yet dispatched; kept here, not in a connection,
        #: so that a message split across two connections' reads is not lost.
        self.buffer = bytearray()
        #: Command ids stay unique across connections, so a late reply is never mistaken.
        self.ids = itertools.count(1)
        self.process: subprocess.Popen[bytes] | None = None
        self.to_browser = -1
        self.from_browser = -1
        try:
            self._start(executable)
        except BaseException:
            self.close()
            raise

    def _start(self, executable: str) -> None:
        child_reads, self.to_browser = os.pipe()
        self.from_browser, child_writes = os.pipe()
        # The child needs its ends on fds 3 and 4. Copies at fds >= 10 are moved there between
        # fork and exec; the originals stay open until Popen returns, so that fds 3 and 4 are
        # taken in the parent and subprocess's own error pipe cannot land on them.
        high_read = fcntl.fcntl(child_reads, fcntl.F_DUPFD_CLOEXEC, 10)
        high_write = fcntl.fcntl(child_writes, fcntl.F_DUPFD_CLOEXEC, 10)

        def move_pipes_to_3_and_4() -> None:
            os.dup2(high_read, 3)  # dup2 clears close-on-exec: these two survive exec
            os.dup2(high_write, 4)

        try:
            with (self.profile / "chromium.log").open("wb") as log:
                self.process = subprocess.Popen(
                    [
                        executable,
                        *CHROMIUM_FLAGS,
                        f"--user-data-dir={self.profile / 'data'}",
                        "about:blank",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    # Not pass_fds: its closing of other fds runs after preexec_fn and would
                    # close 3 and 4 again. Python's own fds are close-on-exec anyway (PEP 446).
                    close_fds=False,
                    preexec_fn=move_pipes_to_3_and_4,
                    # Its own process group, so that close() reaches every helper process.
                    start_new_session=True,
                )
        finally:
            for fd in (child_reads, child_writes, high_read, high_write):
                os.close(fd)

    def log_tail(self, lines: int = 20) -> str:
        """The end of Chromium's own output, to explain a failure."""
        try:
            text = (self.profile / "chromium.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop Chromium and all its helpers, close the pipes, remove the profile. Idempotent."""
        process, self.process = self.process, None
        if process is not None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            # Whatever is left of the group (the main process too if SIGTERM did not do).
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for fd in (self.to_browser, self.from_browser):
            if fd >= 0:
                with suppress(OSError):
                    os.close(fd)
        self.to_browser = self.from_browser = -1
        shutil.rmtree(self.profile, ignore_errors=True)


@contextmanager
def launch_chromium(executable: str = CHROMIUM_PATH) -> Iterator[Chromium]:
    """Start headless Chromium; stop it and remove its profile on exit, whatever happens."""
    chromium = Chromium(executable)
    try:
        yield chromium
    finally:
        chromium.close()


class _Reply:
    """Where the reader task puts the answer to one command."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.message: Json = {}


class Page:
    """One tab, attached with its own CDP session."""

    def __init__(self, browser: Browser, target_id: str, session_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        #: Console errors, uncaught exceptions and failed loads, as text, in order.
        self.errors: list[str] = []
        self._loaded = trio.Event()

    async def send(self, method: str, params: Json | None = None) -> Json:
        """Send a CDP command to this page's session and return its result."""
        return await self.browser.send(method, params, session_id=self.session_id)

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self._loaded = trio.Event()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"could not load {url}: {result['errorText']}")
        with trio.fail_after(COMMAND_TIMEOUT):
            await self._loaded.wait()

    async def reload(self) -> None:
        """Reload the page (its URL, hash included) and wait for the load event."""
        self._loaded = trio.Event()
        await self.send("Page.reload", {"ignoreCache": True})
        with trio.fail_after(COMMAND_TIMEOUT):
            await self._loaded.wait()

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); raise if it throws."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        details = result.get("exceptionDetails")
        if details is not None:
            raise JavaScriptError(f"{expression!r} threw: {_exception_text(details)}")
        return result["result"].get("value")

    async def wait_for(self, predicate: str, timeout: float = 20.0) -> Any:  # noqa: ASYNC109
        """Poll a JavaScript expression until it is truthy and return its value.

        Polling is right here: the condition lives in a real browser, not in this process. The
        generous default bound makes a broken page fail its test instead of hanging it, and
        leaves room for a slow CI machine.
        """
        # Truthiness is judged in JavaScript: a DOM node, say, comes back by value as {}.
        check = f"(async () => {{ const v = await ({predicate}); return [!!v, v]; }})()"
        last: Any = None
        with trio.move_on_after(timeout):
            while True:
                truthy, last = await self.evaluate(check)
                if truthy:
                    return last
                await trio.sleep(0.05)
        raise TimeoutError(f"waited {timeout} s for {predicate!r}; last value {last!r}")

    async def screenshot(self, path: str | os.PathLike[str]) -> None:
        """Save a PNG of the whole page (for debugging and for looking at the design)."""
        result = await self.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        await trio.Path(path).write_bytes(base64.b64decode(result["data"]))

    async def close(self) -> None:
        await self.browser.send("Target.closeTarget", {"targetId": self.target_id})

    def _on_event(self, method: str, params: Json) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            self.errors.append("console: " + " ".join(_remote_object_text(a) for a in args))
        elif method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + _exception_text(params["exceptionDetails"]))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source', 'log')}: {entry.get('text', '')}")
        elif method == "Inspector.targetCrashed":
            self.errors.append("crash: the page's renderer crashed")


class Browser:
    """A CDP connection to a `Chromium`, serving the running trio loop."""

    def __init__(self, chromium: Chromium, to_browser: trio.abc.SendStream) -> None:
        self.chromium = chromium
        self._to_browser = to_browser
        self._send_lock = trio.Lock()
        self._replies: dict[int, _Reply] = {}
        self._pages: dict[str, Page] = {}
        self._gone: str | None = None

    async def send(self, method: str, params: Json | None = None, session_id: str = "") -> Json:
        """Send a CDP command and return its result; raise `BrowserError` on an error reply."""
        if self._gone is not None:
            raise BrowserError(self._gone)
        command_id = next(self.chromium.ids)
        message: Json = {"id": command_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        reply = self._replies[command_id] = _Reply()
        try:
            with trio.fail_after(COMMAND_TIMEOUT):
                async with self._send_lock:
                    await self._to_browser.send_all(json.dumps(message).encode() + b"\0")
                await reply.done.wait()
        finally:
            del self._replies[command_id]
        if "error" in reply.message:
            raise BrowserError(f"{method}: {reply.message['error'].get('message')}")
        if "result" not in reply.message:
            raise BrowserError(f"{method}: {self._gone}")
        result: Json = reply.message["result"]
        return result

    async def new_page(
        self, url: str = "about:blank", width: int = 1280, height: int = 900
    ) -> Page:
        """Open a tab, start collecting its errors, and load ``url``."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, target["targetId"], attached["sessionId"])
        self._pages[page.session_id] = page
        for domain in ("Runtime", "Page", "Log"):
            await page.send(f"{domain}.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        if url != "about:blank":
            await page.goto(url)
        return page

    async def _read(self, from_browser: trio.abc.ReceiveStream) -> None:
        """Dispatch every message from Chromium until the pipe closes."""
        buffer = self.chromium.buffer
        while True:
            chunk = await from_browser.receive_some(1 << 16)
            if not chunk:
                self._fail(f"Chromium closed its pipe; its log ends:\n{self.chromium.log_tail()}")
                return
            buffer += chunk
            while (end := buffer.find(b"\0")) >= 0:
                message = json.loads(bytes(buffer[:end]))
                del buffer[: end + 1]
                self._dispatch(message)

    def _dispatch(self, message: Json) -> None:
        if "id" in message:
            # A reply to a command of an earlier connection has no waiter: drop it.
            reply = self._replies.get(message["id"])
            if reply is not None:
                reply.message = message
                reply.done.set()
        elif (page := self._pages.get(message.get("sessionId", ""))) is not None:
            page._on_event(message["method"], message.get("params", {}))

    def _fail(self, why: str) -> None:
        self._gone = why
        for reply in self._replies.values():
            reply.done.set()


@asynccontextmanager
async def connect(chromium: Chromium) -> AsyncIterator[Browser]:
    """A `Browser` on ``chromium`` for this trio loop; closes the pages it opened on exit."""
    # FdStream owns (and closes) its fd: give it copies, the originals belong to `chromium`.
    to_browser = trio.lowlevel.FdStream(os.dup(chromium.to_browser))
    from_browser = trio.lowlevel.FdStream(os.dup(chromium.from_browser))
    async with to_browser, from_browser, trio.open_nursery() as nursery:
        browser = Browser(chromium, to_browser)
        nursery.start_soon(browser._read, from_browser)
        try:
            yield browser
        finally:
            with trio.move_on_after(5) as cleanup:
                cleanup.shield = True
                for page in list(browser._pages.values()):
                    with suppress(BrowserError):
                        await page.close()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_browser(executable: str = CHROMIUM_PATH) -> AsyncIterator[Browser]:
    """Launch Chromium, connect to it, and stop it on exit (whatever happens)."""
    chromium = await trio.to_thread.run_sync(Chromium, executable)
    try:
        async with connect(chromium) as browser:
            yield browser
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(chromium.close)


def _remote_object_text(obj: Json) -> str:
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("description", obj.get("type", "")))


def _exception_text(details: Json) -> str:
    exception = details.get("exception") or {}
    return str(exception.get("description") or details.get("text", "unknown error"))
