"""The server on a SQLite store: runs, their events, statuses and results outlive the process;
clients see committed events only; a run interrupted by a crash ends with a terminal event."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _http import (
    DURABLE_FLOWS,
    FLOWS,
    GateFlow,
    Lingering,
    Stuck,
    serve_process,
    served,
    sse_messages,
    sse_text_messages,
    wait_for,
    wait_until,
)
from _postgres import fresh_database

import trioflow
from trioflow import StartEvent, StopEvent, Workflow, WorkflowApp, step
from trioflow._server._feed import BATCH
from trioflow._server._options import LIST_LIMIT_MAX
from trioflow._server._registry import RunRegistry
from trioflow._store import (
    EventRow,
    NewEvent,
    NewRun,
    PostgresStore,
    RunEnded,
    RunRow,
    SqliteStore,
    StoreError,
    StoreLocked,
    open_store,
)
from trioflow._store._commit import GroupCommit


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
        assert isinstance(store, SqliteStore)
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
        row = running_row("lost", await store.next_number())
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


def running_row(run_id: str, number: int) -> RunRow:
    """The row of a run of ``gate`` the store has as running."""
    return RunRow(run_id, number, "gate", "running", b"{}", False, 0, None, None, 1.0, None)


def test_bad_store_urls_are_refused_up_front() -> None:
    for url in ("postgres:db", "sqlite://host/x.db", "redis://x"):
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
        assert isinstance(store, SqliteStore)
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
        row = running_row("ended", await store.next_number())
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


@asynccontextmanager
async def stalled_disk(store: SqliteStore) -> AsyncIterator[threading.Event]:
    """Inside the block the store's commits wait (a stalled disk) until the event yielded is
    set; leaving the block sets it."""
    disk = threading.Event()
    write = store._write

    def stalled(batch: Any) -> None:
        disk.wait()
        write(batch)

    store._write = stalled  # type: ignore[method-assign]
    try:
        yield disk
    finally:
        disk.set()
        del store._write


async def asking_run(server: Any) -> tuple[RunRegistry, SqliteStore | PostgresStore, str]:
    """The in-process server's registry and store, and a run of ``gate`` started on it that
    has asked for its answer and waits."""
    registry = server.app._registry
    assert registry is not None
    store = registry._store
    assert isinstance(store, SqliteStore | PostgresStore)
    run_id = await server.start("gate")
    await wait_until(lambda: registry._records[run_id].feed.last_seq >= 2)
    return registry, store, run_id


def failing_disk(store: GroupCommit) -> threading.Event:
    """From now on the store's next commit waits until the event returned is set, then
    SQLite refuses it for good (the store fails)."""
    disk = threading.Event()

    def refusing(batch: Any) -> None:
        disk.wait()
        raise sqlite3.IntegrityError("refused for good")

    store._write = refusing  # type: ignore[method-assign]
    return disk


async def test_a_purge_before_the_end_is_committed_still_ends_the_streams(tmp_path: Path) -> None:
    """purge=true after a run has ended, before its end is committed: the clients attached
    to its stream still get every event up to the terminal one, then the end of the stream;
    and the run is gone, from the store too."""
    async with served(FLOWS, store=store_url(tmp_path), llama_compat=True) as server:
        registry = server.app._registry
        assert registry is not None
        store = registry._store
        assert isinstance(store, SqliteStore)
        run_id = await server.start("gate")
        record = registry.get(run_id)
        assert record is not None
        await wait_until(lambda: record.feed.last_seq >= 2)  # it asked: it waits
        streamed: list[dict[str, Any]] = []

        async def stream() -> None:
            streamed.extend(await server.events(run_id))

        with trio.fail_after(20):  # a stream left hanging fails the test
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream)
                await wait_until(lambda: record.feed.watchers == 1)
                async with stalled_disk(store) as disk:
                    go = {"type": "Go", "data": {"count": 2}}
                    nursery.start_soon(
                        partial(server.client.post, f"/runs/{run_id}/events", json=go)
                    )
                    await wait_until(record.done.is_set)  # ended; its end not yet committed
                    answers: list[httpx.Response] = []

                    async def purge() -> None:  # answered once the purge is committed
                        answers.append(
                            await server.client.post(
                                f"/handlers/{run_id}/cancel", params={"purge": "true"}
                            )
                        )

                    nursery.start_soon(purge)
                    await wait_until(lambda: run_id in registry._hidden)
                    assert (await server.client.get(f"/runs/{run_id}")).status_code == 404
                    disk.set()
        assert [answer.json() for answer in answers] == [{"status": "deleted"}]
        assert [m["event"] for m in streamed] == ["Tick", "Asking", "Tick", "Tick", "StopEvent"]
        await store.drain()
        await wait_until(lambda: run_id not in registry._records)
        assert await store.run(run_id) is None
        assert (await server.client.get(f"/runs/{run_id}")).status_code == 404


@pytest.mark.parametrize(
    ("route", "params", "first"),
    [("/runs/{}/events", {}, 1), ("/events/{}", {"after_sequence": "-1"}, 0)],
    ids=["trioflow", "llama"],
)
async def test_a_run_purged_while_streamed_from_the_file_ends_its_streams_cleanly(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    route: str,
    params: dict[str, str],
    first: int,
) -> None:
    """A client streaming a run the server reads from the file (it ended before this process
    started), in batches: the run purged between two of them, the stream ends cleanly after
    the events the client got (no error logged, no broken response), over either route."""
    url = store_url(tmp_path)
    async with served(FLOWS, store=url) as server:
        run_id = await server.start("count", {"n": BATCH + 10})
        await server.wait_status(run_id, "completed")
    async with served(FLOWS, store=url, llama_compat=True) as server:
        registry = server.app._registry
        assert registry is not None
        store = registry._store
        assert isinstance(store, SqliteStore)
        events = store.events
        reads: list[int] = []
        purged = trio.Event()

        async def read_then_wait(run_id: str, **options: Any) -> list[EventRow]:
            reads.append(options["after"])
            if len(reads) == 2:  # the second batch is read once the run is purged
                await purged.wait()
            return await events(run_id, **options)

        store.events = read_then_wait  # type: ignore[method-assign]
        streamed: list[dict[str, Any]] = []

        async def stream() -> None:
            url = route.format(run_id)
            async with server.client.stream("GET", url, params=params) as response:
                assert response.status_code == 200
                streamed.extend([m async for m in sse_messages(response) if "data" in m])

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream)
                await wait_until(lambda: len(reads) == 2)
                gone = await server.client.post(
                    f"/handlers/{run_id}/cancel", params={"purge": "true"}
                )
                assert gone.json() == {"status": "deleted"}
                purged.set()
        assert [int(m["id"]) for m in streamed] == list(range(first, first + BATCH))
        assert (await server.client.get(f"/runs/{run_id}")).status_code == 404
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_clients_of_a_run_served_from_the_file_share_its_feed(tmp_path: Path) -> None:
    """A run the server reads from the file has one feed while it has clients, as a run in
    memory does: its status counts them, max_clients_per_run holds (429), and once the last
    one has left the feed is dropped."""
    url = store_url(tmp_path)
    async with served(FLOWS, store=url) as server:
        run_id = await server.start("count", {"n": 3})
        await server.wait_status(run_id, "completed")
    async with served(FLOWS, store=url, llama_compat=True, max_clients_per_run=1) as server:
        registry = server.app._registry
        assert registry is not None
        store = registry._store
        assert isinstance(store, SqliteStore)
        events = store.events
        reading = trio.Event()
        release = trio.Event()

        async def held(run_id: str, **options: Any) -> list[EventRow]:
            reading.set()
            await release.wait()
            return await events(run_id, **options)

        store.events = held  # type: ignore[method-assign]
        streamed: list[dict[str, Any]] = []

        async def stream() -> None:
            streamed.extend(await server.events(run_id))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream)
                await reading.wait()  # its client is attached, waiting for the file
                assert (await server.status(run_id))["watchers"] == 1
                for url in (f"/runs/{run_id}/events", f"/events/{run_id}"):
                    params = {"after_sequence": "-1"} if url.startswith("/events") else {}
                    async with server.client.stream("GET", url, params=params) as refused:
                        assert refused.status_code == 429
                        await refused.aread()
                    assert refused.json()["error"]["code"] == "too_many_clients"
                release.set()
        assert [m["event"] for m in streamed] == ["Tick", "Tick", "Tick", "StopEvent"]
        assert (await server.status(run_id))["watchers"] == 0
        assert registry._stored_feeds == {}
        assert [m["event"] for m in await server.events(run_id, after=3)] == ["StopEvent"]
        assert registry._stored_feeds == {}


class Blocking(Workflow):
    """A ``def`` step blocks its thread until `release` is set: suspending the run waits."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.entered = threading.Event()
        self.release = threading.Event()

    @step
    def block(self, ev: StartEvent) -> StopEvent:
        self.entered.set()
        self.release.wait()
        return StopEvent(result="released")


