"""`cancel_pending`: whether a cancel point must raise, asked without a coroutine.

Every public async function of trioflow is a cancel point. trio's `checkpoint_if_cancelled` is
one, but it is a coroutine: awaiting it costs about 250 ns when nothing is cancelled, which on
the stream's hot path (a write and a read per event) was a quarter of what an event cost. So the
hot paths ask `cancel_pending()` first, a plain call that reads what that coroutine reads first,
and await trio's coroutine only when it answers yes; trio then raises `trio.Cancelled` (or
delivers a pending ``KeyboardInterrupt`` to the main task) exactly as before::

    if cancel_pending():
        await checkpoint_if_cancelled()

The answer comes from trio's private attributes: the current task's cancel status, its runner's
main task and pending ``KeyboardInterrupt``, which trio has kept since 0.11 (2019). In case a
release of trio renames them, they are looked for at import, and if one is missing
`cancel_pending` always answers yes: every cancel point awaits trio's own coroutine again,
slower and the same (`FAST` says which; a test pins it for the trio that CI installs).
"""

from __future__ import annotations

from collections.abc import Callable


def _always() -> bool:
    return True


def _fast_check() -> Callable[[], bool] | None:
    """The fast `cancel_pending`, if this trio has the attributes it reads."""
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT, CancelStatus, Runner, Task
    except ImportError:
        return None
    fields = {
        Task: {"_cancel_status", "_runner"},
        CancelStatus: {"effectively_cancelled"},
        Runner: {"main_task", "ki_pending"},
    }
    for cls, names in fields.items():
        declared = {field.name for field in getattr(cls, "__attrs_attrs__", ())}
        if not names <= declared:
            return None
    context = GLOBAL_RUN_CONTEXT

    def cancel_pending() -> bool:
        """Whether the calling task's next cancel point raises (or delivers a pending
        ``KeyboardInterrupt``): `trio.lowlevel.checkpoint_if_cancelled`'s own test."""
        task = context.task
        return task._cancel_status.effectively_cancelled or (
            task is task._runner.main_task and task._runner.ki_pending
        )

    return cancel_pending


_fast = _fast_check()
#: Whether `cancel_pending` reads trio's state (True) or always answers yes (a trio without the
#: attributes it reads).
FAST = _fast is not None
cancel_pending: Callable[[], bool] = _always if _fast is None else _fast
