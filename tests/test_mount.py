"""A `WorkflowApp` mounted in a Starlette or FastAPI app, or wrapped in middleware, served for
real by `trioflow.serve` on 127.0.0.1 port 0: its routes, ``Location`` headers and dashboard
under the mount's prefix, its runs started by the host app's lifespan (``lifespan=
wf_app.lifespan`` or ``async with wf_app.running()``), and a graceful shutdown that cancels
them first."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from _browser import Browser, Chromium, connect, launch_chromium, require_chromium
from _http import FLOWS, Asking, sse_messages
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient
from test_dashboard import open_dashboard, select, start_run, wait_for_status

import trioflow
from trioflow import NotInTrioError, StartEvent, StopEvent, Workflow, WorkflowApp, step
from trioflow.examples import WORKFLOWS

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
LIMIT = 20  # seconds any test may take: a hang becomes a failure, never a measurement


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello from the host")


def starlette_host(wf_app: WorkflowApp) -> Starlette:
    """The README's host: the workflow app under /flows, its lifespan the host's."""
    return Starlette(
        routes=[Route("/", hello), Mount("/flows", app=wf_app)], lifespan=wf_app.lifespan
    )


@asynccontextmanager
async def serving(
    app: Any, stop: trio.Event | None = None, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """serve(app) on port 0 and a client for it; stopped by ``stop`` when given (the block
    then waits until serve() has returned), cancelled otherwise."""
    async with trio.open_nursery() as nursery:
        trigger = None if stop is None else stop.wait
        binds = await nursery.start(
            partial(trioflow.serve, app, port=0, shutdown_trigger=trigger, **options)
        )
        async with httpx.AsyncClient(base_url=binds[0], timeout=LIMIT) as client:
            yield client
        if stop is None:
            nursery.cancel_scope.cancel()


def event_names(response: httpx.Response) -> AsyncGenerator[str]:
    """The event names of an SSE stream's data messages, as they arrive."""
    return (message["event"] async for message in sse_messages(response) if "data" in message)


async def up_to(events: AsyncGenerator[str], name: str | None = None) -> list[str]:
    """The next events, up to the first named ``name`` (the stream's end for None)."""
    seen = []
    async for event in events:
        seen.append(event)
        if event == name:
            break
    return seen


# -- Starlette --


async def test_starlette_mount_serves_runs_under_the_prefix() -> None:
    """Under Mount("/flows") with lifespan=wf_app.lifespan: a run starts (201, Location
    /flows/runs/<id>), streams, takes an answer to its question and completes; another is
    cancelled; the host's own routes still answer."""
    host = starlette_host(WorkflowApp(FLOWS))
    with trio.fail_after(LIMIT):
        async with serving(host) as client:
            assert (await client.get("/")).text == "hello from the host"
            assert (await client.get("/flows/workflows")).json()["workflows"] == list(FLOWS)

            started = await client.post("/flows/workflows/gate/runs", json={})
            assert started.status_code == 201
            run_id = started.json()["run_id"]
            assert started.headers["location"] == f"/flows/runs/{run_id}"
            async with client.stream("GET", f"/flows/runs/{run_id}/events") as response:
                events = event_names(response)
                assert await up_to(events, Asking.__name__) == ["Tick", "Asking"]
                answer = {"type": "Go", "data": {"count": 2}}
                sent = await client.post(f"/flows/runs/{run_id}/events", json=answer)
                assert sent.status_code == 202
                assert await up_to(events) == ["Tick", "Tick", "StopEvent"]
            status = (await client.get(started.headers["location"])).json()
            assert (status["status"], status["result"]) == ("completed", 2)

            forever = (await client.post("/flows/workflows/forever/runs", json={})).json()
            cancelled = await client.post(f"/flows/runs/{forever['run_id']}/cancel")
            assert cancelled.status_code == 202
            async with client.stream("GET", f"/flows/runs/{forever['run_id']}/events") as stream:
                assert (await up_to(event_names(stream)))[-1] == "WorkflowCancelledEvent"


async def test_a_mounted_app_describes_its_own_routes_under_the_prefix() -> None:
    """Mounted, unknown paths are the app's 404s, HEAD works, and /openapi.json keeps its
    paths with the mount point as its server URL."""
    host = starlette_host(WorkflowApp(FLOWS))
    with trio.fail_after(LIMIT):
        async with serving(host) as client:
            missing = await client.get("/flows/nowhere")
            assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
            assert "/nowhere" in missing.json()["error"]["message"]
            assert (await client.head("/flows/health")).status_code == 200
            document = (await client.get("/flows/openapi.json")).json()
            assert document["servers"] == [{"url": "/flows"}]
            assert "/workflows/gate/runs" in document["paths"]


