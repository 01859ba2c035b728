"""The SSE client of the serving scenarios: one httpx stream, read chunk by chunk, the same code
against trioflow's server and the anchor's.

It does as little per event as it can, so that the server rather than the client is what gets
measured: it splits the body into SSE messages, counts the ``Tick`` events by a substring of
their JSON envelope (both servers write ``"type":"Tick"`` compactly), and only when asked pulls
out each tick's write time (``"at":<perf_counter>``, also the same in both envelopes). Every
event in one chunk gets the chunk's arrival time, the moment the client could first see it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

import httpx
import trio

TICK = b'"type":"Tick"'
STOP = b'"type":"StopEvent"'
AT = re.compile(rb'"at":([-+0-9.eE]+)')
#: Generous, so that waiting for a gate or a slow phase never trips httpx's own timeouts; every
#: scenario is bounded as a whole instead (`_http_scenarios.TIME_LIMIT`).
TIMEOUT = httpx.Timeout(60.0)


class Reading:
    """What one client received from one run's stream."""

    def __init__(self, *, stamps: bool = False) -> None:
        self.ticks = 0
        #: Other events with data (the run's InputRequiredEvent, its StopEvent, ...).
        self.others = 0
        #: perf_counter when the first tick arrived, and when the StopEvent did.
        self.first = math.nan
        self.stopped = math.nan
        self.stamps = stamps
        #: With ``stamps``: per tick, its write time in the server and its arrival here.
        self.written: list[float] = []
        self.received: list[float] = []
        self._rest = b""

    def feed(self, chunk: bytes, now: float) -> None:
        messages = (self._rest + chunk).split(b"\n\n")
        self._rest = messages.pop()  # an incomplete message, or b""
        ticks = 0
        for message in messages:
            if TICK in message:
                ticks += 1
                if self.stamps:
                    found = AT.search(message)
                    if found is None:
                        raise ValueError(f"a tick without its write time: {message[:200]!r}")
                    self.written.append(float(found[1]))
                    self.received.append(now)
            elif b"data:" in message:  # not a comment (": ping")
                self.others += 1
                if STOP in message:
                    self.stopped = now
        if ticks and not self.ticks:
            self.first = now
        self.ticks += ticks

    @property
    def leftover(self) -> bytes:
        """Bytes after the last complete message (none once a stream has ended cleanly)."""
        return self._rest


async def read_stream(
    client: httpx.AsyncClient,
    path: str,
    reading: Reading,
    *,
    connected: Callable[[], object] | None = None,
    rate: float = 0.0,
) -> None:
    """Read the SSE stream at ``path`` to its end into ``reading``; call ``connected`` once the
    response has started (the server has attached this client to the run).

    With ``rate``, consume at most ``rate`` ticks per second from the first one on: after each
    chunk, sleep until the schedule has caught up with the ticks read so far. Reading nothing in
    the meantime is what makes the client slow: the socket fills and the server has to wait.
    """
    async with client.stream("GET", path, headers={"accept": "text/event-stream"}) as response:
        if response.status_code != 200:
            body = await response.aread()
            raise RuntimeError(f"GET {path}: {response.status_code} {body[:300]!r}")
        if connected is not None:
            connected()
        async for chunk in response.aiter_raw():
            reading.feed(chunk, time.perf_counter())
            if rate > 0 and reading.ticks:
                ahead = reading.first + reading.ticks / rate - time.perf_counter()
                if ahead > 0:
                    await trio.sleep(ahead)
    if reading.leftover.strip():
        raise RuntimeError(f"the stream ended inside a message: {reading.leftover[:200]!r}")
    if math.isnan(reading.stopped):
        raise RuntimeError(f"the stream at {path} ended without a StopEvent")
