"""Durable stores, named by URL: where runs and their events outlive the process.

``memory:`` is no store at all: runs live in the process, as they always have (the server's
`RunRegistry` and `RunFeed`). ``sqlite:///runs.db`` (a path relative to the working directory;
``sqlite:////var/lib/runs.db`` for an absolute one, as SQLAlchemy writes them) is one SQLite file
for one process (`_sqlite`). The layers above take a store from `open_store` and use only what
the `Store` contract offers (`_base`), with the rows and writes every store shares (`_writes`).
"""

from __future__ import annotations

import os
import socket
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

from ._base import SharedStore, Store
from ._cluster import POLL, wait_for
from ._errors import RunInterrupted, StoreError, StoreLocked, StoreUnavailable
from ._postgres import LEASE, PostgresStore, open_postgres
from ._rows import LIFECYCLE, TERMINAL, EventKind, event_kind, event_row
from ._sqlite import SqliteStore, open_sqlite
from ._writes import (
    EventRow,
    InboxTaken,
    JournalEntry,
    NewEvent,
    NewRun,
    Operation,
    RunEnded,
    RunPurged,
    RunReleased,
    RunResumed,
    RunRow,
)

#: The URL of the store a server uses when none is given: none, runs in memory.
MEMORY = "memory:"


def sqlite_path(url: str) -> tuple[str, dict[str, str]]:
    """The file and the options of a ``sqlite:`` URL, percent-decoded as a URL's are
    (``sqlite:///my%20runs.db`` is ``my runs.db``).

    Raises:
        StoreError: the URL names no file, or its options are given twice.
    """
    parts = urlsplit(url)
    if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
        raise StoreError(
            f"a SQLite store's URL is sqlite:///relative/path.db or sqlite:////absolute/path.db,"
            f" got {url!r}"
        )
    try:
        path = unquote(parts.path[1:], errors="strict")
    except UnicodeDecodeError:
        raise StoreError(
            f"a store's file name is UTF-8 once percent-decoded, got {url!r}"
        ) from None
    if "\0" in path:  # no file has it in its name: opening it would raise a ValueError
        raise StoreError(f"a store's file name has no NUL (%00), got {url!r}")
    options = parse_qsl(parts.query, keep_blank_values=True)
    named = dict(options)
    if len(named) != len(options):
        raise StoreError(f"an option is given twice in {url!r}")
    return path, named


def check_url(url: str) -> str:
    """``url`` if it names a store this trioflow opens (without opening it).

    Raises:
        StoreError: it does not.
    """
    scheme = url.partition(":")[0].lower()
    if url == MEMORY:
        return url
    if scheme == "sqlite":
        sqlite_path(url)
        return url
    if scheme in ("postgresql", "postgres"):
        if "://" not in url:
            raise StoreError(f"a PostgreSQL store's URL is postgresql://user@host/db, got {url!r}")
        return url
    raise StoreError(
        f"a store is memory:, sqlite:///path.db or postgresql://user@host/db, got {url!r}"
    )


async def open_engine(url: str, *, node: str | None = None, lease: float = LEASE) -> Store | None:
    """The store named by ``url`` (checked by `check_url`), opened; None for ``memory:``.
    Its flusher (`Store.flush_forever`) is the caller's to run. On a store shared by
    processes (PostgreSQL), this process is node ``node`` (`node_name`'s default when None),
    its leases ``lease`` seconds long."""
    if url == MEMORY:
        return None
    if url.partition(":")[0].lower() == "sqlite":
        path, options = sqlite_path(url)
        return await open_sqlite(path, **options)
    # (libpq reads the scheme in lower case only: ``PostgreSQL://`` is the same store.)
    scheme, _, rest = url.partition(":")
    return await open_postgres(f"{scheme.lower()}:{rest}", node=node or node_name(), lease=lease)


def node_name() -> str:
    """The default node id of this process: its host's name and its process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def open_store(url: str) -> AbstractAsyncContextManager[Store | None]:
    """The store named by ``url``, open for the block (None for ``memory:``), its writes
    committed by a task of the block's; leaving the block commits what is pending and closes
    it.

    Raises:
        StoreError: a URL this trioflow does not open, or a file that is no trioflow store.
        StoreLocked: another process has the file open.
    """
    return _OpenStore(check_url(url))


class _OpenStore:
    """`open_store`'s block: a class, not ``@asynccontextmanager`` with a nursery around its
    ``yield``, so that the block's own exception leaves as itself."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._store: Store | None = None
        self._nursery_manager: Any = None
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> Store | None:
        if self._url == MEMORY:
            return None
        store = await open_engine(self._url)
        assert store is not None
        self._nursery_manager = trio.open_nursery()
        nursery = self._nursery = await self._nursery_manager.__aenter__()
        nursery.start_soon(store.flush_forever)
        self._store = store
        return store

    async def __aexit__(self, *exc_info: object) -> None:
        store = self._store
        if store is None:
            return
        try:
            with trio.CancelScope(shield=True):  # what was acknowledged is written
                await store.drain()
        finally:
            try:
                assert self._nursery is not None
                self._nursery.cancel_scope.cancel()
                await self._nursery_manager.__aexit__(None, None, None)
            finally:
                with trio.CancelScope(shield=True):
                    await store.aclose()


__all__ = [
    "LEASE",
    "LIFECYCLE",
    "MEMORY",
    "POLL",
    "TERMINAL",
    "EventKind",
    "EventRow",
    "InboxTaken",
    "JournalEntry",
    "NewEvent",
    "NewRun",
    "Operation",
    "PostgresStore",
    "RunEnded",
    "RunInterrupted",
    "RunPurged",
    "RunReleased",
    "RunResumed",
    "RunRow",
    "SharedStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "check_url",
    "event_kind",
    "event_row",
    "node_name",
    "open_engine",
    "open_postgres",
    "open_sqlite",
    "open_store",
    "sqlite_path",
    "wait_for",
]