async def test_the_mounted_dashboard_uses_paths_relative_to_where_it_was_loaded() -> None:
    """GET /flows/ is the dashboard, and its page names no path from the host's root (a
    request for /workflows would miss the app); /flows redirects to it."""
    host = starlette_host(WorkflowApp(FLOWS))
    with trio.fail_after(LIMIT):
        async with serving(host) as client:
            page = await client.get("/flows/")
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            redirect = await client.get("/flows")
            assert redirect.status_code == 307
            assert redirect.headers["location"].endswith("/flows/")
    # No quote or backtick opens a path at the root: "/workflows", `/runs/${id}`...
    assert re.findall(r"""["'`]/(?:workflows|runs|health|openapi)""", page.text) == []
    assert "fetch(url(path)" in page.text
    assert "new EventSource(url(" in page.text


async def test_a_mounted_app_without_a_lifespan_says_how_to_start_it() -> None:
    """Mounted without the host entering its lifespan, the app answers 503 not_started,
    naming lifespan=wf_app.lifespan and running()."""
    host = Starlette(routes=[Mount("/flows", app=WorkflowApp(FLOWS))])
    with trio.fail_after(LIMIT):
        async with serving(host) as client:
            response = await client.post("/flows/workflows/count/runs", json={"n": 1})
    assert (response.status_code, response.json()["error"]["code"]) == (503, "not_started")
    assert "lifespan=wf_app.lifespan" in response.json()["error"]["message"]
    assert "wf_app.running()" in response.json()["error"]["message"]


async def test_serve_shuts_a_mounted_apps_runs_down_first() -> None:
    """serve(starlette_app) learns of the workflow app its lifespan started: on shutdown an
    open stream ends with WorkflowCancelledEvent, and serve() returns by itself."""
    stop = trio.Event()
    host = starlette_host(WorkflowApp(FLOWS))
    with trio.fail_after(LIMIT):
        async with serving(host, stop, shutdown_grace=LIMIT) as client:
            run_id = (await client.post("/flows/workflows/forever/runs", json={})).json()
            async with client.stream("GET", f"/flows/runs/{run_id['run_id']}/events") as stream:
                events = event_names(stream)
                assert await up_to(events, "Tick") == ["Tick"]
                stop.set()
                assert await up_to(events) == ["WorkflowCancelledEvent"]


class ExitFlow(Workflow):
    @step
    async def leave(self, ev: StartEvent) -> StopEvent:
        raise SystemExit(3)


async def test_a_mounted_apps_fatal_exception_leaves_serve_as_itself() -> None:
    """A step's SystemExit in a mounted app stops serve(starlette_app), which raises it as
    itself."""
    host = starlette_host(WorkflowApp({"exit": ExitFlow()}))
    raised: list[BaseException] = []

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await trioflow.serve(host, port=0, task_status=task_status)
        except BaseException as error:
            raised.append(error)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(run)
            async with httpx.AsyncClient(base_url=binds[0]) as client:
                await client.post("/flows/workflows/exit/runs", json={})
    assert len(raised) == 1
    assert isinstance(raised[0], SystemExit)
    assert raised[0].code == 3


# -- FastAPI --


async def test_fastapi_mount_with_running_in_its_own_lifespan() -> None:
    """app.mount("/flows", wf_app) with ``async with wf_app.running()`` in FastAPI's own
    lifespan: a run completes, streamed as NDJSON under the prefix."""
    wf_app = WorkflowApp(FLOWS)
    entered: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with wf_app.running():
            entered.append("running")
            yield

    api = FastAPI(lifespan=lifespan)
    api.mount("/flows", wf_app)

    @api.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "host"}

    with trio.fail_after(LIMIT):
        async with serving(api) as client:
            assert (await client.get("/hello")).json() == {"hello": "host"}
            started = await client.post("/flows/workflows/count/runs", json={"n": 3})
            run_id = started.json()["run_id"]
            assert started.headers["location"] == f"/flows/runs/{run_id}"
            ndjson = {"accept": "application/x-ndjson"}
            path = f"/flows/runs/{run_id}/events"
            async with client.stream("GET", path, headers=ndjson) as response:
                lines = [json.loads(line) async for line in response.aiter_lines() if line]
            assert [line["type"] for line in lines] == ["Tick", "Tick", "Tick", "StopEvent"]
            status = (await client.get(f"/flows/runs/{run_id}")).json()
            assert status["result"] == {"counted": 3}
    assert entered == ["running"]


async def test_serve_gives_requests_the_host_lifespans_state() -> None:
    """The state a host's lifespan yields reaches its requests (the ASGI lifespan state), while
    the workflow app mounted beside runs."""
    wf_app = WorkflowApp(FLOWS)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        async with wf_app.running():
            yield {"greeting": "hi"}

    async def greet(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.state.greeting)

    host = Starlette(
        routes=[Route("/greet", greet), Mount("/flows", app=wf_app)], lifespan=lifespan
    )
    with trio.fail_after(LIMIT):
        async with serving(host) as client:
            assert (await client.get("/greet")).text == "hi"
            started = await client.post("/flows/workflows/count/runs", json={"n": 1})
            assert started.status_code == 201


