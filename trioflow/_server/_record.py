"""`RunRecord`: what the server knows of one run started over HTTP.

The run's handler owns the run's state: its status, and its result or error once decided,
come from there (`RunRecord.describe`); the record adds what only the server has: the run's
`RunFeed`, when it started, and whether its pump has taken the whole stream.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import trio

from .. import RunStatus, WorkflowHandler
from .._durable import error_json, stop_names
from .._store import Store
from .._wire import (
    dumps,
    encode_value,
    mark_unencodable,
)
from ._feed import RunFeed

#: Characters of an error's message that ``GET /runs`` shows (``GET /runs/{id}`` has it all).
SUMMARY_MESSAGE = 200


@attrs.define(eq=False)
class RunRecord:
    """What the server knows of one run: its handler, which owns the run's state, and its
    feed."""

    workflow_name: str
    handler: WorkflowHandler
    feed: RunFeed
    #: The registry's count of runs started before this one: the order of `GET /runs`.
    number: int = 0
    #: Lifecycle events go to the feed too (``POST .../runs?lifecycle=1``).
    lifecycle: bool = False
    #: The feed keeps each event object besides its JSON (a `RunGroup`'s runs).
    keep_events: bool = False
    #: Failures go to the feed with their traceback text (``hide_tracebacks`` not set).
    tracebacks: bool = attrs.field(default=False, kw_only=True)
    started_at: float = attrs.field(factory=time.time)
    #: Forget the run once it ends rather than keep it (`RunRegistry.forget`).
    forgotten: bool = False
    #: The pump has taken the run's whole stream into the feed, terminal event included.
    pumped: bool = False
    #: Set once the run's task has ended: its steps have unwound and its feed is finished.
    #: Not the run's status (the handler's): what `max_runs` and a shutdown wait for.
    done: trio.Event = attrs.field(factory=trio.Event)
    #: The durable store its events and outcome are committed to (None: memory only).
    store: Store | None = None
    #: The seq of the last event the pump numbered (on a store, the feed has it once
    #: committed).
    seq: int = 0
    #: On a store: set once what this process serves of the run is final: its end is
    #: committed, which a crash can no longer change, or it was suspended (`suspended`).
    #: Until its end is committed the run is served as running (`status`), as its terminal
    #: event is not streamed before it is committed either.
    settled: trio.Event = attrs.field(factory=trio.Event)
    #: The node (`ServerOptions.node_id`) of the process running it: reported as its
    #: ``node`` while the run's task is alive (`done` not set), null after.
    node: str | None = None
    #: On a store: the run was suspended (the server stopped, or its store failed); it goes
    #: on at the next start, so its end is never committed here and it is served as running.
    suspended: bool = False
    #: The result as JSON, in a tuple once encoded (the result itself may be None).
    _result_json: bytes | None = attrs.field(default=None, init=False)

    @property
    def run_id(self) -> str:
        return self.handler.run_id

    @property
    def status(self) -> RunStatus:
        """The run's status as it is served: its handler's (decided before its steps have
        unwound), but on a store running until its end is committed (`settled`), and for
        good once suspended."""
        if self.store is not None and (self.suspended or not self.settled.is_set()):
            return RunStatus.RUNNING
        return self.handler.status

    def mark_suspended(self) -> None:
        """The run was suspended: it is served as running, and whoever waits here for its
        outcome stops waiting (`settled`)."""
        self.suspended = True
        self.settled.set()

    @property
    def ended_at(self) -> float | None:
        return None if self.status is RunStatus.RUNNING else self.handler.ended_at

    def cancel(self) -> bool:
        """Cancel the run; False if its outcome was decided already."""
        return self.handler.cancel()

    async def committed(self) -> None:
        """Wait until what the run has recorded in its store (a cancel) is committed."""
        await self.handler._committed()

    def outcome_json(self) -> tuple[bytes | None, bytes | None]:
        """The run's result and error as JSON (each None when it has none); (None, None)
        while it runs (`status`)."""
        if self.status is RunStatus.RUNNING:
            return None, None
        try:
            result = self.handler.result_nowait()
        except trio.WouldBlock:  # pragma: no cover (the status said decided)
            return None, None
        except BaseException as error:  # the run's own error, kept by its handler
            return None, dumps(self._error(error))
        return self.result_json(result), None

    def result_names(self) -> dict[str, Any] | None:
        """When the run completed with the workflow's own stop event: that event's class's
        ``type``, ``qualified_name`` and ``bases``; else None."""
        if self.status is not RunStatus.COMPLETED:
            return None
        return stop_names(self.handler.result_nowait())

    def footprint(self) -> int:
        """Bytes the record keeps: its retained events, and its result, counted as the size of
        the terminal event that carries it (the last entry, once the feed is finished)."""
        return self.feed.size + (self.feed.newest_size if self.feed.finished else 0)

    def summary(self) -> dict[str, Any]:
        """The run as ``GET /runs`` lists it: its status, without its result (which may be
        large: ``GET /runs/{id}`` has it), and its error's type, step and the start of its
        message."""
        summary = self._head()
        if summary["status"] in ("failed", "timed_out"):
            try:
                self.handler.result_nowait()
            except BaseException as error:  # the run's own error, as describe() gives it
                summary["error"] = brief(self._error(error))
        return summary

    def describe(self) -> list[bytes]:
        """The run's status as JSON (``GET /runs/{id}``), in parts: with its result or error
        once its outcome is decided, which may be before its steps have unwound. The result's
        JSON is made once and shared by every request (`Request.respond` sends it in slices),
        so many clients asking for a large result hold no copies of it."""
        return described(dumps(self._head()), *self.outcome_json())

    def result_json(self, result: Any) -> bytes:
        """The run's ``result`` (what its handler returned) as JSON, made once and shared by
        every request that sends it."""
        if self._result_json is None:
            # Once, not per request; an int too long to write goes out as a marker, as in
            # the run's terminal event (see `_pump`), rather than failing every request.
            self._result_json = dumps(mark_unencodable(encode_value(result)))
        return self._result_json

    def _head(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow_name,
            "status": self.status.value,
            "seq": self.feed.last_seq,
            # The oldest event still kept (`retain`): a stream from the start begins there.
            "first_seq": self.feed.first_seq,
            "watchers": self.feed.watchers,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "node": None if self.done.is_set() else self.node,
            "waiting_for_input": self.status is RunStatus.RUNNING and self.feed.asks_for_input,
        }

    def _error(self, error: BaseException) -> dict[str, Any]:
        return error_json(error, self.handler.failed_step)


def described(head: bytes, result: bytes | None, error: bytes | None) -> list[bytes]:
    """A run's status (``head``, a JSON object) with its ``result`` or ``error`` JSON, in
    parts, the result not copied."""
    if result is not None:
        return [head[:-1], b',"result":', result, b"}"]
    if error is not None:
        return [head[:-1], b',"error":', error, b"}"]
    return [head]


def brief(error: dict[str, Any]) -> dict[str, Any]:
    """A run's error as ``GET /runs`` lists it: its message cut to `SUMMARY_MESSAGE`."""
    message = error.get("message", "")
    if len(message) > SUMMARY_MESSAGE:
        error = {**error, "message": message[: SUMMARY_MESSAGE - 1] + "\u2026"}
    return error
