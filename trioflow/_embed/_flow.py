"""`flow_control`: what a streamed response awaits after each part over HTTP/2.

Over HTTP/2, hypercorn's ``send()`` does not wait for the client (`trioflow._server._http2`
explains, with measurements); the server waits on the stream's buffer in hypercorn instead,
which it finds behind the ``send`` hypercorn hands the app. A response inside Starlette gets
a ``send`` wrapped by the middleware (Starlette's error and exception middleware, FastAPI's),
each a function that calls the ``send`` it was given: hypercorn's is found behind those
closures. Where it is not (another server, or a middleware that passes the body on through a
buffer of its own, such as Starlette's ``BaseHTTPMiddleware``), an event stream over HTTP/2 is
refused with 505, as on the server, rather than buffered without bound.
"""

from __future__ import annotations

import inspect
from typing import Any

from .._server._asgi import Receive, Request, Scope, Send
from .._server._http2 import Drain
from .._server._http2 import flow_control as _flow_control

#: Most callables looked at behind ``send`` for hypercorn's own.
_MOST_WRAPPERS = 64


def flow_control(scope: Scope, receive: Receive, send: Send) -> Drain | None:
    """What to await after each part of the body so that the stream waits for its client:
    nothing over HTTP/1, the stream's buffer in hypercorn over HTTP/2.

    Raises:
        HttpError: 505, HTTP/2 where hypercorn's ``send`` cannot be found behind ``send``.
    """
    http_version = scope.get("http_version", "1.1")
    if http_version != "2":
        return None
    request = Request.from_scope(scope, receive, _hypercorn_send(send) or send)
    request.http_version = http_version
    return _flow_control(request)


def _hypercorn_send(send: Send) -> Send | None:
    """hypercorn's own ``send`` (a method of its stream, which has a ``stream_id``), found
    behind the closures that wrap it."""
    todo: list[Any] = [send]
    seen: set[int] = set()
    while todo and len(seen) < _MOST_WRAPPERS:
        candidate = todo.pop()
        if id(candidate) in seen:
            continue
        seen.add(id(candidate))
        if inspect.ismethod(candidate) and hasattr(candidate.__self__, "stream_id"):
            found: Send = candidate
            return found
        for cell in getattr(candidate, "__closure__", None) or ():
            try:
                content = cell.cell_contents
            except ValueError:  # a cell not yet filled
                continue
            if inspect.isfunction(content) or inspect.ismethod(content):
                todo.append(content)
    return None
