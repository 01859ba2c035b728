"""The SQLite store: URLs, group commit, backpressure, one process per file, bad files, and
what a ``kill -9`` leaves (every acknowledged write)."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioflow._store import (
    EventRow,
    NewEvent,
    NewRun,
    RunEnded,
    RunRow,
    SqliteStore,
    StoreError,
    StoreLocked,
    _sqlite,
    check_url,
    open_store,
    sqlite_path,
)


def run_row(run_id: str, number: int, status: str = "running") -> RunRow:
    return RunRow(run_id, number, "flow", status, b'{"n":1}', False, 0, None, None, 1.5, None)


def event(seq: int, body: bytes = b"") -> EventRow:
    return EventRow(seq, "Tick", "tests.Tick", 0, "", body or b'{"seq":%d}' % seq)


# -- URLs --


def test_store_urls() -> None:
    """memory: and sqlite: URLs (relative with three slashes, absolute with four) are taken;
    anything else is a clear error before anything is opened."""
    assert check_url("memory:") == "memory:"
    assert sqlite_path("sqlite:///runs.db") == ("runs.db", {})
    assert sqlite_path("sqlite:////var/lib/x.db?synchronous=full") == (
        "/var/lib/x.db",
        {"synchronous": "full"},
    )
    for url, expected in [
        ("sqlite://host/x.db", "sqlite:///relative"),
        ("sqlite:///", "sqlite:///relative"),
        ("sqlite:///x.db?a=1&a=2", "given twice"),
        ("postgresql://db/tf", "not available yet"),
        ("redis://x", "memory: or sqlite"),
        ("memory", "memory: or sqlite"),
    ]:
        with pytest.raises(StoreError, match=expected):
            check_url(url)


async def test_store_options_are_checked(tmp_path: Path) -> None:
    for url, expected in [
        (f"sqlite:///{tmp_path}/a.db?synchronous=off", "normal or full"),
        (f"sqlite:///{tmp_path}/a.db?cache=big", "unknown sqlite store options: cache"),
    ]:
        with pytest.raises(StoreError, match=expected):
            async with open_store(url):
                pass
    async with open_store(f"sqlite:///{tmp_path}/a.db?synchronous=FULL") as store:
        assert store is not None
        assert store.synchronous == "full"
    async with open_store("memory:") as nothing:
        assert nothing is None


# -- writing and reading --


async def test_runs_and_events_round_trip(tmp_path: Path) -> None:
    """A run, its events and its end are read back as committed; events page by seq, count
    and bytes; run numbers go on after a reopening."""
    url = f"sqlite:///{tmp_path}/runs.db"
    async with open_store(url) as store:
        assert store is not None
        await store.flushed(store.append(NewRun(run_row("a", store.next_number()))))
        for seq in range(1, 11):
            store.append(NewEvent("a", event(seq, b"x" * 100)))
        end = RunEnded("a", "completed", b'{"ok":true}', None, 9.5, 10)
        await store.flushed(store.append(end))
        row = await store.run("a")
        assert row is not None
        assert (row.status, row.result, row.ended_at, row.last_seq) == (
            "completed",
            b'{"ok":true}',
            9.5,
            10,
        )
        assert [e.seq for e in await store.events("a", after=3, limit=4)] == [4, 5, 6, 7]
        assert [e.seq for e in await store.events("a", after=0, limit=99, max_bytes=250)] == [
            1,
            2,
        ]
        assert [e.seq for e in await store.events("a", after=9, limit=5, max_bytes=1)] == [10]
        assert await store.events("a", after=10, limit=5) == []
        assert await store.run("missing") is None
    async with open_store(url) as store:
        assert store is not None
        assert store.next_number() == 1
        await store.flushed(store.append(NewRun(run_row("b", store.next_number()))))
        assert [r.run_id for r in await store.runs()] == ["a", "b"]
        assert [r.run_id for r in await store.runs(status="running")] == ["b"]


async def test_writes_are_group_committed_and_published_after_commit(tmp_path: Path) -> None:
    """Appends made while a commit runs go out together in the next one; a listener learns of
    a batch only once the reader can see it."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert store is not None
        batches: list[int] = []
        visible: list[bool] = []

        def listener(batch: Any) -> None:
            batches.append(len(batch))
            assert store._reader is not None
            last = batch[-1]
            if isinstance(last, NewEvent):
                found = store._reader.execute(
                    "SELECT count(*) FROM tf_events WHERE seq = ?", (last.event.seq,)
                ).fetchone()[0]
                visible.append(found == 1)

        store.on_commit(listener)
        await store.flushed(store.append(NewRun(run_row("a", 0))))
        for seq in range(1, 2001):
            store.append(NewEvent("a", event(seq)))
            if seq % 100 == 0:
                await trio.lowlevel.checkpoint()
        await store.drain()
        assert sum(batches) == 2001
        assert len(batches) < 100  # group commit: far fewer commits than writes
        assert all(visible)


