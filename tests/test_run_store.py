"""Durable runs in process: `open_store`, runs on it, resuming them after their process
stopped, and a context kept by the caller across runs (in memory and on a store)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from _embedded_flows import (
    Answer,
    Ask,
    Asking,
    Both,
    Chat,
    Half,
    Interrupted,
    Steps,
    Tick,
    Ticks,
)

from trioflow import (
    Context,
    Event,
    NotJournalable,
    RunStore,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    WorkerLost,
    Workflow,
    WorkflowCancelledError,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowRuntimeError,
    open_store,
    step,
)
from trioflow._store import StoreError
from trioflow._store import open_store as open_backend

HERE = Path(__file__).parent
#: The child process a test kills: its workflows imported from the module this test imports
#: (run as ``__main__`` they would be other classes, and the run's journal would not fit).
CHILD = "import sys, trio, _embedded_flows as f; trio.run(f.child, sys.argv[1], sys.argv[2])"


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/runs.db"


async def stored(tmp_path: Path, run_id: str) -> tuple[Any, list[dict[str, Any]]]:
    """The row and the stream (as envelopes) a store file keeps of a run."""
    import json

    async with open_backend(url(tmp_path)) as backend:
        assert backend is not None
        row = await backend.run(run_id)
        events = await backend.events(run_id, after=0, limit=1000)
    return row, [json.loads(bytes(event.body)) for event in events]


# -- a context kept by the caller --


async def test_a_held_context_carries_its_store_from_run_to_run() -> None:
    flow = Chat()
    ctx = Context(flow)
    assert await flow.run(message="hi", ctx=ctx) == 1
    async with flow.start(message="again", ctx=ctx) as handler:
        assert handler.ctx is ctx
        assert await handler.result() == 2
    assert ctx.run_id == handler.run_id
    assert await ctx.store.get("history") == ["hi", "again"]
    # Without one, each run has its own.
    assert await flow.run(message="alone") == 1


async def test_a_saved_context_reads_back_as_it_was() -> None:
    flow = Chat()
    ctx = Context(flow)
    await flow.run(message="one", ctx=ctx)
    saved = ctx.to_dict()
    assert saved == {"store": {"history": ["one"]}}
    again = Context.from_dict(flow, saved)
    assert await flow.run(message="two", ctx=again) == 2
    await ctx.store.set("bad", object())
    with pytest.raises(TypeError, match="'bad' holds a object"):
        ctx.to_dict()
    with pytest.raises(ValueError, match="to_dict"):
        Context.from_dict(flow, {"history": []})


async def test_a_context_is_for_one_workflow_and_one_run_at_a_time() -> None:
    flow = Asking()
    ctx = Context(flow)
    with pytest.raises(WorkflowRuntimeError, match="not been given to a run"):
        ctx.run_id  # noqa: B018
    with pytest.raises(WorkflowRuntimeError, match="not been given to a run"):
        ctx.send_event(Answer(ok=True))
    with pytest.raises(WorkflowRuntimeError, match="for runs of Asking, not of Chat"):
        await Chat().run(message="x", ctx=ctx)
    with pytest.raises(TypeError, match="Context"):
        await flow.run(ctx={"store": {}})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="the workflow it is for"):
        Context("Asking")
    flow.start(n=0, ctx=ctx)  # made, never entered: that run never had it
    for ok in (True, False):  # free again once its run has ended
        async with flow.start(n=0, ctx=ctx) as handler:
            with pytest.raises(WorkflowRuntimeError, match="in use by run"):
                async with flow.start(n=0, ctx=ctx):
                    pass
            await answer_when_asked(handler, ok)
            assert await handler.result() == {"ok": ok, "ticks": 0}


async def answer_when_asked(handler: Any, ok: bool | None) -> list[Event]:
    """Read the run's stream, answering its question (with ``ok=None``, stop reading once it
    is asked); returns what was read."""
    seen = []
    async for event in handler.stream_events():
        seen.append(event)
        if isinstance(event, Ask):
            if ok is None:
                break
            await handler.send_event(Answer(ok=ok))
    return seen


# -- the memory store --


async def test_the_memory_store_keeps_nothing() -> None:
    async with open_store("memory:") as store:
        assert isinstance(store, RunStore)
        assert not store.durable
        assert await store.run(Chat(), message="x") == 1
        async with store.resume([Chat()]) as handlers:
            assert handlers == []
        with pytest.raises(LookupError):
            await store.context(Chat(), "nope")


# -- runs on a SQLite store --


async def test_a_run_on_a_store_streams_in_process_and_is_kept(tmp_path: Path) -> None:
    """Events reach the handler's reader while the run goes on (it waits for the answer the
    reader sends), and the store holds the same stream, the answer and the result."""
    flow = Asking()
    async with open_store(url(tmp_path)) as store:
        assert store.durable
        async with store.start(flow, n=3) as handler:
            seen = await answer_when_asked(handler, True)
            assert await handler.result() == {"ok": True, "ticks": 3}
    assert [type(e) for e in seen] == [Tick, Tick, Tick, Ask, StopEvent]
    row, events = await stored(tmp_path, handler.run_id)
    assert (row.workflow, row.status, row.last_seq) == ("Asking", "completed", 5)
    assert row.result == b'{"ok":true,"ticks":3}'
    assert [e["type"] for e in events] == ["Tick", "Tick", "Tick", "Ask", "StopEvent"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]


async def test_a_store_run_begins_with_its_context_and_leaves_it_there(tmp_path: Path) -> None:
    flow = Chat()
    async with open_store(url(tmp_path)) as store:
        ctx = Context(flow)
        await ctx.store.set("history", ["before"])
        async with store.start(flow, message="first", ctx=ctx) as handler:
            assert await handler.result() == 2
        assert await ctx.store.get("history") == ["before", "first"]
        first = handler.run_id
    # A restart: the next turn goes on from what the first left.
    async with open_store(url(tmp_path)) as store:
        ctx = await store.context(flow, first)
        assert await store.run(flow, message="second", ctx=ctx) == 3
        assert await ctx.store.get("history") == ["before", "first", "second"]
        with pytest.raises(LookupError, match="no run 'missing'"):
            await store.context(flow, "missing")


async def test_a_context_value_a_store_cannot_keep_starts_nothing(tmp_path: Path) -> None:
    flow = Chat()
    async with open_store(url(tmp_path)) as store:
        ctx = Context(flow)
        await ctx.store.set("history", [object()])
        with pytest.raises(NotJournalable, match=r"'history'\[0\] holds a object"):
            await store.run(flow, message="x", ctx=ctx)
        async with open_backend(url(tmp_path).replace("runs.db", "other.db")) as other:
            assert other is not None
    async with open_backend(url(tmp_path)) as backend:
        assert backend is not None
        assert await backend.runs() == []


async def test_a_suspended_run_resumes_waiting_without_asking_again(tmp_path: Path) -> None:
    """Leaving a run's block by a cancellation (a deadline, a shutdown) suspends it; the next
    `resume` goes on with it: the question it asked is not asked again, and an answer
    completes it."""
    flow = Asking()
    async with open_store(url(tmp_path)) as store:
        with trio.CancelScope() as shutdown:
            async with store.start(flow, n=2) as handler:
                async for event in handler.stream_events():
                    if isinstance(event, Ask):
                        break
                shutdown.cancel()
                await trio.sleep_forever()
        run_id = handler.run_id
    row, _ = await stored(tmp_path, run_id)
    assert row.status == "running"
    async with open_store(url(tmp_path)) as store:
        async with store.resume([Chat(), flow]) as handlers:
            assert [h.run_id for h in handlers] == [run_id]
            (resumed,) = handlers
            await resumed.send_event(Answer(ok=False))
            after = [event async for event in resumed.stream_events()]
            assert await resumed.result() == {"ok": False, "ticks": 2}
        async with store.resume([flow]) as handlers:
            assert handlers == []
    assert not any(isinstance(e, Ask) for e in after)
    row, events = await stored(tmp_path, run_id)
    assert row.status == "completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("Ask") == 1
    assert events[-1]["type"] == "StopEvent"


async def test_leaving_a_store_runs_block_cancels_it_for_good(tmp_path: Path) -> None:
    flow = Asking()
    async with open_store(url(tmp_path)) as store:
        async with store.start(flow, n=1) as handler:
            pass
        async with store.resume([flow]) as handlers:
            assert handlers == []
    row, events = await stored(tmp_path, handler.run_id)
    assert row.status == "cancelled"
    assert events[-1]["type"] == "WorkflowCancelledEvent"


async def test_a_changed_workflow_is_not_resumed_and_others_are_left(tmp_path: Path) -> None:
    class Changed(Workflow):
        @step
        async def ask(self, ev: Ticks) -> Half:
            return Half()

        @step
        async def more(self, ev: Half) -> StopEvent:
            return StopEvent()

    async with open_store(url(tmp_path)) as store:
        for name in ("kept", "changed"):
            with trio.CancelScope() as shutdown:
                async with store.start(Asking(), n=0, name=name) as handler:
                    await answer_when_asked(handler, None)
                    shutdown.cancel()
                    await trio.sleep_forever()
            if name == "kept":
                kept = handler.run_id
        async with store.resume({"changed": Changed()}) as handlers:
            assert handlers == []
        async with store.resume({"kept": Asking()}) as handlers:
            assert [h.run_id for h in handlers] == [kept]
            await handlers[0].send_event(Answer(ok=True))  # asked before: it waits already
            assert await handlers[0].result() == {"ok": True, "ticks": 0}
    async with open_backend(url(tmp_path)) as backend:
        assert backend is not None
        rows = {row.workflow: row for row in await backend.runs()}
        assert rows["changed"].status == "failed"
        error = rows["changed"].error or b""
        assert b"ReplayError" in error
        assert b"has changed since it started" in error
        assert rows["kept"].status == "completed"
    with pytest.raises(TypeError, match="list of workflows"):
        store.resume(Asking())  # type: ignore[arg-type]


def started(db: Path) -> int:
    """How many step attempts the journal in ``db`` has as begun (read beside its writer)."""
    with contextlib.closing(sqlite3.connect(db)) as reader:
        ((count,),) = reader.execute("SELECT count(*) FROM tf_journal WHERE kind = 'start'")
    return int(count)


async def wait_for_starts(db: Path, count: int) -> None:
    """Until the journal in ``db`` has ``count`` step attempts begun (committed)."""
    with trio.fail_after(60):
        while await trio.to_thread.run_sync(started, db) < count:
            await trio.sleep(0.01)


async def killed_in_second_step(tmp_path: Path) -> tuple[Path, Path, str]:
    """A `Steps` run in a child process, ``kill -9``-ed in its second step: the store file,
    the marks file and the run's id."""
    db, marks = tmp_path / "runs.db", tmp_path / "marks"
    child = await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD, str(db), str(marks)],
        stdout=subprocess.PIPE,
        env={**os.environ, "TRIOFLOW_TEST_HANG": "1", "PYTHONPATH": str(HERE)},
    )
    try:
        assert child.stdout is not None
        out = b""
        with trio.fail_after(60):  # its id, and that the second step hangs, in either order
            while out.count(b"\n") < 2:
                out += await child.stdout.receive_some()
        lines = set(out.decode().split())
        assert "hanging" in lines
        (run_id,) = lines - {"hanging"}
        # Killed once its second step's start is committed (else that step was never
        # under way, as far as any later process can know).
        await wait_for_starts(db, 2)
    finally:
        child.kill()
        await child.wait()
        if child.stdout is not None:
            await child.stdout.aclose()
    return db, marks, run_id