async def test_the_store_is_drained_within_what_is_left_of_the_shutdown_grace(
    tmp_path: Path,
) -> None:
    """A shutdown whose runs took its whole grace to suspend (a `def` step holds one up) on
    a store that cannot commit (its disk fails): the store's drain, after the runs, gets what
    is left of the grace (nothing here), not a grace of its own on top."""
    stuck = Blocking()
    app = WorkflowApp({"stuck": stuck}, store=store_url(tmp_path), shutdown_grace=0.2)
    drained_by: list[float] = []
    async with app.running():
        registry = app._registry
        assert registry is not None
        store = registry._store
        assert isinstance(store, SqliteStore)
        record = await registry.start("stuck", stuck, StartEvent(), abandon_after=None)
        await trio.to_thread.run_sync(stuck.entered.wait)
        drain = store.drain

        def failing(batch: Any) -> None:
            raise sqlite3.OperationalError("disk I/O error")  # retried: nothing is dropped

        async def recorded() -> None:
            drained_by.append(trio.current_effective_deadline())
            await drain()

        store._write = failing  # type: ignore[method-assign]
        store.drain = recorded  # type: ignore[method-assign]
        try:
            await app.shutdown()  # the run's thread holds it up to the end of the grace
            shut_down_at = trio.current_time()
            assert not record.done.is_set()
        finally:
            stuck.release.set()
    assert len(drained_by) == 1
    assert drained_by[0] <= shut_down_at  # the grace was over when the runs' part ended


