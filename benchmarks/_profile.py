"""Where a hop's (or a streamed event's) time goes: trio's scheduler, trio calls made by the
tasks, trioflow's runtime, and the program's own code, by sampling the stack.

A profiling timer (``setitimer(ITIMER_PROF)``: every ``INTERVAL`` seconds of the process's CPU
time) raises SIGPROF; Python runs the handler between two bytecodes of the main thread, with
the frame it interrupted, which is filed by where it is. (A sampler thread would not do: it gets
the GIL mostly when trio releases it in its zero-timeout ``epoll_wait``, so nearly every sample
would land there.) Each signal also wakes trio's wakeup socket, a cost of about one wake-up per
``INTERVAL`` that the figures include. The categories:

- ``scheduler``: no task is running: trio's run loop (``run`` and ``unrolled_run``, the run
  queue, the I/O manager's poll with a zero timeout) and what it calls before or after a
  task's step (``outcome`` sending the value in);
- ``trio_in_task``: a task is running (a coroutine frame stands between the innermost frame
  and the run loop) and the innermost frame is trio's (``reschedule``,
  ``wait_task_rescheduled``, checkpoints, cancel scopes) or ``outcome``'s;
- ``runtime``: a task is running trioflow's code (the worker loop, routing, the context);
- ``user``: a task is running the program's own code (the steps, the floor's loop).

Standard-library and generated code counts as its caller's: trio's ``"hook" in
self.instruments`` (a ``UserDict``, so Python code) as trio's, attrs' ``__init__`` of an event
as the code that made it.

The shares are of all samples, in percent; ``top`` lists the innermost functions sampled most
(``[[share, "file:function"], ...]``, the first 12). The figures are shares, not times: the
sampling slows the run a little (``rate`` is reported, a little lower than without it).

Scenario ``profile``, variant ``hop``: ``floor`` profiles the best bare-trio hop
(`_floor._handoff`), ``trioflow`` its ping-pong (`_trioflow._routing`), ``n`` hops each; variant
``stream``: the floor's stream (`_floor._handoff_stream`) and trioflow's stream
(`_trioflow._stream`), ``n`` events each. Variant ``driver`` (the floor's) cross-checks the
sampled share another way: the floor hop's two coroutines, resumed by a minimal hand-written
loop (`driven_hops`) instead of trio; the time per hop it leaves is what the hop costs without
trio's scheduler, traps and ``outcome`` values.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Coroutine, Generator
from types import CodeType, FrameType
from typing import Any

import trio

from benchmarks._common import Metrics, Params, even

#: Seconds of CPU time between samples.
INTERVAL = 0.0005
#: The innermost functions listed in ``top``.
TOP = 12

_TRIO = os.path.dirname(trio.__file__) + os.sep
_OUTCOME = os.path.dirname(sys.modules["outcome"].__file__ or "") + os.sep
_STDLIB = os.path.dirname(os.__file__) + os.sep
_SITE = os.path.dirname(os.path.dirname(trio.__file__)) + os.sep
_RUN = os.path.join(os.path.dirname(trio.__file__), "_core", "_run.py")
#: The functions of trio's run loop: `trio.run` and the generator it drives.
_LOOP = frozenset({"run", "unrolled_run"})
_COROUTINE = 0x80 | 0x100  # CO_COROUTINE | CO_ITERABLE_COROUTINE


def _trioflow_dir() -> str:
    try:
        import trioflow
    except ModuleNotFoundError:
        return "\0"  # matches no file
    return os.path.dirname(trioflow.__file__) + os.sep


_TRIOFLOW = _trioflow_dir()


def _where(code: CodeType) -> str:
    file = code.co_filename
    for folder in (_TRIO, _OUTCOME, _TRIOFLOW):
        if file.startswith(folder):
            return f"{os.path.basename(os.path.dirname(folder))}/{file[len(folder) :]}"
    return os.path.basename(file)


def _borrowed(file: str) -> bool:
    """Code that counts as its caller's: the standard library (trio's `Instruments` is a
    ``UserDict``, whose ``in`` runs Python code) and generated code (attrs' ``__init__``)."""
    return file.startswith("<") or (file.startswith(_STDLIB) and not file.startswith(_SITE))


def classify(frame: FrameType) -> str:
    """The category of a sample whose innermost frame is ``frame``."""
    current: FrameType | None = frame
    while current is not None and _borrowed(current.f_code.co_filename):
        current = current.f_back
    owner = frame if current is None else current
    innermost = owner.f_code.co_filename
    while current is not None:
        code = current.f_code
        if code.co_flags & _COROUTINE:
            break  # a task's coroutine (or one it awaits)
        if code.co_name in _LOOP and code.co_filename == _RUN:
            return "scheduler"
        current = current.f_back
    if current is None:
        return "outside"  # before or after trio.run: not part of the hops
    if innermost.startswith((_TRIO, _OUTCOME)):
        return "trio_in_task"
    if innermost.startswith(_TRIOFLOW):
        return "runtime"
    return "user"


def sampled(run: Callable[[], Metrics]) -> Metrics:
    """Run ``run`` (in the main thread) with the profiling timer; its metrics plus the shares."""
    counts: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()

    def sample(signum: int, frame: FrameType | None) -> None:
        if frame is None:
            return
        category = classify(frame)
        if category == "outside":
            return
        counts[category] += 1
        code = frame.f_code
        functions[f"{_where(code)}:{code.co_name}"] += 1

    previous = signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)
    try:
        metrics = run()
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, previous)
    total = sum(counts.values()) or 1
    shares: dict[str, Any] = {
        f"{c}_pct": 100 * counts[c] / total
        for c in ("scheduler", "trio_in_task", "runtime", "user")
    }
    shares["trio_pct"] = shares["scheduler_pct"] + shares["trio_in_task_pct"]
    shares["samples"] = sum(counts.values())
    shares["top"] = [[round(100 * k / total, 1), name] for name, k in functions.most_common(TOP)]
    return {**metrics, **shares}


