"""A run's feed on a store: committed events only, every one of them for any client (the
store serves what the feed's cache no longer holds), and no client holding the run back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from trioflow._server._feed import BATCH, TooManyWatchers
from trioflow._server._stored import StoredFeed, StoredWatcher
from trioflow._store import (
    EventKind,
    NewEvent,
    NewRun,
    Operation,
    RunRow,
    SqliteStore,
    Store,
    event_row,
    open_store,
)

TICK = EventKind("Tick", "tests.Tick")
STOP = EventKind("StopEvent", "trioflow.StopEvent", terminal=True)
STARTED = EventKind(
    "StepStartedEvent", "trioflow.StepStartedEvent", lifecycle=True, bases=("LifecycleEvent",)
)


async def drain(watcher: StoredWatcher) -> list[int]:
    """Every seq the watcher takes until the feed ends."""
    seqs: list[int] = []
    while batch := await watcher.next_batch():
        seqs += [entry.seq for entry in batch]
    return seqs


def publish_into(feed: StoredFeed) -> Callable[[Sequence[Operation]], None]:
    def listener(batch: Sequence[Operation]) -> None:
        for operation in batch:
            if isinstance(operation, NewEvent) and operation.run_id == feed.run_id:
                feed.append_row(operation.event)

    return listener


async def start(store: Store, run_id: str) -> None:
    row = RunRow(
        run_id, await store.next_number(), "flow", "running", b"{}", False, 0, None, None, 0.0, None
    )
    await store.flushed(store.append(NewRun(row)))


@asynccontextmanager
async def live_feed(
    tmp_path: Path, *, retain: int
) -> AsyncIterator[tuple[SqliteStore, StoredFeed]]:
    """A store with run ``r``, and the feed of that run keeping ``retain`` events, which
    gets each of its events once committed (as the server's commit listener gives them)."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert isinstance(store, SqliteStore)
        await start(store, "r")
        feed = StoredFeed(store, "r", retain=retain, retain_bytes=1 << 20)
        store.on_commit(publish_into(feed))
        yield store, feed


async def test_a_late_client_gets_every_event_from_the_store(tmp_path: Path) -> None:
    """The feed caches 5 events; a client attaching after 600 gets all 600 (from the store,
    in batches), then the live ones, then the end; the writer never waited for it."""
    async with live_feed(tmp_path, retain=5) as (store, feed):
        for seq in range(1, 601):
            store.append(NewEvent("r", event_row(seq, TICK, b'{"seq":%d}' % seq)))
        await store.drain()
        assert feed.last_seq == 600
        assert len(feed._entries) == 5  # the cache, not the history
        with feed.watch(0) as watcher:
            first = await watcher.next_batch()
            assert [e.seq for e in first] == list(range(1, BATCH + 1))
            assert first[0].kind == TICK
            async with trio.open_nursery() as nursery:

                async def more() -> None:
                    store.append(NewEvent("r", event_row(601, TICK, b"{}")))
                    store.append(NewEvent("r", event_row(602, STOP, b"{}")))
                    await store.drain()
                    feed.finish()

                nursery.start_soon(more)
                rest = await drain(watcher)
        assert rest == list(range(BATCH + 1, 603))


async def test_a_finished_run_known_only_from_the_store(tmp_path: Path) -> None:
    """A run that ended before this process started: its feed caches nothing, and a client
    from any point gets the rest, kinds included; positions past the end are refused."""
    url = f"sqlite:///{tmp_path}/runs.db"
    async with open_store(url) as store:
        assert store is not None
        await start(store, "old")
        store.append(NewEvent("old", event_row(1, STARTED, b"{}")))
        for seq in range(2, 10):
            store.append(NewEvent("old", event_row(seq, TICK, b"{}")))
        store.append(NewEvent("old", event_row(10, STOP, b"{}")))
        await store.drain()
    async with open_store(url) as store:
        assert store is not None
        feed = StoredFeed(store, "old", 1024, 1 << 20, max_watchers=1, last_seq=10, finished=True)
        with feed.watch(0) as watcher:
            batch = await watcher.next_batch()
            assert [e.kind for e in (batch[0], batch[1], batch[-1])] == [STARTED, TICK, STOP]
            assert await watcher.next_batch() == []
            with pytest.raises(TooManyWatchers):
                feed.watch(3)
        with feed.watch(7) as watcher:
            assert await drain(watcher) == [8, 9, 10]
        with pytest.raises(ValueError, match="between 0 and"):
            feed.watch(11)


async def test_a_client_that_stops_reading_holds_nothing_back(tmp_path: Path) -> None:
    """The writer goes on while a watcher takes nothing: the cache evicts, and the watcher
    later reads what it missed from the store, with nothing lost or repeated."""
    async with live_feed(tmp_path, retain=3) as (store, feed):
        with feed.watch(0) as watcher:
            store.append(NewEvent("r", event_row(1, TICK, b"{}")))
            await store.drain()
            assert [e.seq for e in watcher.next_batch_nowait()] == [1]
            for seq in range(2, 50):
                store.append(NewEvent("r", event_row(seq, TICK, b"{}")))
            await store.drain()
            with pytest.raises(trio.WouldBlock):
                watcher.next_batch_nowait()  # behind the cache: only next_batch reads the store
            feed.finish()
            assert await drain(watcher) == list(range(2, 50))


async def test_entries_evicted_while_a_watcher_waits_come_from_the_store(tmp_path: Path) -> None:
    """A watcher waiting for the next event while a burst evicts it from the cache reads it
    from the store when it wakes, instead of failing."""
    async with live_feed(tmp_path, retain=2) as (store, feed):
        with feed.watch(0) as watcher:
            async with trio.open_nursery() as nursery:
                taken: list[int] = []

                async def read() -> None:
                    taken.extend(await drain(watcher))

                nursery.start_soon(read)
                await trio.testing.wait_all_tasks_blocked()  # it waits for the first event
                for seq in range(1, 11):  # one commit: 10 events through a 2-event cache
                    store.append(NewEvent("r", event_row(seq, TICK, b"{}")))
                await store.drain()
                feed.finish()
        assert taken == list(range(1, 11))


async def test_a_client_that_read_the_store_past_the_cache_waits_for_it(tmp_path: Path) -> None:
    """A commit is visible to the store's reader before its listeners have appended it to
    the cache: a client that read those events from the store waits for the cache to catch
    up, then goes on, instead of failing."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert isinstance(store, SqliteStore)
        await start(store, "r")
        feed = StoredFeed(store, "r", retain=5, retain_bytes=1 << 20, last_seq=2)
        for seq in range(1, 5):  # committed, but only 1 and 2 reached the cache yet
            store.append(NewEvent("r", event_row(seq, TICK, b'{"seq":%d}' % seq)))
        await store.drain()
        with feed.watch(0) as watcher:
            assert [e.seq for e in await watcher.next_batch()] == [1, 2, 3, 4]
            with pytest.raises(trio.WouldBlock):
                watcher.next_batch_nowait()
            async with trio.open_nursery() as nursery:

                async def listeners_run() -> None:
                    for seq in (3, 4, 5):
                        feed.append_row(event_row(seq, TICK, b"{}"))
                        await trio.lowlevel.checkpoint()

                nursery.start_soon(listeners_run)
                assert [e.seq for e in await watcher.next_batch()] == [5]


async def test_the_feeds_of_a_run_share_their_clients(tmp_path: Path) -> None:
    """Two feeds of one run served from the store, shared: a client of either is the first
    one's while it has clients (its count and its max_watchers hold for both), and once the
    last has left neither is kept. A feed that already has clients when shared is kept."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert isinstance(store, SqliteStore)
        await start(store, "r")
        shared: dict[str, StoredFeed] = {}

        def feed() -> StoredFeed:
            return StoredFeed(store, "r", 1, 1, 2, last_seq=0, finished=True, shared=shared)

        first, second = feed(), feed()
        with first.watch(0):
            assert shared == {"r": first}
            with second.watch(0) as watcher:
                assert watcher._feed is first
                assert (first.watchers, second.watchers) == (2, 2)
                with pytest.raises(TooManyWatchers):
                    second.watch(0)
            assert (first.watchers, second.watchers) == (1, 1)
        assert shared == {}
        assert (first.watchers, second.watchers) == (0, 0)
        live = StoredFeed(store, "r", 1, 1, 2)
        with live.watch(0):
            live.share(shared)
            assert shared == {"r": live}
            assert feed().watchers == 1
        assert shared == {}


async def test_the_writer_waits_for_a_client_behind_the_committed_events_only(
    tmp_path: Path,
) -> None:
    """A run's writer waits for an attached client once the next committed event would put
    it `retain` events behind the committed ones (so that live clients read the cache), and
    not for the events written but not yet committed, which are no client's lag."""
    async with live_feed(tmp_path, retain=3) as (store, feed):
        with feed.watch(0) as watcher:
            for seq in range(1, 11):  # written, not yet committed: the client is not behind
                assert not feed.keeps_waiting()
                store.append(NewEvent("r", event_row(seq, TICK, b"{}")))
            await store.drain()
            assert feed.keeps_waiting()  # 10 committed, none read: the writer waits
            with trio.fail_after(5):  # a hang: the writer is not told the client moved on
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed.wait_for_watchers)
                    await trio.testing.wait_all_tasks_blocked()
                    # Read from the store (the cache holds the last 3): the writer goes on.
                    batch = await watcher.next_batch()
                    assert [e.seq for e in batch] == list(range(1, 11))
            assert not feed.keeps_waiting()