async def test_serve_serves_an_app_that_does_not_speak_lifespan(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An app that raises at the lifespan scope is served without it, as the ASGI spec says,
    with a warning."""

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"no {scope['type']} here")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})

    with trio.fail_after(LIMIT):
        async with serving(plain) as client:
            assert (await client.get("/")).text == "plain"
    assert "does not speak the ASGI lifespan protocol" in caplog.text
    assert "no lifespan here" in caplog.text


# -- middleware --


class Stamp:
    """A pure ASGI middleware: stamps a header on every response, passes the rest through
    (the lifespan included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-stamp", b"1")]
            await send(message)

        await self.app(scope, receive, stamped)


async def test_serve_takes_a_workflow_app_wrapped_in_middleware() -> None:
    """serve(Stamp(wf_app)) runs the wrapped app's lifespan: its runs stream through the
    middleware, and on shutdown their streams end with WorkflowCancelledEvent."""
    stop = trio.Event()
    with trio.fail_after(LIMIT):
        async with serving(Stamp(WorkflowApp(FLOWS)), stop, max_connections=10) as client:
            started = await client.post("/workflows/forever/runs", json={})
            assert (started.status_code, started.headers["x-stamp"]) == (201, "1")
            run_id = started.json()["run_id"]
            async with client.stream("GET", f"/runs/{run_id}/events") as stream:
                assert stream.headers["x-stamp"] == "1"
                events = event_names(stream)
                assert await up_to(events, "Tick") == ["Tick"]
                stop.set()
                assert await up_to(events) == ["WorkflowCancelledEvent"]


async def test_serve_takes_only_server_options_for_another_app() -> None:
    """For an app that is no WorkflowApp, serve() takes the options of its connections and
    refuses the workflow app's own, saying where they go (type checkers refuse them too)."""
    host = starlette_host(WorkflowApp(FLOWS))
    with pytest.raises(TypeError, match=r"body_timeout belong to the WorkflowApp"):
        await trioflow.serve(host, port=0, body_timeout=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="an ASGI app"):
        await trioflow.serve(42, port=0)  # type: ignore[call-overload]


# -- running() --


async def test_running_twice_at_once_is_an_error() -> None:
    """Entering running() while the app runs raises RuntimeError saying so; serving a host
    whose lifespan enters it then fails to start with that error, as itself. Once left, the
    app runs again."""
    wf_app = WorkflowApp(FLOWS)
    async with wf_app.running():
        with pytest.raises(RuntimeError, match="running already"):
            async with wf_app.running():
                pass  # pragma: no cover
        for app in (starlette_host(wf_app), wf_app):
            with trio.fail_after(LIMIT), pytest.raises(RuntimeError, match="running already"):
                await trioflow.serve(app, port=0)
    with trio.fail_after(LIMIT):
        async with serving(starlette_host(wf_app)) as client:
            started = await client.post("/flows/workflows/count/runs", json={"n": 1})
            assert started.status_code == 201


async def test_a_failing_block_leaves_running_as_itself() -> None:
    """An exception in the running() block leaves it as itself, not in a nursery's group, and
    the app can run again."""
    wf_app = WorkflowApp(FLOWS)
    with pytest.raises(ValueError, match="the host failed"):
        async with wf_app.running():
            raise ValueError("the host failed")
    async with wf_app.running():
        pass


def test_the_host_lifespan_under_starlettes_test_client() -> None:
    """lifespan=wf_app.lifespan works under TestClient(app, backend="trio"); under asyncio,
    TestClient's default, it fails with NotInTrioError, saying how to run it."""
    host = starlette_host(WorkflowApp(FLOWS, allowed_hosts=["testserver"]))
    with TestClient(host, backend="trio") as client:
        started = client.post("/flows/workflows/count/runs", json={"n": 2})
        assert started.headers["location"] == f"/flows/runs/{started.json()['run_id']}"
        location = started.headers["location"]
        stream = client.get(f"{location}/events", params={"format": "ndjson"})  # to its end
        assert '"type":"StopEvent"' in stream.text.splitlines()[-1]
        assert client.get(location).json()["result"] == {"counted": 2}
    with pytest.raises(NotInTrioError, match="running"), TestClient(host):
        pass  # pragma: no cover


# -- the dashboard in Chromium --


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    with launch_chromium(require_chromium()) as process:
        yield process


@pytest.fixture
async def browser(chromium: Chromium) -> AsyncIterator[Browser]:
    async with connect(chromium) as connection:
        yield connection


async def test_the_mounted_dashboard_runs_a_workflow_through_the_prefix(browser: Browser) -> None:
    """The dashboard opened at /flows/ lists the workflows and runs one to its result, every
    request it makes going to /flows/..."""
    with trio.fail_after(LIMIT * 2):
        async with serving(starlette_host(WorkflowApp(WORKFLOWS))) as client:
            base = str(client.base_url).rstrip("/")
            page = await open_dashboard(browser, f"{base}/flows/")
            await select(page, "research")
            assert await start_run(page, topic="mounts", pace="0")
            await wait_for_status(page, "completed")
            requested = await page.evaluate(
                "performance.getEntriesByType('resource').map(e => e.name)"
            )
            assert requested  # the workflows, a graph, the run, its events...
            assert [name for name in requested if not name.startswith(f"{base}/flows/")] == []
            assert page.errors == []