async def test_a_full_pending_list_makes_writers_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a commit is stuck (a slow disk), writers wait in room() once PENDING_MAX writes
    are pending; they go on when it returns."""
    monkeypatch.setattr(_sqlite, "PENDING_MAX", 3)
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert store is not None
        await store.flushed(store.append(NewRun(run_row("a", 0))))
        disk = threading.Event()
        write = store._write

        def slow_write(batch: Any) -> None:
            disk.wait()
            write(batch)

        monkeypatch.setattr(store, "_write", slow_write)
        store.append(NewEvent("a", event(1)))  # taken by a commit that does not return
        await trio.testing.wait_all_tasks_blocked()
        for seq in (2, 3, 4):
            store.append(NewEvent("a", event(seq)))
        went_on = trio.Event()

        async def writer() -> None:
            await store.room()
            went_on.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            assert not went_on.is_set()
            disk.set()
            await went_on.wait()
        await store.drain()
        assert [e.seq for e in await store.events("a", after=0, limit=9)] == [1, 2, 3, 4]


async def test_a_failed_commit_is_retried_without_losing_writes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A commit that fails (a full disk) is logged and retried; nothing pending is dropped."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert store is not None
        write = store._write
        failures = [sqlite3.OperationalError("database or disk is full")]

        def failing_write(batch: Any) -> None:
            if failures:
                raise failures.pop()
            write(batch)

        monkeypatch.setattr(store, "_write", failing_write)
        with caplog.at_level(logging.WARNING, logger="trioflow.store"):
            await store.flushed(store.append(NewRun(run_row("a", 0))))
        assert await store.run("a") is not None
        assert "disk is full" in caplog.text
        assert "retrying" in caplog.text


# -- one process per file, and files that are no store --


async def test_one_store_per_file(tmp_path: Path) -> None:
    """A second opening of a file in use fails at once, saying so; once closed it opens."""
    url = f"sqlite:///{tmp_path}/runs.db"
    async with open_store(url):
        with pytest.raises(StoreLocked, match="in use"):
            async with open_store(url):
                pass
    async with open_store(url) as store:
        assert store is not None


async def test_files_that_are_no_store_are_refused(tmp_path: Path) -> None:
    """Garbage, another application's SQLite database and another schema version are clear
    errors, and the file is left as it was."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"these are not the bytes of a database" * 100)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    newer = tmp_path / "newer.db"
    async with open_store(f"sqlite:///{newer}"):
        pass
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE tf_meta SET value = '99' WHERE key = 'schema'")
    for path, expected in [
        (garbage, "no SQLite database"),
        (foreign, "not a trioflow store"),
        (newer, "schema '99'"),
    ]:
        before = path.read_bytes()
        with pytest.raises(StoreError, match=expected):
            async with open_store(f"sqlite:///{path}"):
                pass
        assert path.read_bytes() == before


# -- a crash --

