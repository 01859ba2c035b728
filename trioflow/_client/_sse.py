"""Server-Sent Events, read incrementally and without I/O (the WHATWG parsing rules).

Bytes go in as they arrive, split anywhere; complete messages come out. Lines end with CRLF,
LF or CR; a line starting with ``:`` is a comment (the server's ``: ping`` keep-alive); a blank
line ends a message, which is dispatched only if it has data, so a message cut off by a
dropped connection is never dispatched. ``retry:`` takes effect as soon as its line is read,
as a browser's EventSource does, so a hint in a message that never completes still counts.
"""

from __future__ import annotations

import re

import attrs

_LINE_END = re.compile(rb"\r\n|\r|\n")


@attrs.frozen
class Message:
    """One dispatched message."""

    #: The ``event:`` field; ``"message"`` when there is none.
    event: str
    #: The ``data:`` lines, joined with ``\\n``.
    data: str


@attrs.define(eq=False)
class SseParser:
    """Feed it bytes (`feed`); it returns the messages they complete."""

    #: The reconnection delay the stream asked for, in milliseconds (None until it does).
    retry_ms: int | None = None
    _buffer: bytes = b""
    #: The last chunk ended with CR: a LF at the start of the next one ends no other line.
    _after_cr: bool = False
    _event: str = ""
    _data: list[str] = attrs.field(factory=list)

    def feed(self, chunk: bytes) -> list[Message]:
        """Take the next bytes of the stream; return the messages they complete, in order."""
        if not chunk:  # it cannot tell whether a CR ended a line or began a CRLF
            return []
        buffer = self._buffer + chunk
        start = 1 if self._after_cr and buffer.startswith(b"\n") else 0
        self._after_cr = False
        messages: list[Message] = []
        while (end := _LINE_END.search(buffer, start)) is not None:
            self._line(buffer[start : end.start()], messages)
            start = end.end()
            if end.group() == b"\r" and start == len(buffer):
                self._after_cr = True  # a CRLF split between two chunks
        self._buffer = buffer[start:]
        return messages

    def _line(self, raw: bytes, messages: list[Message]) -> None:
        if not raw:
            if self._data:
                messages.append(Message(self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if raw.startswith(b":"):  # a comment: the keep-alive
            return
        line = raw.decode("utf-8", "replace")
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        # `id:` repeats the envelope's seq, which is what the client goes by.
