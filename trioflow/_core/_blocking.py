"""`watch_step`: warn when an async step holds the trio event loop too long.

An ``async`` step that calls ``time.sleep`` or computes for a while without reaching a
checkpoint stops the whole trio thread: other steps, the stream and every timeout wait for it.
What users notice is "my events arrive late"; this module turns that into one warning naming
the step, once per step, with what to do about it.

How, and why this way:

- **Nothing on the per-event path.** A trio `Instrument` would see every task step, but its
  hooks would then run on every step-to-step hop (about 4 µs, benchmarked). Instead a watchdog
  thread measures the loop from outside: it queues a probe with `TrioToken.run_sync_soon` and
  the probe, running in the trio thread, notes how long it waited. A loop that keeps turning
  runs it within microseconds to milliseconds. ``watch_step`` runs once per workflow run start
  per step and costs a `RunVar` read and a dict lookup once its step is known.
- **Who blocked.** A probe still pending at the watchdog's next wake-up means the loop has
  been busy for an interval, so from then on every wake-up samples the trio thread's stack
  (`sys._current_frames`) for a frame of a watched step's code, walking outwards so that a
  blocking helper called by the step counts for the step. Each moment of the stall is
  credited to the step execution seen in the nearest sample (a sampling profiler's estimate):
  credits are kept per execution (the step's frame, held until the stall's probe runs). A step
  is reported when its executions seen in two samples or more, each of which held the loop
  for an interval at least, were credited more than its threshold in all: one long block, or
  eight workers of a step each calling a blocking client for 60 ms in one turn of the loop.
  Executions seen in one sample only count for nothing: thousands of brief runs of one step in
  one long turn (10,000 runs started at once) are no execution that held the loop. A step that
  merely happens to be running during a stall caused by something else gets only the moments
  around its own samples.
- **Garbage collection is nobody's step.** A collection runs in the thread whose allocation
  triggers it and stops that thread meanwhile; a full (gen 2) collection of a large heap takes
  100 ms and more, and the step running then, often one that allocates a lot, would be blamed
  for a pause that is the whole heap's, which the report's advice would not cure (a `def` step
  collecting in its worker thread would still hold the GIL). So stalls and credits are measured
  on a clock that stands still while the trio thread collects: `time.monotonic` less the time
  spent in the trio thread's collections, which a `gc.callbacks` entry times (its "start" and
  "stop" phases). A collection then adds nothing to a stall nor to any step's credit, and a
  sample taken during one (when a finalizer lets the watchdog in) brackets no time. The entry
  exists only while a detector does (added at its start, removed at its stop) and runs on every
  collection of every thread, gen 0 included, so it is a thread-id comparison and, in the trio
  thread, one time reading and one assignment. Collections in other threads are not discounted:
  the trio thread may be idle or really blocked meanwhile; under the GIL one can still delay a
  step computing in the trio thread (rarely: collections mostly run where most is allocated).
  Nor is blocking code in a finalizer run by a collection (``__del__``, weakref callbacks)
  reported: it is counted as collection time.
- **An idle loop is left alone.** When the trio thread sits in trio's I/O wait it is idle and
  cannot be blocked, so no probe is sent. Besides saving the wake-ups this matters for tests:
  trio autojumps a `MockClock` with ``autojump_threshold > 0``, and wakes
  ``wait_all_tasks_blocked(cushion)``, only after the loop has been idle that long without any
  wake-up, so a probe every interval would stall them forever. Probes never touch trio's clock
  (the watchdog uses `time.monotonic` and a `threading.Event`), so virtual time is unaffected.
- **One detector per trio run**, made by the first ``watch_step`` of the run and kept in a
  `RunVar`, so runs one after another or in different threads never mix. A system task stops
  and joins the watchdog thread when the run ends; the thread is a daemon and also stops by
  itself once `run_sync_soon` says the run has finished or the trio thread is gone.
- **Never crash the run.** The probe runs as a `run_sync_soon` callback, where any exception
  is a `trio.TrioInternalError`. It logs the report on the ``trioflow`` logger, then warns, and
  swallows what `warnings` raises: under ``-W error`` (as in this project's tests) the warning
  becomes an exception, and the log line has already told.

Resolution: the watchdog wakes every ``threshold / 4`` (at most 200 times a second), so a stall
is noticed up to one interval after it began and the reported duration may be short by that
much. Stalls just above the threshold may go unreported; from 1.25 thresholds on they are
(measured: at 0.1 s, every block of 0.125 s and more was reported, none of 0.09 s). A stall that
never ends (a step that never returns) is not reported, since the probe never runs.

Cost: nothing per event and nothing while the loop is idle. Each wake-up of the watchdog takes
the GIL from the trio thread once; on a loop saturated with task switches that measured about
1% (a memory-channel ping-pong, with the default 0.1 s threshold), within noise at 0.4 s. The
`gc.callbacks` entry adds about 1 µs to each collection, most of it CPython's cost of calling
any callback; on a loop doing nothing but allocate cyclic garbage (a gen 0 collection every
~50 µs) that measured 1 to 2%, and nothing measurable on ordinary code.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import sys
import threading
import time
import types
import warnings
from typing import Literal

import attrs
import trio

from ._log import log

DEFAULT_THRESHOLD = 0.1
"""Seconds an async step may hold the event loop before trioflow warns, unless told otherwise."""

WATCHDOG_THREAD_NAME = "trioflow-loop-watchdog"
"""The name of every detector's watchdog thread (one per trio run with watched steps)."""

