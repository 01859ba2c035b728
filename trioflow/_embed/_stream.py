"""Streaming one run, owned by the request, to its one client: `stream_run`.

The framing is the server's (`trioflow._server._streaming`): SSE with ``id:``, ``event:`` and
``data: <envelope>``, ``retry:`` in the first event's block, ``: ping`` comments on an idle
stream; or NDJSON, with one space as its keep-alive. There is no feed between the run and the
client, since nobody else watches the run and nobody can resume it: one task reads the run's
stream, numbers each event (``seq`` from 1, counting the events this response sends) and
encodes it into an `Outbox` of at most one batch; another sends what the outbox holds as one
part of the body, and a keep-alive when it has been empty for half ``ping_interval``.
``await send(...)`` waits while the client's TCP window is closed; meanwhile the outbox fills,
then the run's stream, and the step that writes waits.

A third task watches ``receive()`` for ``http.disconnect`` and cancels the other two; the
caller's run block then cancels the run. The message that ends the body is sent outside the
watcher's reach, as `_streaming` explains.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._core._stream import StreamIterator
from .._events import Event
from .._handler import WorkflowHandler
from .._server._asgi import Receive, Send
from .._server._feed import Entry
from .._server._http2 import Drain
from .._server._streaming import StreamForm, _cancel_on_disconnect
from .._wire import EncodeError, dumps, encode_envelope, mark_unencodable
from ._outbox import Outbox

logger = logging.getLogger("trioflow.starlette")


async def stream_run(
    handler: WorkflowHandler,
    types: tuple[type[Event], ...],
    *,
    begin: Callable[[], Awaitable[None]],
    form: StreamForm,
    receive: Receive,
    send: Send,
    drain: Drain | None,
    ping_interval: float,
) -> bool:
    """Send the response's start (``begin``), then the run's events (of ``types``, and the
    terminal event) as they come; then end the body. Returns whether it ended: False when
    the client left (the caller's run block cancels the run). ``drain`` is awaited after
    each part (HTTP/2: `trioflow._embed._flow`)."""
    # Claimed before anything awaits, so that the lifecycle events of the steps that start
    # at once are written to the stream (they are only while the consumer names them).
    events = handler.stream_events(*types)
    await begin()
    outbox = Outbox()
    complete = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
        nursery.start_soon(_read_events, handler, events, outbox)
        await _send_batches(outbox, form, _Body(send, drain), ping_interval / 2)
        complete = True
        nursery.cancel_scope.cancel()
    if complete:  # outside the watcher's cancel scope: see `_streaming`
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    return complete


async def _read_events(handler: WorkflowHandler, events: StreamIterator, outbox: Outbox) -> None:
    """Number and encode every event of ``events`` into ``outbox``, the terminal one last."""
    seq = 0
    async with events:
        async for event in events:
            seq += 1
            await outbox.put(_encode(handler, seq, event))
    outbox.end()


async def _send_batches(outbox: Outbox, form: StreamForm, body: _Body, idle_after: float) -> None:
    """Send what ``outbox`` holds as it comes, up to its end, and a keep-alive whenever it
    has been empty for ``idle_after`` seconds."""
    while True:
        try:
            # What is there already is taken without a trip through the scheduler: the send
            # that follows is a checkpoint anyway (it ends in a socket write).
            batch = outbox.take_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(idle_after) as idle:
                await outbox.wait_ready()
            if idle.cancelled_caught:
                await body.part(form.keep_alive)
            continue
        if not batch:
            return
        await body.part(form.batch(batch))


class _Body:
    """The response body, sent in parts."""

    def __init__(self, send: Send, drain: Drain | None) -> None:
        self._send = send
        self._drain = drain

    async def part(self, part: bytes) -> None:
        await self._send({"type": "http.response.body", "body": part, "more_body": True})
        if self._drain is not None:
            await self._drain()


def _encode(handler: WorkflowHandler, seq: int, event: Event) -> Entry:
    envelope = encode_envelope(seq, event)
    try:
        json = dumps(envelope)
    except EncodeError as error:
        json = _unencodable(handler, envelope, error)
    return Entry.encode(seq, envelope["type"], json)


def _unencodable(handler: WorkflowHandler, envelope: dict[str, Any], error: EncodeError) -> bytes:
    """The JSON of an event `dumps` refused, marked; the run fails if it still runs, as on the
    server (`trioflow._server._pump`), since the client does not get what the run streamed."""
    failure = EncodeError(
        f"the {envelope['type']} event (seq {envelope['seq']}) cannot be encoded as JSON: {error}",
        error.field,
    )
    if not handler._fail_from_server(failure):  # decided: say what the client misses
        logger.warning(
            "trioflow: run %s: %s; it is sent with a marker in its place", handler.run_id, failure
        )
    return dumps(mark_unencodable(envelope))
