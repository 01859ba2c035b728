"""The loop-blocking detector: an async step that holds the trio thread is reported, once.

The blocking here is real wall time (``time.sleep`` in the trio thread), so durations are only
checked with wide margins: a step blocks 0.3 s against a 0.1 s threshold, and must be reported
as having held the loop for at least 0.2 s.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio
import trio.testing

import trioflow
from trioflow._core._blocking import (
    WATCHDOG_THREAD_NAME,
    LoopBlockedWarning,
    TrioflowWarning,
    watch_step,
)

BLOCK = 0.3
THRESHOLD = 0.1

# The fake steps call time.sleep in an async function on purpose: that is the bug detected.
# ruff: noqa: ASYNC251


@pytest.fixture(autouse=True)
def _no_detector_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture the detector's log, and fail a test in which it logged an error: it logs
    rather than raises, so that a bug of its own never crashes a trio run."""
    caplog.set_level(logging.WARNING, logger="trioflow")
    yield
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The detector's reports logged so far (logged whether or not the warning shows)."""
    return [r.getMessage() for r in caplog.records if "held the trio event loop" in r.getMessage()]


def watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WATCHDOG_THREAD_NAME]


async def settle() -> None:
    """Return once the detector's probes queued so far have run: `run_sync_soon` callbacks
    run in the order they were queued, so one queued now runs after them."""
    done = trio.Event()
    trio.lowlevel.current_trio_token().run_sync_soon(done.set)
    await done.wait()


async def block_then_settle(step: Callable[[], Awaitable[None]]) -> None:
    await step()
    await settle()


async def test_blocking_step_warns_with_names_duration_and_advice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A watched step that sleeps in the trio thread gets a warning at its definition naming
    the workflow and step, about how long it held the loop, and the fix; it is logged too."""

    async def fake_step() -> None:
        time.sleep(BLOCK)

    watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
    with pytest.warns(LoopBlockedWarning) as record:
        await block_then_settle(fake_step)

    assert len(record) == 1
    assert issubclass(record[0].category, TrioflowWarning)
    message = str(record[0].message)
    assert "step 'fake' of workflow 'W'" in message
    held = re.search(r"for about (\d+\.\d+) s", message)
    assert held is not None
    assert float(held[1]) >= 0.2
    assert "threshold 0.1 s" in message
    assert "plain `def` step" in message
    assert "await trio.to_thread.run_sync(...)" in message
    assert (record[0].filename, record[0].lineno) == (__file__, fake_step.__code__.co_firstlineno)
    assert len(reports(caplog)) == 1
    assert message in reports(caplog)[0]


async def test_same_step_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    """A step that blocks again, in the same trio run, is not reported again, and watching it
    again (as each workflow run start does) changes nothing."""

    async def fake_step() -> None:
        time.sleep(BLOCK)

    watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
    with pytest.warns(LoopBlockedWarning):
        await block_then_settle(fake_step)
    watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
    await block_then_settle(fake_step)  # a warning here would raise (filterwarnings = error)
    assert len(reports(caplog)) == 1


async def test_unwatched_code_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    """Blocking by code that was never watched is not blamed on a watched step; the watched
    step blocking afterwards in the same run is reported (the detector was live)."""

    async def watched() -> None:
        time.sleep(BLOCK)

    async def unwatched() -> None:
        time.sleep(BLOCK)

    watch_step(watched.__code__, workflow="W", step="watched", threshold=THRESHOLD)
    await block_then_settle(unwatched)
    assert reports(caplog) == []
    with pytest.warns(LoopBlockedWarning, match="'watched'"):
        await block_then_settle(watched)


async def test_blocking_below_threshold_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    """Each step is held to its own threshold: 0.3 s of blocking is fine for a step allowed
    1 s, while another step of the same run with 0.1 s is reported for the same blocking."""

    async def lenient() -> None:
        time.sleep(BLOCK)

    async def strict() -> None:
        time.sleep(BLOCK)

    watch_step(lenient.__code__, workflow="W", step="lenient", threshold=1.0)
    watch_step(strict.__code__, workflow="W", step="strict", threshold=THRESHOLD)
    await block_then_settle(lenient)
    assert reports(caplog) == []
    with pytest.warns(LoopBlockedWarning, match="'strict'"):
        await block_then_settle(strict)


async def test_short_blocks_between_checkpoints_are_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A step that does a lot of blocking work in slices well below the threshold, with a
    checkpoint between slices, is not reported: the loop keeps turning."""

    async def sliced() -> None:
        for _ in range(10):
            time.sleep(0.02)
            await trio.lowlevel.checkpoint()

    watch_step(sliced.__code__, workflow="W", step="sliced", threshold=0.5)
    await block_then_settle(sliced)
    assert reports(caplog) == []


