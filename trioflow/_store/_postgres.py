"""`PostgresStore`: runs and their events in a PostgreSQL database, shared by any number of
processes (nodes): any of them starts, serves, answers and cancels any run, and a run whose
process died is resumed by another.

The design is `DURABILITY.md`'s (§2.1, §3): psycopg 3's synchronous API through `trio.to_thread`
(its async API is asyncio's), the same tables as SQLite's with what sharing them takes (leases,
the inbox, notifications: `_cluster`), and the same group commit (`GroupCommit`). A process
uses four connections, each from one worker thread at a time: one commits, one reads, one
claims and renews leases, and one listens for notifications (in trio, on its socket) and holds
the lock that says the process is alive; reads take a connection of a small pool (`READERS`).

A commit that fails on a connection error (the server restarted, the network dropped) is retried
on a new connection, which first reads the store's commit serial: a commit whose answer was lost
with its connection may have gone through, and is then not written twice. Sessions set TCP
keepalives, so that the server ends the session of a client that is gone, and releases its lock.
A commit PostgreSQL refuses for good (a constraint) fails the store, as on SQLite. A database is
checked before anything is written to it: a store of this schema, or none of its tables.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._cluster import (
    CANCEL,
    CANCELS,
    CLAIM,
    CLAIM_UNSERVED,
    CONTROL,
    CREATING,
    EVENTS,
    FENCE,
    HEARTBEAT,
    INBOX,
    LIVENESS,
    QUEUE,
    RELEASE,
    SEND,
    Signals,
    listen,
    new_owner_key,
    payload,
)
from ._commit import GroupCommit, Sorted
from ._errors import StoreError, StoreUnavailable
from ._reads import RUN_COLUMNS, SqlReads, run_row, run_values
from ._writes import NewEvent, NewRun, Operation, RunPurged, RunRow

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("trioflow.store")

#: The schema this code reads and writes (``tf_meta``): SQLite's (2) and what sharing takes.
SCHEMA_VERSION = "3"
#: Seconds a lease lasts unless renewed (`ServerOptions.lease`): how long the runs of a process
#: that stopped answering wait before another takes them over (one that died is seen at once).
LEASE = 15.0

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
    recoveries INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    owner_key INTEGER,
    epoch INTEGER NOT NULL DEFAULT 0,
    lease_until TIMESTAMPTZ,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS tf_runs_unfinished ON tf_runs (number) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS tf_runs_workflow ON tf_runs (workflow, number);
CREATE SEQUENCE IF NOT EXISTS tf_run_numbers MINVALUE 0 START 0;
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
CREATE TABLE IF NOT EXISTS tf_inbox (
    seq BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    body BYTEA NOT NULL,
    taken BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS tf_inbox_open ON tf_inbox (run_id, seq) WHERE NOT taken;
CREATE TABLE IF NOT EXISTS tf_commits (
    writer TEXT PRIMARY KEY,
    serial BIGINT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
INSERT INTO tf_meta VALUES ('application', 'trioflow'), ('schema', '3');
"""
#: The tables of a store: a database that has any of them without ``tf_meta`` saying it is a
#: trioflow store of this schema is refused, and left as it was.
_TABLES = ("tf_meta", "tf_runs", "tf_events", "tf_journal", "tf_inbox", "tf_commits")
#: Sessions of the store's connections tell the server to probe an idle connection after 10 s
#: and drop it after 3 unanswered probes, 5 s apart: a connection whose client side is gone
#: (a NAT timeout, a reset) does not keep its session, and the process's liveness lock, for
#: long.
_KEEPALIVES = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)
#: Whether a key of a liveness lock is held by any process (one being chosen must be new).
_KEY_TAKEN = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
    " AND objid = %s::oid AND objsubid = 2)"
)
#: Seconds to wait for the server when connecting (libpq waits forever by default).
CONNECT_TIMEOUT = 10
#: Reading connections at most (a pool, opened as reads need them): the reads of many clients,
#: on many runs, at once.
READERS = 4
#: Seconds between attempts to get a lost listening connection back (it doubles up to
#: `_RECONNECT_MAX`).
_RECONNECT = 0.5
_RECONNECT_MAX = 5.0


