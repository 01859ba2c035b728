"""The SQLite store: URLs, group commit, backpressure, one process per file, bad files, and
what a ``kill -9`` leaves (every acknowledged write)."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _http import wait_until
from _postgres import fresh_database

from trioflow._store import (
    EventRow,
    JournalEntry,
    NewEvent,
    NewRun,
    PostgresStore,
    RunEnded,
    RunPurged,
    RunRow,
    SqliteStore,
    StoreError,
    StoreLocked,
    _commit,
    _sqlite,
    check_url,
    open_store,
    sqlite_path,
)


def run_row(run_id: str, number: int, status: str = "running") -> RunRow:
    return RunRow(run_id, number, "flow", status, b'{"n":1}', False, 0, None, None, 1.5, None)


def event(seq: int, body: bytes = b"") -> EventRow:
    return EventRow(seq, "Tick", "tests.Tick", 0, "", body or b'{"seq":%d}' % seq)


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# -- URLs --


def test_store_urls() -> None:
    """memory: and sqlite: URLs (relative with three slashes, absolute with four) are taken;
    anything else is a clear error before anything is opened."""
    assert check_url("memory:") == "memory:"
    assert check_url("postgresql://tf@db/runs") == "postgresql://tf@db/runs"
    assert sqlite_path("sqlite:///runs.db") == ("runs.db", {})
    assert sqlite_path("sqlite:////var/lib/x.db?synchronous=full") == (
        "/var/lib/x.db",
        {"synchronous": "full"},
    )
    assert sqlite_path("sqlite:///my%20runs.db") == ("my runs.db", {})  # percent-decoded
    assert sqlite_path("sqlite:////srv/r%C3%BCns.db?synchronous=full") == (
        "/srv/r\u00fcns.db",
        {"synchronous": "full"},
    )
    for url, expected in [
        ("sqlite://host/x.db", "sqlite:///relative"),
        ("sqlite:///x%00.db", "NUL"),
        ("sqlite:///x%ff.db", "UTF-8"),
        ("sqlite:///", "sqlite:///relative"),
        ("sqlite:///x.db?a=1&a=2", "given twice"),
        ("postgresql:db", "postgresql://user@host/db"),
        ("redis://x", "memory:, sqlite:///path.db or postgresql://"),
        ("memory", "memory:, sqlite:///path.db or postgresql://"),
    ]:
        with pytest.raises(StoreError, match=expected):
            check_url(url)


async def test_a_store_url_names_its_file_percent_decoded(tmp_path: Path) -> None:
    """``%20`` in a URL is a space in the file's name, as in any URL."""
    async with open_store(f"sqlite:///{tmp_path}/my%20runs.db") as store:
        assert isinstance(store, SqliteStore)
        await store.flushed(store.append(NewRun(run_row("a", 0))))
    assert (tmp_path / "my runs.db").is_file()
    assert not (tmp_path / "my%20runs.db").exists()


async def test_store_options_are_checked(tmp_path: Path) -> None:
    for url, expected in [
        (f"sqlite:///{tmp_path}/a.db?synchronous=off", "normal or full"),
        (f"sqlite:///{tmp_path}/a.db?cache=big", "unknown sqlite store options: cache"),
    ]:
        with pytest.raises(StoreError, match=expected):
            async with open_store(url):
                pass
    async with open_store(f"sqlite:///{tmp_path}/a.db?synchronous=FULL") as store:
        assert isinstance(store, SqliteStore)
        assert store.synchronous == "full"
    async with open_store("memory:") as nothing:
        assert nothing is None


# -- writing and reading --


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty store of each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/runs.db"
    else:
        with fresh_database() as url:
            yield url


async def test_runs_and_events_round_trip(store_url: str) -> None:
    """A run, its events and its end are read back as committed; events page by seq, count
    and bytes; run numbers go on after a reopening."""
    url = store_url
    async with open_store(url) as store:
        assert store is not None
        await store.flushed(store.append(NewRun(run_row("a", await store.next_number()))))
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
        assert await store.next_number() == 1
        await store.flushed(store.append(NewRun(run_row("b", await store.next_number()))))
        assert [r.run_id for r in await store.runs()] == ["a", "b"]
        assert [r.run_id for r in await store.runs(status="running")] == ["b"]