async def test_blocking_helper_is_blamed_on_its_step() -> None:
    """A plain function called by the step does the blocking: the step is reported, since its
    frame is on the stack below the helper's."""

    def helper() -> None:
        time.sleep(BLOCK)

    async def fake_step() -> None:
        helper()

    watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
    with pytest.warns(LoopBlockedWarning, match="step 'fake' of workflow 'W'"):
        await block_then_settle(fake_step)


@contextlib.contextmanager
def automatic_gc_off() -> Iterator[None]:
    """No automatic collections inside: garbage is left for an explicit `gc.collect`."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# Garbage that a full collection takes over 3 * THRESHOLD to free (about 0.35 s here, for about
# 0.2 s to make): one cycle through a list and this many tuples.
GARBAGE_TUPLES = 3_500_000


def make_cyclic_garbage(tuples: int) -> None:
    """Leave one unreachable reference cycle: a list of ``tuples`` 1-tuples holding the list."""
    cycle: list[tuple[object]] = []
    cycle.extend(zip(itertools.repeat(cycle, tuples)))


async def test_garbage_collection_pause_is_not_blamed_on_the_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A long garbage collection running in a step is not reported: collections count for no
    step. In practice a gen 2 collection of a large heap triggered by the step's allocations;
    here the step collects explicitly, right after unwatched code (never blamed, see above)
    has held the loop, so that the detector's probe is pending when the collection starts, as
    if the step had been busy allocating. The same step blocking for real afterwards, in the
    same run, is reported."""
    collected_in: list[float] = []

    async def fake_step(block: bool) -> None:
        if block:
            time.sleep(BLOCK)
        else:
            began = time.monotonic()
            gc.collect()
            collected_in.append(time.monotonic() - began)

    watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
    with automatic_gc_off():
        make_cyclic_garbage(GARBAGE_TUPLES)
        time.sleep(THRESHOLD / 2)  # two watchdog intervals: it sees the loop busy
        await block_then_settle(functools.partial(fake_step, block=False))
    [pause] = collected_in
    # Here about 0.35 s. Blamed on the step, a collection is credited to it at least half its
    # length (each interval between two samples is split between them): then over 0.1 s, and
    # reported, as by the detector before collections were discounted.
    assert pause > THRESHOLD, f"too short a collection ({pause:.2f} s) to test anything"
    assert reports(caplog) == []
    with pytest.warns(LoopBlockedWarning, match="step 'fake' of workflow 'W'"):
        await block_then_settle(functools.partial(fake_step, block=True))


async def test_computing_step_is_reported() -> None:
    """A step that computes rather than sleeps (holding the GIL) is reported too: the watchdog
    still gets the GIL at the interpreter's switch interval to sample the stack."""

    async def fake_step() -> None:
        deadline = time.monotonic() + BLOCK
        while time.monotonic() < deadline:
            pass

    watch_step(fake_step.__code__, workflow="W", step="busy", threshold=THRESHOLD)
    with pytest.warns(LoopBlockedWarning, match="step 'busy' of workflow 'W'"):
        await block_then_settle(fake_step)


