"""The few pieces of ASGI that the app needs: a request, JSON bodies and responses, and errors.

No web framework: the app is a plain ASGI callable, so hypercorn's trio worker drives it
directly and every `send` of a streamed body goes straight to the socket.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import attrs

from .._wire import dumps

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


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

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive, send: Send) -> Request:
        query = dict(reversed(parse_qsl(scope.get("query_string", b"").decode("latin-1"))))
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }
        return cls(scope["method"], scope["path"], query, headers, receive, send)

    async def body(self, limit: int) -> bytes:
        """Read the whole body, refusing one longer than ``limit`` bytes (413)."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
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
        """Read and parse a JSON body; an empty body is an empty object."""
        body = await self.body(limit)
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except ValueError as exc:  # bad JSON, bad UTF-8, or an integer too long to convert
            raise HttpError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise HttpError(400, "bad_json", "the body's JSON is nested too deeply") from None

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"application/json",
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Send a complete response."""
        await self.start_response(
            status,
            [
                (b"content-type", content_type),
                (b"content-length", b"%d" % len(body)),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        )
        await self.send({"type": "http.response.body", "body": body})

    async def respond_json(
        self, status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        await self.respond(status, dumps(payload), headers=headers)

    async def respond_error(self, error: HttpError) -> None:
        payload = {"error": {"code": error.code, "message": error.message}}
        await self.respond_json(error.status, payload, error.headers)

    async def start_response(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, *self.extra_headers],
            }
        )


def _too_large(limit: int) -> HttpError:
    return HttpError(
        413, "payload_too_large", f"the body is larger than the limit of {limit} bytes"
    )
