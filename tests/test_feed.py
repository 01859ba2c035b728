"""RunFeed: numbered, bounded history shared by watchers, with backpressure from attached ones."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioflow._server._feed import EventsExpired, RunFeed


async def fill(feed: RunFeed, count: int) -> None:
    for _ in range(count):
        seq = feed.last_seq + 1
        await feed.append(seq, "Tick", b'{"seq":%d}' % seq)


async def test_entries_are_numbered_and_encoded_once() -> None:
    """Each entry gets the next seq; its SSE and NDJSON forms carry id, type and JSON."""
    feed = RunFeed(retain=8)
    await fill(feed, 2)
    with feed.watch() as watcher:
        batch = await watcher.next_batch()
    assert [entry.seq for entry in batch] == [1, 2]
    assert batch[0].sse() == b'id: 1\nevent: Tick\ndata: {"seq":1}\n\n'
    assert batch[0].sse(named=False) == b'id: 1\ndata: {"seq":1}\n\n'
    assert batch[1].ndjson() == b'{"seq":2}\n'
    assert batch[0].sse() is batch[0].sse()  # built once, not per client


async def test_without_watchers_old_entries_are_evicted() -> None:
    """Nobody attached (after holding for a first watcher): the history keeps the newest
    `retain` entries and never waits."""
    feed = RunFeed(retain=3)
    feed.stop_holding()
    await fill(feed, 10)
    assert (feed.first_seq, feed.last_seq) == (8, 10)
    with pytest.raises(EventsExpired, match=r"oldest kept is seq 8; ask for \?after=7"):
        feed.watch(after=0)
    with feed.watch(after=7) as watcher:
        assert [e.seq for e in await watcher.next_batch()] == [8, 9, 10]


async def test_watch_rejects_a_seq_beyond_the_last() -> None:
    """after must name an entry that exists (or 0)."""
    feed = RunFeed(retain=3)
    await fill(feed, 2)
    with pytest.raises(ValueError, match="between 0 and the last event's seq"):
        feed.watch(after=3)
    with pytest.raises(ValueError, match="between 0"):
        feed.watch(after=-1)


async def test_an_attached_slow_watcher_holds_the_pump_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The pump waits rather than evict an entry an attached watcher has not taken: it runs
    at most `retain` entries ahead of the watcher, so it goes at the watcher's pace."""
    feed = RunFeed(retain=4)
    ahead: list[int] = []  # entries appended but not yet taken, after each append

    received: list[int] = []
    with feed.watch() as watcher:

        async def pump() -> None:
            for _ in range(12):
                await fill(feed, 1)
                ahead.append(feed.last_seq - watcher.cursor)
            feed.finish()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            while batch := await watcher.next_batch():
                received += [entry.seq for entry in batch]
                await trio.sleep(1)  # a slow client
    assert received == list(range(1, 13))
    assert max(ahead) == feed.retain
    assert trio.current_time() >= 2  # the pump waited for the slow watcher's batches
    assert len(feed._entries) <= feed.retain