async def test_runs_are_listed_by_the_status_the_server_reports(tmp_path: Path) -> None:
    """A run that has completed, its end not yet committed: GET /runs/{id}, GET /runs and
    GET /handlers all say it runs (a crash could still change its outcome), in pages that
    stay full; once its end is committed, all say it completed."""
    async with served(FLOWS, store=store_url(tmp_path), llama_compat=True) as server:
        registry = server.app._registry
        assert registry is not None
        store = registry._store
        assert isinstance(store, SqliteStore)
        older = [await server.start("forever") for _ in range(3)]
        run_id = await server.start("gate")
        record = registry.get(run_id)
        assert record is not None
        await wait_until(lambda: record.feed.last_seq >= 2)  # it asked: it waits

        async def listed(**params: Any) -> list[str]:
            response = await server.client.get("/runs", params=params)
            return [run["run_id"] for run in response.json()["runs"]]

        async def paged(**params: Any) -> list[list[str]]:
            pages: list[list[str]] = []
            cursor = None
            while True:
                more: dict[str, Any] = {} if cursor is None else {"cursor": cursor}
                page = (await server.client.get("/runs", params=params | more)).json()
                pages.append([run["run_id"] for run in page["runs"]])
                if (cursor := page["next_cursor"]) is None:
                    return pages

        async def handlers(status: str) -> list[str]:
            response = await server.client.get("/handlers", params={"status": status})
            return [handler["handler_id"] for handler in response.json()["handlers"]]

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery, stalled_disk(store) as disk:
                go = {"type": "Go", "data": {"count": 0}}
                nursery.start_soon(partial(server.client.post, f"/runs/{run_id}/events", json=go))
                await wait_until(record.done.is_set)  # completed; its end not committed
                row = await store.run(run_id)
                assert row is not None
                assert row.status == "running"
                assert (await server.status(run_id))["status"] == "running"
                assert await listed(status="completed") == []
                assert await listed(status="running") == [run_id, *older[::-1]]
                running = [[run_id, older[2]], older[1::-1]]
                assert await paged(status="running", limit=2) == running
                assert await paged(limit=2) == running
                assert await handlers("completed") == []
                assert await handlers("running") == [run_id, *older[::-1]]
                disk.set()
        await wait_until(record.settled.is_set)
        assert (await server.status(run_id))["status"] == "completed"
        assert await listed(status="completed") == [run_id]
        assert await listed(status="running") == older[::-1]
        assert await paged(status="running", limit=2) == [older[:0:-1], older[:1]]
        assert await handlers("completed") == [run_id]


