"""The client's exceptions, and how an HTTP error response becomes one.

The tree, under `trioflow.TrioflowError`::

    TrioflowError
     ├── ResponseError              the server answered with an error: status, code, message
     │    └── EventsExpiredError    events the stream owed were no longer retained (410)
     └── RunError                   the run ended without a result: failed, timed out, cancelled

Failures to reach the server at all are httpx's own (`httpx.TransportError`), raised as they
are; `Client.events` retries them on its own before it gives up (see `RunEvents`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from .. import RunStatus, TrioflowError


class ResponseError(TrioflowError):
    """The server answered a request with an error.

    Attributes:
        status: the HTTP status (for `EventsExpiredError` raised mid-stream, the stream's 200).
        code: the server's error code (``"unknown_run"``, ``"invalid_fields"``, ...); for an
            answer that is not a trioflow error, such as a proxy's 502 page, the status's name
            (``"bad_gateway"``) or ``"unexpected_response"``.
        message: what the server said went wrong.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)  # all in args, so the error pickles
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})"


class EventsExpiredError(ResponseError):
    """Events that a run's stream owed the client are no longer retained by the server.

    Raised by `Client.events` for a 410 ``events_expired`` answer (when it resumed after seq
    ``after``, the server had already let those events go) and for a stream the server ended
    with ``event: expired`` (a shutdown that could not wait for a slow client). Nothing is
    skipped silently: to accept the gap, ask again with ``after=error.resume_after``.

    Attributes:
        run_id: the run.
        after: the seq of the last event the client had.
        oldest: the oldest seq the server still keeps (None if its message did not say).
    """

    def __init__(
        self, status: int, code: str, message: str, run_id: str, after: int, oldest: int | None
    ) -> None:
        super().__init__(status, code, message)
        self.args = (status, code, message, run_id, after, oldest)
        self.run_id = run_id
        self.after = after
        self.oldest = oldest

    @property
    def lost(self) -> range | None:
        """The seqs that are lost (None if the server did not say which)."""
        return None if self.oldest is None else range(self.after + 1, self.oldest)

    @property
    def resume_after(self) -> int | None:
        """The ``after=`` that accepts the gap: the stream goes on with the oldest event kept."""
        return None if self.oldest is None else self.oldest - 1

    def __str__(self) -> str:
        lost = self.lost
        if lost is None:
            return f"run {self.run_id}: events after seq {self.after} are lost: {self.message}"
        seqs = f"event {lost[0]} is" if len(lost) == 1 else f"events {lost[0]} to {lost[-1]} are"
        return (
            f"run {self.run_id}: {seqs} lost: the server no longer retains them (the oldest it "
            f"keeps is seq {self.oldest}); to accept the gap, continue with "
            f"events({self.run_id!r}, after={self.resume_after})"
        )


class RunError(TrioflowError):
    """The run ended without a result: it failed, timed out or was cancelled.

    Attributes:
        run_id: the run.
        status: `RunStatus.FAILED`, `RunStatus.TIMED_OUT` or `RunStatus.CANCELLED`.
        type: the class name of the run's exception, on the server (``"ValueError"``,
            ``"WorkflowTimeoutError"``, ``"WorkflowCancelledError"``).
        message: the exception's message.
        step: the step that failed, if one did.
    """

    def __init__(
        self, run_id: str, status: RunStatus, type: str, message: str, step: str | None = None
    ) -> None:
        super().__init__(run_id, status, type, message, step)
        self.run_id = run_id
        self.status = status
        self.type = type
        self.message = message
        self.step = step

    def __str__(self) -> str:
        ended = _ENDED.get(self.status, self.status.value)
        where = f" in step {self.step!r}" if self.step else ""
        return f"run {self.run_id} {ended}{where}: {self.type}: {self.message}"


_ENDED = {
    RunStatus.FAILED: "failed",
    RunStatus.TIMED_OUT: "timed out",
    RunStatus.CANCELLED: "was cancelled",
}


def response_error(response: httpx.Response, *, run_id: str = "", after: int = 0) -> ResponseError:
    """The error an answer stands for, from its ``{"error": {"code", "message"}}`` body (its
    content must have been read); ``run_id`` and ``after`` describe a 410 ``events_expired``."""
    status = response.status_code
    code, message = _error_body(response.content)
    if code is None or message is None:
        code = _status_name(status)
        text = response.content.decode("utf-8", "replace").strip()
        message = f"unexpected answer to {response.request.method} {response.request.url}" + (
            f": {text[:200]}" if text else ""
        )
    if code == "events_expired":
        return expired_error(status, message, run_id, after)
    return ResponseError(status, code, message)


def expired_error(status: int, message: str, run_id: str, after: int) -> EventsExpiredError:
    """`EventsExpiredError` from the server's message, which names the oldest seq it keeps."""
    found = _OLDEST.search(message)
    oldest = int(found[1]) if found else None
    return EventsExpiredError(status, "events_expired", message, run_id, after, oldest)


def error_fields(value: Any) -> tuple[str | None, str | None]:
    """``(code, message)`` of a decoded ``{"error": {"code", "message"}}`` (None where absent)."""
    error = value.get("error") if isinstance(value, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
    )


# The server's `EventsExpired` message: "events after seq 3 are no longer retained: the oldest
# kept is seq 12; ...". It holds the only statement of which seq the server still keeps.
_OLDEST = re.compile(r"the oldest kept is seq (\d+)")


def _error_body(content: bytes) -> tuple[str | None, str | None]:
    try:
        value = json.loads(content)
    except ValueError:
        return None, None
    return error_fields(value)


def _status_name(status: int) -> str:
    if status < 400:  # a success that is not the one expected: no error of its own
        return "unexpected_response"
    try:
        return httpx.codes(status).name.lower()
    except ValueError:
        return "unexpected_response"
