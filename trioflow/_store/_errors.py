"""The errors of durable stores."""

from __future__ import annotations

from .._errors import TrioflowError


class StoreError(TrioflowError):
    """A store cannot be opened or used: a bad URL, a file that is no trioflow store, a schema
    this trioflow does not read."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now (it restarted, a connection dropped): what
    was asked may be asked again."""


class StoreLocked(StoreError):
    """Another process has the store open (SQLite serves one process)."""


class RunInterrupted(TrioflowError):
    """A run on a store was running when the process running it stopped (a crash, a kill):
    what ends it when it cannot be resumed."""
