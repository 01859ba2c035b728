"""`SqliteStore`: runs and their events in one SQLite file, for one process.

The design is `DURABILITY.md`'s (§5): stdlib `sqlite3`, WAL with ``synchronous=NORMAL`` (a
commit survives the process's crash; ``?synchronous=full`` also a power loss), one writing
connection and one reading connection, each used from one worker thread at a time
(`trio.to_thread.run_sync` under a `trio.CapacityLimiter` of 1), so that the event loop never
waits on the disk. One process owns a file: it holds an exclusive ``flock`` on the file itself
(not on its name: a symbolic link to it is the same store), and a second process opening it
fails at once, saying so. A file with several hard links is refused: SQLite finds its WAL by
the name it opens, so two names would be two logs. A file it cannot write is refused at open,
as is a file that is no trioflow store, and neither leaves anything beside it.

Writes are **group-committed** (`GroupCommit`, in `_commit`, which a store of any engine
shares). Writers append operations to a pending list synchronously, in O(1) (`append`); a
flusher task commits everything pending in one transaction, as soon as the previous commit
returned: one write per commit when quiet, hundreds under load. The pending list is bounded
(`PENDING_MAX` operations, `PENDING_BYTES` bytes): a writer that finds it full waits in
`room`, which is backpressure from the disk. Listeners learn of each commit after it returned
(`on_commit`), so what they publish (events to clients) is only ever what a crash cannot take
back.

A commit that fails for a while (a full disk, a busy file, an I/O error) is retried every
`RETRY_AFTER` seconds with a warning: nothing pending is dropped, and writers wait behind it. A
commit SQLite refuses for good (a constraint, a corrupt file, a bug in a write) would be refused
forever: it fails the store instead (`SqliteStore.failed`), loudly: it is logged, the flusher
raises it, and every writer and waiter gets it as a `StoreError`. Nothing acknowledged is lost
either way: what was not committed was never acknowledged.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Container, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import trio

from ._commit import GroupCommit
from ._errors import StoreError, StoreLocked
from ._reads import SqlReads, next_number, run_values
from ._writes import Operation, RunRow

logger = logging.getLogger("trioflow.store")

#: The schema this code reads and writes (``tf_meta.schema``).
SCHEMA_VERSION = 2
#: SQLite's (primary) result codes of a commit that may go through if tried again: the file is
#: busy or locked, memory or the disk is short (the store waits for room), an I/O error that may
#: clear. Any other error (a constraint, a corrupt or read-only file, a write SQLite cannot
#: bind) is refused again on every attempt: it fails the store.
_TRANSIENT = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PROTOCOL,
    }
)
#: The same errors by SQLite's messages, for an error that carries no code (made in Python).
_TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "out of memory",
    "disk I/O error",
    "database or disk is full",
    "locking protocol",
)
#: SQLite's result codes that say the file (or its folder, where the WAL goes) cannot be
#: written, or opened for writing.
_UNWRITABLE = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM})

#: A run's journal (`trioflow._durable`): its records in order.
_JOURNAL = """
CREATE TABLE tf_journal (
    run_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (run_id, n)
) WITHOUT ROWID;
"""

_SCHEMA = """
CREATE TABLE tf_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tf_runs (
    run_id TEXT PRIMARY KEY,
    number INTEGER NOT NULL UNIQUE,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    start_event BLOB NOT NULL,
    lifecycle INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    result_type TEXT,
    error BLOB,
    started_at REAL NOT NULL,
    ended_at REAL,
    fingerprint TEXT NOT NULL DEFAULT '',
    recoveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tf_runs_unfinished ON tf_runs (status) WHERE status = 'running';
CREATE INDEX tf_runs_workflow ON tf_runs (workflow, number);
CREATE TABLE tf_events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    qualified_name TEXT NOT NULL,
    flags INTEGER NOT NULL,
    bases TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
"""
#: What turns a store of schema 1 (trioflow 0.x before run journals) into one of schema 2.
_MIGRATE_1_TO_2 = """
ALTER TABLE tf_runs ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE tf_runs ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0;
UPDATE tf_meta SET value = '2' WHERE key = 'schema';
"""


class SqliteStore(GroupCommit, SqlReads):
    """One SQLite file of runs, opened by `open_sqlite` (use it as ``async with``)."""

    _param = "?"

    def __init__(self, path: Path, *, synchronous: str = "normal") -> None:
        super().__init__(str(path))
        self.path = path
        self.synchronous = synchronous
        #: The file, open and locked (``flock``), and its identity (`_held`).
        self._lock_fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_slot = trio.CapacityLimiter(1)

    #: One process owns the file: no run of it is another process's.
    shared = False

    async def claim(
        self,
        served: Mapping[str, str],
        *,
        limit: int | None = None,
        busy: Container[str] = (),
        unserved_after: float | None = None,
        cancelled_only: bool = False,
    ) -> list[RunRow]:
        """Every run the file has as running but those in ``busy`` (under way here): its
        process stopped before they ended. (One process owns the file, so ``served``,
        ``limit`` and ``unserved_after`` leave none for another.)"""
        return [row for row in await self.runs(status="running") if row.run_id not in busy]

    async def release(self, run_ids: Collection[str]) -> None:
        """Nothing to give up: one process owns the file."""
        await trio.lowlevel.checkpoint()

    # -- opening and closing --

    async def open(self) -> None:
        """Lock the file and open it, creating the schema in a new file. Then start
        `flush_forever` in a nursery that outlives every writer.

        Raises:
            StoreLocked: another store (of this process or another) has the file open, under
                this name or another.
            StoreError: it is not a trioflow store, or one of a schema this code does not
                know, or no SQLite database at all; or it (or its folder) cannot be written.
                Nothing is left beside it.
        """
        await trio.to_thread.run_sync(self._open_files)
        self._next_number = await self._read(next_number)

    def _open_files(self) -> None:
        try:  # the folder of a new file: as the path names it, which may be through a link
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # not a failure to listen: say which file
            raise StoreError(f"cannot open the store {self.path}: {error}") from None
        # The file itself, through any symbolic link: SQLite puts its WAL beside it.
        path = os.path.realpath(self.path)
        created = self._lock(path)
        try:
            # The file is checked before anything is set: WAL mode would rewrite the header
            # of a database that is not ours.
            self._writer = self._connect(path)
            try:
                _prepare(self._writer, self.path)
                _set_up(self._writer, self.path, self.synchronous)
            except sqlite3.Error as error:
                raise _open_error(self.path, error) from None
            self._reader = self._connect(path)
        except BaseException:
            self._close_connections()
            if created:  # leave the folder as it was, while no other store can have it
                Path(path).unlink(missing_ok=True)
            self._unlock()
            raise

    def _lock(self, path: str) -> bool:
        """Open the file ``path`` for writing (creating it: whether it did is returned) and
        take an exclusive ``flock`` on it, which another process's store, or this one's,
        would hold: the lock is the file's (its inode's), under whatever name it is opened.

        Raises:
            StoreLocked: a store has it open.
            StoreError: it cannot be opened for writing.
        """
        with _held_lock:
            try:
                known = os.stat(path)
            except FileNotFoundError:
                pass
            except OSError as error:
                raise StoreError(f"cannot open the store {self.path}: {error}") from None
            else:  # refused before opening it: see `_held`
                if (known.st_dev, known.st_ino) in _held:
                    raise self._in_use()
            fd, created = _open_for_writing(path, self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._in_use() from None
            opened = os.fstat(fd)
            if opened.st_nlink > 1:
                os.close(fd)
                raise StoreError(
                    f"cannot open the store {self.path}: the file has {opened.st_nlink} hard "
                    "links. SQLite keeps its write-ahead log beside the name it opens, so a "
                    "process that opens another name would not see the log, and a crash "
                    "would lose committed runs. Keep one name (a symbolic link is fine)"
                )
            self._lock_fd, self._inode = fd, (opened.st_dev, opened.st_ino)
            _held.add(self._inode)
        return created

    def _in_use(self) -> StoreLocked:
        return StoreLocked(
            f"{self.path} is in use: another store has this file open (in this process or "
            "another, maybe under another name); SQLite serves one process"
        )

    def _connect(self, path: str) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=5.0
            )
        except sqlite3.Error as error:
            raise _open_error(self.path, error) from None
        return connection

    def _release(self) -> None:
        self._close_connections()
        self._unlock()

    def _close_connections(self) -> None:
        for connection in (self._writer, self._reader):
            if connection is not None:
                connection.close()
        self._writer = self._reader = None

    def _unlock(self) -> None:
        """Close the file's descriptor, which releases its ``flock``: after SQLite's, as
        closing a descriptor of the file drops the POSIX locks the process holds on it, which
        are SQLite's."""
        with _held_lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
            if self._inode is not None:
                _held.discard(self._inode)
                self._inode = None

    # -- writing --

    def _retryable(self, error: Exception) -> bool:
        return isinstance(error, sqlite3.Error) and _transient(error)

    def _write(self, batch: list[Operation]) -> None:
        connection = self._writer
        assert connection is not None
        batch_ = self._sort(batch, lambda new: run_values(new.row))
        runs, events, ends = batch_.runs, batch_.events, batch_.ends
        journal, resumed, purged = batch_.journal, batch_.resumed, batch_.purged
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Only the statements that have rows: each call lets go of the GIL and waits to
            # take it back from the event loop's thread, also for no rows.
            if runs:
                connection.executemany(
                    "INSERT INTO tf_runs (run_id, number, workflow, status, start_event,"
                    " lifecycle, last_seq, result, error, started_at, ended_at, result_type,"
                    " fingerprint, recoveries)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    runs,
                )
            _insert_many(
                connection,
                "INSERT INTO tf_events (run_id, seq, type, qualified_name, flags, bases, body)"
                " VALUES ",
                events,
            )
            if ends:
                connection.executemany(
                    "UPDATE tf_runs SET status = ?, result = ?, result_type = ?, error = ?,"
                    " ended_at = ?, last_seq = ? WHERE run_id = ?",
                    ends,
                )
            _insert_many(
                connection, "INSERT INTO tf_journal (run_id, n, kind, body) VALUES ", journal
            )
            if resumed:
                connection.executemany(
                    "UPDATE tf_runs SET recoveries = ? WHERE run_id = ?", resumed
                )
            if purged:
                connection.executemany("DELETE FROM tf_events WHERE run_id = ?", purged)
                connection.executemany("DELETE FROM tf_journal WHERE run_id = ?", purged)
                connection.executemany("DELETE FROM tf_runs WHERE run_id = ?", purged)
            connection.execute("COMMIT")
            self._written(batch_)
        except BaseException:
            # SQLite may have rolled back itself (a full disk does): a ROLLBACK then would fail,
            # and its error hide the one that matters.
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    # -- reading --

    async def _read(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
        def run() -> Any:
            assert self._reader is not None
            return query(self._reader)

        return await trio.to_thread.run_sync(run, limiter=self._read_slot)


#: Rows one INSERT statement of `_insert_many` takes at most (7,168 values at 7 a row, under
#: the 32,766 a statement that SQLite takes by default since 3.32; fewer where the
#: connection's limit is lower, as SQLite before 3.32 had 999).
ROWS_PER_INSERT = 1024


def _insert_many(
    connection: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """``insert`` (``"INSERT INTO t (a, b) VALUES "``) of ``rows``, `ROWS_PER_INSERT` rows a
    statement. Not ``executemany``, which steps once a row: `sqlite3` lets go of the GIL for
    each step and must take it back from the event loop's thread after each one, so a commit
    thread inserting row by row spends most of its time waiting for the GIL (measured: 3.2 s
    of wall time for 1.0 s of work, 60,000 rows, on a busy server)."""
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ", ".join("?" * width) + ")"
    start, size = 0, ROWS_PER_INSERT
    variables = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    while size > 1 and size * width > variables:
        size //= 2
    while start < len(rows):
        # Full statements, then the rest by halves (512, 256, ... 1 rows): a few statements
        # of fixed sizes, which `sqlite3` compiles once and keeps in its cache.
        while len(rows) - start < size:
            size //= 2
        statement = insert + ", ".join([one] * size)
        connection.execute(statement, list(chain.from_iterable(rows[start : start + size])))
        start += size


def _transient(error: sqlite3.Error) -> bool:
    """Whether a commit that failed with ``error`` may go through if tried again."""
    code: int | None = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _TRANSIENT  # an extended code's primary one
    return isinstance(error, sqlite3.OperationalError) and str(error).startswith(
        _TRANSIENT_MESSAGES
    )


_held_lock = threading.Lock()
#: The files (device, inode) this process's stores have open. A second opening is refused
#: before it opens the file (`SqliteStore._lock`): closing the descriptor it would have opened
#: would drop the POSIX locks SQLite holds on the file in this process (whichever descriptor
#: took them), which tell other processes' SQLite connections that it is in use.
_held: set[tuple[int, int]] = set()


def _open_for_writing(path: str, named: Path) -> tuple[int, bool]:
    """A descriptor of the file ``path`` (``named`` so by its store's URL) open for writing,
    and whether it was created for it.

    Raises:
        StoreError: it cannot be written (SQLite would open it read-only, without a word),
            or opened.
    """
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            return os.open(path, flags), False
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise _unwritable(named, error.strerror) from None
        raise StoreError(f"cannot open the store {named}: {error.strerror}") from None


def _unwritable(path: Path, reason: object) -> StoreError:
    return StoreError(
        f"cannot write the store {path}: {reason} (a store is written to, and SQLite writes "
        "its -wal and -shm files beside it: give trioflow a file and a folder it can write)"
    )


def _open_error(path: Path, error: sqlite3.Error) -> StoreError:
    """What opening the store at ``path`` failing with ``error`` says."""
    code: int | None = getattr(error, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary in _UNWRITABLE:
        return _unwritable(path, error)
    if primary in (None, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return StoreError(f"{path} is no SQLite database trioflow can use: {error}")
    return StoreError(f"cannot open the store {path}: {error}")  # busy, out of room...


def _set_up(db: sqlite3.Connection, path: Path, synchronous: str) -> None:
    """Put the checked store in WAL mode, and make sure it can be written: SQLite opens a
    file (or a WAL in a folder) it cannot write read-only without a word, and a store that
    cannot commit would only fail at its first commit. The write is undone: the file is left
    as it was."""
    (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
    if str(mode).lower() != "wal":
        raise _unwritable(path, f"SQLite keeps it in journal mode {mode!r}, not WAL")
    db.execute(f"PRAGMA synchronous={synchronous.upper()}")
    db.execute("BEGIN IMMEDIATE")
    try:  # BEGIN IMMEDIATE alone succeeds on a read-only file: a write does not
        db.execute("UPDATE tf_meta SET value = value WHERE key = 'schema'")
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new (empty) database; check it in an existing one."""
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as error:
        raise _open_error(path, error) from None
    if not tables:  # a new file: the schema in one transaction
        db.executescript(
            f"BEGIN IMMEDIATE;{_SCHEMA}{_JOURNAL}INSERT INTO tf_meta VALUES"
            f" ('application', 'trioflow'), ('schema', '{SCHEMA_VERSION}'); COMMIT;"
        )
        return
    if "tf_meta" not in tables:
        raise StoreError(
            f"{path} is an SQLite database, but not a trioflow store (it has no tf_meta "
            "table): give trioflow a file of its own"
        )
    meta = dict(db.execute("SELECT key, value FROM tf_meta"))
    if meta.get("application") == "trioflow" and meta.get("schema") == "1":
        db.executescript(f"BEGIN IMMEDIATE;{_MIGRATE_1_TO_2}{_JOURNAL}COMMIT;")
        meta["schema"] = "2"
    if meta.get("application") != "trioflow" or meta.get("schema") != str(SCHEMA_VERSION):
        raise StoreError(
            f"{path} is a trioflow store of schema {meta.get('schema')!r}; this trioflow "
            f"reads schema {SCHEMA_VERSION!r}"
        )


async def open_sqlite(path: str | os.PathLike[str], **options: str) -> SqliteStore:
    """Open the store at ``path`` (see `SqliteStore.open`); ``options`` from its URL."""
    synchronous = options.pop("synchronous", "normal").lower()
    if synchronous not in ("normal", "full"):
        raise StoreError(f"synchronous must be normal or full, got {synchronous!r}")
    if options:
        raise StoreError(f"unknown sqlite store options: {', '.join(sorted(options))}")
    store = SqliteStore(Path(path), synchronous=synchronous)
    await store.open()
    return store
