"""Streaming a run's feed to one HTTP client: Server-Sent Events or NDJSON.

Each batch of entries a `Watcher` takes is one ``http.response.body`` message, and hypercorn
flushes each message as its own chunk, so an event reaches the socket as soon as the pump has
it. ``await send(...)`` waits while the client's TCP window is closed: that wait is what holds
the watcher back, and through the feed, the producing step.
"""

from __future__ import annotations

import trio

from .._wire import dumps
from ._asgi import Receive, Request
from ._feed import Entry, EventsExpired, RunFeed, Watcher

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
    *,
    after: int,
    ndjson: bool,
    named: bool,
    ping_interval: float,
    retry_ms: int,
) -> None:
    """Answer ``request`` with the feed's entries after seq ``after``, live, until the last.

    Raises:
        EventsExpired: entries after ``after`` are no longer retained (before any response).
        ValueError: ``after`` is beyond the last entry (before any response).
    """
    if feed.finished and after == feed.last_seq:
        # Nothing more will come. 204 also tells an EventSource to stop reconnecting.
        await request.start_response(204, [(b"cache-control", b"no-store")])
        await request.send({"type": "http.response.body", "body": b""})
        return
    with feed.watch(after) as watcher:
        await request.start_response(200, NDJSON_HEADERS if ndjson else SSE_HEADERS)
        async with trio.open_nursery() as nursery:
            # hypercorn never fails a send() to a client that has gone; receive() tells.
            nursery.start_soon(_cancel_on_disconnect, request.receive, nursery.cancel_scope)
            if ndjson:
                await _send_ndjson(request, watcher)
            else:
                await _send_sse(request, watcher, named, ping_interval, retry_ms)
            nursery.cancel_scope.cancel()


async def _send_sse(
    request: Request, watcher: Watcher, named: bool, ping_interval: float, retry_ms: int
) -> None:
    await _send(request, b"retry: %d\n\n" % retry_ms)
    while True:
        with trio.move_on_after(ping_interval) as idle:
            batch = await _next_batch(watcher)
        if idle.cancelled_caught:
            await _send(request, b": ping\n\n")  # keeps proxies and idle timeouts at bay
            continue
        if isinstance(batch, EventsExpired):
            await _send(request, b"event: error\ndata: %s\n\n" % _expired(batch), end=True)
            return
        if not batch:
            await _send(request, b"", end=True)
            return
        await _send(request, b"".join([entry.sse(named=named) for entry in batch]))


async def _send_ndjson(request: Request, watcher: Watcher) -> None:
    while True:
        batch = await _next_batch(watcher)  # no keep-alive: NDJSON has no comment lines
        if isinstance(batch, EventsExpired):
            await _send(request, _expired(batch) + b"\n", end=True)
            return
        if not batch:
            await _send(request, b"", end=True)
            return
        await _send(request, b"".join([entry.ndjson() for entry in batch]))


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


def _expired(error: EventsExpired) -> bytes:
    return dumps({"error": {"code": "events_expired", "message": str(error)}})


async def _send(request: Request, body: bytes, *, end: bool = False) -> None:
    await request.send({"type": "http.response.body", "body": body, "more_body": not end})


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
