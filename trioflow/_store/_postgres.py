"""`PostgresStore`: runs and their events in a PostgreSQL database, for one process at a time.

The design is `DURABILITY.md`'s (§2.1, §3.2): psycopg 3's synchronous API through
`trio.to_thread` (its async API is asyncio's), one writing and one reading connection, each used
from one worker thread at a time, the same tables as SQLite's and the same group commit
(`GroupCommit`). Until runs are spread over several processes (leases, a claim queue), one
process owns a database: it holds a session-level advisory lock on its writing connection, and
a second process opening the database fails at once, saying so.

A commit that fails on a connection error (the server restarted, the network dropped) is retried
on a new connection; one PostgreSQL refuses for good (a constraint) fails the store, as on
SQLite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._commit import GroupCommit
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
INSERT INTO tf_meta VALUES ('application', 'trioflow'), ('schema', '2')
    ON CONFLICT (key) DO NOTHING;
"""


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
            StoreError: it cannot be reached, or it holds a trioflow store of another schema.
        """
        await trio.to_thread.run_sync(self._open_connections)
        self._next_number = await self._read(next_number)

    def _open_connections(self) -> None:
        psycopg = _psycopg()
        try:
            self._writer = psycopg.connect(self.url, autocommit=True)
            (locked,) = self._writer.execute(
                "SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)
            ).fetchone()  # type: ignore[misc]
            if not locked:
                raise StoreLocked(
                    f"{self.name} is in use: another process's store has this database open "
                    "(one process per database, until runs are spread over several)"
                )
            with self._writer.transaction():
                self._writer.execute(_SCHEMA)
            meta = dict(self._writer.execute("SELECT key, value FROM tf_meta").fetchall())
            if meta.get("application") != "trioflow" or meta.get("schema") != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.name} holds a store of schema {meta.get('schema')!r}; this trioflow "
                    f"reads schema {SCHEMA_VERSION!r}"
                )
            self._writer.autocommit = False
            self._reader = psycopg.connect(self.url, autocommit=True)
        except psycopg.Error as error:
            self._close_connections()
            raise StoreError(f"cannot open the store {self.name}: {error}") from None
        except BaseException:
            self._close_connections()
            raise

    async def aclose(self) -> None:
        """Close the connections, which releases the lock. From then on the store is
        `failed`."""
        if self.failed is None:
            self.failed = StoreError(f"the store {self.name} is closed")
        self._committed.set()
        self._room.set()
        await trio.to_thread.run_sync(self._close_connections)

    def _close_connections(self) -> None:
        for connection in (self._writer, self._reader):
            if connection is not None:
                connection.close()
        self._writer = self._reader = None

    # -- writing (the commit thread) --

    def _retryable(self, error: Exception) -> bool:
        # A connection that broke (the server restarted, the network dropped) may come back:
        # `_write` connects again. Anything else PostgreSQL refused, it refuses again.
        psycopg = _psycopg()
        return isinstance(error, psycopg.OperationalError)

    def _write(self, batch: list[Operation]) -> None:
        connection = self._writer
        if connection is None or connection.closed or connection.broken:
            # It broke in an earlier attempt: the lock went with it, and is taken again.
            self._open_writer_again()
            connection = self._writer
            assert connection is not None
        rows = self._sort(batch, run_values)
        try:
            with connection.cursor() as cursor:
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
                        "COPY tf_events (run_id, seq, type, qualified_name, flags, bases, body)"
                        " FROM STDIN"
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
                    cursor.executemany(
                        "UPDATE tf_runs SET recoveries = %s WHERE run_id = %s", rows.resumed
                    )
                if rows.purged:
                    for table in ("tf_events", "tf_journal", "tf_runs"):
                        cursor.executemany(
                            f"DELETE FROM {table} WHERE run_id = %s",
                            rows.purged,
                        )
            connection.commit()
        except BaseException:
            if not (connection.closed or connection.broken):  # else its error is the one
                connection.rollback()
            raise
        self._written(rows)

    def _open_writer_again(self) -> None:
        psycopg = _psycopg()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._writer = psycopg.connect(self.url)
        self._writer.autocommit = True
        (locked,) = self._writer.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()  # type: ignore[misc]
        self._writer.autocommit = False
        if not locked:  # refused for good: another process took the database meanwhile
            raise StoreLocked(f"{self.name} was taken by another process while reconnecting")

    # -- reading --

    async def _read(self, query: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        def run() -> Any:
            assert self._reader is not None
            return query(self._reader)

        return await trio.to_thread.run_sync(run, limiter=self._read_slot)


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
    """``url`` without its password, for messages."""
    scheme, _, rest = url.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}@{place}"