# Probing more often than this costs more than it tells: below ~20 ms thresholds the detector
# becomes coarser rather than busier.
_MIN_INTERVAL = 0.005

# Bound once: `_on_gc` runs on every garbage collection of the process, gen 0 included.
_get_ident = threading.get_ident
_monotonic = time.monotonic

# A trio thread whose innermost frame is trio's I/O wait (`get_events` of the epoll, kqueue or
# Windows I/O manager) is idle. Matched by name so that a trio release that renames it only
# costs the optimisation (the loop is then probed while idle too), never a false report.
_TRIO_DIR = os.path.dirname(trio.__file__) + os.sep


class TrioflowWarning(UserWarning):
    """Base class of the warnings trioflow emits."""


class LoopBlockedWarning(TrioflowWarning):
    """An async step held the event loop longer than its workflow's threshold."""


@attrs.define(eq=False)
class _Step:
    """A watched step. Compared and hashed by identity: it is part of a probe's credits' keys."""

    code: types.CodeType
    workflow: str
    name: str
    threshold: float
    # The step's module (``__name__``), learnt from a stack sample, so that warning filters
    # that name a module match it; until then `warnings` derives one from the file name.
    module: str | None = None


#: What a stack sample blames: a watched step, and its frame (which execution of it). The frame
#: itself, not its id: a finished execution's frame may be freed and its id reused by the next.
#: Only a stall's samples hold frames, and only until its probe runs.
_Culprit = tuple[_Step, types.FrameType]

_DETECTOR: trio.lowlevel.RunVar[_Detector | None] = trio.lowlevel.RunVar(
    "trioflow.loop_detector", default=None
)


def watch_step(code: types.CodeType, *, workflow: str, step: str, threshold: float) -> None:
    """Report, once, blocking of the trio thread by a frame of ``code`` for over ``threshold``.

    Called from inside a trio run (in the trio thread), once per run start for each async step;
    cheap and idempotent: a dict lookup when ``code`` is already watched in this trio run. The
    first call of a trio run starts its detector, which ends with the run. If ``code`` is
    watched again with a smaller threshold (another workflow sharing the step function), the
    smaller one and its names apply from then on. Reports are made once per code object per
    trio run, as a `LoopBlockedWarning` pointing at the step's definition and a WARNING on the
    ``trioflow`` logger with the fields ``workflow``, ``step``, ``duration`` (seconds the step
    held the loop) and ``threshold``.

    Args:
        code: the step function's ``__code__``.
        workflow: the workflow's name, for the report.
        step: the step's name, for the report.
        threshold: seconds the step may hold the event loop; ``math.inf`` watches nothing.

    Raises:
        ValueError: ``threshold`` is not a positive number.
        RuntimeError: not called inside a trio run.
    """
    detector = _DETECTOR.get()
    if detector is not None:
        known = detector.steps.get(id(code))
        if known is not None and known.threshold <= threshold:
            return
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not threshold > 0:
        raise ValueError(f"threshold must be a positive number of seconds, got {threshold!r}")
    if threshold == math.inf:
        return
    watched = _Step(code=code, workflow=workflow, name=step, threshold=float(threshold))
    if detector is None:
        _Detector.start(watched)
    else:
        detector.watch(watched)


