"""`call_at`: the runs' timeouts, kept by one system task per trio run."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import trio
import trio.testing

from trioflow._core._timers import _TIMERS, call_at


async def test_timers_are_called_at_their_deadlines_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each callback at its deadline, earliest first, ties in the order set; a deadline set
    after a later one still comes first (the sleeping task is woken earlier)."""
    called: list[tuple[str, float]] = []
    start = trio.current_time()

    def at(name: str) -> None:
        called.append((name, trio.current_time() - start))

    call_at(start + 5, lambda: at("five"))
    await trio.sleep(1)
    call_at(start + 3, lambda: at("three a"))
    call_at(start + 3, lambda: at("three b"))
    call_at(start + 2, lambda: at("two"))
    await trio.sleep(10)
    assert called == [("two", 2), ("three a", 3), ("three b", 3), ("five", 5)]


async def test_a_cancelled_timer_is_never_called_and_forgets_its_callback(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Owner:
        def fire(self) -> None:
            fired.append(self)

    fired: list[Owner] = []
    owner = Owner()
    kept = weakref.ref(owner)
    timer = call_at(trio.current_time() + 1, owner.fire)
    timer.cancel()
    timer.cancel()  # idempotent
    del owner
    gc.collect()
    assert kept() is None  # the heap entry does not keep what the callback held
    await trio.sleep(2)
    assert fired == []


async def test_cancelled_entries_are_dropped_once_they_are_most_of_the_heap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    now = trio.current_time()
    timers = [call_at(now + 100 + i, lambda: None) for i in range(100)]
    heap = _TIMERS.get()._heap
    assert len(heap) == 100
    for timer in timers[:51]:
        timer.cancel()
    assert len(heap) == 49  # compacted when cancelled ones passed half
    for timer in timers[51:]:
        timer.cancel()
    await trio.sleep(500)
    assert heap == []


async def test_a_failing_callback_is_logged_and_the_others_still_run(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    called: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    now = trio.current_time()
    call_at(now + 1, boom)
    call_at(now + 1, lambda: called.append(1))
    call_at(now + 2, lambda: called.append(2))
    with caplog.at_level(logging.ERROR, logger="trioflow"):
        await trio.sleep(3)
    assert called == [1, 2]
    assert any("timer failed" in record.getMessage() for record in caplog.records)
