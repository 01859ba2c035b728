"""`trioflow.open_run_group()`: runs that outlive the request that started them, in an app's
lifespan, with their events numbered for any number of readers."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _http import Asking, Count, CountFlow, FailFlow, ForeverFlow, GateFlow, Go, Tick

import trioflow
from trioflow import RunStatus, StopEvent, WorkflowCancelledError, WorkflowRuntimeError


async def test_a_run_outlives_the_task_that_started_it() -> None:
    """A run started from one task (an endpoint) goes on after that task has ended; readers
    get its events numbered from 1, the terminal last; its result waits for its end."""
    async with trioflow.open_run_group() as runs:
        async with trio.open_nursery() as request:
            started: list[str] = []

            async def endpoint() -> None:
                handler = await runs.start(CountFlow(), Count(n=3))
                started.append(handler.run_id)

            request.start_soon(endpoint)
        (run_id,) = started
        handler = runs.get(run_id)
        assert handler is not None
        async with runs.events(run_id) as events:
            numbered = [(n.seq, type(n.event).__name__) async for n in events]
        assert numbered == [(1, "Tick"), (2, "Tick"), (3, "Tick"), (4, "StopEvent")]
        assert await handler.result() == {"counted": 3}
        assert handler.status is RunStatus.COMPLETED


async def test_several_readers_and_a_late_one_resuming(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioflow.open_run_group() as runs:
        handler = await runs.start(CountFlow(), n=5)
        seen: dict[str, list[int]] = {}

        async def read(name: str, after: int) -> None:
            async with runs.events(handler.run_id, after=after) as events:
                seen[name] = [numbered.seq async for numbered in events]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "first", 0)
            nursery.start_soon(read, "second", 0)
        await read("late", 3)
        assert seen == {
            "first": [1, 2, 3, 4, 5, 6],
            "second": [1, 2, 3, 4, 5, 6],
            "late": [4, 5, 6],
        }


async def test_answers_and_cancels_by_run_id(autojump_clock: trio.testing.MockClock) -> None:
    async with trioflow.open_run_group() as runs:
        gate = await runs.start(GateFlow(timeout=None))
        async with runs.events(gate.run_id) as events:
            async for numbered in events:
                if isinstance(numbered.event, Asking):
                    await runs.send(gate.run_id, Go(count=1))
                if isinstance(numbered.event, StopEvent):
                    break
        assert await gate.result() == 1
        forever = await runs.start(ForeverFlow(timeout=None))
        assert runs.cancel(forever.run_id) is True
        assert runs.cancel(forever.run_id) is False
        with pytest.raises(WorkflowCancelledError):
            await forever.result()
        with pytest.raises(LookupError, match="no run with id 'nope'"):
            runs.cancel("nope")
        assert runs.get("nope") is None


async def test_a_runs_failure_never_reaches_the_groups_owner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failing run and a cancelled one end the group's block cleanly: their ends are their
    handlers' to report."""
    async with trioflow.open_run_group() as runs:
        failed = await runs.start(FailFlow())
        cancelled = await runs.start(ForeverFlow(timeout=None))
        cancelled.cancel()
        await trio.testing.wait_all_tasks_blocked()
    assert failed.status is RunStatus.FAILED
    assert cancelled.status is RunStatus.CANCELLED


async def test_leaving_the_block_cancels_the_runs_still_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioflow.open_run_group() as runs:
        handler = await runs.start(ForeverFlow(timeout=None))
        events = runs.events(handler.run_id)
        await trio.testing.wait_all_tasks_blocked()  # the step has written its tick
    assert handler.status is RunStatus.CANCELLED
    async with events:
        assert [type(n.event).__name__ async for n in events] == [
            "Tick",
            "WorkflowCancelledEvent",
        ]


async def test_a_step_system_exit_comes_out_of_the_block_as_itself() -> None:
    class Exiting(trioflow.Workflow):
        @trioflow.step
        async def leave(self, ev: trioflow.StartEvent) -> StopEvent:
            raise SystemExit(3)

    with pytest.raises(SystemExit) as exited:
        async with trioflow.open_run_group() as runs:
            await runs.start(Exiting())
            await trio.sleep_forever()  # the group stops as a signal would: cancelled
    assert exited.value.code == 3


async def test_events_that_are_gone_are_an_error_not_a_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trioflow.open_run_group(retain=2, hold_for_first_reader=0) as runs:
        handler = await runs.start(CountFlow(), n=10)
        await handler.result()
        with pytest.raises(WorkflowRuntimeError, match="no longer retained"):
            runs.events(handler.run_id)


del Tick  # imported so that the shared test flows' events are known by name


def test_the_readme_example_starts_a_run_that_outlives_its_request() -> None:
    """The README's FastAPI lifespan example: POST starts a run in the group; the run
    finishes after the request has ended, and the group reports it."""
    import re
    from pathlib import Path
    from typing import Any

    from starlette.testclient import TestClient

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (source,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
        if "open_run_group() as runs" in block
    ]
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    app = namespace["app"]
    with TestClient(app, backend="trio") as client:
        response = client.post("/research", params={"topic": "trio"})
        assert response.status_code == 200
        run_id = response.json()["run_id"]
        runs = app.state.runs
        handler = runs.get(run_id)
        assert handler is not None
        portal = client.portal
        assert portal is not None  # inside the `with`: the app's event loop runs
        result = portal.call(handler.result)
        assert result["answer"].startswith("trio keeps every task")


async def test_reading_events_is_a_checkpoint_each_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every event taken, from a batch already fetched or not, is a checkpoint."""
    async with trioflow.open_run_group() as runs:
        handler = await runs.start(CountFlow(), n=5)
        await handler.result()
        async with runs.events(handler.run_id) as events:
            for _ in range(6):
                with trio.testing.assert_checkpoints():
                    await events.__anext__()