class _Detector:
    """The loop-blocking detector of one trio run: a watchdog thread and the probe it sends.

    The watchdog thread writes the probe state and the trio thread (the probe) takes it; both
    do so under ``_lock``, held only for a few assignments. ``steps``, ``_interval``,
    ``_min_threshold`` and ``_gc`` are written by the trio thread only and read by the watchdog
    with single dict lookups and attribute reads, which are atomic. `_on_gc` takes no lock: it
    may run in the trio thread at any allocation, ``_lock`` held or not.
    """

    def __init__(self, token: trio.lowlevel.TrioToken, trio_thread: int) -> None:
        # Keyed by id(code): hashing a code object hashes its contents, and identity is what
        # "once per code object" means. The _Step holds the code, so the id cannot be reused
        # by another object while it is a key.
        self.steps: dict[int, _Step] = {}
        self._token = token
        self._trio_thread = trio_thread
        self._min_threshold = math.inf
        self._interval = math.inf
        self._reported: set[int] = set()  # ids of reported codes; trio thread only
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=WATCHDOG_THREAD_NAME, daemon=True)
        self._lock = threading.Lock()
        # The probe in flight, if any: when it was queued, the latest stack sample (its time
        # and the watched step on the stack then, if any) and the seconds credited so far.
        self._probe_sent_at: float | None = None
        self._last_sample: tuple[float, _Culprit | None] = (0.0, None)
        self._credits: dict[_Culprit, float] = {}
        #: How many samples of the stall saw each execution.
        self._seen: dict[_Culprit, int] = {}
        # Seconds the trio thread has spent in finished garbage collections, and when the one
        # it is running began (None if none). Written by `_on_gc` in the trio thread only, each
        # time as a new tuple, so that `_clock` reads a consistent pair without a lock.
        self._gc: tuple[float, float | None] = (0.0, None)

    @classmethod
    def start(cls, first: _Step) -> None:
        """Make, register and start the current trio run's detector, watching ``first``.
        Does nothing once the run is shutting down and can no longer start one."""
        detector = cls(trio.lowlevel.current_trio_token(), threading.get_ident())
        detector.watch(first)  # before the thread starts: it waits for an interval first
        try:
            trio.lowlevel.spawn_system_task(
                detector._stop_at_end_of_run, name="trioflow loop-blocking detector"
            )
        except RuntimeError:  # the system nursery is closed: the run is ending
            return
        _DETECTOR.set(detector)
        gc.callbacks.append(detector._on_gc)
        # Started here rather than in the system task: the step about to run may block before
        # that task first runs.
        detector._thread.start()

    def watch(self, step: _Step) -> None:
        """Watch ``step`` (trio thread only)."""
        self.steps[id(step.code)] = step
        self._min_threshold = min(self._min_threshold, step.threshold)
        self._interval = max(_MIN_INTERVAL, self._min_threshold / 4)

    async def _stop_at_end_of_run(self) -> None:
        # System tasks are cancelled when the run's main task is done; no trio timer involved.
        try:
            await trio.sleep_forever()
        finally:
            self._stop()

    def _stop(self) -> None:
        self._stopping.set()
        self._forget_gc()
        # Joining makes "no watchdog outlives its run" hold when trio.run returns. The thread
        # wakes at once; the timeout only bounds a pathological case (it is a daemon anyway).
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def _forget_gc(self) -> None:
        """Remove `_on_gc` from `gc.callbacks`; idempotent, from either thread."""
        with contextlib.suppress(ValueError):  # already removed (by the other thread)
            gc.callbacks.remove(self._on_gc)  # bound methods of one object compare equal

    # --- garbage collections ---------------------------------------------------------------

    def _on_gc(self, phase: Literal["start", "stop"], info: dict[str, int]) -> None:
        """`gc.callbacks` entry: time the trio thread's collections.

        Called in the thread that runs the collection, on every collection of every thread
        while this detector lives, so it does as little as possible. A "stop" without its
        "start" (installed mid-collection) is ignored."""
        if _get_ident() == self._trio_thread:
            spent, began = self._gc
            if phase == "start":
                self._gc = (spent, _monotonic())
            elif began is not None:
                self._gc = (spent + _monotonic() - began, None)

    def _clock(self) -> float:
        """`time.monotonic` less the time the trio thread has spent collecting garbage, the
        current collection included: the clock that stalls and credits are measured on. It
        stands still while the trio thread collects; either thread may read it."""
        while True:
            before = self._gc
            now = _monotonic()
            after = self._gc
            # A collection that started or ended between the reads would make ``now`` and the
            # pair disagree by up to its whole length; `before` keeps the old tuple alive, so
            # `is` tells whether `_on_gc` replaced it. It almost never did: read again if so.
            if before is after:
                break
        spent, began = after
        if began is not None:
            spent += now - began
        return now - spent

    # --- the watchdog thread ---------------------------------------------------------------

    def _watch(self) -> None:
        try:
            while not self._stopping.wait(self._interval) and self._tick():
                pass
        except Exception:  # a bug here must not go unnoticed, nor kill anything but this thread
            log(
                logging.ERROR,
                "trioflow's loop-blocking detector stopped after an error",
                exc_info=True,
            )
        finally:
            # Normally `_stop` has done it; this covers a run that ended without its system
            # task's cleanup, so that gc.callbacks never keeps a dead detector.
            self._forget_gc()

    def _tick(self) -> bool:
        """One wake-up: sample the trio thread, then queue a probe or credit the pending one.
        False once the run is over."""
        frame = sys._current_frames().get(self._trio_thread)
        if frame is None:  # the trio thread has exited, so has its run
            return False
        now = self._clock()
        code = frame.f_code
        idle = code.co_name == "get_events" and code.co_filename.startswith(_TRIO_DIR)
        culprit = None if idle else self._culprit(frame)
        # Holding on to the top frame while waiting would keep its locals alive for an interval
        # (a culprit's frame is held only while the loop stalls).
        del frame, code
        with self._lock:
            if self._probe_sent_at is not None:
                # Pending since the last wake-up: the loop has been busy for a whole interval.
                last_at, last = self._last_sample
                half = (now - last_at) / 2  # each half goes to the nearer sample
                if last is not None:
                    self._credits[last] = self._credits.get(last, 0.0) + half
                if culprit is not None:
                    self._credits[culprit] = self._credits.get(culprit, 0.0) + half
                    self._seen[culprit] = self._seen.get(culprit, 0) + 1
                self._last_sample = (now, culprit)
                return True
            if idle:
                return True
            # New dicts rather than clear(): the previous probe may still be reading its own.
            self._probe_sent_at, self._last_sample, self._credits = now, (now, culprit), {}
            self._seen = {} if culprit is None else {culprit: 1}
        try:
            self._token.run_sync_soon(self._probe)
        except trio.RunFinishedError:
            return False
        return True

    def _culprit(self, frame: types.FrameType | None) -> _Culprit | None:
        """The innermost watched step on the stack that ``frame`` tops, if any, with its
        frame (which execution of it).

        The trio thread may run on while this walks (the GIL can switch between bytecodes);
        frames that have finished keep their ``f_back``, so the walk stays valid and is at
        worst one sample stale."""
        steps = self.steps
        while frame is not None:
            step = steps.get(id(frame.f_code))
            if step is not None:
                if step.module is None:
                    module = frame.f_globals.get("__name__")
                    step.module = module if isinstance(module, str) else None
                return step, frame
            frame = frame.f_back
        return None

    # --- the trio thread ---------------------------------------------------------------------

    def _probe(self) -> None:
        """Runs in the trio thread when the loop gets to it; reports the steps that held it."""
        ran_at = self._clock()
        with self._lock:
            sent_at, (last_at, last), credits, seen = (
                self._probe_sent_at,
                self._last_sample,
                self._credits,
                self._seen,
            )
            self._probe_sent_at = None
        try:
            if sent_at is None or ran_at - sent_at <= self._min_threshold:
                return
            if last is not None:  # the tail of the stall goes to the latest sample
                # (negative if that sample was taken after ran_at, just before the lock)
                credits[last] = credits.get(last, 0.0) + max(0.0, ran_at - last_at)
            # A step's executions seen in two samples or more held the loop an interval each;
            # one seen once may have run for a moment of its interval (one of thousands of
            # brief runs of the step in one long turn of the loop), and counts for nothing.
            held_by: dict[_Step, float] = {}
            for (step, frame), held in credits.items():
                if seen.get((step, frame), 0) >= 2:
                    held_by[step] = held_by.get(step, 0.0) + held
            for step, held in held_by.items():
                if held > step.threshold and id(step.code) not in self._reported:
                    self._reported.add(id(step.code))
                    _report(step, held)
        except Exception:  # an exception here would be a TrioInternalError: never for a warning
            log(logging.ERROR, "trioflow's loop-blocking detector failed", exc_info=True)


def _report(step: _Step, held: float) -> None:
    message = (
        f"step {step.name!r} of workflow {step.workflow!r} held the trio event loop for about "
        f"{held:.2f} s without reaching a checkpoint (threshold {step.threshold:g} s), "
        f"delaying everything else on the loop; make it a plain `def` step, which runs in a "
        f"worker thread, or move the blocking call into `await trio.to_thread.run_sync(...)`"
    )
    code = step.code
    fields = {
        "workflow": step.workflow,
        "step": step.name,
        "duration": held,
        "threshold": step.threshold,
    }
    log(
        logging.WARNING,
        "%s:%d: %s",
        code.co_filename,
        code.co_firstlineno,
        message,
        extra=fields,
    )
    # warn_explicit rather than a stacklevel: the probe runs from trio's run loop, so no frame
    # of the caller's stack is the step; the useful location is the step's definition.
    with contextlib.suppress(Exception):  # -W error raises it here; the log line has told
        warnings.warn_explicit(
            LoopBlockedWarning(message),
            LoopBlockedWarning,
            code.co_filename,
            code.co_firstlineno,
            module=step.module,
        )