@pytest.mark.parametrize(
    ("count", "variables"),
    [(1, None), (1023, None), (1024, None), (1025, None), (2 * 1024 + 777, None), (1025, 999)],
)
async def test_a_commit_of_many_events_keeps_each_once_in_order(
    tmp_path: Path, count: int, variables: int | None
) -> None:
    """One commit of ``count`` events and journal records (written many rows a statement)
    keeps every one, once, as it was; also where SQLite takes fewer ``variables`` a
    statement (999 before SQLite 3.32)."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert isinstance(store, SqliteStore)
        if variables is not None:
            assert store._writer is not None
            store._writer.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
        store.append(NewRun(run_row("a", await store.next_number())))
        for seq in range(1, count + 1):
            store.append(NewEvent("a", event(seq, b"%d" % seq)))
            store.append(JournalEntry("a", seq - 1, "route", b'{"n":%d}' % seq))
        await store.drain()
        events = await store.events("a", after=0, limit=count + 10)
        assert [(e.seq, bytes(e.body)) for e in events] == [
            (seq, b"%d" % seq) for seq in range(1, count + 1)
        ]
        journal = await store.journal("a")
        assert journal == [(n, "route", b'{"n":%d}' % (n + 1)) for n in range(count)]


async def test_writes_are_group_committed_and_published_after_commit(tmp_path: Path) -> None:
    """Appends made while a commit runs go out together in the next one; a listener learns of
    a batch only once the reader can see it."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert isinstance(store, SqliteStore)
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
    monkeypatch.setattr(_commit, "PENDING_MAX", 3)
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert isinstance(store, SqliteStore)
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
        assert isinstance(store, SqliteStore)
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


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("database table is locked"),
        sqlite3.OperationalError("disk I/O error"),
    ],
)
async def test_transient_commit_errors_are_retried(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
    error: sqlite3.Error,
) -> None:
    """A busy file or an I/O error that may clear is retried, as a full disk is."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert isinstance(store, SqliteStore)
        write = store._write
        failures = [error, error]

        def failing_write(batch: Any) -> None:
            if failures:
                raise failures.pop()
            write(batch)

        monkeypatch.setattr(store, "_write", failing_write)
        with caplog.at_level(logging.WARNING, logger="trioflow.store"):
            await store.flushed(store.append(NewRun(run_row("a", 0))))
        assert await store.run("a") is not None
        assert store.failed is None
        assert caplog.text.count("retrying") == 2


async def test_a_disk_that_fills_up_is_waited_out(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A real SQLITE_FULL (the file may grow no more: ``max_page_count``), which SQLite
    answers by rolling the transaction back itself, is retried until there is room, and
    nothing acknowledged is lost."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert isinstance(store, SqliteStore)
        writer = store._writer
        assert writer is not None
        await store.flushed(store.append(NewRun(run_row("a", 0))))
        (pages,) = writer.execute("PRAGMA page_count").fetchone()
        writer.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
        write = store._write
        attempts: list[int] = []

        def write_then_make_room(batch: Any) -> None:
            attempts.append(len(batch))
            try:
                write(batch)
            finally:  # room is made while the store waits to retry
                writer.execute("PRAGMA max_page_count = 1000000")

        monkeypatch.setattr(store, "_write", write_then_make_room)
        for seq in range(1, 101):
            store.append(NewEvent("a", event(seq, b"x" * 1000)))
        with caplog.at_level(logging.WARNING, logger="trioflow.store"):
            await store.drain()
        assert attempts == [100, 100]
        assert store.failed is None
        assert "database or disk is full" in caplog.text
        assert len(await store.events("a", after=0, limit=999)) == 100


async def test_a_write_sqlite_refuses_fails_the_store_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch SQLite refuses for good (here a run written twice: its primary key) is not
    retried forever: the store fails, whoever waits for that commit gets a StoreError naming
    the file and the error, the error is logged once with its traceback, the flusher raises
    it (the block fails), and nothing of the batch is written."""
    url = f"sqlite:///{tmp_path}/runs.db"
    with (
        caplog.at_level(logging.ERROR, logger="trioflow.store"),
        pytest.raises(BaseExceptionGroup) as raised,
    ):
        async with open_store(url) as store:
            assert store is not None
            await store.flushed(store.append(NewRun(run_row("a", 0))))
            store.append(NewEvent("a", event(1)))
            ticket = store.append(NewRun(run_row("a", 1)))  # a again
            with pytest.raises(StoreError, match="UNIQUE constraint failed") as waited:
                await store.flushed(ticket)
            assert str(tmp_path / "runs.db") in str(waited.value)
            assert isinstance(waited.value.__cause__, sqlite3.IntegrityError)
            assert store.failed is not None
            with pytest.raises(StoreError, match="UNIQUE constraint failed"):
                store.append(NewEvent("a", event(2)))
    assert raised.group_contains(StoreError, match="UNIQUE constraint failed")
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info is not None
    assert "UNIQUE constraint failed" in logged.getMessage()
    async with open_store(url) as store:  # the batch was rolled back whole
        assert store is not None
        assert [r.number for r in await store.runs()] == [0]
        assert await store.events("a", after=0, limit=9) == []


