"""Serving for tests: a real hypercorn on 127.0.0.1 port 0, an httpx client, SSE parsing, and
the workflows the server tests run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import trio

import trioflow
from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowApp,
    step,
)

T = TypeVar("T")

# -- workflows --


class Tick(Event):
    n: int
    payload: str = ""


class Go(HumanResponseEvent):
    """Lets a waiting `GateFlow` run go on."""

    count: int


class Asking(InputRequiredEvent):
    prompt: str


class Count(StartEvent):
    n: int
    size: int = 0


class CountFlow(Workflow):
    """Writes n ticks of `size` characters, then stops with n."""

    @step
    async def count(self, ctx: Context, ev: Count) -> StopEvent:
        payload = "x" * ev.size
        for i in range(1, ev.n + 1):
            await ctx.write_event_to_stream(Tick(n=i, payload=payload))
        return StopEvent(result={"counted": ev.n})


class GateFlow(Workflow):
    """Writes one tick, asks for input, waits for `Go`, then writes `Go.count` ticks."""

    @step
    async def gate(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Tick(n=0))
        go = await ctx.wait_for_event(Go, waiter_event=Asking(prompt="go?"))
        for i in range(1, go.count + 1):
            await ctx.write_event_to_stream(Tick(n=i))
        return StopEvent(result=go.count)


class Boom(Exception):
    pass


class FailFlow(Workflow):
    @step
    async def explode(self, ev: StartEvent) -> StopEvent:
        raise Boom("kaboom")


class ForeverFlow(Workflow):
    """Writes a tick, then waits until cancelled."""

    @step
    async def wait(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Tick(n=1))
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class SlowFlow(Workflow):
    """Runs into its timeout."""

    @step
    async def dawdle(self, ev: StartEvent) -> StopEvent:
        await trio.sleep(30)
        return StopEvent()


class Lingering(Workflow):
    """A ``def`` step enters its thread and stays there until `release` is set; meanwhile
    another step decides the run: it returns a stop event, or raises ``error`` if given."""

    def __init__(self, error: Callable[[], BaseException] | None = None) -> None:
        super().__init__(timeout=None)
        self.error = error
        self.entered = threading.Event()
        self.release = threading.Event()

    @step
    async def decide(self, ev: StartEvent) -> StopEvent:
        await trio.to_thread.run_sync(self.entered.wait)
        if self.error is not None:
            raise self.error()
        return StopEvent(result="decided")

    @step
    def linger(self, ev: StartEvent) -> None:
        self.entered.set()
        self.release.wait()  # a thread that cannot be interrupted: the run waits for it


class Stuck(Workflow):
    """A ``def`` step blocks its thread until `release` is set: cancelling the run waits."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.entered = threading.Event()
        self.release = threading.Event()

    @step
    def block(self, ev: StartEvent) -> StopEvent:
        self.entered.set()
        self.release.wait()
        return StopEvent(result="released")


class Hop(Event):
    i: int


class Chain(StartEvent):
    hops: int
    #: A file each execution of a hop appends its number to: what ran twice after a crash.
    log: str
    pause: float = 0.0


class ChainFlow(Workflow):
    """``hops`` executions of one step, each writing a tick, logging itself and pausing."""

    @step
    async def first(self, ctx: Context, ev: Chain) -> Hop:
        await ctx.store.set("chain", {"hops": ev.hops, "log": ev.log, "pause": ev.pause})
        return Hop(i=1)

    @step
    async def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:
        chain = await ctx.store.get("chain")
        await trio.to_thread.run_sync(_append, chain["log"], f"{ev.i}\n")
        await ctx.write_event_to_stream(Tick(n=ev.i))
        await trio.sleep(chain["pause"])
        if ev.i == chain["hops"]:
            return StopEvent(result=chain["hops"])
        return Hop(i=ev.i + 1)


def _append(path: str, text: str) -> None:
    with open(path, "a") as file:
        file.write(text)


FLOWS: dict[str, Workflow] = {
    "count": CountFlow(timeout=None),
    "gate": GateFlow(timeout=None),
    "fail": FailFlow(),
    "forever": ForeverFlow(timeout=None),
    "slow": SlowFlow(timeout=0.05),
}

#: What the tests of durable runs run (`trioflow serve _http:DURABLE_FLOWS --store ...`).
DURABLE_FLOWS: dict[str, Workflow] = {
    "chain": ChainFlow(timeout=None),
    "count": CountFlow(timeout=None),
    "gate": GateFlow(timeout=None),
}

# -- the server --


@attrs.define
class Server:
    url: str
    client: httpx.AsyncClient
    app: WorkflowApp

    async def start(self, name: str, fields: dict[str, Any] | None = None, **params: Any) -> str:
        response = await self.client.post(
            f"/workflows/{name}/runs", json=fields or {}, params=params
        )
        assert response.status_code == 201, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    async def status(self, run_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/runs/{run_id}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status

    async def wait_status(self, run_id: str, status: str) -> dict[str, Any]:
        return await wait_for(lambda: self.status(run_id), lambda s: s["status"] == status)

    async def events(self, run_id: str, **params: Any) -> list[dict[str, Any]]:
        """Read a whole SSE stream, returning its events (id, event, data parsed)."""
        async with self.client.stream("GET", f"/runs/{run_id}/events", params=params) as response:
            assert response.status_code == 200, await response.aread()
            return [message async for message in sse_messages(response) if "data" in message]


@asynccontextmanager
async def served(workflows: Any = None, **options: Any) -> AsyncIterator[Server]:
    """A real server on 127.0.0.1 port 0, stopped (cancelled) when the block exits."""
    app = WorkflowApp(FLOWS if workflows is None else workflows, **options)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(trioflow.serve, app, port=0))
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(base_url=binds[0], timeout=30, limits=limits) as client:
            yield Server(binds[0], client, app)
        nursery.cancel_scope.cancel()


async def sse_messages(response: httpx.Response) -> AsyncGenerator[dict[str, Any]]:
    """Parse an SSE body as it arrives: one dict per message (comments as {"comment": ...})."""
    message: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if message:
                yield message
            message = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            message[field] = json.loads(value) if field == "data" else value
    if message:
        yield message


def sse_text_messages(text: str) -> list[dict[str, str]]:
    """The messages with data of a whole SSE body, each as its fields (``id``, ``event``,
    ``data`` unparsed)."""
    messages = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            messages.append(fields)
    return messages


async def wait_for(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, limit: float = 20
) -> T:
    """Poll ``probe`` until ``done`` says so: a wait for a condition on a real server, never a
    measurement of time. ``limit`` only turns a hang into a failure."""
    with trio.fail_after(limit):
        while not done(value := await probe()):
            await trio.sleep(0.005)
    return value


async def wait_until(condition: Callable[[], bool], *, limit: float = 20) -> None:
    """Wait until ``condition()`` holds (polled; for state inside the in-process server)."""
    with trio.fail_after(limit):
        while not condition():
            await trio.sleep(0.005)


TESTS = Path(__file__).parent


@contextmanager
def serve_process(target: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`trioflow serve <target> --port 0 ...` run from tests/, once it listens: the process and
    its URL. The process is killed when the block exits, if it still runs."""
    with subprocess.Popen(
        [sys.executable, "-m", "trioflow", "serve", target, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    ) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first.startswith("trioflow: serving "), first
            line = process.stdout.readline()
            address = re.match(r"trioflow: dashboard at (http://[\d.:]+)/", line)
            assert address, line
            yield process, address[1]
        finally:
            process.kill()