class PostgresStore(GroupCommit, SqlReads):
    """One PostgreSQL database of runs, opened by `open_postgres` (use it as ``async with``
    through `open_store`), as node ``node``."""

    _param = "%s"
    _select_run = f"SELECT {RUN_COLUMNS}, owner, cancel_requested FROM tf_runs"
    #: Other processes may own runs of the database.
    shared = True

    def __init__(self, url: str, *, node: str, lease: float = LEASE) -> None:
        super().__init__(_described_url(url))
        self.url = url
        #: This process's name among those sharing the database (``tf_runs.owner``).
        self.node = node
        #: Seconds a lease of this process's lasts; it is renewed every third of that.
        self.lease = lease
        #: The key of this process's liveness lock (``tf_runs.owner_key``: see `_cluster`).
        self.owner_key = new_owner_key()
        #: This store's name in ``tf_commits``, where each commit writes its serial.
        self._writer_id = uuid.uuid4().hex
        #: What notifications said, for whoever waits on them.
        self.signals = Signals()
        self._writer: psycopg.Connection[Any] | None = None
        #: The pool of reading connections not in use (a thread takes one, and gives it back).
        self._readers: list[psycopg.Connection[Any]] = []
        self._leaser: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None
        self._read_slot = trio.CapacityLimiter(READERS)
        self._lease_slot = trio.CapacityLimiter(1)
        #: The runs this process owns, and the epoch of its claim of each: what its commits
        #: are fenced with. Changed in trio (claims, lost leases) and by the commit thread
        #: (a run started or ended), one key at a time.
        self._leases: dict[str, int] = {}
        #: Runs this process started whose rows are not committed yet: its own from the start
        #: (nobody else can claim a run the database does not have), leased once committed.
        self._starting: set[str] = set()
        #: Runs this process owned and lost (another claimed them): what they still write is
        #: dropped. They leave once their task here has ended (`forget_lost`).
        self._lost: set[str] = set()
        #: When each run's lease runs out as far as this process knows: the trio time before
        #: the claim (or the start, or the renewal) that set it, plus `lease`. Set in trio.
        self._until: dict[str, float] = {}

    # -- opening and closing --

    async def open(self) -> None:
        """Connect, create the tables if missing, check that they are a trioflow store of this
        schema, and take this process's liveness lock.

        Raises:
            StoreError: it cannot be reached (within `CONNECT_TIMEOUT`), or it holds another
                application's tables or a trioflow store of another schema.
        """
        await trio.to_thread.run_sync(self._open_connections)

    def _open_connections(self) -> None:
        psycopg = _psycopg()
        try:
            self._writer = self._connect()
            self._prepare(self._writer)
            self._writer.autocommit = False
            self._readers.append(self._connect())
            self._listener = self._connect_listener()
            self._leaser = self._connect_leaser()
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

    def _connect_listener(self) -> psycopg.Connection[Any]:
        """The listening connection, holding this process's liveness lock (with a key no
        other process holds, the first time)."""
        connection = self._connect()
        if self._listener is None and self._leaser is None:  # (opening: choose the key)
            while connection.execute(_KEY_TAKEN, (LIVENESS, self.owner_key)).fetchone()[0]:  # type: ignore[index]
                self.owner_key = new_owner_key()
        self._hold_liveness(connection)
        for channel in (QUEUE, CONTROL, EVENTS):
            connection.execute(f"LISTEN {channel}")
        return connection

    def _connect_leaser(self) -> psycopg.Connection[Any]:
        """The connection of claims and renewals, holding the liveness lock too."""
        connection = self._connect()
        self._hold_liveness(connection)
        return connection

    def _hold_liveness(self, connection: psycopg.Connection[Any]) -> None:
        # Shared, and held by two sessions (listening, leasing): a process whose one
        # connection drops for a moment still looks alive; one that died holds neither.
        connection.execute("SELECT pg_advisory_lock_shared(%s, %s)", (LIVENESS, self.owner_key))

    def _prepare(self, connection: psycopg.Connection[Any]) -> None:
        """Check the database before writing anything to it: a new one (none of `_TABLES`)
        gets the tables; one with them is a trioflow store of this schema, or refused as it
        is. Forgets the commit serials of processes gone for a day (see `_write`).

        Raises:
            StoreError: it holds another application's tables, or a store of another schema.
        """
        with connection.transaction():
            # One process at a time checks and creates: two starting at once on a new
            # database would both see no tables.
            connection.execute("SELECT pg_advisory_xact_lock(%s, 0)", (CREATING,))
            present = {
                name
                for (name,) in connection.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema() AND table_name = ANY(%s)",
                    (list(_TABLES),),
                ).fetchall()
            }
            if not present:
                connection.execute(_SCHEMA)
        if present and "tf_meta" not in present:
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
        if meta.get("schema") != SCHEMA_VERSION:
            raise StoreError(
                f"{self.name} holds a store of schema {meta.get('schema')!r}; this trioflow "
                f"reads schema {SCHEMA_VERSION!r}; it is left as it is"
            )
        missing = sorted(set(_TABLES) - present) if present else []
        if missing:
            raise StoreError(
                f"{self.name} holds a trioflow store that is incomplete: it has no "
                f"{', '.join(missing)}; it is left as it is"
            )
        connection.execute("DELETE FROM tf_commits WHERE at < now() - interval '1 day'")

    def _release(self) -> None:
        # The runs this process still owns were stopped (their journals say so): another
        # process takes them over at once, rather than after their leases.
        leases = dict(self._leases)
        leaser = self._leaser
        if leases and leaser is not None and not (leaser.closed or leaser.broken):
            try:
                with leaser.transaction():
                    leaser.execute(RELEASE, _runs_and_epochs(leases))
                    leaser.execute("SELECT pg_notify(%s, '')", (QUEUE,))
            except _psycopg().Error as error:  # their leases run out instead
                logger.warning("trioflow: %s: cannot release its runs: %s", self.name, error)
        writer = self._writer
        if writer is not None and not (writer.closed or writer.broken):
            try:
                writer.execute("DELETE FROM tf_commits WHERE writer = %s", (self._writer_id,))
                writer.commit()
            except _psycopg().Error:  # its row goes with the day's others
                pass
        self._close_connections()  # which releases the liveness lock, with its sessions

    def _close_connections(self) -> None:
        for connection in (self._writer, *self._readers, self._leaser, self._listener):
            if connection is not None:
                connection.close()
        self._writer = self._leaser = self._listener = None
        self._readers.clear()

    # -- the tasks of a process sharing the database --

    async def flush_forever(self) -> None:
        """Commit what is pending (`GroupCommit.flush_forever`), and meanwhile renew this
        process's leases and listen for notifications, until cancelled.

        Raises:
            StoreError: the store failed for good.
        """
        if self._tending:  # (another flusher's task does it)
            await super().flush_forever()
            return
        self._tending = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_leases)
                nursery.start_soon(self._listen_forever)
                await super().flush_forever()
        finally:
            self._tending = False

    #: A flusher renews the leases and listens (`flush_forever`).
    _tending = False

    async def aclose(self) -> None:
        listener = self._listener
        if listener is not None and not listener.closed:
            # Its socket is about to close: a task still waiting on it must not wait on the
            # next connection that gets its number.
            trio.lowlevel.notify_closing(listener.pgconn.socket)
        await super().aclose()

    async def _keep_leases(self) -> None:
        """Renew the leases every third of `lease`. A run whose lease was lost (another
        process claimed it: this one was paused, or cut off, past its lease) is told to the
        `on_lost` listeners; so is every run, once the leases have run out without a renewal
        this process could make (the database is unreachable): it may not go on writing."""
        while True:
            await trio.sleep(self.lease / 3)
            leases = dict(self._leases)
            asked = trio.current_time()
            try:
                kept = await self._lease_call(_renew, self, leases)
            except StoreUnavailable as error:
                now, until = trio.current_time(), self._until
                out = {run: epoch for run, epoch in leases.items() if until.get(run, 0) <= now}
                self._lose(out, "their leases ran out unrenewed")
                logger.warning("trioflow: %s: cannot renew its leases: %s", self.name, error)
                continue
            for run_id in kept:
                if self._leases.get(run_id) == leases[run_id]:
                    self._until[run_id] = asked + self.lease
            gone = {run_id: epoch for run_id, epoch in leases.items() if run_id not in kept}
            self._lose(gone, "another process claimed them")

    def holds(self, run_id: str) -> bool:
        """Whether this process still owns run ``run_id`` (or started it, and its row is on
        its way) and its lease has a tenth of its length left, as far as its last renewal
        says: a process paused past its lease starts no step once it wakes up (its writes
        would be fenced; its steps' effects would not)."""
        return (run_id in self._leases or run_id in self._starting) and (
            trio.current_time() < self._until.get(run_id, 0) - self.lease / 10
        )

    def append(self, operation: Operation) -> int:
        if type(operation) is NewRun and not operation.queued:
            run_id = operation.row.run_id
            self._starting.add(run_id)
            # (Its lease begins once committed: later than this, which is the safe side.)
            self._until[run_id] = trio.current_time() + self.lease
        return super().append(operation)

    def _lose(self, runs: Mapping[str, int], why: str) -> None:
        """This process no longer owns ``runs`` (by run id, the epoch it held each at): what
        they write is dropped, and they stop. A run it has claimed again since stays."""
        leases = self._leases
        lost = {run_id for run_id, epoch in runs.items() if leases.get(run_id) == epoch}
        for run_id in lost:
            del leases[run_id]
            self._until.pop(run_id, None)
        if lost:
            self._lost = self._lost | lost  # a new set: the commit thread reads it
            self._say_lost(lost, why)
            self._tell_lost(lost)

    def _say_lost(self, lost: set[str], why: str) -> None:
        logger.warning(
            "trioflow: %s: %d run(s) no longer this process's (%s); they stop here: %s",
            self.name,
            len(lost),
            why,
            ", ".join(sorted(lost)[:5]),
        )

    def forget_lost(self, run_id: str) -> None:
        """The lost run ``run_id`` has stopped here: another claim of it may be this
        process's."""
        self._lost = self._lost - {run_id}  # a new set: the commit thread reads it

    async def _listen_forever(self) -> None:
        """Hand `signals` the notifications, and get the listening connection (and with it
        the liveness lock) back whenever it is lost: then every waiter looks again."""
        psycopg = _psycopg()
        pause = _RECONNECT
        while True:
            listener = self._listener
            try:
                if listener is None or listener.closed or listener.broken:
                    self._listener = None
                    if listener is not None:
                        listener.close()
                    self._listener = listener = await trio.to_thread.run_sync(
                        self._connect_listener
                    )
                    self.signals.everything()
                    pause = _RECONNECT
                await listen(listener, self.signals)
            except trio.ClosedResourceError:  # the store is closing
                return
            except psycopg.Error as error:
                logger.warning("trioflow: %s: listening connection lost: %s", self.name, error)
                await trio.sleep(pause)
                pause = min(pause * 2, _RECONNECT_MAX)

    async def _lease_call(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(connection, *args)`` on the leasing connection, in a worker thread; made
        again on a new connection if that one broke (every such call may be).

        Raises:
            StoreUnavailable: the database cannot be reached.
        """

        def run() -> Any:
            psycopg = _psycopg()
            for attempt in (1, 2):
                leaser = self._leaser
                try:
                    if leaser is None or leaser.closed or leaser.broken:
                        self._leaser = None
                        if leaser is not None:
                            leaser.close()
                        self._leaser = leaser = self._connect_leaser()
                    return call(leaser, *args)
                except psycopg.OperationalError as error:
                    if attempt == 2 or not (leaser is None or leaser.closed or leaser.broken):
                        raise StoreUnavailable(f"{self.name} cannot be reached: {error}") from None
            raise AssertionError("unreachable")

        return await trio.to_thread.run_sync(run, limiter=self._lease_slot)

    # -- runs, across processes --

    async def next_number(self) -> int:
        """The number of the next run started, from the database: in the order runs start,
        whichever process starts them."""
        (number,) = await self._read(
            lambda db: db.execute("SELECT nextval('tf_run_numbers')").fetchone()
        )
        return int(number)

    async def claim(
        self,
        served: Mapping[str, str],
        *,
        limit: int | None = None,
        busy: Collection[str] = (),
        unserved_after: float | None = None,
        cancelled_only: bool = False,
    ) -> list[RunRow]:
        """Claim up to ``limit`` runs this process may execute: of the workflows in ``served``
        (by name, with their graphs' fingerprints), waiting to be claimed, or whose process
        died or whose lease ran out; none in ``busy``. With ``unserved_after``, also runs of
        other workflows (or graphs) that have waited that many seconds: nobody runs them, and
        the caller fails them. With ``cancelled_only``, only runs asked to cancel (which end
        at once, running nothing). Returns their rows, oldest first; this process owns them
        from now on (their leases are renewed, their writes fenced) until it `release`s them
        or they end."""
        if limit == 0:
            await trio.lowlevel.checkpoint()
            return []
        held = [*self._leases, *self._lost, *busy]
        asked = trio.current_time()
        claimed: list[tuple[str, int]] = await self._lease_call(
            _claim, self, served, limit or 1000, held, unserved_after, cancelled_only
        )
        for run_id, epoch in claimed:
            self._leases[run_id] = epoch
            self._until[run_id] = asked + self.lease
        if not claimed:
            return []
        select = f"{self._select_run} WHERE run_id = ANY(%s) ORDER BY number"
        rows = await self._read(
            lambda db: db.execute(select, ([run_id for run_id, _ in claimed],)).fetchall()
        )
        return [run_row(row) for row in rows]

    async def release(self, run_ids: Collection[str]) -> None:
        """Give up runs claimed and not run here (what was to run them failed): another
        process (or a later claim of this one's) may claim them at once. This process no
        longer owns them, whether or not the database could be told (their leases run out
        instead)."""
        leases = {
            run_id: epoch
            for run_id in run_ids
            if (epoch := self._leases.pop(run_id, None)) is not None
        }
        for run_id in leases:
            self._until.pop(run_id, None)
        if not leases:
            await trio.lowlevel.checkpoint()
            return

        def release(db: psycopg.Connection[Any]) -> None:
            with db.transaction():
                db.execute(RELEASE, _runs_and_epochs(leases))
                db.execute("SELECT pg_notify(%s, '')", (QUEUE,))

        try:
            await self._lease_call(release)
        except StoreUnavailable as error:
            logger.warning("trioflow: %s: cannot release runs: %s", self.name, error)

    async def send(self, run_id: str, body: bytes) -> bool:
        """Put ``body`` (an event's wire JSON) in the inbox of run ``run_id``, committed, and
        wake its owner. False if the run is not running (it ended, or there is none).

        Raises:
            StoreUnavailable: the database cannot be reached (if its connection was lost as
                it committed, the event may have been taken: the message says so).
        """
        return await self._control_write(SEND, {"run": run_id, "body": body}, CONTROL, run_id)

    async def request_cancel(self, run_id: str) -> bool:
        """Ask run ``run_id`` to cancel, committed, and wake its owner (or a process to claim
        it, if it has none). False if the run is not running.

        Raises:
            StoreUnavailable: as `send`.
        """
        return await self._control_write(CANCEL, {"run": run_id}, CONTROL, run_id, QUEUE)

    async def _control_write(
        self, statement: str, args: dict[str, Any], channel: str, run_id: str, *more: str
    ) -> bool:
        """``statement`` (which returns a row if the run is running), then a notification of
        ``run_id`` on ``channel`` (and an empty one on each of ``more``), in one transaction;
        whether it returned a row. Made again on a new connection if its connection was
        lost before the commit was sent; not once it was."""
        committing = False

        def write(db: psycopg.Connection[Any]) -> bool:
            nonlocal committing
            committing = False
            with db.transaction():
                if db.execute(statement, args).fetchone() is None:
                    return False
                db.execute("SELECT pg_notify(%s, %s)", (channel, run_id))
                for other in more:
                    db.execute("SELECT pg_notify(%s, '')", (other,))
                committing = True
            return True

        try:
            written: bool = await self._read(write, retry=lambda: not committing)
        except StoreUnavailable as error:
            if committing:
                raise StoreUnavailable(
                    f"{error}; the connection was lost as it committed: it may have been "
                    "recorded (an event sent again is taken twice)"
                ) from None
            raise
        return written

    async def control(self) -> tuple[list[tuple[int, str, bytes]], list[str]]:
        """What was sent to this process's runs and not yet taken (``(seq, run_id, body)``,
        in the order sent), and which of them were asked to cancel."""
        runs = list(self._leases)
        if not runs:
            await trio.lowlevel.checkpoint()
            return [], []
        result: tuple[list[tuple[int, str, bytes]], list[str]] = await self._lease_call(
            _control, runs
        )
        return result

    # -- writing (the commit thread) --

    def _retryable(self, error: Exception) -> bool:
        # A connection that broke (the server restarted, the network dropped) may come back:
        # `_write` connects again. Anything else PostgreSQL refused, it refuses again.
        psycopg = _psycopg()
        return isinstance(error, psycopg.OperationalError)

    #: The serial of this store's last commit (its row of ``tf_commits``, which every commit
    #: of its writes: its own, so that no other process's commits can be taken for its).
    _serial = 0
    #: The serial of a commit whose outcome is unknown (its connection broke during it), and
    #: what its fence found (`_fence`).
    _unsure: int | None = None
    _unsure_fence: Fence | None = None

    def _write(self, batch: list[Operation]) -> None:
        connection = self._writer
        if connection is None or connection.closed or connection.broken:
            # It broke in an earlier attempt.
            if connection is not None:
                connection.close()
            self._writer = None
            connection = self._writer = self._connect()
            connection.autocommit = False
        if self._unsure is not None:
            # The connection broke during this batch's commit: it may have been written.
            # Every commit writes its serial, so the store says which.
            found = connection.execute(
                "SELECT serial FROM tf_commits WHERE writer = %s", (self._writer_id,)
            ).fetchone()
            connection.rollback()
            if found is not None and found[0] == self._unsure:  # it was: not again
                assert self._unsure_fence is not None
                self._serial, self._unsure = self._unsure, None
                self._committed_rows(batch, self._unsure_fence)
                return
        serial = self._serial + 1
        try:
            with connection.cursor() as cursor:
                fence = self._fence(cursor, batch)
                rows = self._statements(cursor, batch, fence, serial)
            self._unsure, self._unsure_fence = serial, fence
            connection.commit()
        except BaseException:
            if not (connection.closed or connection.broken):  # else its error is the one
                connection.rollback()
                self._unsure = None  # it said no: nothing was written
            raise
        self._serial, self._unsure = serial, None
        self._committed_rows(batch, fence, rows)

    def _fence(self, cursor: psycopg.Cursor[Any], batch: list[Operation]) -> Fence:
        """What of ``batch`` this process may write: the runs it owns, checked in the
        transaction (`FENCE`), and those it starts in it; another's runs, or those it lost,
        are another's to write. Also the last seq of each run's events in ``batch``, which
        the rows of those it owns say from now on (a new run's, its INSERT: `_statements`)."""
        seqs: dict[str, int] = {}
        created: set[str] = set()
        for op in batch:
            kind = type(op)
            if kind is NewEvent:
                seqs[op.run_id] = op.event.seq  # type: ignore[union-attr]
            elif kind is NewRun:
                created.add(op.row.run_id)  # type: ignore[union-attr]
            elif kind is not RunPurged:  # (any process forgets a run: it owns none once ended)
                seqs.setdefault(op.run_id, 0)  # type: ignore[union-attr]
        leases = self._leases
        held: list[tuple[str, int, int]] = []
        unowned: set[str] = set()
        for run_id, seq in seqs.items():
            epoch = leases.get(run_id)
            if epoch is not None:
                held.append((run_id, epoch, seq))
            elif run_id not in created:
                unowned.add(run_id)
        lost: set[str] = set()
        if held:
            held.sort()  # rows locked in one order by every process: no deadlock between them
            runs, epochs, last = (list(column) for column in zip(*held, strict=True))
            cursor.execute(FENCE, {"runs": runs, "epochs": epochs, "seqs": last, "node": self.node})
            kept = {run_id for (run_id,) in cursor.fetchall()}
            lost = {run_id for run_id in runs if run_id not in kept}
        return Fence(lost, lost | unowned, seqs)

    def _statements(
        self, cursor: psycopg.Cursor[Any], batch: list[Operation], fence: Fence, serial: int
    ) -> Sorted:
        """The statements of one commit of ``batch``, which is number ``serial``, without what
        ``fence`` drops; new runs' rows say the last seq of their events in it."""
        seqs = fence.seqs
        rows = self._sort(batch, self._run_values, fence.dropped)
        cursor.execute(
            "INSERT INTO tf_commits VALUES (%s, %s, now())"
            " ON CONFLICT (writer) DO UPDATE SET serial = excluded.serial, at = excluded.at",
            (self._writer_id, serial),
        )
        if rows.runs:
            rows.runs = [(*values[:6], seqs.get(values[0], 0), *values[7:]) for values in rows.runs]
            cursor.executemany(
                "INSERT INTO tf_runs (run_id, number, workflow, status, start_event,"
                " lifecycle, last_seq, result, error, started_at, ended_at,"
                " result_type, fingerprint, recoveries, owner, owner_key, epoch, lease_until)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " clock_timestamp() + %s * interval '1 second')",
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
        if rows.taken:
            cursor.execute("UPDATE tf_inbox SET taken = TRUE WHERE seq = ANY(%s)", (rows.taken,))
        if rows.released:
            cursor.execute(
                "UPDATE tf_runs SET owner = NULL, owner_key = NULL,"
                " lease_until = clock_timestamp()"
                " WHERE run_id = ANY(%s) AND status = 'running'",
                (rows.released,),
            )
        if rows.purged:
            for table in ("tf_events", "tf_journal", "tf_inbox", "tf_runs"):
                cursor.executemany(f"DELETE FROM {table} WHERE run_id = %s", rows.purged)
        if rows.events or rows.ends:
            changed = [event[0] for event in rows.events] + [end[-1] for end in rows.ends]
            cursor.execute("SELECT pg_notify(%s, %s)", (EVENTS, payload(changed)))
        if rows.released or any(values[14] is None for values in rows.runs):  # to claim
            cursor.execute("SELECT pg_notify(%s, '')", (QUEUE,))
        return rows

    def _run_values(self, new: NewRun) -> tuple[Any, ...]:
        """A new run's row: owned by this process (its first claim), or ``queued`` for any."""
        if new.queued:  # (waiting since now)
            return (*run_values(new.row), None, None, 0, 0)
        return (*run_values(new.row), self.node, self.owner_key, 1, self.lease)

    def _committed_rows(
        self, batch: list[Operation], fence: Fence, rows: Sorted | None = None
    ) -> None:
        """``batch`` is committed, without what ``fence`` dropped: this process owns the runs
        it started, no longer those that ended or it released; those its fence found lost
        are told (`GroupCommit._flush_once`), and nobody hears of what was dropped."""
        if rows is None:
            rows = self._sort(batch, self._run_values, fence.dropped)
        self._written(rows)
        for values in rows.runs:
            if values[14] is not None:
                self._leases[values[0]] = 1
                self._starting.discard(values[0])
        gone = [end[-1] for end in rows.ends] + [purged for (purged,) in rows.purged]
        for run_id in (*gone, *rows.released, *fence.lost):
            self._leases.pop(run_id, None)
            self._until.pop(run_id, None)
        lost = fence.lost
        if lost:
            self._lost = self._lost | lost  # a new set: trio's side reads it
            self._say_lost(lost, "another process claimed them: their writes are dropped")
        self._unpublished = fence.dropped
        self._newly_lost = lost

    # -- reading --

    async def _read(
        self,
        query: Callable[[psycopg.Connection[Any]], Any],
        *,
        retry: Callable[[], bool] = lambda: True,
    ) -> Any:
        """``query(connection)`` on a reading connection of the pool, in a worker thread: at
        most `READERS` at once, each connection used by one thread at a time. A connection
        found broken is replaced, and the query made again on a new one if ``retry()`` says
        it may be (a read may always).

        Raises:
            StoreUnavailable: the database cannot be reached.
        """

        def run() -> Any:
            psycopg = _psycopg()
            idle = self._readers
            reader = idle.pop() if idle else None  # (one pop: atomic under the GIL)
            try:
                for attempt in (1, 2):
                    try:
                        if reader is None or reader.closed or reader.broken:
                            reader = self._replace_reader(reader)
                        return query(reader)
                    except psycopg.OperationalError as error:
                        broken = reader is None or reader.closed or reader.broken
                        if attempt == 2 or not broken or not retry():
                            raise StoreUnavailable(
                                f"{self.name} cannot be reached: {error}"
                            ) from None
                raise AssertionError("unreachable")
            finally:
                if reader is not None:
                    if reader.closed or reader.broken:
                        reader.close()
                    else:
                        idle.append(reader)

        return await trio.to_thread.run_sync(run, limiter=self._read_slot)

    def _replace_reader(self, broken: psycopg.Connection[Any] | None) -> psycopg.Connection[Any]:
        if broken is not None:
            broken.close()
        return self._connect()


@attrs.frozen
class Fence:
    """What a commit's fence found (`PostgresStore._fence`)."""

    #: The runs this process owned and another process has claimed since.
    lost: set[str]
    #: The runs whose writes the commit drops: those, and the runs this process does not own.
    dropped: set[str]
    #: The last seq of each run's events in the commit.
    seqs: dict[str, int]


def _runs_and_epochs(leases: Mapping[str, int]) -> dict[str, Any]:
    return {"runs": list(leases), "epochs": list(leases.values())}


def _renew(db: psycopg.Connection[Any], store: PostgresStore, leases: dict[str, int]) -> set[str]:
    """Renew ``leases``; the runs whose leases were renewed (still this process's)."""
    if not leases:
        return set()
    with db.transaction():
        db.execute("SET LOCAL synchronous_commit = off")  # a lost renewal only lets it lapse
        renewed = db.execute(
            HEARTBEAT,
            {**_runs_and_epochs(leases), "lease": store.lease, "node": store.node},
        ).fetchall()
    return {run_id for (run_id,) in renewed}


def _claim(
    db: psycopg.Connection[Any],
    store: PostgresStore,
    served: Mapping[str, str],
    limit: int,
    held: Sequence[str],
    unserved_after: float | None,
    cancelled_only: bool,
) -> list[tuple[str, int]]:
    args = {
        "cancelled_only": cancelled_only,
        "workflows": list(served),
        "graphs": list(served.values()),
        "held": list(held),
        "limit": limit,
        "node": store.node,
        "key": store.owner_key,
        "lease": store.lease,
        "grace": unserved_after,
    }
    with db.transaction():
        db.execute("SET LOCAL synchronous_commit = off")  # a lost claim only lets it lapse
        claimed = db.execute(CLAIM, args).fetchall() if served else []
        if unserved_after is not None:
            claimed += db.execute(CLAIM_UNSERVED, args).fetchall()
    return [(run_id, int(epoch)) for run_id, epoch in claimed]


def _control(
    db: psycopg.Connection[Any], runs: list[str]
) -> tuple[list[tuple[int, str, bytes]], list[str]]:
    inbox = db.execute(INBOX, {"runs": runs}).fetchall()
    cancels = db.execute(CANCELS, {"runs": runs}).fetchall()
    return [(int(seq), run_id, bytes(body)) for seq, run_id, body in inbox], [
        run_id for (run_id,) in cancels
    ]


async def open_postgres(url: str, *, node: str, lease: float = LEASE) -> PostgresStore:
    """Open the store in the database at ``url`` as node ``node`` (see `PostgresStore.open`)."""
    store = PostgresStore(url, node=node, lease=lease)
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