async def test_a_run_killed_with_its_process_resumes_in_another(tmp_path: Path) -> None:
    """``kill -9`` of a process running a store run in its second step: a new process's
    `resume` runs the second step again (after a `StepFailedEvent` with `WorkerLost`), with the
    same `ctx.task_key`, not the first; the context the run began with is there."""
    db, marks, run_id = await killed_in_second_step(tmp_path)
    async with open_store(f"sqlite:///{db}") as store, store.resume([Steps()]) as handlers:
        (handler,) = handlers
        assert handler.run_id == run_id
        events = [event async for event in handler.stream_events()]
        first_key = await handler.result()
    lost = events[0]
    assert isinstance(lost, StepFailedEvent)
    assert isinstance(lost.exception, WorkerLost)
    assert lost.step_name == "second"
    assert isinstance(events[-1], StopEvent)
    ran = marks.read_text().splitlines()
    assert ran[0] == "first"
    assert len(ran) == 3
    assert ran[1] == ran[2]  # the second step, twice, with the same task key
    assert first_key.startswith(f"{run_id}:")
    row, stream = await stored(tmp_path, run_id)
    assert (row.status, row.recoveries) == ("completed", 1)
    assert [e["seq"] for e in stream] == list(range(1, len(stream) + 1))


async def test_a_run_on_a_store_fails_as_in_memory(tmp_path: Path) -> None:
    class Boom(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            raise ValueError("boom")

    async with open_store(url(tmp_path)) as store:
        with pytest.raises(ValueError, match="boom"):
            await store.run(Boom())
        async with store.resume([Boom()]) as handlers:
            assert handlers == []
    async with open_backend(url(tmp_path)) as backend:
        assert backend is not None
        (row,) = await backend.runs()
    assert row.status == "failed"
    assert b"boom" in (row.error or b"")
    _, events = await stored(tmp_path, row.run_id)
    assert events[-1]["type"] == WorkflowFailedEvent.__name__
    assert WorkflowCancelledEvent.__name__ not in [e["type"] for e in events]


async def test_a_store_whose_block_was_left_says_so(tmp_path: Path) -> None:
    async with open_store(url(tmp_path)) as store:
        pass
    with pytest.raises(StoreError, match="is closed"):
        store.start(Chat(), message="late")
    with pytest.raises(StoreError, match="is closed"):
        await store.run(Chat(), message="late")
    with pytest.raises(StoreError, match="is closed"):
        store.resume([Chat()])
    async with open_backend(url(tmp_path)) as backend:
        assert backend is not None
        assert await backend.runs() == []


async def test_a_stop_after_a_recovery_keeps_the_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash counts as a recovery once resumed; suspending the resumed run (a stop) neither
    counts nor takes the count back."""
    db, _, run_id = await killed_in_second_step(tmp_path)
    monkeypatch.setenv("TRIOFLOW_TEST_HANG", "1")
    async with open_store(f"sqlite:///{db}") as store:
        with trio.CancelScope() as shutdown:
            async with store.resume([Steps()]) as handlers:
                assert [h.run_id for h in handlers] == [run_id]
                await wait_for_starts(db, 3)  # the second step runs again, and hangs
                shutdown.cancel()
                await trio.sleep_forever()
    row, _ = await stored(tmp_path, run_id)
    assert (row.status, row.recoveries) == ("running", 1)
    monkeypatch.delenv("TRIOFLOW_TEST_HANG")
    async with open_store(f"sqlite:///{db}") as store, store.resume([Steps()]) as handlers:
        (handler,) = handlers
        lost = [e async for e in handler.stream_events() if isinstance(e, StepFailedEvent)]
        await handler.result()
    assert [str(e.exception) for e in lost] == [
        "the process running step 'second' was stopped before the step finished; it runs again"
    ]
    row, _ = await stored(tmp_path, run_id)
    assert (row.status, row.recoveries) == ("completed", 1)


async def test_a_run_past_its_recoveries_ends_failed(tmp_path: Path) -> None:
    db, marks, run_id = await killed_in_second_step(tmp_path)
    async with open_store(f"sqlite:///{db}") as store:
        with pytest.raises(ValueError, match="max_recoveries"):
            store.resume([Steps()], max_recoveries=-1)
        async with store.resume([Steps()], max_recoveries=0) as handlers:
            assert handlers == []
    row, events = await stored(tmp_path, run_id)
    assert row.status == "failed"
    assert b"WorkerLost" in (row.error or b"")
    assert events[-1]["type"] == "WorkflowFailedEvent"
    assert marks.read_text().splitlines()[1:] == [f"second {run_id}:4.1"]  # not run again


async def test_two_resumes_at_once_resume_a_run_once(tmp_path: Path) -> None:
    async with open_store(url(tmp_path)) as store:
        with trio.CancelScope() as shutdown:
            async with store.start(Asking(), n=0) as handler:
                await answer_when_asked(handler, None)
                shutdown.cancel()
                await trio.sleep_forever()
    got: list[list[Any]] = []
    async with open_store(url(tmp_path)) as store:

        async def resume() -> None:
            async with store.resume([Asking()]) as handlers:
                got.append(handlers)
                for resumed in handlers:
                    await resumed.send_event(Answer(ok=True))
                    await resumed.result()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(resume)
            nursery.start_soon(resume)
    assert sorted(len(handlers) for handlers in got) == [0, 1]
    row, events = await stored(tmp_path, handler.run_id)
    assert row.status == "completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def test_leaving_the_store_with_a_run_on_it_suspends_the_run(tmp_path: Path) -> None:
    """A run whose block is in another task when the store's block is left is stopped as
    by a shutdown, recorded, and resumed later; nothing hangs."""
    outcome: list[BaseException] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, open_store(url(tmp_path)) as store:

            async def runner(task_status: trio.TaskStatus[str]) -> None:
                async with store.start(Asking(), n=1) as handler:
                    await answer_when_asked(handler, None)
                    task_status.started(handler.run_id)
                    try:
                        await handler.result()
                    except WorkflowCancelledError as error:  # as seen in the process
                        outcome.append(error)

            run_id = await nursery.start(runner)
    assert [type(error) for error in outcome] == [WorkflowCancelledError]
    row, _ = await stored(tmp_path, run_id)
    assert row.status == "running"
    async with open_store(url(tmp_path)) as store, store.resume([Asking()]) as handlers:
        (handler,) = handlers
        await handler.send_event(Answer(ok=True))
        assert await handler.result() == {"ok": True, "ticks": 1}


async def test_the_reader_and_the_store_get_two_writers_events_in_one_order(
    tmp_path: Path,
) -> None:
    for buffer in (0, 4):
        flow = Both(stream_buffer=buffer)
        seen: list[int] = []
        async with open_store(url(tmp_path)) as store:
            async with store.start(flow, n=0) as handler:
                async for event in handler.stream_events(Tick):
                    if isinstance(event, Tick):
                        seen.append(event.i)
                        if len(seen) % 3 == 0:
                            await trio.lowlevel.checkpoint()  # a reader slower than the writers
            assert await handler.result() == "both"
        _, events = await stored(tmp_path, handler.run_id)
        assert [e["data"]["i"] for e in events if e["type"] == "Tick"] == seen
        assert len(seen) == 400


async def test_a_run_given_a_context_is_answered_through_handler_ctx(tmp_path: Path) -> None:
    """On a store, `handler.ctx` is the run's own (live) context: sending through it works,
    and the context given gets the run's store at its end; after the end the run's store is
    as it ended."""
    flow = Asking()
    async with open_store(url(tmp_path)) as store:
        ctx = Context(flow)
        await ctx.store.set("turn", 1)
        async with store.start(flow, n=0, ctx=ctx) as handler:
            async for event in handler.stream_events():
                if isinstance(event, Ask):
                    await handler.ctx.store.set("asked", True)
                    handler.ctx.send_event(Answer(ok=True))
            assert await handler.result() == {"ok": True, "ticks": 0}
        assert await ctx.store.get("asked") is True
        with pytest.raises(WorkflowRuntimeError, match="has ended"):
            await handler.ctx.store.set("late", 1)
        kept = await store.context(flow, handler.run_id)
        assert kept.to_dict() == {"store": {"turn": 1, "asked": True}}


async def test_the_reader_gets_the_failure_that_ended_a_store_run(tmp_path: Path) -> None:
    class Boom(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            raise ValueError("boom")

    async with open_store(url(tmp_path)) as store:
        with pytest.raises(ValueError, match="boom"):
            async with store.start(Boom()) as handler:
                events = [event async for event in handler.stream_events()]
    assert [type(event) for event in events] == [StepFailedEvent, WorkflowFailedEvent]
    _, stored_events = await stored(tmp_path, handler.run_id)
    assert [e["type"] for e in stored_events] == ["StepFailedEvent", "WorkflowFailedEvent"]


async def test_ctrl_c_in_a_step_suspends_a_store_run(tmp_path: Path) -> None:
    async with open_store(url(tmp_path)) as store:
        with pytest.raises(KeyboardInterrupt):
            await store.run(Interrupted())
        (row,) = await store._backend.runs()  # type: ignore[union-attr]
    assert row.status == "running"  # the process was stopping: it resumes later


async def test_a_run_in_a_cancelled_scope_raises_cancelled(tmp_path: Path) -> None:
    caught: list[BaseException] = []
    async with open_store(url(tmp_path)) as store:
        runs: list[Callable[[], Awaitable[object]]] = [
            lambda: Chat().run(message="x"),
            lambda: store.run(Chat(), message="x"),
        ]
        for run in runs:
            with trio.CancelScope() as scope:
                scope.cancel()
                try:
                    await run()
                except BaseException as error:  # not a group: trio's scope catches it
                    caught.append(error)
                    raise
            assert scope.cancelled_caught
        assert [type(error) for error in caught] == [trio.Cancelled, trio.Cancelled]


def test_bad_arguments_get_clear_errors(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_store(url(tmp_path)) as store:
            for bad, error in [
                (None, "list of workflows"),
                ("Chat", "list of workflows"),
                ({1: Chat()}, "non-empty str"),
                ({"chat": "Chat"}, "runs workflows"),
                ([Chat], "not its class"),
            ]:
                with pytest.raises(TypeError, match=error):
                    store.resume(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="non-empty str"):
                store.start(Chat(), message="x", name=1)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="non-empty str"):
                store.start(Chat(), message="x", name="")
            with pytest.raises(TypeError, match="runs workflows"):
                await store.run("x")  # type: ignore[arg-type]

    trio.run(main)