async def test_report_under_warnings_as_errors_does_not_crash_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With warnings turned into errors (this suite's filterwarnings = error) the report is
    logged and the run goes on: the probe never raises into trio."""

    async def fake_step() -> None:
        time.sleep(BLOCK)

    watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
    await block_then_settle(fake_step)
    await trio.sleep(0.05)  # the run is alive and well
    [report] = reports(caplog)
    assert "step 'fake' of workflow 'W'" in report


def test_watchdog_thread_ends_with_the_run() -> None:
    """A run's watchdog thread exists while the run does and is gone when trio.run returns."""

    async def fake_step() -> None:
        time.sleep(BLOCK)

    during: list[int] = []

    async def main() -> None:
        watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
        during.append(len(watchdogs()))

    assert watchdogs() == []
    trio.run(main)
    assert during == [1]
    assert watchdogs() == []


def test_gc_callback_lives_with_the_detector() -> None:
    """The detector's `gc.callbacks` entry, called on every collection of the process, is added
    by the run's first watch_step and removed when the run ends."""

    async def fake_step() -> None:
        pass

    before = list(gc.callbacks)
    added: list[int] = []

    async def main() -> None:
        watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
        added.append(len(gc.callbacks) - len(before))
        watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD / 2)
        added.append(len(gc.callbacks) - len(before))

    trio.run(main)
    assert added == [1, 1]
    assert gc.callbacks == before


def test_each_trio_run_has_its_own_detector(caplog: pytest.LogCaptureFixture) -> None:
    """Runs one after another each get a fresh detector: the same step is reported in each."""

    async def fake_step() -> None:
        time.sleep(BLOCK)

    async def main() -> None:
        watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
        await block_then_settle(fake_step)

    trio.run(main)
    trio.run(main)
    assert len(reports(caplog)) == 2
    assert watchdogs() == []


def test_concurrent_runs_in_two_threads_are_not_mixed_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two trio runs in two threads watch the same step code under different workflow names;
    only the run whose thread blocks reports, under its own name."""

    async def fake_step() -> None:
        time.sleep(BLOCK)

    both_watching = threading.Barrier(2, timeout=10)

    async def blocking_run() -> None:
        watch_step(fake_step.__code__, workflow="A", step="fake", threshold=THRESHOLD)
        await trio.to_thread.run_sync(both_watching.wait)
        await block_then_settle(fake_step)

    async def idle_run() -> None:
        watch_step(fake_step.__code__, workflow="B", step="fake", threshold=THRESHOLD)
        await trio.to_thread.run_sync(both_watching.wait)
        await trio.sleep(2 * BLOCK)

    threads = [
        threading.Thread(target=trio.run, args=(blocking_run,)),
        threading.Thread(target=trio.run, args=(idle_run,)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    [report] = reports(caplog)
    assert "step 'fake' of workflow 'A'" in report
    assert watchdogs() == []


async def test_autojump_clock_stays_instant(autojump_clock: trio.testing.MockClock) -> None:
    """A watched run sleeping an hour of virtual time under the autojump clock takes well under
    a second of real time: the detector uses no trio timers."""

    async def fake_step() -> None:
        time.sleep(BLOCK)

    watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
    started = time.monotonic()
    await trio.sleep(3600)
    assert trio.current_time() >= 3600
    assert time.monotonic() - started < 1.0


def test_idle_loop_is_not_probed() -> None:
    """An idle loop gets no probes: a MockClock that autojumps after 0.1 s of real idleness
    still jumps (a probe every 25 ms would keep the loop from ever being idle that long)."""

    async def fake_step() -> None:
        time.sleep(BLOCK)

    woke_at: list[float] = []

    async def main() -> None:
        watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
        await trio.sleep(3600)
        woke_at.append(trio.current_time())

    clock = trio.testing.MockClock(autojump_threshold=0.1)
    # In a thread so that a regression fails this test instead of hanging the suite.
    thread = threading.Thread(target=trio.run, args=(main,), kwargs={"clock": clock}, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(woke_at) == 1
    assert woke_at[0] >= 3600


@pytest.mark.parametrize("threshold", [0, -1.0, math.nan, True])
async def test_threshold_must_be_positive(threshold: float) -> None:
    """A threshold that is not a positive number is refused."""

    async def fake_step() -> None:
        pass

    with pytest.raises(ValueError, match="threshold must be a positive number"):
        watch_step(fake_step.__code__, workflow="W", step="fake", threshold=threshold)


async def test_infinite_threshold_watches_nothing() -> None:
    """``threshold=math.inf`` disables the detector: no watchdog thread is started."""

    async def fake_step() -> None:
        pass

    watch_step(fake_step.__code__, workflow="W", step="fake", threshold=math.inf)
    assert watchdogs() == []


def test_watch_step_needs_a_trio_run() -> None:
    """Outside a trio run watch_step raises RuntimeError rather than starting anything."""

    async def fake_step() -> None:
        pass

    with pytest.raises(RuntimeError):
        watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
    assert watchdogs() == []


class _Sleepy(trioflow.Workflow):
    """An async step that blocks the loop with time.sleep: the mistake the detector is for."""

    @trioflow.step
    async def nap(self, ev: trioflow.StartEvent) -> trioflow.StopEvent:
        time.sleep(0.3)
        return trioflow.StopEvent(result="rested")


async def test_workflow_warns_about_a_blocking_async_step() -> None:
    """A run of a workflow whose async step blocks warns, naming the workflow and the step."""
    with pytest.warns(LoopBlockedWarning, match=r"step 'nap' of workflow '_Sleepy'") as record:
        assert await _Sleepy().run() == "rested"
    assert len(record) == 1


async def test_workflow_blocking_threshold_none_switches_it_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Workflow(blocking_threshold=None) watches nothing: no warning, no log line."""
    with caplog.at_level(logging.WARNING, logger="trioflow"):
        assert await _Sleepy(blocking_threshold=None).run() == "rested"
    assert not [r for r in caplog.records if "held the trio event loop" in r.getMessage()]


