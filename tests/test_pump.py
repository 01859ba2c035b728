"""The pump: a run's stream into its feed, without starving the server's other tasks."""

from __future__ import annotations

import itertools

import trio
import trio.testing
from _http import Count, CountFlow

from trioflow._server._feed import RunFeed
from trioflow._server._pump import YIELD_EVERY, pump
from trioflow._server._record import RunRecord


async def _note_progress(feed: RunFeed, seen: list[int]) -> None:
    """Another task of the server: each time it runs, note how far the pump has got."""
    while True:
        seen.append(feed.last_seq)
        await trio.lowlevel.checkpoint()


async def test_the_pump_lets_other_tasks_run_every_millisecond() -> None:
    """With 500 events buffered (the stream hands them over without yielding), the pump yields
    once it has worked a millisecond (a fake clock: 0.25 ms per event), not after the whole
    buffer; every event, and the terminal one, is in the feed."""
    async with CountFlow(timeout=None, stream_buffer=1000).start(Count(n=500)) as handler:
        await trio.testing.wait_all_tasks_blocked()
        assert handler.statistics().buffered == 500
        record = RunRecord("count", handler, RunFeed(retain=1024))
        seen: list[int] = []

        def clock() -> float:  # each event appended costs a quarter of the allowance
            return record.feed.last_seq * YIELD_EVERY / 4

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_note_progress, record.feed, seen)
            await pump(record, clock=clock)
            nursery.cancel_scope.cancel()
    assert record.feed.last_seq == 501
    # A turn of the pump appends 4 events (5 with the one read as the millisecond passes);
    # trio runs the tasks of a batch in either order, so the other task may see two turns.
    assert max(later - earlier for earlier, later in itertools.pairwise(seen)) <= 2 * 5
    assert len(seen) >= 501 / 5
