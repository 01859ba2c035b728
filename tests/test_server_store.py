"""The server on a SQLite store: runs, their events, statuses and results outlive the process;
clients see committed events only; a run interrupted by a crash ends with a terminal event."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from _http import (
    DURABLE_FLOWS,
    FLOWS,
    serve_process,
    served,
    sse_messages,
    sse_text_messages,
    wait_until,
)

from trioflow import WorkflowApp
from trioflow._store import (
    EventRow,
    NewEvent,
    NewRun,
    RunEnded,
    RunRow,
    StoreLocked,
    open_store,
)


def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/runs.db"


async def test_finished_runs_are_served_after_a_restart(tmp_path: Path) -> None:
    """A run's status, result and whole stream are there after the server restarts on the
    same file: listed, described, streamed from the start and resumed from Last-Event-ID;
    new runs go on being numbered after the old ones."""
    url = store_url(tmp_path)
    async with served(FLOWS, store=url) as server:
        first = await server.start("count", {"n": 5})
        await server.wait_status(first, "completed")
        before = await server.events(first)
    async with served(FLOWS, store=url) as server:
        listed = (await server.client.get("/runs")).json()["runs"]
        assert [run["run_id"] for run in listed] == [first]
        assert listed[0]["status"] == "completed"
        assert listed[0]["ended_at"] >= listed[0]["started_at"]
        status = await server.status(first)
        assert status["result"] == {"counted": 5}
        assert status["seq"] == 6
        assert await server.events(first) == before
        resumed = await server.client.get(f"/runs/{first}/events", headers={"last-event-id": "4"})
        assert [m["id"] for m in sse_text_messages(resumed.text)] == ["5", "6"]
        second = await server.start("count", {"n": 1})
        await server.wait_status(second, "completed")
        listed = (await server.client.get("/runs", params={"limit": 1})).json()
        assert [run["run_id"] for run in listed["runs"]] == [second]
        older = await server.client.get("/runs", params={"cursor": listed["next_cursor"]})
        assert [run["run_id"] for run in older.json()["runs"]] == [first]
        sent = await server.client.post(f"/runs/{first}/events", json={"type": "Go", "data": {}})
        assert sent.status_code == 409
        cancel = await server.client.post(f"/runs/{first}/cancel")
        assert cancel.status_code == 409


async def test_runs_beyond_keep_finished_are_served_from_the_store(tmp_path: Path) -> None:
    """With a store, keep_finished bounds memory only: older runs are read from the file."""
    async with served(FLOWS, store=store_url(tmp_path), keep_finished=1) as server:
        runs = [await server.start("count", {"n": 2}) for _ in range(3)]
        for run_id in runs:
            await server.wait_status(run_id, "completed")
        registry = server.app._registry
        assert registry is not None
        await wait_until(lambda: len(registry._records) == 1)
        listed = (await server.client.get("/runs")).json()["runs"]
        assert [run["run_id"] for run in listed] == runs[::-1]
        assert [m["data"]["type"] for m in await server.events(runs[0])] == [
            "Tick",
            "Tick",
            "StopEvent",
        ]


async def test_clients_see_committed_events_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store cannot commit (a stalled disk), a run's events reach no client; once
    it commits, they all do, in order."""
    async with served(FLOWS, store=store_url(tmp_path)) as server:
        registry = server.app._registry
        assert registry is not None
        store = registry._store
        assert store is not None
        disk = threading.Event()
        write = store._write

        def stalled(batch: Any) -> None:
            disk.wait()
            write(batch)

        run_id = await server.start("gate")
        record = registry.get(run_id)
        assert record is not None
        await wait_until(lambda: record.seq >= 2)
        monkeypatch.setattr(store, "_write", stalled)
        answers: list[int] = []

        async def answer() -> None:
            response = await server.client.post(
                f"/runs/{run_id}/events", json={"type": "Go", "data": {"count": 3}}
            )
            answers.append(response.status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            await wait_until(lambda: record.seq == 6)
            published = record.feed.last_seq
            assert published < record.seq  # numbered, not yet committed: no client has them
            assert answers == []  # accepted once committed: a crash now would lose it
            disk.set()
        assert answers == [202]
        events = await server.events(run_id)
        assert [int(m["id"]) for m in events] == list(range(1, 7))
        assert published <= 2


async def test_an_interrupted_run_ends_with_a_terminal_event(tmp_path: Path) -> None:
    """A run the store has as running when the server starts (its process was killed) is
    closed: its stream ends with WorkflowFailedEvent (RunInterrupted) after its events, and
    its status is failed."""
    url = store_url(tmp_path)
    async with open_store(url) as store:
        assert store is not None
        row = RunRow(
            "lost", store.next_number(), "gate", "running", b"{}", False, 0, None, None, 1.0, None
        )
        store.append(NewRun(row))
        for seq in (1, 2):
            body = json.dumps({"seq": seq, "type": "Tick", "qualified_name": "t.Tick", "data": {}})
            store.append(NewEvent("lost", EventRow(seq, "Tick", "t.Tick", 0, "", body.encode())))
        await store.drain()
    async with served(FLOWS, store=url) as server:
        status = await server.status("lost")
        assert status["status"] == "failed"
        assert status["error"]["type"] == "RunInterrupted"
        events = await server.events("lost", after=1)
        assert [(m["id"], m["event"]) for m in events] == [
            ("2", "Tick"),
            ("3", "WorkflowFailedEvent"),
        ]
        assert events[-1]["data"]["data"]["exception"]["type"] == "RunInterrupted"


async def test_one_server_per_store(tmp_path: Path) -> None:
    """A second server on a file in use does not start: its lifespan fails with StoreLocked,
    and serve() raises it."""
    url = store_url(tmp_path)
    async with served(FLOWS, store=url):
        with pytest.raises(BaseExceptionGroup) as failed:
            async with served(FLOWS, store=url):
                pass
        assert failed.group_contains(StoreLocked)


def test_bad_store_urls_are_refused_up_front() -> None:
    for url in ("postgres://db/x", "sqlite://host/x.db", "redis://x"):
        with pytest.raises(ValueError, match="store"):
            WorkflowApp(FLOWS, store=url)


async def test_llama_purge_forgets_a_run_in_the_store(tmp_path: Path) -> None:
    """purge=true deletes a finished run from the store: it is gone after a restart too."""
    url = store_url(tmp_path)
    async with served(FLOWS, store=url, llama_compat=True) as server:
        kept = await server.start("count", {"n": 1})
        gone = await server.start("count", {"n": 1})
        for run_id in (kept, gone):
            await server.wait_status(run_id, "completed")
        purged = await server.client.post(f"/handlers/{gone}/cancel", params={"purge": "true"})
        assert purged.json() == {"status": "deleted"}
        assert (await server.client.get(f"/runs/{gone}")).status_code == 404
    async with served(FLOWS, store=url, llama_compat=True) as server:
        handlers = (await server.client.get("/handlers")).json()["handlers"]
        assert [h["handler_id"] for h in handlers] == [kept]
        assert handlers[0]["result"]["value"] == {"result": {"counted": 1}}
        assert (await server.client.get(f"/runs/{gone}")).status_code == 404


def _read_until(
    client: httpx.Client,
    run_id: str,
    stop: Callable[[dict[str, str]], bool],
    headers: dict[str, str] | None = None,
) -> list[dict[str, str]]:
    """SSE messages of ``run_id`` read line by line until ``stop(message)`` or the end."""
    messages: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    with client.stream("GET", f"/runs/{run_id}/events", headers=headers or {}) as response:
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields:
                messages.append(fields)
                if stop(fields):
                    break
            fields = {}
    return messages


def test_kill_9_mid_stream_then_resume(tmp_path: Path) -> None:
    """``trioflow serve --store``, for real: SIGKILL in the middle of a run of 60 hops; after
    a restart on the same file the run goes on where it was. A client resuming with
    Last-Event-ID gets every later event once and no gap; the hops that had finished are not
    run again, the one in flight runs again once (after a StepFailedEvent for the lost
    attempt); the result is the uncrashed one; finished runs are still there."""
    url = store_url(tmp_path)
    log = tmp_path / "hops.log"
    start = {"hops": 60, "log": str(log), "pause": 0.02}
    with serve_process("_http:DURABLE_FLOWS", "--store", url) as (process, base):
        with httpx.Client(base_url=base, timeout=30) as client:
            done = client.post("/workflows/count/runs", json={"n": 3}).json()["run_id"]
            run_id = client.post("/workflows/chain/runs", json=start).json()["run_id"]
            before = _read_until(client, run_id, lambda m: int(m["id"]) >= 20)
        process.kill()
        process.wait(timeout=30)
    with (
        serve_process("_http:DURABLE_FLOWS", "--store", url) as (_, base),
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        assert client.get(f"/runs/{done}").json()["result"] == {"counted": 3}
        last = before[-1]["id"]
        after = _read_until(client, run_id, lambda m: False, {"last-event-id": last})
        ids = [int(m["id"]) for m in before + after]
        assert ids == list(range(1, len(ids) + 1))  # no gap, no duplicate, across the crash
        assert after[-1]["event"] == "StopEvent"
        status = client.get(f"/runs/{run_id}").json()
        assert (status["status"], status["result"]) == ("completed", 60)
    ran = [int(line) for line in log.read_text().split()]
    again = [i for i in set(ran) if ran.count(i) > 1]
    assert sorted(set(ran)) == list(range(1, 61))
    assert len(ran) - 60 == len(again) <= 1  # at most the hop in flight ran twice
    events = [m["event"] for m in before + after]
    ticks = [json.loads(m["data"])["data"]["n"] for m in before + after if m["event"] == "Tick"]
    assert sorted(set(ticks)) == list(range(1, 61))
    lost = [json.loads(m["data"])["data"] for m in after if m["event"] == "StepFailedEvent"]
    assert len(lost) == len(again)
    for failed in lost:
        assert failed["exception"]["type"] == "WorkerLost"
        assert failed["input_event"]["data"]["i"] == again[0]
    assert events.count("StopEvent") == 1


def test_kill_9_while_waiting_for_an_answer(tmp_path: Path) -> None:
    """A run waiting for a human answer when the server is killed still waits after the
    restart (its step runs again, as a new attempt), is not asked again, and an answer sent
    then completes it."""
    url = store_url(tmp_path)
    with serve_process("_http:DURABLE_FLOWS", "--store", url) as (process, base):
        with httpx.Client(base_url=base, timeout=30) as client:
            waiting = client.post("/workflows/gate/runs", json={}).json()["run_id"]
            before = _read_until(client, waiting, lambda m: m["event"] == "Asking")
        process.kill()
        process.wait(timeout=30)
    with (
        serve_process("_http:DURABLE_FLOWS", "--store", url) as (_, base),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        assert client.get(f"/runs/{waiting}").json()["status"] == "running"
        answer = client.post(f"/runs/{waiting}/events", json={"type": "Go", "data": {"count": 2}})
        assert answer.status_code == 202
        after = _read_until(client, waiting, lambda m: False, {"last-event-id": before[-1]["id"]})
        # The step was in flight: it runs again (its tick again), after a StepFailedEvent
        # for the lost attempt, and takes the answer without asking again.
        assert [m["event"] for m in after] == [
            "StepFailedEvent",
            "Tick",
            "Tick",
            "Tick",
            "StopEvent",
        ]
        assert json.loads(after[0]["data"])["data"]["exception"]["type"] == "WorkerLost"
        assert [int(m["id"]) for m in before + after] == list(range(1, len(before) + 6))
        assert client.get(f"/runs/{waiting}").json()["result"] == 2


async def test_a_graceful_stop_suspends_runs_and_the_next_start_resumes_them(
    tmp_path: Path,
) -> None:
    """Stopping the server (Ctrl-C, SIGTERM) does not cancel a durable run: nothing of its
    stop is recorded, and the next start resumes it (a step that was running runs again
    after a StepFailedEvent, as after a crash); a finished run stays finished."""
    url = store_url(tmp_path)
    async with served(DURABLE_FLOWS, store=url) as server:
        done = await server.start("count", {"n": 2})
        await server.wait_status(done, "completed")
        waiting = await server.start("gate")
        async with (
            server.client.stream("GET", f"/runs/{waiting}/events") as response,
            aclosing(sse_messages(response)) as messages,
        ):
            async for message in messages:
                if message.get("event") == "Asking":  # it asked: it waits
                    break
    async with served(DURABLE_FLOWS, store=url) as server:
        assert (await server.status(done))["status"] == "completed"
        assert (await server.status(waiting))["status"] == "running"
        sent = await server.client.post(
            f"/runs/{waiting}/events", json={"type": "Go", "data": {"count": 1}}
        )
        assert sent.status_code == 202
        await server.wait_status(waiting, "completed")
        events = await server.events(waiting)
        assert [m["event"] for m in events] == [
            "Tick",
            "Asking",
            "StepFailedEvent",
            "Tick",
            "Tick",
            "StopEvent",
        ]
        lost = events[2]["data"]["data"]["exception"]
        assert lost["type"] == "WorkerLost"
        assert "was stopped" in lost["message"]


async def test_stops_do_not_count_as_recoveries(tmp_path: Path) -> None:
    """A run stopped gracefully more often than max_recoveries still resumes: only crashes
    count."""
    url = store_url(tmp_path)
    async with served(DURABLE_FLOWS, store=url, max_recoveries=1) as server:
        waiting = await server.start("gate")
        registry = server.app._registry
        assert registry is not None
        await wait_until(lambda: registry._records[waiting].seq >= 2)  # it asked: it waits
    for _ in range(3):
        async with served(DURABLE_FLOWS, store=url, max_recoveries=1) as server:
            assert (await server.status(waiting))["status"] == "running"
    async with open_store(url) as store:
        assert store is not None
        row = await store.run(waiting)
        assert row is not None
        assert row.recoveries == 0


async def test_a_cancel_answered_202_is_not_undone_by_a_crash(tmp_path: Path) -> None:
    """The 202 for a cancel comes once it is recorded: a process that stops before the run's
    end (its terminal event, its status) is recorded does not resume the run at the next
    start, it ends it as cancelled."""
    url = store_url(tmp_path)
    async with served(DURABLE_FLOWS, store=url) as server:
        waiting = await server.start("gate")
        registry = server.app._registry
        assert registry is not None
        store = registry._store
        assert store is not None
        await wait_until(lambda: registry._records[waiting].seq >= 2)  # it asked: it waits
        record = registry._records[waiting]
        # As if the process stopped right after the 202: the run's end is never recorded.
        ends: list[Any] = []
        append = store.append
        monkey = pytest.MonkeyPatch()

        def lost(op: Any) -> bool:
            terminal = isinstance(op, NewEvent) and op.event.flags & 2
            return isinstance(op, RunEnded) or bool(terminal)

        monkey.setattr(store, "append", lambda op: ends.append(op) if lost(op) else append(op))
        try:
            cancelled = await server.client.post(f"/runs/{waiting}/cancel")
            assert cancelled.status_code == 202
            await record.done.wait()
        finally:
            monkey.undo()
        assert len(ends) == 2  # its terminal event and its end were not written
    async with served(DURABLE_FLOWS, store=url) as server:
        status = await server.status(waiting)
        assert status["status"] == "cancelled"
        events = await server.events(waiting)
        assert events[-1]["event"] == "WorkflowCancelledEvent"
        assert "StepFailedEvent" not in [m["event"] for m in events]


def _crash_now(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the server's store takes no writes, as if its process were killed now
    (what was committed stays)."""
    registry = server.app._registry
    assert registry is not None
    monkeypatch.setattr(registry._store, "append", lambda op: 0)


async def test_crashes_while_a_run_only_waits_do_not_count_as_recoveries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_recoveries counts crashes while one of the run's steps was running: a run that
    waits for an answer through more crashes than that is still resumed, and the lost
    attempt's WorkerLost says its process crashed."""
    url = store_url(tmp_path)
    async with served(DURABLE_FLOWS, store=url, max_recoveries=1) as server:
        waiting = await server.start("gate")
        registry = server.app._registry
        assert registry is not None
        await wait_until(lambda: registry._records[waiting].seq >= 2)  # it asked: it waits
        _crash_now(server, monkeypatch)
    for _ in range(3):
        monkeypatch.undo()
        async with served(DURABLE_FLOWS, store=url, max_recoveries=1) as server:
            assert (await server.status(waiting))["status"] == "running"
            _crash_now(server, monkeypatch)
    monkeypatch.undo()
    async with served(DURABLE_FLOWS, store=url, max_recoveries=1) as server:
        sent = await server.client.post(
            f"/runs/{waiting}/events", json={"type": "Go", "data": {"count": 0}}
        )
        assert sent.status_code == 202
        await server.wait_status(waiting, "completed")
        events = await server.events(waiting)
        lost = [m["data"]["data"]["exception"] for m in events if m["event"] == "StepFailedEvent"]
        assert lost
        assert all(e["type"] == "WorkerLost" and "a crash" in e["message"] for e in lost)


async def test_a_run_whose_failure_was_committed_keeps_its_error(tmp_path: Path) -> None:
    """A run killed after its terminal WorkflowFailedEvent was committed, before its end was:
    at the next start its status and error are the ones its stream showed."""
    url = store_url(tmp_path)
    async with open_store(url) as store:
        assert store is not None
        row = RunRow(
            "ended", store.next_number(), "gate", "running", b"{}", False, 0, None, None, 1.0, None
        )
        store.append(NewRun(row))
        data = {"step_name": "gate", "exception": {"type": "Boom", "message": "kaboom"}}
        body = json.dumps(
            {"seq": 1, "type": "WorkflowFailedEvent", "qualified_name": "x", "data": data},
            separators=(",", ":"),  # as the server writes envelopes
        )
        event = EventRow(1, "WorkflowFailedEvent", "x", 2, "StopEvent", body.encode())
        store.append(NewEvent("ended", event))
        await store.drain()
    async with served(FLOWS, store=url) as server:
        status = await server.status("ended")
        assert status["status"] == "failed"
        assert status["error"] == {"type": "Boom", "message": "kaboom"}