async def test_a_writer_that_gives_up_waiting_leaves_the_others_waiting_for_progress(
    tmp_path: Path,
) -> None:
    """A durable run has a writer per step task: two wait for a client, one gives up (its
    step was cancelled); the client's progress still wakes the other."""
    async with live_feed(tmp_path, retain=2) as (store, feed):
        with feed.watch(0) as watcher:
            for seq in range(1, 6):
                store.append(NewEvent("r", event_row(seq, TICK, b"{}")))
            await store.drain()
            with trio.fail_after(5):  # a hang: the writer left waiting is never woken
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed.wait_for_watchers)
                    giving_up = trio.CancelScope()

                    async def gives_up() -> None:
                        with giving_up:
                            await feed.wait_for_watchers()

                    nursery.start_soon(gives_up)
                    await trio.testing.wait_all_tasks_blocked()
                    giving_up.cancel()
                    await trio.testing.wait_all_tasks_blocked()
                    seqs: list[int] = []
                    while watcher.cursor < feed.last_seq:  # the client catches up
                        seqs += [e.seq for e in await watcher.next_batch()]
                    assert seqs == [1, 2, 3, 4, 5]


async def test_a_client_that_has_read_everything_holds_no_writer_back(tmp_path: Path) -> None:
    """As in memory, a client holds the writer back only while the oldest event the cache
    keeps is owed to it: with a cache of one event, a client that has read every committed
    event holds nothing back."""
    async with live_feed(tmp_path, retain=1) as (store, feed):
        with feed.watch(0) as watcher:
            store.append(NewEvent("r", event_row(1, TICK, b"{}")))
            await store.drain()
            assert feed.keeps_waiting()  # event 1 is owed to it
            assert [e.seq for e in await watcher.next_batch()] == [1]
            assert not feed.keeps_waiting()