@types.coroutine
def _park() -> Generator[None, int, int]:
    value = yield
    return value


def driven_hops(n: int) -> Metrics:
    """The floor hop without trio: two coroutines hand the count to each other through a run
    queue that a plain loop drains, resuming each with ``coro.send(value)``."""
    runq: list[tuple[Coroutine[Any, Any, None], int]] = []
    tasks: list[Coroutine[Any, Any, None]] = []

    async def bounce(other: int) -> None:
        while True:
            i = await _park()
            if i < 0:
                return
            if i >= n:
                runq.append((tasks[other], -1))
                return
            runq.append((tasks[other], i + 1))

    tasks += [bounce(1), bounce(0)]
    for task in tasks:
        task.send(None)  # runs to its first park
    runq.append((tasks[0], 0))
    start = time.perf_counter()
    while runq:
        batch = runq[:]
        runq.clear()
        for task, value in batch:
            try:  # noqa: SIM105  (suppress() would cost a call per hop; a try costs nothing)
                task.send(value)
            except StopIteration:
                pass
    elapsed = time.perf_counter() - start
    return {"hops": n, "seconds": elapsed, "rate": n / elapsed}


def floor(p: Params) -> Metrics:
    from benchmarks._floor import _handoff, _handoff_stream

    if p.variant == "driver":
        return driven_hops(even(p.n))
    if p.variant == "stream":
        return sampled(lambda: trio.run(_handoff_stream, p.n))
    return sampled(lambda: trio.run(_handoff, even(p.n)))


def trioflow(p: Params) -> Metrics:
    from benchmarks._trioflow import _routing, _stream

    if p.variant == "stream":
        return sampled(lambda: trio.run(_stream, p.n))
    return sampled(lambda: trio.run(_routing, even(p.n)))
