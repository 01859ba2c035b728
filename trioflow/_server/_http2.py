"""Backpressure for a streamed body over HTTP/2 under hypercorn.

Over HTTP/1.1, hypercorn's ``send()`` writes to the socket, so it waits while the client's TCP
window is closed: that wait holds the stream back (`_streaming`). Over HTTP/2 it does not:
``send()`` appends the body to the stream's buffer in hypercorn (``StreamBuffer.push``) and
waits only while that buffer is above its high-water mark and paused, but the task that moves
the buffer into DATA frames marks it unpaused whenever it takes less than a frame from it, and
with the client's flow-control window closed it takes nothing, every time. A client that never
opens its window (``WINDOW_UPDATE``) therefore let the server buffer the whole run: measured
with ``python -m benchmarks._http2_stalled`` (events of 10 kB), +927 MiB in 10 s and growing,
where a stalled HTTP/1.1 client holds the run at its retention limit; with `flow_control`,
+3.7 MiB, the run held at seq 413 (4 MiB retained), as over HTTP/1.1.

hypercorn offers no way to wait for the client, except the wait it does itself at the end of a
body: the stream buffer's ``drain()``, which returns once the client's window has let every
byte out. `flow_control` finds that buffer behind the ASGI ``send`` callable and returns its
``drain``; the stream awaits it after each batch, so at most one batch per stream waits in
hypercorn, as in the socket over HTTP/1.1. Those are hypercorn's insides (the same from 0.16
to 0.18): where they are not found, an event stream over HTTP/2 is refused with 505 rather
than buffered without bound.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ._asgi import HttpError, Request

Drain = Callable[[], Awaitable[None]]


def flow_control(request: Request) -> Drain | None:
    """What to await after each part of a streamed body so that the stream waits for its
    client: nothing over HTTP/1 (``send()`` waits for the socket), the stream's buffer in
    hypercorn over HTTP/2.

    Raises:
        HttpError: 505, HTTP/2 served by something whose buffering is not known here.
    """
    if request.http_version != "2":
        return None
    drain = _hypercorn_drain(request)
    if drain is None:
        raise HttpError(
            505,
            "http2_not_supported",
            "this server cannot hold an event stream back for an HTTP/2 client, which could "
            "make it buffer without bound; ask for the stream over HTTP/1.1",
        )
    return drain


def _hypercorn_drain(request: Request) -> Drain | None:
    # hypercorn hands the app its HTTPStream's `app_send`; the stream's own `send` is its
    # protocol's `stream_send`, and the H2 protocol keeps one buffer per stream id.
    stream = getattr(request.send, "__self__", None)
    protocol = getattr(getattr(stream, "send", None), "__self__", None)
    buffers = getattr(protocol, "stream_buffers", None)
    if not isinstance(buffers, dict):
        return None
    drain = getattr(buffers.get(getattr(stream, "stream_id", None)), "drain", None)
    return drain if callable(drain) else None
