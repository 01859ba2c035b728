"""`PostgresStore`: runs and their events in a PostgreSQL database, for one process at a time.

The design is `DURABILITY.md`'s (§2.1, §3.2): psycopg 3's synchronous API through
`trio.to_thread` (its async API is asyncio's), one writing and one reading connection, each used
from one worker thread at a time, the same tables as SQLite's and the same group commit
(`GroupCommit`). Until runs are spread over several processes (leases, a claim queue), one
process owns a database: it holds a session-level advisory lock on its writing connection, and
a second process opening the database fails at once, saying so.

A commit that fails on a connection error (the server restarted, the network dropped) is retried
on a new connection, which first reads the store's commit serial: a commit whose answer was lost
with its connection may have gone through, and is then not written twice. Sessions set TCP
keepalives, so that the server ends the session of a client that is gone, and releases its lock.
A commit PostgreSQL refuses for good (a constraint) fails the store, as on SQLite. A database is
checked before anything is written to it: a store of this schema, or none of its tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._commit import GroupCommit, Sorted
from ._errors import StoreError, StoreLocked
from ._reads import SqlReads, next_number, run_values
from ._writes import Operation

if TYPE_CHECKING:
    import psycopg

#: The schema this code reads and writes (``tf_meta``), the same version as SQLite's.
SCHEMA_VERSION = "2"
#: The advisory lock (one 64-bit key) that a process holds on the database it owns.
_LOCK_KEY = 0x7472696F666C6F77  # "trioflow"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tf_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tf_runs (
    run_id TEXT PRIMARY KEY,
    number BIGINT NOT NULL UNIQUE,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    start_event BYTEA NOT NULL,
    lifecycle BOOLEAN NOT NULL DEFAULT FALSE,
    last_seq BIGINT NOT NULL DEFAULT 0,
    result BYTEA,
    result_type TEXT,
    error BYTEA,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION,
    fingerprint TEXT NOT NULL DEFAULT '',
    recoveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tf_runs_unfinished ON tf_runs (status) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS tf_runs_workflow ON tf_runs (workflow, number);
CREATE TABLE IF NOT EXISTS tf_events (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    qualified_name TEXT NOT NULL,
    flags INTEGER NOT NULL,
    bases TEXT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS tf_journal (
    run_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    kind TEXT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (run_id, n)
);
INSERT INTO tf_meta VALUES ('application', 'trioflow'), ('schema', '2'), ('serial', '0');
"""
#: The tables of a store: a database that has any of them without ``tf_meta`` saying it is a
#: trioflow store of this schema is refused, and left as it was.
_TABLES = ("tf_meta", "tf_runs", "tf_events", "tf_journal")
#: Sessions of the store's connections tell the server to probe an idle connection after 10 s
#: and drop it after 3 unanswered probes, 5 s apart: a connection whose client side is gone
#: (a NAT timeout, a reset) does not keep its session, and the database's lock, for hours.
_KEEPALIVES = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)
#: Seconds to wait for the server when connecting (libpq waits forever by default).
CONNECT_TIMEOUT = 10