async def test_entries_are_held_for_the_first_watcher(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before anyone watched, the pump waits rather than evict; the first watcher gets all."""
    feed = RunFeed(retain=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fill, feed, 5)
        await trio.sleep(10)
        assert feed.last_seq == 3
        with feed.watch() as watcher:
            seen = [e.seq for e in await watcher.next_batch()]
            await trio.sleep(1)
            seen += [e.seq for e in await watcher.next_batch()]
    assert seen == [1, 2, 3, 4, 5]


async def test_stop_holding_lets_an_unwatched_run_go_on() -> None:
    """stop_holding() (the first client never came) releases a waiting pump."""
    feed = RunFeed(retain=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fill, feed, 5)
        await trio.testing.wait_all_tasks_blocked()
        assert feed.last_seq == 2
        feed.stop_holding()
    assert (feed.first_seq, feed.last_seq) == (4, 5)


async def test_a_watcher_that_leaves_releases_the_pump() -> None:
    """Leaving (a disconnect) lets the pump evict what the watcher never took."""
    feed = RunFeed(retain=2)
    await fill(feed, 2)
    done = trio.Event()

    async def pump() -> None:
        await fill(feed, 3)
        done.set()

    async with trio.open_nursery() as nursery:
        with feed.watch():
            nursery.start_soon(pump)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            assert feed.last_seq == 2
        await done.wait()
    assert (feed.first_seq, feed.last_seq) == (4, 5)


async def test_several_watchers_each_get_every_entry_in_order() -> None:
    """Fast and slow watchers, joined at different points, all see the same sequence."""
    feed = RunFeed(retain=3)
    results: dict[int, list[int]] = {}

    async def watch(name: int, delay: float) -> None:
        with feed.watch() as watcher:
            seen: list[int] = []
            while batch := await watcher.next_batch():
                seen += [entry.seq for entry in batch]
                await trio.sleep(delay)
            results[name] = seen

    async with trio.open_nursery() as nursery:
        for name, delay in enumerate((0, 0.01, 0.05)):
            nursery.start_soon(watch, name, delay)
        await trio.testing.wait_all_tasks_blocked()
        await fill(feed, 20)
        feed.finish()
    assert results == {0: list(range(1, 21)), 1: list(range(1, 21)), 2: list(range(1, 21))}


async def test_unblock_turns_a_gap_into_an_explicit_error() -> None:
    """After unblock() (shutdown) the pump evicts anyway; the lagging watcher is told."""
    feed = RunFeed(retain=2)
    with feed.watch() as watcher:
        await fill(feed, 2)
        feed.unblock()  # the watcher took nothing yet
        await fill(feed, 3)
        with pytest.raises(EventsExpired):
            await watcher.next_batch()


async def test_finished_feed_ends_watchers_after_the_last_entry() -> None:
    """A watcher gets the remaining entries, then an empty batch, then stays ended."""
    feed = RunFeed(retain=4)
    await fill(feed, 2)
    feed.finish()
    with feed.watch(after=1) as watcher:
        assert [e.seq for e in await watcher.next_batch()] == [2]
        assert await watcher.next_batch() == []
        assert await watcher.next_batch() == []


def test_retain_must_be_positive() -> None:
    """A feed that keeps nothing could not serve anyone."""
    with pytest.raises(ValueError, match="retain must be at least 1"):
        RunFeed(retain=0)


async def test_append_and_next_batch_are_checkpoints_on_every_path() -> None:
    """append and next_batch check for cancellation and yield, whether they wait or not."""
    feed = RunFeed(retain=2)
    feed.stop_holding()
    with trio.testing.assert_checkpoints():
        await fill(feed, 1)  # room: no wait
    await fill(feed, 1)
    with trio.testing.assert_checkpoints():
        await fill(feed, 1)  # full, but nobody needs the oldest: evicts, no wait
    with feed.watch(after=1) as watcher:
        with trio.testing.assert_checkpoints():
            assert [e.seq for e in await watcher.next_batch()] == [2, 3]  # ready: no wait
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fill, feed, 1)
            with trio.testing.assert_checkpoints():
                assert [e.seq for e in await watcher.next_batch()] == [4]  # waits for it
        feed.finish()
        with trio.testing.assert_checkpoints():
            assert await watcher.next_batch() == []  # finished: no wait


async def test_a_cancelled_append_or_next_batch_does_nothing() -> None:
    """In a cancelled scope, append adds nothing and next_batch takes nothing."""
    feed = RunFeed(retain=4)
    await fill(feed, 1)
    with feed.watch() as watcher:
        with trio.CancelScope() as scope:
            scope.cancel()
            await fill(feed, 1)
        assert scope.cancelled_caught
        assert feed.last_seq == 1
        with trio.CancelScope() as scope:
            scope.cancel()
            await watcher.next_batch()
        assert scope.cancelled_caught
        assert watcher.cursor == 0


async def test_append_nowait_says_when_it_would_wait() -> None:
    """append_nowait raises WouldBlock instead of waiting for room, and refuses a wrong seq."""
    feed = RunFeed(retain=2)
    await fill(feed, 2)
    with pytest.raises(trio.WouldBlock):
        feed.append_nowait(3, "Tick", b"{}")  # held for the first watcher
    assert feed.last_seq == 2
    with pytest.raises(ValueError, match="the next entry is seq 3, got 4"):
        feed.append_nowait(4, "Tick", b"{}")
    feed.stop_holding()
    feed.append_nowait(3, "Tick", b"{}")
    assert (feed.first_seq, feed.last_seq) == (2, 3)


async def test_next_batch_nowait_takes_what_is_there() -> None:
    """next_batch_nowait takes what is there, raises WouldBlock when nothing is, and returns
    an empty batch once the feed is finished and everything was taken."""
    feed = RunFeed(retain=4)
    await fill(feed, 2)
    with feed.watch() as watcher:
        assert [e.seq for e in watcher.next_batch_nowait()] == [1, 2]
        with pytest.raises(trio.WouldBlock):
            watcher.next_batch_nowait()
        feed.finish()
        assert watcher.next_batch_nowait() == []


async def test_a_watcher_attaching_wakes_the_pump_held_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A pump waiting for room while the feed holds its entries for a first watcher wakes when
    that watcher attaches: one that asks only for what follows can then be served at once."""
    feed = RunFeed(retain=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fill, feed, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert feed.last_seq == 2  # held: the pump waits for room
        with trio.fail_after(1), feed.watch(after=2) as watcher:
            assert [e.seq for e in await watcher.next_batch()] == [3]
    assert trio.current_time() == 0