async def test_every_waiter_of_a_failed_store_gets_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers waiting for a commit or for room when the store fails, and whoever comes
    after, get the StoreError at once (none hangs); so does `drain`, which commits without
    the flusher. Nothing committed before is touched."""
    monkeypatch.setattr(_commit, "PENDING_MAX", 2)
    store = await _sqlite.open_sqlite(tmp_path / "runs.db")
    try:
        store.append(NewRun(run_row("a", 0)))
        await store.drain()  # committed without a flusher
        disk = threading.Event()

        def corrupt_write(batch: Any) -> None:
            disk.wait()
            raise sqlite3.DatabaseError("database disk image is malformed")

        monkeypatch.setattr(store, "_write", corrupt_write)
        failed: list[str] = []

        async def wait(waiting: Any) -> None:
            with pytest.raises(StoreError, match="malformed") as error:
                await waiting()
            failed.append(str(error.value))

        with pytest.raises(BaseExceptionGroup) as raised:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.flush_forever)
                ticket = store.append(NewEvent("a", event(1)))
                await trio.testing.wait_all_tasks_blocked()  # the commit is under way
                store.append(NewEvent("a", event(2)))
                store.append(NewEvent("a", event(3)))
                assert store.full
                nursery.start_soon(wait, lambda: store.flushed(ticket))
                nursery.start_soon(wait, store.room)
                await trio.testing.wait_all_tasks_blocked()
                disk.set()
                await trio.sleep_forever()  # cancelled by the flusher's failure
        assert raised.group_contains(StoreError, match="malformed")
        assert len(failed) == 2
        assert all(str(tmp_path / "runs.db") in message for message in failed)
        await store.flushed(1)  # committed before the failure: done
        waits: list[Callable[[], Awaitable[None]]] = [
            lambda: store.flushed(ticket),
            store.room,
            store.drain,
        ]
        for waiting in waits:
            with pytest.raises(StoreError, match="malformed"):
                await waiting()
        with pytest.raises(StoreError, match="malformed"):
            store.append(NewEvent("a", event(4)))
    finally:
        await store.aclose()


async def test_an_error_that_is_no_sqlite_error_fails_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a write (an operation SQLite cannot bind: a ProgrammingError) is no reason to
    retry either; `drain`, committing alone, raises it."""
    store = await _sqlite.open_sqlite(tmp_path / "runs.db")
    try:
        store.append(NewEvent("a", EventRow(1, "T", "m.T", 0, "", [1])))  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="ProgrammingError"):
            await store.drain()
        assert store.failed is not None
    finally:
        await store.aclose()


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


