"""`SyncContext`: the context of a plain ``def`` step, which runs in a worker thread.

It offers the methods of `Context` as plain blocking calls. Each one crosses into the run's
trio thread with `trio.from_thread`, running in the step task's own context, so backpressure,
routing and cancellation behave exactly as for an async step: a stream write waits in the thread
while the buffer is full, and once the run is cancelled every call raises `trio.Cancelled`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import trio

from .._events import Event
from .._retry import RetryInfo
from ._context import Context

_E = TypeVar("_E", bound=Event)


class SyncStore:
    """`Store` for thread code: the same data, with blocking methods."""

    def __init__(self, context: Context) -> None:
        self._store = context.store

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value stored under ``key``, or ``default``."""
        return trio.from_thread.run(self._store.get, key, default)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``."""
        trio.from_thread.run(self._store.set, key, value)


class SyncContext:
    """The context passed to a plain ``def`` step: `Context`'s methods as blocking calls.

    Annotate the parameter ``ctx: SyncContext`` so type checkers know the methods are not
    coroutines (``ctx: Context`` works at run time too). Every method raises `trio.Cancelled`
    once the run is cancelled, so the thread can finish promptly; the run waits for it.
    """

    def __init__(self, context: Context) -> None:
        self._context = context
        self.store = SyncStore(context)

    @property
    def run_id(self) -> str:
        """The id of this run."""
        return self._context.run_id

    @property
    def task_key(self) -> str:
        """`Context.task_key`: the key of the step execution under way."""
        return self._context.task_key

    def retry_info(self) -> RetryInfo:
        """`Context.retry_info`: where the step execution under way stands."""
        return self._context.retry_info()

    def write_event_to_stream(self, event: Event) -> None:
        """Put ``event`` on the stream, blocking this thread while the buffer is full."""
        trio.from_thread.run(self._context.write_event_to_stream, event)

    def send_event(self, event: Event, step: str | None = None) -> None:
        """Route ``event`` as `Context.send_event` does."""
        trio.from_thread.check_cancelled()
        trio.from_thread.run_sync(self._context.send_event, event, step)

    def collect_events(self, event: Event, expected: Sequence[type[Event]]) -> list[Event] | None:
        """Buffer and collect events as `Context.collect_events` does."""
        trio.from_thread.check_cancelled()
        return trio.from_thread.run_sync(self._context.collect_events, event, expected)

    def wait_for_event(
        self,
        event_type: type[_E],
        *,
        waiter_event: Event | None = None,
        requirements: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> _E:
        """Block this thread until a matching event arrives, as `Context.wait_for_event`."""

        async def wait() -> _E:
            return await self._context.wait_for_event(
                event_type, waiter_event=waiter_event, requirements=requirements, timeout=timeout
            )

        return trio.from_thread.run(wait)