async def test_llama_handlers_lists_the_newest_runs_of_a_store_at_most(tmp_path: Path) -> None:
    """GET /handlers on a store of more runs than a page of GET /runs holds at most answers
    the newest that many that match its filters, as LlamaIndex's data; GET /runs pages
    through them all."""
    url = store_url(tmp_path)
    async with open_store(url) as store:
        assert store is not None
        error = json.dumps({"type": "Boom", "message": "kaboom"}).encode()
        old = RunRow(
            "old",
            await store.next_number(),
            "gate",
            "failed",
            b"{}",
            False,
            0,
            None,
            error,
            1.0,
            2.0,
        )
        store.append(NewRun(old))
        for n in range(LIST_LIMIT_MAX + 5):
            number = await store.next_number()
            row = RunRow(
                f"r{n}", number, "count", "completed", b"{}", False, 0, b"1", None, 1.0, 2.0
            )
            store.append(NewRun(row))
        await store.drain()
    async with served(FLOWS, store=url, llama_compat=True) as server:

        async def handlers(**params: Any) -> list[str]:
            response = await server.client.get("/handlers", params=params)
            assert response.status_code == 200
            return [handler["handler_id"] for handler in response.json()["handlers"]]

        newest = [f"r{n}" for n in reversed(range(LIST_LIMIT_MAX + 5))]
        assert await handlers() == newest[:LIST_LIMIT_MAX]
        assert await handlers(status="completed") == newest[:LIST_LIMIT_MAX]
        assert await handlers(status="failed") == ["old"]
        assert await handlers(workflow_name="gate") == ["old"]
        assert await handlers(workflow_name=["gate", "fail"]) == ["old"]
        assert await handlers(workflow_name=["gate", "count"]) == newest[:LIST_LIMIT_MAX]
        listed: list[str] = []
        cursor = None
        while True:
            params = {"limit": LIST_LIMIT_MAX} | ({} if cursor is None else {"cursor": cursor})
            page = (await server.client.get("/runs", params=params)).json()
            listed += [run["run_id"] for run in page["runs"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert listed == [*newest, "old"]


async def test_a_resumed_run_that_writes_nonstop_does_not_keep_the_server_from_listening(
    tmp_path: Path,
) -> None:
    """The restart commits what it decided about stopped runs before it listens, but does not
    wait for the store to have nothing pending: a resumed run that writes nonstop would keep
    it from ever being so."""
    url = store_url(tmp_path)
    async with served(DURABLE_FLOWS, store=url) as server:
        endless = await server.start("count", {"n": 10**9})
        first = server.app._registry
        assert first is not None
        await wait_until(lambda: first._records[endless].seq >= 100)
    with trio.fail_after(15):  # on a hang: the server never listens
        async with served(DURABLE_FLOWS, store=url) as server:
            registry = server.app._registry
            assert registry is not None
            resumed = registry._records[endless]
            seq = resumed.seq
            await wait_until(lambda: resumed.seq > seq + 100)  # it goes on writing
            assert (await server.status(endless))["status"] == "running"


def _rows_of(path: Path, run_id: str) -> dict[str, int]:
    """How many rows each table of the store at ``path`` has of ``run_id``."""
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(
                f"SELECT count(*) FROM {table} WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            for table in ("tf_runs", "tf_events", "tf_journal")
        }


async def test_llama_cancel_and_purge_answered_are_not_undone_by_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --llama-compat, a cancel is answered once it is committed, and purge=true once the
    run is deleted from the file, also while its steps unwind (a ``def`` step in its thread):
    a crash right after the answer undoes neither. What a purged run writes while it unwinds
    is dropped, so nothing of it is left in the file."""
    url = store_url(tmp_path)
    unwinding, crashed = Stuck(), Stuck()
    flows = {"gate": GateFlow(timeout=None), "unwinding": unwinding, "crashed": crashed}
    async with served(flows, store=url, llama_compat=True) as server:
        try:
            registry = server.app._registry
            assert registry is not None
            waiting = await server.start("gate")
            purged = [await server.start("unwinding"), await server.start("crashed")]
            await wait_until(lambda: registry._records[waiting].seq >= 2)  # it asked: it waits
            await wait_until(lambda: unwinding.entered.is_set() and crashed.entered.is_set())

            answer = await server.client.post(f"/handlers/{purged[0]}/cancel?purge=true")
            assert answer.json() == {"status": "deleted"}
            record = registry._records[purged[0]]
            unwinding.release.set()
            await record.done.wait()
            await wait_until(lambda: purged[0] not in registry._feeds)  # its end is committed
            assert _rows_of(tmp_path / "runs.db", purged[0]) == dict.fromkeys(
                ("tf_runs", "tf_events", "tf_journal"), 0
            )

            answer = await server.client.post(f"/handlers/{waiting}/cancel")
            assert answer.json() == {"status": "cancelled"}
            answer = await server.client.post(f"/handlers/{purged[1]}/cancel?purge=true")
            assert answer.json() == {"status": "deleted"}
            # The process dies now: nothing pending is written any more.
            store = registry._store
            assert isinstance(store, SqliteStore)
            monkeypatch.setattr(store, "_write", lambda batch: None)
            crashed.release.set()
        finally:  # a failed check must not leave a thread blocked, and the server with it
            unwinding.release.set()
            crashed.release.set()
    async with served(flows, store=url, llama_compat=True) as server:
        assert (await server.status(waiting))["status"] == "cancelled"
        for run_id in purged:
            assert (await server.client.get(f"/runs/{run_id}")).status_code == 404
        handlers = (await server.client.get("/handlers")).json()["handlers"]
        assert [handler["handler_id"] for handler in handlers] == [waiting]


async def test_a_run_starting_is_not_served_from_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the commit of a new run's row and its 201, the run is not served as a run of
    the file (which would be listed beside its record once that is known, and whose stream
    would end at once, without a terminal event): it is found once it is under way, listed
    once."""
    async with served(DURABLE_FLOWS, store=store_url(tmp_path)) as server:
        registry = server.app._registry
        assert registry is not None
        store = registry._store
        assert isinstance(store, SqliteStore)
        flushed, gate = store.flushed, trio.Event()

        async def held_after_the_commit(commits: int) -> None:
            await flushed(commits)
            await gate.wait()

        monkeypatch.setattr(store, "flushed", held_after_the_commit)
        started: list[str] = []

        async def start() -> None:
            started.append(await server.start("gate"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(start)
            rows = await wait_for(lambda: store.page(10), bool)  # its row is committed
            run_id = rows[0].run_id
            assert (await server.client.get("/runs")).json()["runs"] == []
            assert (await server.client.get(f"/runs/{run_id}")).status_code == 404
            gate.set()
        assert started == [run_id]
        listed = (await server.client.get("/runs")).json()["runs"]
        assert [run["run_id"] for run in listed] == [run_id]
        assert (await server.status(run_id))["status"] == "running"


async def test_an_outcome_is_served_once_it_is_committed(tmp_path: Path) -> None:
    """A run that has ended in memory, its end not yet committed, is served as running, with
    no result: a crash could still change its outcome (it would resume). LlamaIndex's
    synchronous run answers once the end is committed too."""
    async with served(DURABLE_FLOWS, store=store_url(tmp_path), llama_compat=True) as server:
        registry = server.app._registry
        assert registry is not None
        store = registry._store
        assert isinstance(store, SqliteStore)
        client = server.client
        answers: list[httpx.Response] = []

        async def run_to_the_end() -> None:
            answers.append(await client.post("/workflows/gate/run", json={}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_to_the_end)
            await wait_until(lambda: len(registry._records) == 1)
            (record,) = registry._records.values()
            run_id = record.run_id
            await wait_until(lambda: record.feed.last_seq >= 2)  # it asked: it waits
            async with stalled_disk(store) as disk:
                go = {"type": "Go", "data": {"count": 1}}
                nursery.start_soon(partial(client.post, f"/runs/{run_id}/events", json=go))
                await wait_until(record.done.is_set)  # ended; its end not yet committed
                assert record.handler.status.value == "completed"
                status = await server.status(run_id)
                assert (status["status"], status["ended_at"]) == ("running", None)
                assert "result" not in status
                listed = (await client.get("/runs")).json()["runs"]
                assert [run["status"] for run in listed] == ["running"]
                handler = await client.get(f"/handlers/{run_id}")
                assert (handler.status_code, handler.json()["result"]) == (202, None)
                refusals: list[httpx.Response] = []

                async def cancel() -> None:  # refused once the outcome it names is final
                    refusals.append(await client.post(f"/runs/{run_id}/cancel"))

                nursery.start_soon(cancel)
                await trio.testing.wait_all_tasks_blocked(0.01)  # the request waits
                assert answers == refusals == []
                disk.set()
        assert [answer.status_code for answer in answers] == [200]
        assert answers[0].json()["result"]["value"] == {"result": 1}
        (refusal,) = refusals
        assert refusal.status_code == 409
        assert refusal.json()["error"]["message"].endswith("has ended (completed)")
        status = await server.status(run_id)
        assert (status["status"], status["result"]) == ("completed", 1)


async def test_a_store_that_fails_for_good_stops_the_server_and_its_runs_resume_later(
    tmp_path: Path,
) -> None:
    """A commit SQLite refuses for good fails the store: the server stops as on a fatal error
    (serve raises the StoreError), its runs are suspended, not ended (nothing more can be
    recorded of them), and their clients' streams end at a whole event instead of hanging.
    At the next start on the file the runs go on from what was committed."""
    url = store_url(tmp_path)
    streamed: list[dict[str, Any]] = []
    with pytest.raises(BaseExceptionGroup) as stopped:
        with trio.fail_after(20):
            async with served(DURABLE_FLOWS, store=url) as server:
                _, store, run_id = await asking_run(server)

                async def stream() -> None:
                    streamed.extend(await server.events(run_id))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream)
                    row = await store.run(run_id)
                    assert row is not None
                    store.append(NewRun(row))  # a second row of one run: refused for good
                await trio.sleep_forever()  # the server stops
    assert stopped.group_contains(StoreError, match="UNIQUE constraint failed")
    assert [message["event"] for message in streamed] == ["Tick", "Asking"]
    async with served(DURABLE_FLOWS, store=url) as server:
        assert (await server.status(run_id))["status"] == "running"
        go = {"type": "Go", "data": {"count": 1}}
        assert (await server.client.post(f"/runs/{run_id}/events", json=go)).status_code == 202
        status = await server.wait_status(run_id, "completed")
        assert status["result"] == 1
        events = await server.events(run_id)
        # The step that waited was lost with the store (no stop was recorded: as a crash),
        # and runs again as a new attempt; it is not asked again.
        names = ["Tick", "Asking", "StepFailedEvent", "Tick", "Tick", "StopEvent"]
        assert [m["event"] for m in events] == names
        assert events[2]["data"]["data"]["exception"]["type"] == "WorkerLost"


async def test_a_store_that_fails_while_a_run_unwinds_still_ends_its_requests(
    tmp_path: Path,
) -> None:
    """The store fails for good after a run's outcome is decided but before it has unwound
    (a ``def`` step still holds its thread): once it unwinds, it is suspended (its end cannot
    be recorded), its client's stream ends at a whole event and LlamaIndex's synchronous run
    answers 503 "running" at once, instead of both waiting out the shutdown."""
    flow = Lingering()
    answers: list[httpx.Response] = []
    streamed: list[str] = []
    url = store_url(tmp_path)
    try:
        with pytest.raises(BaseExceptionGroup) as stopped, trio.fail_after(20):
            async with served({"linger": flow}, store=url, llama_compat=True) as server:
                registry = server.app._registry
                assert registry is not None
                store = registry._store
                assert isinstance(store, SqliteStore)

                async def run_to_the_end() -> None:
                    answers.append(await server.client.post("/workflows/linger/run", json={}))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_to_the_end)
                    await wait_until(lambda: len(registry._records) == 1)
                    (record,) = registry._records.values()

                    async def stream() -> None:
                        events = await server.events(record.run_id)
                        streamed.extend(message["event"] for message in events)

                    nursery.start_soon(stream)
                    await wait_until(lambda: record.feed.watchers == 1)
                    await wait_until(lambda: record.handler.status.value == "completed")
                    row = await store.run(record.run_id)
                    assert row is not None
                    store.append(NewRun(row))  # a second row of one run: refused for good
                    await wait_until(lambda: store.failed is not None)
                    flow.release.set()  # the def step returns: the run unwinds
                    await record.done.wait()
                    assert record.suspended
                await trio.sleep_forever()  # the server stops
    finally:
        flow.release.set()
    assert stopped.group_contains(StoreError)
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(503, "running")]
    assert streamed == []  # nothing of it was committed but its row
    async with open_store(url) as reopened:  # it goes on at the next start
        assert reopened is not None
        kept = await reopened.run(record.run_id)
        assert kept is not None
        assert kept.status == "running"


async def test_a_run_started_as_the_store_fails_is_refused_with_503(tmp_path: Path) -> None:
    """A run whose row's commit fails the store is not started: its request gets 503 (the
    server is stopping), and the server stops with the StoreError."""
    answers: list[httpx.Response] = []
    with pytest.raises(BaseExceptionGroup) as stopped, trio.fail_after(20):
        async with served(DURABLE_FLOWS, store=store_url(tmp_path)) as server:
            registry = server.app._registry
            assert registry is not None
            store = registry._store
            assert isinstance(store, SqliteStore)
            write = store._write

            def refusing(batch: Any) -> None:
                if any(isinstance(op, NewRun) for op in batch):
                    raise sqlite3.IntegrityError("refused for good")
                write(batch)

            store._write = refusing  # type: ignore[method-assign]
            answers.append(await server.client.post("/workflows/gate/runs", json={}))
            await trio.sleep_forever()  # the server stops
    assert stopped.group_contains(StoreError, match="refused for good")
    (answer,) = answers
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "shutting_down"
    assert "refused for good" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/runs/{}/events", {"type": "Go", "data": {"count": 1}}),
        ("/runs/{}/cancel", None),
        ("/handlers/{}/cancel?purge=true", None),
    ],
    ids=["answer", "cancel", "purge"],
)
async def test_a_store_that_fails_while_requests_wait_for_commits_answers_them_503(
    tmp_path: Path, route: str, body: dict[str, Any] | None
) -> None:
    """A human answer, a cancel and a purge each wait for their commit before they are
    acknowledged; when that commit fails the store for good they are refused with 503 (the
    server is stopping), not with a 500 that blames the server."""
    answers: list[httpx.Response] = []
    with pytest.raises(BaseExceptionGroup) as stopped, trio.fail_after(20):
        async with served(DURABLE_FLOWS, store=store_url(tmp_path), llama_compat=True) as server:
            _, store, run_id = await asking_run(server)
            disk = failing_disk(store)

            async def request() -> None:
                answers.append(await server.client.post(route.format(run_id), json=body))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(request)
                await wait_until(lambda: store._committing is not None)  # it waits for it
                disk.set()
            await trio.sleep_forever()  # the server stops
    assert stopped.group_contains(StoreError, match="refused for good")
    (answer,) = answers
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "shutting_down")


