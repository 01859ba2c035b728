"""`RunEvents`: one run's event stream, followed across dropped connections.

The stream is read as Server-Sent Events. Each envelope is delivered once, in order: the
iterator remembers the seq of the last one it returned, and whenever the connection drops it
reconnects with ``Last-Event-ID: <that seq>``, so the server goes on with the next one (a
message cut off by the drop was never complete, so never delivered). Between the drop and the
reconnection it waits the ``retry:`` delay the server asked for (2 s until it has said);
attempts that fail (no answer, a gateway's 502, 503 or 504) double the delay each time (up
to `MAX_DELAY`, or the server's delay if that is longer), and once ``reconnect_attempts`` in a
row have failed, the last one's error is raised. Only a stream once opened is retried: a first
request that fails raises at once (a wrong URL, a server that is not there).

The stream ends after its terminal event: the runtime's (`StopEvent`, `WorkflowFailedEvent`,
...) and a workflow's own stop event type when it is among those to decode are recognised
as such. A stream the server ended cleanly after any other event is asked for once more, to
be sure: the server answers 204 once the terminal event has been sent. Events the server no
longer retains raise `EventsExpiredError`, never a silent gap.

A cancelled `__anext__` loses nothing: it closes the connection it was reading, and the next
call reconnects after the last envelope returned.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self

import anyio
import anyio.lowlevel
import httpx

from ._envelope import Decoder, Envelope
from ._errors import ResponseError, error_fields, expired_error, response_error
from ._sse import Message, SseParser

#: Seconds to wait before reconnecting until the server has sent its ``retry:`` hint.
DEFAULT_RETRY = 2.0
#: The longest wait between failed reconnection attempts, unless the server asks for longer.
MAX_DELAY = 30.0
#: Answers from a gateway (or a server starting up) that are worth another try.
_TRANSIENT = frozenset({502, 503, 504})


class RunEvents:
    """An async iterator of a run's `Envelope`\\ s that resumes by itself when the connection
    drops (see `Client.events`). Also an async context manager that closes its connection on
    exit, for a loop that may stop before the stream's end."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        request: Callable[[int], httpx.Request],
        *,
        run_id: str,
        after: int,
        decoder: Decoder,
        reconnect_attempts: int,
    ) -> None:
        self.run_id = run_id
        self._http = http
        self._request = request
        self._decoder = decoder
        self._reconnect_attempts = reconnect_attempts
        self._last = after
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._parser = SseParser()
        self._pending: deque[Message] = deque()
        #: Seconds to wait before the next connection attempt (None: go at once).
        self._delay: float | None = None
        self._retry: float | None = None
        self._failures = 0
        self._last_at_open = after
        self._opened = False
        self._done = False
        #: How many times the stream was opened again after the first time.
        self.reconnects = 0

    @property
    def last_seq(self) -> int:
        """The seq of the last envelope delivered (or the ``after`` it started from): where
        a new `Client.events` call would resume."""
        return self._last

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        await anyio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: close the connection; the iteration ends."""
        self._done = True
        await self._close()
        await anyio.lowlevel.checkpoint()

    async def __anext__(self) -> Envelope:
        await anyio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self._done:
                await self._close()
                if not waited:
                    await anyio.lowlevel.cancel_shielded_checkpoint()
                raise StopAsyncIteration
            if self._pending:
                try:
                    envelope = self._take(self._pending.popleft())
                except ResponseError:  # the stream can go no further
                    self._done = True
                    await self._close()
                    raise
                if envelope is None:
                    continue
                if not waited:
                    await anyio.lowlevel.cancel_shielded_checkpoint()
                return envelope
            waited = True
            if self._response is None:
                await self._connect()
            else:
                await self._read()

    # -- delivering --

    def _take(self, message: Message) -> Envelope | None:
        """The envelope ``message`` holds, if it is the next one to deliver."""
        if message.event == "expired":  # the server let events go that this client was owed
            code, text = error_fields(_json_or_none(message.data))
            if code != "events_expired" or text is None:
                text = message.data
            raise expired_error(200, text, self.run_id, self._last)
        envelope = self._decoder.envelope(message.data)
        if envelope.seq <= self._last:  # never twice, whatever comes
            return None
        self._last = envelope.seq
        self._failures = 0
        if self._decoder.is_terminal(envelope):
            self._done = True
        try:
            return self._decoder.decode(envelope)
        except Exception as error:
            error.add_note(
                f"decoding event seq {envelope.seq} ({envelope.qualified_name}) of run "
                f"{self.run_id}; iterating again goes on after it"
            )
            raise

    # -- the connection --

    async def _connect(self) -> None:
        if self._delay is not None:
            await anyio.sleep(self._delay)
        try:
            response = await self._http.send(self._request(self._last), stream=True)
        except httpx.TransportError as failure:
            self._failed(failure)
            return
        kept = False
        try:
            status = response.status_code
            if status == 200 and _is_event_stream(response):
                self._start(response)
                kept = True
                return
            await response.aread()
        finally:
            if not kept:
                await _close_shielded(response)
        if status == 204:  # nothing follows the terminal event
            self._done = True
            return
        error = response_error(response, run_id=self.run_id, after=self._last)
        if status in _TRANSIENT:
            self._failed(error)
            return
        if status == 200:
            error = ResponseError(
                200,
                "unexpected_response",
                f"{response.request.url} answered {response.headers.get('content-type')!r}, "
                "not an event stream",
            )
        self._done = True
        raise error

    def _start(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.aiter_bytes()
        self._parser = SseParser()
        self._last_at_open = self._last
        if self._opened:
            self.reconnects += 1
        self._opened = True
        self._delay = None

    async def _read(self) -> None:
        assert self._chunks is not None
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            # Ended cleanly, but not after an event known to be terminal: ask again, and the
            # server answers 204 if it has sent the terminal event. A stream that ended with
            # nothing new is no stream the server sent: that attempt failed.
            await self._close()
            if self._last == self._last_at_open:
                self._failed(
                    ResponseError(
                        200, "unexpected_response", "the event stream ended without any event"
                    )
                )
            return
        except httpx.TransportError:  # dropped: the stream had been opened, so no failed attempt
            await self._close()
            self._failures = 0
            self._delay = self._retry if self._retry is not None else DEFAULT_RETRY
            return
        except BaseException:
            await self._close()  # the next call resumes after the last envelope delivered
            raise
        self._pending.extend(self._parser.feed(chunk))
        if self._parser.retry_ms is not None:
            self._retry = self._parser.retry_ms / 1000

    def _failed(self, error: Exception) -> None:
        """A connection attempt failed: retry later, or raise ``error`` if this was the first
        attempt, or one attempt too many."""
        if not self._opened:
            self._done = True
            raise error
        self._failures += 1
        if self._failures >= self._reconnect_attempts:
            self._done = True
            error.add_note(
                f"trioflow.client: gave up reconnecting to the event stream of run {self.run_id} "
                f"after {self._reconnect_attempts} failed attempts; the last event delivered was "
                f"seq {self._last} (events(run_id, after={self._last}) resumes from there)"
            )
            raise error
        base = self._retry if self._retry is not None else DEFAULT_RETRY
        self._delay = min(base * 2**self._failures, max(base, MAX_DELAY))

    async def _close(self) -> None:
        response, chunks = self._response, self._chunks
        self._response = self._chunks = None
        self._pending.clear()  # complete messages of a closed connection are resent
        if response is None:
            return
        with anyio.CancelScope(shield=True):
            aclose = getattr(chunks, "aclose", None)  # httpx's iterators are generators
            if aclose is not None:
                await aclose()
            await response.aclose()


def _is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/event-stream")


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


async def _close_shielded(response: httpx.Response) -> None:
    with anyio.CancelScope(shield=True):
        await response.aclose()
