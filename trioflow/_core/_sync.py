"""`SyncContext`: the context of a plain ``def`` step, which runs in a worker thread.

It offers the methods of `Context` as plain blocking calls. Each one crosses into the run's
trio thread with `trio.from_thread`, running in the step task's own context, so backpressure,
routing and cancellation behave exactly as for an async step: a stream write waits in the thread
while the buffer is full, and once the run is cancelled every call raises `trio.Cancelled`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any, Generic, TypeVar

import trio

from .._events import Event, StartEvent
from .._retry import RetryInfo
from ._context import Context
from ._state_store import StateT

_E = TypeVar("_E", bound=Event)


class SyncStore(Generic[StateT]):
    """`Store` for thread code: the same state, with blocking methods."""

    def __init__(self, context: Context[StateT]) -> None:
        self._store = context.store

    @property
    def state_type(self) -> type[StateT]:
        """`Store.state_type`."""
        return self._store.state_type

    def get(self, path: str, default: Any = None) -> Any:
        """The value at ``path``, or ``default`` (`Store.get`)."""
        return trio.from_thread.run(self._store.get, path, default)

    def set(self, path: str, value: Any) -> None:
        """Put ``value`` at ``path`` (`Store.set`)."""
        trio.from_thread.run(self._store.set, path, value)

    def get_state(self) -> StateT:
        """A copy of the state (`Store.get_state`)."""
        return trio.from_thread.run(self._store.get_state)

    def set_state(self, state: StateT) -> None:
        """Replace the state with (a copy of) ``state`` (`Store.set_state`)."""
        trio.from_thread.run(self._store.set_state, state)

    def clear(self) -> None:
        """Reset the state to a new default one (`Store.clear`)."""
        trio.from_thread.run(self._store.clear)

    @contextmanager
    def edit_state(self) -> Iterator[StateT]:
        """``with ctx.store.edit_state() as state:``, as `Store.edit_state`: the block has
        the state to itself, and an exception out of it discards the edit.

        The edit is `Store.edit_state` itself, entered and left from this thread. Each
        crossing runs in the step's own task (the one waiting for this thread), so that task
        holds the store's lock while the thread changes the state, and releases it as the
        block ends, however it ends.
        """
        manager = self._store.edit_state()
        state = trio.from_thread.run(manager.__aenter__)
        try:
            yield state
        except BaseException as error:
            # Neither leaving it can wait (releasing a lock, discarding a draft), so a
            # cancelled run does not stop the lock from being released.
            trio.from_thread.run(manager.__aexit__, type(error), error, error.__traceback__)
            raise
        trio.from_thread.run(_leave_edit, manager)


async def _leave_edit(manager: AbstractAsyncContextManager[Any]) -> None:
    """Leave an edit whose block ended well, unless the step was cancelled meanwhile (its
    timeout, the run's end): then the edit is discarded, as an async step's would be at its
    next checkpoint, and the cancellation goes on into the thread."""
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
    except BaseException as error:
        await manager.__aexit__(type(error), error, error.__traceback__)
        raise
    await manager.__aexit__(None, None, None)


class SyncContext(Generic[StateT]):
    """The context passed to a plain ``def`` step: `Context`'s methods as blocking calls.

    Annotate the parameter ``ctx: SyncContext`` (``ctx: SyncContext[MyState]`` for typed
    state) so type checkers know the methods are not coroutines (``ctx: Context`` works at
    run time too). Every method raises `trio.Cancelled`
    once the run is cancelled, so the thread can finish promptly; the run waits for it.
    """

    def __init__(self, context: Context[StateT]) -> None:
        self._context = context
        self.store: SyncStore[StateT] = SyncStore(context)

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

    def run_workflow(
        self,
        workflow: Any,
        start_event: StartEvent | None = None,
        /,
        *,
        forward: bool | tuple[type[Event], ...] = False,
        ctx: Context[Any] | None = None,
        **fields: Any,
    ) -> Any:
        """`Context.run_workflow`, blocking this thread until the child run ends."""
        return trio.from_thread.run(
            functools.partial(
                self._context.run_workflow,
                workflow,
                start_event,
                forward=forward,
                ctx=ctx,
                **fields,
            )
        )

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
