"""Streaming a run's feed to one HTTP client: Server-Sent Events or NDJSON.

Each batch of entries a `Watcher` takes is one ``http.response.body`` message, and hypercorn
flushes each message as its own chunk, so an event reaches the socket as soon as the pump has
it. ``await send(...)`` waits while the client's TCP window is closed (over HTTP/2, the stream
also waits for hypercorn's buffer to drain: `_http2`): that wait is what holds the watcher
back, and through the feed, the producing step.

A sibling task watches ``receive()`` for ``http.disconnect`` (hypercorn never fails a
``send()`` to a client that has gone) and cancels the stream. The message that ends the body
is sent outside its reach: cancelled inside that ``send()``, hypercorn would stop halfway
through ending the response, and a connection that should close (HTTP/1.0, ``Connection:
close``) or be kept for the next request would do neither.

An idle stream carries a keep-alive every half ``ping_interval``: an SSE ``: ping`` comment, or
for NDJSON, which has no comments, one space, which JSON allows before the next line's value.
Besides keeping proxies from closing the stream, the write is how a client that has left is
noticed while hypercorn reads nothing from its connection, which it does while a request is
pipelined behind the stream: a write to a socket its client has closed fails, at the latest the
second one (when the client had read everything, its kernel answers the first with a reset), so
two writes per interval notice it within ``ping_interval``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from .._wire import dumps
from ._asgi import Receive, Request
from ._feed import Entry, EventsExpired, RunFeed, Watcher
from ._http2 import Drain, flow_control

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]
NDJSON_HEADERS = [
    (b"content-type", b"application/x-ndjson"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


async def stream_feed(
    request: Request,
    feed: RunFeed,
    form: StreamForm,
    *,
    after: int,
    ping_interval: float,
    types: frozenset[str] | None = None,
    lifecycle: bool = False,
    with_lifecycle: bool = False,
) -> None:
    """Answer ``request`` with the feed's entries after seq ``after``, live, until the last
    (a ``HEAD`` request with the headers a ``GET`` would start with),
    written by ``form``: those whose type is named in ``types`` (short or qualified names;
    ``LifecycleEvent`` names every lifecycle event), or without ``types`` every one but the
    lifecycle events; the terminal event in any case; with ``with_lifecycle`` the lifecycle
    events too. ``lifecycle``: the feed holds lifecycle events.

    Raises:
        EventsExpired: entries after ``after`` are no longer retained (before any response).
        ValueError: ``after`` is beyond the last entry (before any response).
        HttpError: 505, HTTP/2 where the stream could not wait for its client (`_http2`).
    """
    if feed.finished and after == feed.last_seq:
        # Nothing more will come. 204 also tells an EventSource to stop reconnecting.
        await request.start_response(204, [(b"cache-control", b"no-store")])
        await request.send({"type": "http.response.body", "body": b""})
        return
    if request.head:  # the answer a GET would start with; no client attaches
        feed.watch(after)  # raises what a GET would answer
        await request.start_response(200, form.headers)
        await request.send({"type": "http.response.body", "body": b""})
        return
    body = _Body(request, flow_control(request))
    with feed.watch(after) as watcher:
        await request.start_response(200, form.headers)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, request.receive, nursery.cancel_scope)
            await _send_entries(
                body, watcher, form, ping_interval, _wanted(types, lifecycle, with_lifecycle)
            )
            body.complete = True
            nursery.cancel_scope.cancel()
    if body.complete:
        await body.end()


@attrs.define(eq=False)
class _Body:
    """The response body of one stream, sent in parts."""

    request: Request
    #: Awaited after each part (HTTP/2): see `_http2`.
    drain: Drain | None
    #: Every entry up to the last has been sent; what is left is to end the body.
    complete: bool = False

    async def send(self, part: bytes) -> None:
        await self.request.send({"type": "http.response.body", "body": part, "more_body": True})
        if self.drain is not None:
            await self.drain()

    async def end(self) -> None:
        await self.request.send({"type": "http.response.body", "body": b"", "more_body": False})


class StreamForm(Protocol):
    """How a stream's parts are written: SSE or NDJSON, in trioflow's envelopes or another's
    (a LlamaIndex client's: `_llama`)."""

    #: The response's headers.
    headers: list[tuple[bytes, bytes]]
    #: What an idle stream carries every half ``ping_interval``.
    keep_alive: bytes

    def batch(self, entries: list[Entry]) -> bytes: ...

    def expired(self, error: EventsExpired) -> bytes: ...


class SseForm:
    """Server-Sent Events: each entry with its ``id`` (its seq), and its ``event`` name unless
    not ``named``."""

    headers = SSE_HEADERS
    keep_alive = b": ping\n\n"

    def __init__(self, *, named: bool = True, retry_ms: int) -> None:
        self._named = named
        #: The ``retry:`` field, sent in the first event's block: alone, it would be a block
        #: of its own, which some clients take for an event without data (httpx-sse does).
        self._retry = b"retry: %d\n" % retry_ms

    def batch(self, entries: list[Entry]) -> bytes:
        return self.first(b"".join([entry.sse(named=self._named) for entry in entries]))

    def expired(self, error: EventsExpired) -> bytes:
        # Not `event: error`: an EventSource fires its own `error` event when the connection
        # fails, and a listener for it could not tell the two apart. No `id:` either, so that
        # Last-Event-ID stays the last event received.
        return self.first(b"event: expired\ndata: %s\n\n" % expired_json(error))

    def first(self, block: bytes) -> bytes:
        """``block``, after the ``retry:`` field if it is the stream's first."""
        retry, self._retry = self._retry, b""
        return retry + block


class NdjsonForm:
    """Newline-delimited JSON: one envelope per line."""

    headers = NDJSON_HEADERS
    keep_alive = b" "  # JSON allows whitespace before a value: the next line stays valid

    def batch(self, entries: list[Entry]) -> bytes:
        return b"".join([entry.ndjson() for entry in entries])

    def expired(self, error: EventsExpired) -> bytes:
        return expired_json(error) + b"\n"


def _wanted(
    types: frozenset[str] | None, lifecycle: bool, with_lifecycle: bool
) -> Callable[[Entry], bool] | None:
    """Which entries a stream sends; None: all (no filter to pay for)."""
    if types is None:
        return (
            (lambda entry: not entry.kind.lifecycle) if lifecycle and not with_lifecycle else None
        )
    every_lifecycle = with_lifecycle or "LifecycleEvent" in types

    def wanted(entry: Entry) -> bool:
        kind = entry.kind
        return (
            kind.terminal
            or kind.type_name in types
            or kind.qualified_name in types
            or (every_lifecycle and kind.lifecycle)
        )

    return wanted


async def _send_entries(
    body: _Body,
    watcher: Watcher,
    form: StreamForm,
    ping_interval: float,
    wanted: Callable[[Entry], bool] | None,
) -> None:
    """Send the watcher's entries as they come, up to the last one."""
    while True:
        with trio.move_on_after(ping_interval / 2) as idle:
            batch = await _next_batch(watcher)
        if idle.cancelled_caught:
            await body.send(form.keep_alive)
        elif isinstance(batch, EventsExpired):
            await body.send(form.expired(batch))
            return
        elif batch:
            if wanted is not None:
                batch = [entry for entry in batch if wanted(entry)]
                if not batch:  # all filtered out: the send that yields did not happen
                    await trio.lowlevel.checkpoint()
                    continue
            await body.send(form.batch(batch))
        else:
            return


async def _next_batch(watcher: Watcher) -> list[Entry] | EventsExpired:
    # Expiry mid-stream only happens at shutdown (`RunFeed.unblock`); it ends the stream with
    # an explicit error instead of a gap.
    try:
        try:
            # What is there already is taken without a trip through the scheduler: the send
            # that follows is a checkpoint anyway (it ends in a socket write).
            return watcher.next_batch_nowait()
        except trio.WouldBlock:
            return await watcher.next_batch()
    except EventsExpired as expired:
        return expired


def expired_json(error: EventsExpired) -> bytes:
    """What a stream says when the events it was to send next were evicted (at shutdown)."""
    return dumps({"error": {"code": "events_expired", "message": str(error)}})


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
