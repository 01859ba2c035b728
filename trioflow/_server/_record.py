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
from .._wire import dumps, encode_exception, encode_value, mark_unencodable
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
    started_at: float = attrs.field(factory=time.time)
    #: Forget the run once it ends rather than keep it (`RunRegistry.forget`).
    forgotten: bool = False
    #: The pump has taken the run's whole stream into the feed, terminal event included.
    pumped: bool = False
    #: Set once the run's task has ended: its steps have unwound and its feed is finished.
    #: Not the run's status (the handler's): what `max_runs` and a shutdown wait for.
    done: trio.Event = attrs.field(factory=trio.Event)
    #: The result as JSON, in a tuple once encoded (the result itself may be None).
    _result_json: bytes | None = attrs.field(default=None, init=False)

    @property
    def run_id(self) -> str:
        return self.handler.run_id

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
                brief = self._error(error)
                if len(brief["message"]) > SUMMARY_MESSAGE:
                    brief["message"] = brief["message"][: SUMMARY_MESSAGE - 1] + "\u2026"
                summary["error"] = brief
        return summary

    def describe(self) -> list[bytes]:
        """The run's status as JSON (``GET /runs/{id}``), in parts: with its result or error
        once its outcome is decided, which may be before its steps have unwound. The result's
        JSON is made once and shared by every request (`Request.respond` sends it in slices),
        so many clients asking for a large result hold no copies of it."""
        described = self._head()
        if self.handler.status is RunStatus.RUNNING:
            return [dumps(described)]
        try:
            result = self.handler.result_nowait()
        except trio.WouldBlock:  # pragma: no cover (the status said decided)
            return [dumps(described)]
        except BaseException as error:
            # The run's own error, kept by its handler and only reported here: a synchronous
            # call raises no cancellation of this task.
            described["error"] = self._error(error)
            return [dumps(described)]
        return [dumps(described)[:-1], b',"result":', self.result_json(result), b"}"]

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
            "status": self.handler.status.value,
            "seq": self.feed.last_seq,
            "watchers": self.feed.watchers,
            "started_at": self.started_at,
            "ended_at": self.handler.ended_at,
        }

    def _error(self, error: BaseException) -> dict[str, Any]:
        described = encode_exception(error)
        step = self.handler.failed_step
        if step is not None:
            described["step"] = step
        return described
