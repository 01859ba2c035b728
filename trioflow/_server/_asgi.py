"""The few pieces of ASGI that the app needs: a request, JSON bodies and responses, and errors.

No web framework: the app is a plain ASGI callable, so hypercorn's trio worker drives it
directly and every `send` of a streamed body goes straight to the socket.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import attrs
import trio

from .._wire import BadJsonError, WireError, dumps, loads

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

#: Most bytes of a complete response sent in one message (see `Request.respond`).
PART = 64 * 1024

NOSNIFF = (b"x-content-type-options", b"nosniff")


class HttpError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


@attrs.define(eq=False)
class Request:
    """One HTTP request, as the app's routes see it."""

    method: str
    path: str
    #: Query parameters (the first value of each name).
    query: dict[str, str]
    #: Header names in lower case (the last value of each name).
    headers: dict[str, str]
    receive: Receive
    send: Send
    #: Headers every response to this request carries (CORS).
    extra_headers: Headers = attrs.field(factory=list)
    #: The response has begun: from now on only its body can follow.
    started: bool = False
    #: Seconds the body may take to arrive (`body`).
    body_timeout: float = math.inf
    #: The scope's ``http_version``: ``"1.1"``, ``"2"``...
    http_version: str = "1.1"
    #: Where the app is mounted (``"/flows"``; ``""`` at the root): the scope's ``root_path``,
    #: which `path` is relative to.
    root_path: str = ""
    #: The query string as sent, for parameters given more than once (`query_all`).
    query_string: str = ""
    #: Errors also carry their message as ``"detail"``, where LlamaIndex clients look for it
    #: (`_llama`'s routes).
    detail_errors: bool = False

    @property
    def head(self) -> bool:
        """A ``HEAD`` request: answered as ``GET`` is, without the body."""
        return self.method == "HEAD"

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive, send: Send) -> Request:
        query_string = scope.get("query_string", b"").decode("latin-1")
        query = dict(reversed(parse_qsl(query_string)))
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }
        root_path = scope.get("root_path", "").rstrip("/")
        path = _route_path(scope["path"], root_path)
        return cls(
            scope["method"],
            path,
            query,
            headers,
            receive,
            send,
            root_path=root_path,
            query_string=query_string,
        )

    def query_all(self, name: str) -> list[str]:
        """Every value of the query parameter ``name``, in order (``?a=1&a=2``)."""
        return [value for key, value in parse_qsl(self.query_string) if key == name]

    async def body(self, limit: int) -> bytes:
        """Read the whole body, refusing one longer than ``limit`` bytes (413) or one that has
        not arrived within `body_timeout` seconds (408: a request head without its body would
        otherwise hold its connection for as long as the client likes)."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        with trio.move_on_after(self.body_timeout):
            return await self._read_body(limit)
        raise HttpError(
            408,
            "body_timeout",
            f"the body did not arrive within {self.body_timeout:g} s (body_timeout)",
        )

    async def _read_body(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "disconnected", "the client left before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def json(self, limit: int) -> Any:
        """Read and parse a JSON body strictly (`loads`); an empty body is an empty object.
        Bad JSON is a 400 ``bad_json``, valid JSON holding a value no field takes a 422
        ``unsupported_value``."""
        body = await self.body(limit)
        if not body.strip():
            return {}
        try:
            return loads(body)
        except BadJsonError as error:
            raise HttpError(400, "bad_json", f"the body is not valid JSON: {error}") from None
        except WireError as error:
            # Valid JSON, but a value no field of any route takes (a lone surrogate, an int
            # too long to convert): refused before the route reads the body, by one code.
            raise HttpError(422, "unsupported_value", str(error)) from None

    async def respond(
        self,
        status: int,
        body: bytes | Sequence[bytes],
        content_type: bytes = b"application/json",
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Send a complete response: ``body``, or the concatenation of its parts.

        A large body goes out in pieces of `PART` bytes (the last one shorter), each sent once
        the client has taken the one before (over HTTP/2, once hypercorn's buffer has
        drained), so a client that stops reading holds one piece, not a copy of the whole:
        the parts of a body that many requests share (a run's result) are copied a piece at a
        time. Small parts go out together (``GET /handlers`` has three per run): a message
        each would cost a write to the socket each.
        """
        parts = [body] if isinstance(body, bytes) else list(body)
        size = sum(len(part) for part in parts)
        await self.start_response(
            status,
            [
                (b"content-type", content_type),
                (b"content-length", b"%d" % size),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        )
        if self.head or size <= PART:
            body = b"" if self.head else b"".join(parts)
            await self.send({"type": "http.response.body", "body": body})
            return
        drain = self._drain()
        sent = 0
        for piece in _pieces(parts):
            sent += len(piece)
            more = sent < size
            await self.send({"type": "http.response.body", "body": piece, "more_body": more})
            if more and drain is not None:
                await drain()

    def _drain(self) -> Callable[[], Awaitable[None]] | None:
        from ._http2 import flow_control  # which imports this module

        try:
            return flow_control(self)
        except HttpError:  # HTTP/2 under another server: sent as it is
            return None

    async def respond_json(
        self, status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        await self.respond(status, dumps(payload), headers=headers)

    async def respond_error(self, error: HttpError) -> None:
        payload: dict[str, Any] = {"error": {"code": error.code, "message": error.message}}
        if self.detail_errors:
            payload["detail"] = error.message
        await self.respond_json(error.status, payload, error.headers)

    async def start_response(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                # nosniff: a browser takes each response as its declared type, never guesses.
                "headers": [*headers, *self.extra_headers, NOSNIFF],
            }
        )


def _pieces(parts: Iterable[bytes]) -> Iterator[bytes]:
    """The concatenation of ``parts`` in pieces of `PART` bytes, the last one shorter: a copy
    of one piece at a time."""
    piece = bytearray()
    for part in parts:
        view = memoryview(part)
        while len(view) >= PART - len(piece):
            cut = PART - len(piece)
            if piece:
                piece += view[:cut]
                yield bytes(piece)
                piece.clear()
            else:
                yield bytes(view[:cut])
            view = view[cut:]
        piece += view
    if piece:
        yield bytes(piece)


def _route_path(path: str, root_path: str) -> str:
    """``path`` relative to where the app is mounted. ASGI gives the full path with the mount
    point in ``root_path`` (Starlette's ``Mount`` does: ``/flows/runs`` with ``/flows``); a
    server that strips the prefix itself gives a path that does not start with it, taken as
    it is."""
    if not root_path or not path.startswith(root_path):
        return path
    rest = path[len(root_path) :]
    if rest and not rest.startswith("/"):  # /flowsy is not under /flows
        return path
    return rest or "/"


def _too_large(limit: int) -> HttpError:
    return HttpError(
        413, "payload_too_large", f"the body is larger than the limit of {limit} bytes"
    )
