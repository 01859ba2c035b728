"""Durable runs: the run journal, and resuming a run from it (see ``DURABILITY.md``).

A durable run is a run whose router, context, stream and workers journal what they do
(`_runtime`), in records a store commits (`_journal`), with events and values written so that
they read back as they were (`_codec`). A run whose process stopped is resumed from the fold of
its journal: finished steps are not run again, the step that was running runs again as a new
attempt, and the context calls its lost attempt made are not repeated.

This layer sits on the core runtime and the store's records; the server (and an embedded
caller) choose the store and the stream's sink.
"""

from __future__ import annotations

from .._errors import JournaledError, NotJournalable, ReplayError, WorkerLost
from ._codec import EventCodec, check_storable, codec_for, fingerprint
from ._journal import OUTSIDE, Journal, Replay, fold
from ._runtime import Durable, DurableStream, StreamSink, start_durable
from ._stored import (
    Resume,
    RowSink,
    TeeStream,
    ended_on_stream,
    error_json,
    interrupt,
    new_row,
    run_ended,
    stop_names,
    unencodable,
    unfinished,
)

__all__ = [
    "OUTSIDE",
    "Durable",
    "DurableStream",
    "EventCodec",
    "Journal",
    "JournaledError",
    "NotJournalable",
    "Replay",
    "ReplayError",
    "Resume",
    "RowSink",
    "StreamSink",
    "TeeStream",
    "WorkerLost",
    "check_storable",
    "codec_for",
    "ended_on_stream",
    "error_json",
    "fingerprint",
    "fold",
    "interrupt",
    "new_row",
    "run_ended",
    "start_durable",
    "stop_names",
    "unencodable",
    "unfinished",
]