class PostgresStore(GroupCommit, SqlReads):
    """One PostgreSQL database of runs, opened by `open_postgres` (use it as ``async with``
    through `open_store`)."""

    _param = "%s"

    def __init__(self, url: str) -> None:
        super().__init__(_described_url(url))
        self.url = url
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._read_slot = trio.CapacityLimiter(1)

    # -- opening and closing --

    async def open(self) -> None:
        """Connect, take the database's advisory lock, create the tables if missing, and
        check that they are a trioflow store of this schema.

        Raises:
            StoreLocked: another process has the database open.
            StoreError: it cannot be reached (within `CONNECT_TIMEOUT`), or it holds another
                application's tables or a trioflow store of another schema.
        """
        await trio.to_thread.run_sync(self._open_connections)
        self._next_number = await self._read(next_number)

    def _open_connections(self) -> None:
        psycopg = _psycopg()
        try:
            self._writer = self._connect()
            if not self._lock(self._writer):
                raise StoreLocked(
                    f"{self.name} is in use: another process's store has this database open "
                    "(one process per database, until runs are spread over several)"
                )
            self._serial = self._prepare(self._writer)
            self._writer.autocommit = False
            self._reader = self._connect()
        except psycopg.Error as error:
            self._close_connections()
            raise StoreError(f"cannot open the store {self.name}: {error}") from None
        except BaseException:
            self._close_connections()
            raise

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection (in autocommit mode), whose session the server drops once its
        client is gone (`_KEEPALIVES`)."""
        driver = _psycopg()
        connection: psycopg.Connection[Any] = driver.connect(
            self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
        )
        connection.execute(_KEEPALIVES)
        return connection

    @staticmethod
    def _lock(connection: psycopg.Connection[Any]) -> bool:
        """Take the database's advisory lock for ``connection``'s session, if free."""
        (locked,) = connection.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()  # type: ignore[misc]
        return bool(locked)

    def _prepare(self, connection: psycopg.Connection[Any]) -> int:
        """Check the database before writing anything to it: a new one (none of `_TABLES`)
        gets the tables; one with them is a trioflow store of this schema, or refused as it
        is. Returns the store's commit serial (see `_write`).

        Raises:
            StoreError: it holds another application's tables, or a store of another schema.
        """
        present = {
            name
            for (name,) in connection.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_name = ANY(%s)",
                (list(_TABLES),),
            ).fetchall()
        }
        if not present:
            with connection.transaction():
                connection.execute(_SCHEMA)
        elif "tf_meta" not in present:
            raise StoreError(
                f"{self.name} is not a trioflow store: it has tables named "
                f"{', '.join(sorted(present))} but no tf_meta; it is left as it is"
            )
        meta = dict(connection.execute("SELECT key, value FROM tf_meta").fetchall())
        if meta.get("application") != "trioflow":
            raise StoreError(
                f"{self.name} is not a trioflow store: its tf_meta is another application's;"
                " it is left as it is"
            )
        if meta.get("schema") != SCHEMA_VERSION or "serial" not in meta:
            raise StoreError(
                f"{self.name} holds a store of schema {meta.get('schema')!r}; this trioflow "
                f"reads schema {SCHEMA_VERSION!r}; it is left as it is"
            )
        return int(meta["serial"])

    def _release(self) -> None:
        self._close_connections()  # which releases the lock, with the session

    def _close_connections(self) -> None:
        for connection in (self._writer, self._reader):
            if connection is not None:
                connection.close()
        self._writer = self._reader = None

    # -- writing (the commit thread) --

    def _retryable(self, error: Exception) -> bool:
        # A connection that broke (the server restarted, the network dropped) may come back:
        # `_write` connects again. So may the lock its old session held (`_LockNotBack`).
        # Anything else PostgreSQL refused, it refuses again.
        psycopg = _psycopg()
        return isinstance(error, psycopg.OperationalError | _LockNotBack)

    #: The serial of the last commit (`tf_meta`'s ``serial``, written by every commit).
    _serial = 0
    #: The serial of a commit whose outcome is unknown (its connection broke during it).
    _unsure: int | None = None

    def _write(self, batch: list[Operation]) -> None:
        connection = self._writer
        if connection is None or connection.closed or connection.broken:
            # It broke in an earlier attempt: a new one, which takes the lock again.
            connection = self._connect_writer_again()
        rows = self._sort(batch, run_values)
        if self._unsure is not None:
            # The connection broke during this batch's commit: it may have been written.
            # Every commit writes its serial, so the store says which.
            (serial,) = connection.execute(
                "SELECT value FROM tf_meta WHERE key = 'serial'"
            ).fetchone()  # type: ignore[misc]
            connection.rollback()
            if int(serial) == self._unsure:  # it was: not again
                self._serial, self._unsure = self._unsure, None
                self._written(rows)
                return
        serial = self._serial + 1
        try:
            with connection.cursor() as cursor:
                self._statements(cursor, rows, serial)
            self._unsure = serial
            connection.commit()
        except BaseException:
            if not (connection.closed or connection.broken):  # else its error is the one
                connection.rollback()
                self._unsure = None  # it said no: nothing was written
            raise
        self._serial, self._unsure = serial, None
        self._written(rows)

    @staticmethod
    def _statements(cursor: psycopg.Cursor[Any], rows: Sorted, serial: int) -> None:
        """The statements of one commit of ``rows``, which is number ``serial``."""
        cursor.execute("UPDATE tf_meta SET value = %s WHERE key = 'serial'", (str(serial),))
        if rows.runs:
            cursor.executemany(
                "INSERT INTO tf_runs (run_id, number, workflow, status, start_event,"
                " lifecycle, last_seq, result, error, started_at, ended_at,"
                " result_type, fingerprint, recoveries)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                rows.runs,
            )
        if rows.events:
            with cursor.copy(
                "COPY tf_events (run_id, seq, type, qualified_name, flags, bases, body) FROM STDIN"
            ) as copy:
                for event in rows.events:
                    copy.write_row(event)
        if rows.ends:
            cursor.executemany(
                "UPDATE tf_runs SET status = %s, result = %s, result_type = %s,"
                " error = %s, ended_at = %s, last_seq = %s WHERE run_id = %s",
                rows.ends,
            )
        if rows.journal:
            with cursor.copy("COPY tf_journal (run_id, n, kind, body) FROM STDIN") as copy:
                for record in rows.journal:
                    copy.write_row(record)
        if rows.resumed:
            cursor.executemany("UPDATE tf_runs SET recoveries = %s WHERE run_id = %s", rows.resumed)
        if rows.purged:
            for table in ("tf_events", "tf_journal", "tf_runs"):
                cursor.executemany(
                    f"DELETE FROM {table} WHERE run_id = %s",
                    rows.purged,
                )

    def _connect_writer_again(self) -> psycopg.Connection[Any]:
        """A new writing connection holding the lock again.

        Raises:
            _LockNotBack: the lock is still held, most likely by the broken connection's
                session, which the server ends once it finds its client gone (`_KEEPALIVES`):
                the commit is retried meanwhile.
        """
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        connection = self._connect()
        if not self._lock(connection):
            connection.close()
            raise _LockNotBack(
                f"{self.name}: the lock of its broken connection is not released yet"
            )
        connection.autocommit = False
        self._writer = connection
        return connection

    # -- reading --

    async def _read(self, query: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        def run() -> Any:
            psycopg = _psycopg()
            reader = self._reader
            if reader is None or reader.closed or reader.broken:
                reader = self._connect_reader_again()
            try:
                return query(reader)
            except psycopg.OperationalError:
                if not (reader.closed or reader.broken):
                    raise
            # It broke (the server restarted, the network dropped): reads are repeatable.
            return query(self._connect_reader_again())

        return await trio.to_thread.run_sync(run, limiter=self._read_slot)

    def _connect_reader_again(self) -> psycopg.Connection[Any]:
        if self._reader is not None:
            self._reader.close()
        self._reader = None
        self._reader = self._connect()
        return self._reader


async def open_postgres(url: str) -> PostgresStore:
    """Open the store in the database at ``url`` (see `PostgresStore.open`)."""
    store = PostgresStore(url)
    await store.open()
    return store


def _psycopg() -> Any:
    """psycopg, which the ``postgres`` extra installs.

    Raises:
        StoreError: it is not installed.
    """
    try:
        import psycopg
    except ModuleNotFoundError:
        raise StoreError(
            "a PostgreSQL store needs psycopg: pip install 'trioflow[postgres]'"
        ) from None
    return psycopg


def _described_url(url: str) -> str:
    """``url`` without its password or its options (which may hold one), for messages."""
    scheme, _, rest = url.partition("://")
    rest = rest.partition("?")[0]
    credentials, at, place = rest.rpartition("@")
    if not at:
        return f"{scheme}://{rest}"
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}@{place}"


class _LockNotBack(Exception):
    """A new writing connection could not take the database's lock again (see
    `PostgresStore._connect_writer_again`): the commit is retried."""
