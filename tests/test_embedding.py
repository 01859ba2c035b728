"""trioflow inside other programs: a clear error under asyncio, and WorkflowApp under
Starlette's TestClient on trio."""

from __future__ import annotations

import asyncio

import pytest
from _http import Count, CountFlow
from starlette.testclient import TestClient

import trioflow
from trioflow import NotInTrioError, TrioflowError

ON_ASYNCIO = "needs trio, but this code runs under asyncio"
HOW = "hypercorn --worker-class trio"


def test_a_run_under_asyncio_says_how_to_run_it_on_trio() -> None:
    """run() and start() under asyncio raise NotInTrioError naming asyncio and the way out,
    not trio's internal AttributeError."""
    flow = CountFlow()

    async def started() -> None:
        async with flow.start(Count(n=1)):
            pass

    for attempt in (flow.run(Count(n=1)), started()):
        with pytest.raises(NotInTrioError, match=ON_ASYNCIO) as caught:
            asyncio.run(attempt)
        assert HOW in str(caught.value)
        assert isinstance(caught.value, TrioflowError)
        assert isinstance(caught.value, RuntimeError)


def test_outside_any_event_loop_it_says_so() -> None:
    with pytest.raises(NotInTrioError, match="runs outside any event loop"):
        CountFlow().start(Count(n=1))


def test_a_workflow_app_under_asyncio_refuses_to_start() -> None:
    """Starlette's TestClient runs the app on asyncio by default: the lifespan fails with
    the clear error."""
    app = trioflow.WorkflowApp(CountFlow(), allowed_hosts=["testserver"])
    with pytest.raises(NotInTrioError, match=ON_ASYNCIO), TestClient(app):
        pass


def test_a_workflow_app_under_test_client_on_trio() -> None:
    """TestClient(app, backend="trio") runs the app, its lifespan and its runs on trio."""
    app = trioflow.WorkflowApp({"count": CountFlow()}, allowed_hosts=["testserver"])
    with TestClient(app, backend="trio") as client:
        started = client.post("/workflows/count/runs", json={"n": 3})
        assert started.status_code == 201
        run_id = started.json()["run_id"]
        stream = client.get(f"/runs/{run_id}/events", params={"format": "ndjson"})
        lines = [line for line in stream.text.splitlines() if line.strip()]
        assert [line.count('"type":"Tick"') for line in lines] == [1, 1, 1, 0]
        assert '"type":"StopEvent"' in lines[-1]
        assert client.get(f"/runs/{run_id}").json()["result"] == {"counted": 3}
