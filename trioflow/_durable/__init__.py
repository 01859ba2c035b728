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

import hashlib
from contextlib import AbstractAsyncContextManager
from typing import Any

from .. import StartEvent, Workflow, WorkflowHandler
from .._errors import JournaledError, NotJournalable, ReplayError, WorkerLost
from .._wire import field_types, qualified_name
from ._codec import EventCodec, check_storable
from ._journal import Appender, Journal, Replay, fold
from ._runtime import Durable, DurableStream, StreamSink


def fingerprint(workflow: Workflow) -> str:
    """A digest of ``workflow``'s graph: its steps, what each takes and returns, its start and
    stop events, and the fields (names and types) of the events they name. A journal is
    replayed only into a graph with the same digest."""
    graph = workflow.graph
    parts = [qualified_name(graph.start_event_type), qualified_name(graph.stop_event_type)]
    for spec in graph.steps:
        accepts = ",".join(qualified_name(t) for t in spec.accepts)
        returns = ",".join(qualified_name(t) for t in spec.returns)
        parts.append(f"{spec.name}({accepts})->{returns}")
    for event_type in graph.event_types():  # and the fields of every event it names
        fields = ",".join(f"{name}:{tp!r}" for name, tp in field_types(event_type).items())
        parts.append(f"{qualified_name(event_type)}{{{fields}}}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def codec_for(workflow: Workflow) -> EventCodec:
    """The codec of ``workflow``'s journals."""
    return EventCodec(workflow.graph.event_types())


def start_durable(
    workflow: Workflow,
    start_event: StartEvent,
    *,
    store: Appender,
    run_id: str,
    sink: StreamSink,
    replay: Replay | None = None,
    time_used: float = 0.0,
    lifecycle: bool = False,
) -> AbstractAsyncContextManager[WorkflowHandler[Any], None]:
    """`Workflow.start`, for a run journaled to ``store`` whose stream goes to ``sink`` (with
    its lifecycle events if ``lifecycle``); with ``replay``, a run resumed from its journal,
    ``time_used`` seconds of its timeout gone."""
    codec = codec_for(workflow)
    journal = Journal(store, run_id, codec, 0 if replay is None else replay.next_n)
    stream = DurableStream(workflow.stream_buffer, sink)
    return workflow._start(
        start_event,
        stream=stream,
        run_id=run_id,
        durable=Durable(journal, replay, lifecycle=lifecycle),
        time_used=time_used,
    )


__all__ = [
    "Durable",
    "DurableStream",
    "EventCodec",
    "Journal",
    "JournaledError",
    "NotJournalable",
    "Replay",
    "ReplayError",
    "StreamSink",
    "WorkerLost",
    "check_storable",
    "codec_for",
    "fingerprint",
    "fold",
    "start_durable",
]