_WRITER = """
import sys, trio
from trioflow._store import open_store, NewRun, NewEvent, RunRow, EventRow

async def main(url):
    async with open_store(url) as store:
        await store.flushed(store.append(NewRun(RunRow("r", 0, "f", "running", b"{}", False,
            0, None, None, 0.0, None))))
        seq = 0
        while True:
            for _ in range(50):
                seq += 1
                ticket = store.append(NewEvent("r", EventRow(seq, "T", "m.T", 0, "", b"{}")))
            await store.flushed(ticket)
            print(seq, flush=True)  # acknowledged: committed

trio.run(main, sys.argv[1])
"""


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """A writer killed with SIGKILL mid-stream: every event it had seen committed is there
    when the file is opened again."""
    url = f"sqlite:///{tmp_path}/runs.db"
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, url], stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout is not None
        acknowledged = 0
        while acknowledged < 2000:  # the writer prints as it commits: no sleeping here
            line = writer.stdout.readline()
            assert line, "the writer stopped early"
            acknowledged = int(line)
        writer.kill()
        writer.wait(timeout=30)

    async def read() -> list[EventRow]:
        async with open_store(url) as store:
            assert isinstance(store, SqliteStore)
            return await store.events("r", after=0, limit=10**9)

    events = trio.run(read)
    assert len(events) >= acknowledged
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_writes_pending_when_the_block_is_cancelled_are_committed(tmp_path: Path) -> None:
    """Cancelled from outside (a server stopped at once), the block still commits what was
    appended before it closes the file: its flusher is gone, so it commits them itself."""
    url = f"sqlite:///{tmp_path}/runs.db"
    with trio.CancelScope() as scope:
        async with open_store(url) as store:
            assert store is not None
            await store.flushed(store.append(NewRun(run_row("a", 0))))
            scope.cancel()
            for seq in range(1, 4):
                store.append(NewEvent("a", event(seq)))
            await trio.sleep_forever()
    async with open_store(url) as store:
        assert store is not None
        assert [e.seq for e in await store.events("a", after=0, limit=9)] == [1, 2, 3]


async def test_a_failing_listener_stops_no_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A commit listener that raises is logged; the flusher goes on committing."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert store is not None

        def broken(batch: Any) -> None:
            raise RuntimeError("listener bug")

        store.on_commit(broken)
        with caplog.at_level(logging.ERROR, logger="trioflow.store"):
            await store.flushed(store.append(NewRun(run_row("a", 0))))
            await store.flushed(store.append(NewRun(run_row("b", 1))))
        assert [r.run_id for r in await store.runs()] == ["a", "b"]
        assert "listener bug" in caplog.text


async def test_a_store_in_a_folder_it_cannot_create_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot open the store"):
        async with open_store(f"sqlite:///{tmp_path}/file/runs.db"):
            pass


_SCHEMA_1 = """
CREATE TABLE tf_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tf_runs (
    run_id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE, workflow TEXT NOT NULL,
    status TEXT NOT NULL, start_event BLOB NOT NULL, lifecycle INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0, result BLOB, result_type TEXT, error BLOB,
    started_at REAL NOT NULL, ended_at REAL
);
CREATE TABLE tf_events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
    qualified_name TEXT NOT NULL, flags INTEGER NOT NULL, bases TEXT NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
INSERT INTO tf_meta VALUES ('application', 'trioflow'), ('schema', '1');
INSERT INTO tf_runs (run_id, number, workflow, status, start_event, started_at)
    VALUES ('old', 0, 'flow', 'completed', '{}', 1.0);
"""


async def test_a_store_of_schema_1_is_migrated(tmp_path: Path) -> None:
    """A store written before run journals (schema 1) opens as schema 2, its runs kept."""
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA_1)
    async with open_store(f"sqlite:///{path}") as store:
        assert store is not None
        row = await store.run("old")
        assert row is not None
        assert (row.status, row.fingerprint, row.recoveries) == ("completed", "", 0)
        assert await store.journal("old") == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM tf_meta WHERE key = 'schema'").fetchone() == ("2",)
