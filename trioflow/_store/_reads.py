"""`SqlReads`: what a store reads back, in the SQL both engines speak (the same tables), each
engine giving its driver's placeholder and a way to run a query on its reading connection.
Also the values of a run's row as both drivers take and give them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from ._writes import EventRow, RunRow

#: The columns of a run's row (`run_row`), which both engines have.
RUN_COLUMNS = (
    "run_id, number, workflow, status, start_event, lifecycle, last_seq, result, error,"
    " started_at, ended_at, result_type, fingerprint, recoveries"
)


class SqlReads:
    """Reads of committed rows, for an engine with a DB-API-like reading connection (its
    ``execute(query, args)`` returns a cursor with ``fetchall``/``fetchone``)."""

    #: The driver's placeholder for a parameter: ``?`` (sqlite3) or ``%s`` (psycopg).
    _param: ClassVar[str]
    #: The SELECT of runs' rows (`run_row`): `RUN_COLUMNS`, and those of a store shared by
    #: processes (``owner``, ``cancel_requested``) where the engine has them.
    _select_run: ClassVar[str] = f"SELECT {RUN_COLUMNS} FROM tf_runs"

    async def _read(self, query: Callable[[Any], Any]) -> Any:
        """``query(connection)`` on the reading connection, in a worker thread."""
        raise NotImplementedError

    async def run(self, run_id: str) -> RunRow | None:
        """The run ``run_id``, as last committed."""
        p = self._param
        rows = await self._read(
            lambda db: db.execute(f"{self._select_run} WHERE run_id = {p}", (run_id,)).fetchall()
        )
        return run_row(rows[0]) if rows else None

    async def runs(self, *, status: str | None = None) -> list[RunRow]:
        """Every run (with ``status``, if given), oldest first."""
        select = self._select_run
        query = f"{select} ORDER BY number"
        args: tuple[str, ...] = ()
        if status is not None:
            query, args = f"{select} WHERE status = {self._param} ORDER BY number", (status,)
        rows = await self._read(lambda db: db.execute(query, args).fetchall())
        return [run_row(row) for row in rows]

    async def page(
        self,
        limit: int,
        *,
        before: int | None = None,
        workflow: str | None = None,
        statuses: Sequence[str] = (),
    ) -> list[RunRow]:
        """Up to ``limit`` runs, newest first, numbered below ``before`` (all when None), of
        ``workflow`` and with one of ``statuses`` when given."""
        p = self._param
        where = [f"number < {p}"]
        args: list[Any] = [2**62 if before is None else before]
        if workflow is not None:
            where.append(f"workflow = {p}")
            args.append(workflow)
        if statuses:
            where.append(f"status IN ({', '.join([p] * len(statuses))})")
            args += list(statuses)
        query = f"{self._select_run} WHERE {' AND '.join(where)} ORDER BY number DESC LIMIT {p}"
        rows = await self._read(lambda db: db.execute(query, (*args, limit)).fetchall())
        return [run_row(row) for row in rows]

    async def journal(self, run_id: str) -> list[tuple[int, str, bytes]]:
        """The committed journal of ``run_id``: ``(n, kind, body)`` in order."""
        query = f"SELECT n, kind, body FROM tf_journal WHERE run_id = {self._param} ORDER BY n"
        rows = await self._read(lambda db: db.execute(query, (run_id,)).fetchall())
        return [(int(n), kind, bytes(body)) for n, kind, body in rows]

    async def last_seq(self, run_id: str) -> int:
        """The seq of the last committed event of ``run_id`` (0 with none)."""
        query = f"SELECT coalesce(max(seq), 0) FROM tf_events WHERE run_id = {self._param}"
        (seq,) = await self._read(lambda db: db.execute(query, (run_id,)).fetchone())
        return int(seq)

    async def events(
        self, run_id: str, *, after: int, limit: int, max_bytes: int | None = None
    ) -> list[EventRow]:
        """Up to ``limit`` committed events of ``run_id`` after seq ``after``, in order, and
        no more than ``max_bytes`` of bodies (at least one event, when there is one)."""
        p = self._param
        statement = (
            "SELECT seq, type, qualified_name, flags, bases, body FROM tf_events"
            f" WHERE run_id = {p} AND seq > {p} ORDER BY seq LIMIT {p}"
        )

        def query(db: Any) -> list[EventRow]:
            found: list[EventRow] = []
            room = math.inf if max_bytes is None else max_bytes
            for row in db.execute(statement, (run_id, after, limit)).fetchall():
                event = EventRow(*row)
                room -= len(event.body)
                if room < 0 and found:
                    break
                found.append(event)
            return found

        events: list[EventRow] = await self._read(query)
        return events


def next_number(db: Any) -> int:
    """The number of the next run: after the highest the store has."""
    (number,) = db.execute("SELECT coalesce(max(number) + 1, 0) FROM tf_runs").fetchone()
    return int(number)


def run_values(row: RunRow) -> tuple[Any, ...]:
    """A run's row as an INSERT's values (both drivers take a bool for ``lifecycle``)."""
    return (
        row.run_id,
        row.number,
        row.workflow,
        row.status,
        row.start_event,
        row.lifecycle,
        row.last_seq,
        row.result,
        row.error,
        row.started_at,
        row.ended_at,
        row.result_type,
        row.fingerprint,
        row.recoveries,
    )


def run_row(values: Iterable[Any]) -> RunRow:
    """A run's row as a SELECT of `SqlReads._select_run` gives it: `RUN_COLUMNS`, then
    ``owner`` and ``cancel_requested`` where the engine has them (SQLite keeps ``lifecycle``
    as an integer)."""
    run_id, number, workflow, status, start, lifecycle, last, result, error, *rest = values
    at, end, kind, fingerprint, recoveries, *shared = rest
    owner, cancel_requested = shared or (None, False)
    return RunRow(
        run_id,
        number,
        workflow,
        status,
        start,
        bool(lifecycle),
        last,
        result,
        error,
        at,
        end,
        kind,
        fingerprint,
        recoveries,
        owner,
        bool(cancel_requested),
    )