_OPENER = """
import sys, trio
from trioflow._store import open_store, StoreError

async def main(url):
    try:
        async with open_store(url):
            print("opened")
    except StoreError as error:
        print(type(error).__name__, error)

trio.run(main, sys.argv[1])
"""

#: Runs a command as root without the capabilities that let root write any file (dropped from
#: its bounding set, then exec'd): file modes stop it as they stop any user.
_WITHOUT_ROOT_POWERS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
    if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        sys.exit(77)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def open_elsewhere(path: Path | str, *, as_a_user: bool = False) -> str:
    """What opening the store at ``path`` in another process says: ``opened``, or its
    StoreError. ``as_a_user``: without root's power over file modes, when run as root."""
    command = [sys.executable, "-c", _OPENER, f"sqlite:///{path}"]
    if as_a_user and os.geteuid() == 0:
        command = [sys.executable, "-c", _WITHOUT_ROOT_POWERS, *command[1:]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode == 77:
        pytest.skip("cannot drop root's capabilities here to make a file read-only to it")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_a_store_through_a_symlink_is_the_same_store_and_a_hard_link_is_refused(
    tmp_path: Path,
) -> None:
    """The lock is the file's, not its name's: opening the file in use under another name (a
    symbolic link, a hard link), here or in another process, fails as opening it again does.
    A file with a second hard link is refused even when free: SQLite finds its WAL by the name
    it opens, so a crash under one name would lose what was committed under the other."""
    path = tmp_path / "runs.db"
    (tmp_path / "elsewhere").mkdir()
    symlink = tmp_path / "elsewhere" / "symlink.db"
    symlink.symlink_to(path)
    hardlink = tmp_path / "elsewhere" / "hardlink.db"
    async with open_store(f"sqlite:///{path}"):
        os.link(path, hardlink)
        for name in (symlink, hardlink):
            with pytest.raises(StoreLocked, match="in use"):
                async with open_store(f"sqlite:///{name}"):
                    pass
            assert open_elsewhere(name).startswith(f"StoreLocked {name} is in use")
    for name in (path, symlink, hardlink):
        with pytest.raises(StoreError, match="2 hard links"):
            async with open_store(f"sqlite:///{name}"):
                pass
        said = open_elsewhere(name)
        assert said.startswith(f"StoreError cannot open the store {name}: the file has 2 hard")
    assert os.stat(path).st_nlink == 2  # refused: left as it was
    hardlink.unlink()
    assert open_elsewhere(symlink) == "opened"
    assert open_elsewhere(path) == "opened"


def test_a_store_it_cannot_write_is_refused_at_open(tmp_path: Path) -> None:
    """A read-only file, or a file in a read-only folder (where SQLite writes its WAL), is
    refused at once, in one line naming the file, instead of failing every commit after; the
    folder is left as it was. (As root, in a process without root's power over file
    modes.)"""
    path = tmp_path / "runs.db"
    assert open_elsewhere(path) == "opened"
    before = listing(tmp_path)
    path.chmod(0o444)
    said = open_elsewhere(path, as_a_user=True)
    assert said.startswith(f"StoreError cannot write the store {path}:")
    assert "\n" not in said
    assert listing(tmp_path) == before
    path.chmod(0o644)
    tmp_path.chmod(0o555)
    try:
        said = open_elsewhere(path, as_a_user=True)
    finally:
        tmp_path.chmod(0o755)
    assert said.startswith(f"StoreError cannot write the store {path}:")
    assert listing(tmp_path) == before
    assert open_elsewhere(path, as_a_user=True) == "opened"


async def test_files_that_are_no_store_are_refused(tmp_path: Path) -> None:
    """Garbage, another application's SQLite database and another schema version are clear
    errors, and the file and its folder are left as they were."""
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
        names = listing(tmp_path)
        with pytest.raises(StoreError, match=expected):
            async with open_store(f"sqlite:///{path}"):
                pass
        assert path.read_bytes() == before
        assert listing(tmp_path) == names  # no lock file left beside it


async def test_a_new_file_refused_is_not_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the store created, then refused (here: as if it could not be written), is
    removed: the folder is left as it was."""

    def refuse(db: sqlite3.Connection, path: Path, synchronous: str) -> None:
        raise StoreError(f"cannot write the store {path}")

    monkeypatch.setattr(_sqlite, "_set_up", refuse)
    with pytest.raises(StoreError, match="cannot write"):
        async with open_store(f"sqlite:///{tmp_path}/runs.db"):
            pass
    assert listing(tmp_path) == []


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
        assert isinstance(store, SqliteStore)

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
        assert isinstance(store, SqliteStore)
        row = await store.run("old")
        assert row is not None
        assert (row.status, row.fingerprint, row.recoveries) == ("completed", "", 0)
        assert await store.journal("old") == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM tf_meta WHERE key = 'schema'").fetchone() == ("2",)


async def test_a_purge_under_way_drops_only_what_its_run_writes_after_it(
    store_url: str,
) -> None:
    """A run purged while it still runs: what it wrote before the purge is committed as
    usual (its clients were told so) until the purge's own commit deletes it, also when
    that was in a commit under way as the purge was appended; what it writes after the
    purge, up to its end, is never written."""
    async with open_store(store_url) as store:
        assert isinstance(store, SqliteStore | PostgresStore)
        write = store._write
        gates = [threading.Event(), threading.Event()]

        def gated(batch: Any) -> None:
            gates[0 if any(type(op) is NewRun for op in batch) else 1].wait()
            write(batch)

        store._write = gated  # type: ignore[method-assign]
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.flush_forever)
                store.append(NewRun(run_row("r", await store.next_number())))
                first = store.append(NewEvent("r", event(1)))
                await wait_until(lambda: store._committing is not None)  # that commit is under way
                purge = store.append(RunPurged("r", under_way=True))
                store.append(NewEvent("r", event(2)))
                gates[0].set()
                await store.flushed(first)
                assert [e.seq for e in await store.events("r", after=0, limit=10)] == [1]
                gates[1].set()
                await store.flushed(purge)
                store.append(NewEvent("r", event(3)))  # still unwinding: dropped too
                store.append(RunEnded("r", "cancelled", None, None, 2.0, 3))
                await store.drain()
                assert store._dropping == set()  # its end is written: nothing more to drop
                nursery.cancel_scope.cancel()
        finally:  # a failed check must not leave the commit thread waiting
            for gate in gates:
                gate.set()

        def counts(db: Any) -> list[int]:
            tables = ("tf_runs", "tf_events", "tf_journal")
            return [db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables]

        assert await store._read(counts) == [0, 0, 0]


async def test_a_commit_postgres_refuses_for_good_fails_the_store() -> None:
    """A write PostgreSQL refuses (a second run with one number) fails the store loudly, as
    on SQLite: the waiter and every later writer get a StoreError naming the cause, and what
    was committed before stays."""
    with fresh_database() as url:
        with pytest.raises(BaseExceptionGroup) as raised:  # the flusher raises it: the block
            async with open_store(url) as store:
                assert store is not None
                await store.flushed(store.append(NewRun(run_row("a", 0))))
                with pytest.raises(StoreError, match="duplicate key value") as refused:
                    await store.flushed(store.append(NewRun(run_row("b", 0))))
                assert "has failed" in str(refused.value)
                with pytest.raises(StoreError, match="has failed"):
                    store.append(NewEvent("a", event(1)))
        assert raised.group_contains(StoreError, match="duplicate key value")
        async with open_store(url) as store:
            assert store is not None
            assert [row.run_id for row in await store.runs()] == ["a"]


def end_session(url: str, connection: Any) -> None:
    """End ``connection``'s session from another, as a restarted server or a dropped network
    would: the connection is broken from then on."""
    import psycopg

    (pid,) = connection.execute("SELECT pg_backend_pid()").fetchone()
    if not connection.autocommit:
        connection.rollback()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_a_postgres_commit_on_a_broken_connection_is_retried_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writing connection is killed (as a restarted server or a dropped network would):
    the commit is retried, on a new connection that takes the database's lock again, and
    nothing pending is lost."""

    monkeypatch.setattr(_commit, "RETRY_AFTER", 0.01)
    with fresh_database() as url:
        async with open_store(url) as store:
            assert isinstance(store, PostgresStore)
            await store.flushed(store.append(NewRun(run_row("a", 0))))
            writer = store._writer
            assert writer is not None
            end_session(url, writer)
            with trio.fail_after(10):
                await store.flushed(store.append(NewEvent("a", event(1))))
            assert store._writer is not writer
            assert [e.seq for e in await store.events("a", after=0, limit=9)] == [1]
            assert store.failed is None


async def test_a_postgres_read_on_a_broken_connection_is_made_on_a_new_one() -> None:
    """The reading connection is killed: the next read connects again (reads repeat safely)."""

    with fresh_database() as url:
        async with open_store(url) as store:
            assert isinstance(store, PostgresStore)
            await store.flushed(store.append(NewRun(run_row("a", 0))))
            (reader,) = store._readers
            end_session(url, reader)
            row = await store.run("a")
            assert row is not None
            assert store._readers
            assert reader not in store._readers


async def test_a_postgres_commit_whose_answer_was_lost_is_not_written_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection breaks after COMMIT reached the server, before its answer came back:
    the retry finds the commit's serial in the store and does not write the batch again
    (which would fail the store on its own rows)."""
    import psycopg

    monkeypatch.setattr(_commit, "RETRY_AFTER", 0.01)
    with fresh_database() as url:
        async with open_store(url) as store:
            assert isinstance(store, PostgresStore)
            writer = store._writer
            assert writer is not None
            commit = writer.commit

            def commit_then_break() -> None:
                commit()
                writer.close()  # as if the answer was lost with the connection
                raise psycopg.OperationalError("server closed the connection unexpectedly")

            monkeypatch.setattr(writer, "commit", commit_then_break)
            with trio.fail_after(10):
                await store.flushed(store.append(NewRun(run_row("a", 0))))
            assert store.failed is None
            await store.flushed(store.append(NewEvent("a", event(1))))
            assert [row.run_id for row in await store.runs()] == ["a"]
            assert [e.seq for e in await store.events("a", after=0, limit=9)] == [1]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("CREATE TABLE tf_events (id int)", "not a trioflow store: it has tables named tf_events"),
        (
            "CREATE TABLE tf_meta (key TEXT PRIMARY KEY, value TEXT);"
            " INSERT INTO tf_meta VALUES ('owner', 'billing')",
            "its tf_meta is another application's",
        ),
        (
            "CREATE TABLE tf_meta (key TEXT PRIMARY KEY, value TEXT);"
            " INSERT INTO tf_meta VALUES ('application', 'trioflow'), ('schema', '4')",
            "store of schema '4'",
        ),
        (
            "CREATE TABLE tf_meta (key TEXT PRIMARY KEY, value TEXT);"
            " INSERT INTO tf_meta VALUES ('application', 'trioflow'), ('schema', '3')",
            "incomplete: it has no tf_commits, tf_events",
        ),
    ],
    ids=["foreign-tables", "foreign-meta", "newer-schema", "incomplete"],
)
async def test_a_postgres_database_that_is_no_store_of_this_schema_is_left_as_it_is(
    setup: str, expected: str
) -> None:
    import psycopg

    with fresh_database() as url:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(setup)
            before = db.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() ORDER BY 1"
            ).fetchall()
        with pytest.raises(StoreError, match=expected):
            async with open_store(url):
                pass
        with psycopg.connect(url, autocommit=True) as db:
            after = db.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() ORDER BY 1"
            ).fetchall()
        assert after == before


def test_a_postgres_url_is_named_without_its_password() -> None:
    from trioflow._store._postgres import _described_url

    named = _described_url("postgresql://tf:secret@db:5432/runs?password=other&sslmode=require")
    assert named == "postgresql://tf@db:5432/runs"