async def test_a_logging_filter_that_raises_does_not_crash_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The detector's report goes through logging that cannot raise: a filter of the
    application's that raises neither crashes trio nor stops the warning."""

    class Refuse(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise RuntimeError("this filter is broken")

    async def fake_step() -> None:
        time.sleep(BLOCK)

    refuse = Refuse()
    logging.getLogger("trioflow").addFilter(refuse)
    try:
        watch_step(fake_step.__code__, workflow="W", step="fake", threshold=THRESHOLD)
        with pytest.warns(LoopBlockedWarning):
            await block_then_settle(fake_step)
    finally:
        logging.getLogger("trioflow").removeFilter(refuse)


async def test_many_short_executions_of_one_step_in_one_turn_are_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Thousands of tasks each running one step for a moment in the same turn of the loop (as
    when thousands of runs start at once) make a long turn, but no execution of the step held
    the loop: credits are per execution, so none is reported."""

    async def brief() -> None:
        time.sleep(0.0002)  # each execution blocks a fifth of a millisecond
        await trio.lowlevel.checkpoint()

    watch_step(brief.__code__, workflow="W", step="brief", threshold=THRESHOLD)
    async with trio.open_nursery() as nursery:
        for _ in range(2500):  # one turn of about half a second: five thresholds
            nursery.start_soon(brief)
    await settle()
    assert reports(caplog) == []


async def test_many_executions_of_one_step_that_each_block_are_reported_together(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Eight executions of one step that each block for a while in the same turn of the loop
    (a fan-out calling a blocking client): none passes the threshold alone, together they do,
    and the step is reported."""

    async def client_call() -> None:
        time.sleep(0.06)  # each execution blocks for more than two sampling intervals
        await trio.lowlevel.checkpoint()

    watch_step(client_call.__code__, workflow="W", step="client_call", threshold=THRESHOLD)
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(client_call)
    await settle()
    [report] = reports(caplog)
    assert "'client_call'" in report