async def test_a_store_that_fails_during_a_shutdown_is_raised_by_serve(tmp_path: Path) -> None:
    """The store fails for good while the server shuts down (the commit of a suspended run's
    stop record is refused): serve raises the StoreError, as when it fails before."""
    app = WorkflowApp(DURABLE_FLOWS, store=store_url(tmp_path))
    stop = trio.Event()
    with pytest.raises(BaseExceptionGroup) as stopped, trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(trioflow.serve, app, port=0, shutdown_trigger=stop.wait)
            )
            async with httpx.AsyncClient(base_url=binds[0]) as client:
                run_id = (await client.post("/workflows/gate/runs", json={})).json()["run_id"]
            registry = app._registry
            assert registry is not None
            store = registry._store
            assert isinstance(store, SqliteStore)
            await wait_until(lambda: registry._records[run_id].feed.last_seq >= 2)

            disk = failing_disk(store)
            stop.set()  # the run is suspended: its journal's stop record waits for the disk
            await wait_until(lambda: store._committing is not None)
            disk.set()
    assert stopped.group_contains(StoreError, match="refused for good")


@pytest.fixture(params=["sqlite", "postgres"])
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty store of each engine."""
    if request.param == "sqlite":
        yield store_url(tmp_path)
    else:
        with fresh_database() as url:
            yield url


async def test_a_server_on_either_engine_keeps_runs_across_restarts(engine_url: str) -> None:
    """On SQLite and on PostgreSQL alike: a finished run is served after a restart, and a run
    that waited for an answer when the server stopped waits again after it, is not asked
    again, and completes with the answer sent then; its stream has every event once."""
    async with served(DURABLE_FLOWS, store=engine_url) as server:
        done = await server.start("count", {"n": 3})
        await server.wait_status(done, "completed")
        _, _, waiting = await asking_run(server)
    async with served(DURABLE_FLOWS, store=engine_url) as server:
        assert (await server.status(done))["result"] == {"counted": 3}
        assert [m["event"] for m in await server.events(done)] == ["Tick"] * 3 + ["StopEvent"]
        assert (await server.status(waiting))["status"] == "running"
        go = {"type": "Go", "data": {"count": 1}}
        assert (await server.client.post(f"/runs/{waiting}/events", json=go)).status_code == 202
        assert (await server.wait_status(waiting, "completed"))["result"] == 1
        events = await server.events(waiting)
        assert [int(m["id"]) for m in events] == list(range(1, len(events) + 1))
        assert [m["event"] for m in events].count("Asking") == 1
