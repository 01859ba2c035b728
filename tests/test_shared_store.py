"""A PostgreSQL store shared by processes (nodes): each run owned by one process at a time
(claims, leases, fencing), control from any of them (the inbox, cancel flags), and any of them
serving any run. These run the nodes in one process, each with its own store (its own
connections and liveness lock): as far as the database can tell, separate processes. Killing
real processes is `test_cluster`'s."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
from _http import DURABLE_FLOWS, served, sse_messages, wait_for, wait_until
from _postgres import fresh_database, require_postgres

from trioflow import StartEvent, StopEvent, Workflow, step
from trioflow._durable import fingerprint, unfinished
from trioflow._store import (
    EventRow,
    InboxTaken,
    NewEvent,
    NewRun,
    PostgresStore,
    RunEnded,
    RunRow,
    StoreError,
    StoreUnavailable,
    open_postgres,
)

#: The workflow every run here is of, with the graph's fingerprint its rows carry.
SERVED = {"flow": ""}


def run_row(run_id: str, number: int) -> RunRow:
    return RunRow(run_id, number, "flow", "running", b"{}", False, 0, None, None, 0.0, None)


def event(seq: int) -> EventRow:
    body = json.dumps({"seq": seq, "type": "Tick", "data": {}}).encode()
    return EventRow(seq, "Tick", "t.Tick", 0, "", body)


@asynccontextmanager
async def node(
    url: str, name: str, *, lease: float = 15.0, tending: bool = True
) -> AsyncIterator[PostgresStore]:
    """A store opened as node ``name``, its flusher running (and, unless not ``tending``,
    renewing its leases and listening) for the block."""
    store = await open_postgres(url, node=name, lease=lease)
    store._tending = not tending  # (a flusher tends only when no other does)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.flush_forever)
            yield store
            await store.drain()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


async def owned_rows(store: PostgresStore, run_id: str) -> tuple[str | None, int, int]:
    """The owner, epoch and event count the database has for ``run_id``."""

    def query(db: Any) -> tuple[str | None, int, int]:
        owner, epoch = db.execute(
            "SELECT owner, epoch FROM tf_runs WHERE run_id = %s", (run_id,)
        ).fetchone()
        (count,) = db.execute(
            "SELECT count(*) FROM tf_events WHERE run_id = %s", (run_id,)
        ).fetchone()
        return owner, epoch, count

    result: tuple[str | None, int, int] = await store._read(query)
    return result


async def test_two_processes_never_claim_one_run() -> None:
    """200 runs submitted for any process to claim, claimed by two at once in small batches:
    each run is claimed once (its epoch is 1), and every run is claimed."""
    with fresh_database() as url:
        async with node(url, "a") as a, node(url, "b") as b:
            for n in range(200):
                a.append(NewRun(run_row(f"r{n}", await a.next_number()), queued=True))
            await a.drain()
            claimed: dict[str, list[str]] = {"a": [], "b": []}

            async def claim_all(store: PostgresStore) -> None:
                while rows := await store.claim(SERVED, limit=7):
                    claimed[store.node] += [row.run_id for row in rows]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(claim_all, a)
                nursery.start_soon(claim_all, b)
            assert not set(claimed["a"]) & set(claimed["b"])
            assert sorted(claimed["a"] + claimed["b"]) == sorted(f"r{n}" for n in range(200))
            assert claimed["a"]
            assert claimed["b"]
            epochs = await a._read(
                lambda db: db.execute("SELECT DISTINCT epoch FROM tf_runs").fetchall()
            )
            assert epochs == [(1,)]
            assert not await a.claim(SERVED)


async def test_a_run_is_claimed_only_by_a_process_serving_its_graph() -> None:
    """A run of a workflow a process does not serve, or serves with another graph (its code
    differs), is left for the others."""
    with fresh_database() as url:
        async with node(url, "a") as a:
            row = run_row("r", await a.next_number())
            await a.flushed(a.append(NewRun(row, queued=True)))
            assert await a.claim({"other": ""}) == []
            assert await a.claim({"flow": "another graph"}) == []
            assert [claimed.run_id for claimed in await a.claim(SERVED)] == ["r"]


async def test_a_live_owner_keeps_its_runs_and_a_dead_ones_are_claimed_at_once() -> None:
    """A run owned by a process that is alive (its liveness lock held, its lease renewed) is
    not claimed; once that process is gone (killed: it released nothing), the run is claimed
    at once, long before its lease would run out, and the claim says what it had committed."""
    with fresh_database() as url:
        async with node(url, "b") as b:
            async with node(url, "a", lease=60) as a:
                a.append(NewRun(run_row("r", await a.next_number())))
                a.append(NewEvent("r", event(1)))
                await a.drain()
                assert await b.claim(SERVED) == []
                a._leases.clear()  # as if killed: it gives nothing back as it goes
            with trio.fail_after(5):  # (its session ends a moment after its connection)
                while not (found := await b.claim(SERVED)):
                    await trio.sleep(0.01)
            (claimed,) = found
            assert (claimed.run_id, claimed.owner, claimed.last_seq) == ("r", "b", 1)
            assert await owned_rows(b, "r") == ("b", 2, 1)


async def test_a_stopping_process_hands_its_runs_over() -> None:
    """A process that stops releases the runs it owns: another claims them at once."""
    with fresh_database() as url:
        async with node(url, "b") as b:
            async with node(url, "a", lease=60) as a:
                await a.flushed(a.append(NewRun(run_row("r", await a.next_number()))))
            assert [row.run_id for row in await b.claim(SERVED)] == ["r"]


async def test_the_late_writes_of_a_process_that_lost_its_lease_are_dropped() -> None:
    """A process that did not renew its lease (paused past it) loses its run to another's
    claim: what it writes from then on is dropped, not committed over the new owner's, and it
    is told that it lost the run (to stop it); the new owner's writes go on."""
    with fresh_database() as url:
        async with node(url, "a", lease=0.5, tending=False) as a, node(url, "b") as b:
            lost: list[set[str]] = []
            a.on_lost(lost.append)
            published: list[int] = []
            a.on_commit(
                lambda batch: published.extend(
                    op.event.seq for op in batch if isinstance(op, NewEvent)
                )
            )
            a.append(NewRun(run_row("r", await a.next_number())))
            await a.flushed(a.append(NewEvent("r", event(1))))
            with trio.fail_after(10):
                while not (claimed := await b.claim(SERVED)):
                    await trio.sleep(0.1)  # its lease runs out: nobody renews it
            assert [row.run_id for row in claimed] == ["r"]
            await a.flushed(a.append(NewEvent("r", event(2))))  # fenced
            assert lost == [{"r"}]
            assert published == [1]  # nobody heard of what was dropped
            await b.flushed(b.append(NewEvent("r", event(2))))
            assert await owned_rows(b, "r") == ("b", 2, 2)
            await a.flushed(a.append(NewEvent("r", event(3))))  # still dropped, told once
            assert lost == [{"r"}]
            assert await owned_rows(b, "r") == ("b", 2, 2)


async def test_answers_and_cancels_reach_the_owner_through_the_store() -> None:
    """An event sent to a run from another process is a committed inbox row, and the owner is
    woken; once taken it is offered no more. A cancel is a flag the owner reads. A run that
    ended takes neither."""
    with fresh_database() as url:
        async with node(url, "a") as a, node(url, "b") as b:
            await a.flushed(a.append(NewRun(run_row("r", await a.next_number()))))
            woken = a.signals.controlled()
            assert await b.send("r", b'{"type": "Go"}')
            with trio.fail_after(5):
                await woken.wait()
            ((seq, run_id, body),), cancels = await a.control()
            assert (run_id, body, cancels) == ("r", b'{"type": "Go"}', [])
            await a.flushed(a.append(InboxTaken("r", seq)))
            assert await a.control() == ([], [])
            assert await b.request_cancel("r")
            assert await a.control() == ([], ["r"])
            await a.flushed(a.append(RunEnded("r", "cancelled", None, None, 1.0, 0)))
            assert not await b.send("r", b"{}")
            assert not await b.request_cancel("r")
            assert not await b.send("nope", b"{}")


async def test_a_commit_wakes_the_followers_of_its_runs() -> None:
    """Each commit notifies the runs whose events it holds: a process following one is woken,
    and the run's row says its last committed seq, also the commit that started it."""
    with fresh_database() as url:
        async with node(url, "a") as a, node(url, "b") as b:
            woken = b.signals.committed("r")
            a.append(NewRun(run_row("r", await a.next_number())))
            a.append(NewEvent("r", event(1)))
            await a.flushed(a.append(NewEvent("r", event(2))))
            with trio.fail_after(5):
                await woken.wait()
            row = await b.run("r")
            assert row is not None
            assert (row.last_seq, row.owner) == (2, "a")
            await a.flushed(a.append(NewEvent("r", event(3))))
            row = await b.run("r")
            assert row is not None
            assert row.last_seq == 3


# -- nodes serving HTTP --


async def test_any_node_streams_answers_and_cancels_a_run_another_runs() -> None:
    """An HTTP node (max_runs=0) and a worker on one database: a run started on the HTTP node
    runs on the worker (its status names it), streams live from the HTTP node with every
    event once, takes an answer posted there and completes; another is cancelled from there
    and its stream ends with WorkflowCancelledEvent. A run that ended takes no answer (409)."""
    with fresh_database() as url:
        async with (
            served(DURABLE_FLOWS, store=url, max_runs=0, node_id="http") as http,
            served(DURABLE_FLOWS, store=url, node_id="worker") as worker,
        ):
            run_id = await http.start("gate")
            streamed: list[dict[str, Any]] = []
            async with trio.open_nursery() as nursery:

                async def stream() -> None:
                    async with http.client.stream("GET", f"/runs/{run_id}/events") as response:
                        async for message in sse_messages(response):
                            if "data" in message:
                                streamed.append(message)

                nursery.start_soon(stream)
                await wait_until(lambda: [m["event"] for m in streamed] == ["Tick", "Asking"])
                status = await http.status(run_id)
                assert (status["status"], status["node"]) == ("running", "worker")
                bad = await http.client.post(f"/runs/{run_id}/events", json={"type": "Nope"})
                assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_event")
                go = {"type": "Go", "data": {"count": 1}}
                answered = await http.client.post(f"/runs/{run_id}/events", json=go)
                assert answered.status_code == 202, answered.text
            assert [m["event"] for m in streamed] == ["Tick", "Asking", "Tick", "StopEvent"]
            assert [int(m["id"]) for m in streamed] == [1, 2, 3, 4]
            status = await http.wait_status(run_id, "completed")
            assert (status["result"], status["node"]) == (1, None)
            late = await http.client.post(f"/runs/{run_id}/events", json=go)
            assert (late.status_code, late.json()["error"]["code"]) == (409, "run_ended")

            doomed = await http.start("gate")
            await wait_until(lambda: doomed in worker.app._registry._records)  # type: ignore[union-attr]
            async with http.client.stream("GET", f"/runs/{doomed}/events") as response:
                cancelled = await http.client.post(f"/runs/{doomed}/cancel")
                assert cancelled.status_code == 202, cancelled.text
                names = [m.get("event") async for m in sse_messages(response) if "data" in m]
            assert names[-1] == "WorkflowCancelledEvent"
            assert (await http.wait_status(doomed, "cancelled"))["node"] is None
            again = await http.client.post(f"/runs/{doomed}/cancel")
            assert again.status_code == 409


async def test_a_client_resumes_on_another_node_where_it_left() -> None:
    """A client that read part of a run's stream on one node and resumes on another with
    Last-Event-ID gets the rest, each event once. The run ran on the node it was started
    on, from its start to its end, claimed once."""
    with fresh_database() as url:
        async with (
            served(DURABLE_FLOWS, store=url, node_id="one") as one,
            served(DURABLE_FLOWS, store=url, max_runs=0, node_id="two") as two,
        ):
            run_id = await one.start("count", {"n": 40})
            await one.wait_status(run_id, "completed")
            head: list[int] = []
            async with (
                one.client.stream("GET", f"/runs/{run_id}/events") as response,
                aclosing(sse_messages(response)) as messages,
            ):
                async for message in messages:
                    if "data" in message:
                        head.append(int(message["id"]))
                        if len(head) == 15:
                            break
            rest = await two.events(run_id, after=15)
            assert head + [int(m["id"]) for m in rest] == list(range(1, 42))
            # It ran where it started, from its start: never stopped and claimed again.
            assert "StepFailedEvent" not in [m["event"] for m in rest]
            store = one.app._registry._store  # type: ignore[union-attr]
            assert isinstance(store, PostgresStore)
            assert await owned_rows(store, run_id) == ("one", 1, 41)


async def test_an_http_node_alone_keeps_runs_waiting_until_a_worker_comes() -> None:
    """With no process to run it, a submitted run waits (running, on no node); a worker that
    starts later claims and runs it."""
    with fresh_database() as url:
        async with served(DURABLE_FLOWS, store=url, max_runs=0, node_id="http") as http:
            run_id = await http.start("count", {"n": 2})
            await trio.sleep(0.2)
            status = await http.status(run_id)
            assert (status["status"], status["node"]) == ("running", None)
            async with served(DURABLE_FLOWS, store=url, node_id="late"):
                status = await http.wait_status(run_id, "completed")
            assert status["result"] == {"counted": 2}


def test_an_http_node_needs_a_shared_store() -> None:
    """max_runs=0 (a process that runs nothing) is refused without a store others run on."""
    from trioflow import WorkflowApp

    with pytest.raises(ValueError, match="max_runs=0"):
        WorkflowApp(DURABLE_FLOWS, max_runs=0)
    with pytest.raises(ValueError, match="max_runs=0"):
        WorkflowApp(DURABLE_FLOWS, max_runs=0, store="sqlite:///x.db")


async def test_answers_and_cancels_wait_for_a_run_with_no_process() -> None:
    """A run whose process stopped (it released its runs) waits for another: an answer and a
    cancel posted meanwhile are committed (202) and reach it once a process claims it. The
    answered run completes without asking again; the cancelled one ends cancelled."""
    with fresh_database() as url:
        async with served(DURABLE_FLOWS, store=url, max_runs=0, node_id="http") as http:
            async with served(DURABLE_FLOWS, store=url, node_id="first"):
                answered, cancelled = await http.start("gate"), await http.start("gate")
                for run_id in (answered, cancelled):
                    await wait_for(partial(http.status, run_id), seen_asking)
            for run_id in (answered, cancelled):
                status = await http.status(run_id)
                assert (status["status"], status["node"]) == ("running", None)
            go = {"type": "Go", "data": {"count": 2}}
            assert (await http.client.post(f"/runs/{answered}/events", json=go)).status_code == 202
            assert (await http.client.post(f"/runs/{cancelled}/cancel")).status_code == 202
            async with served(DURABLE_FLOWS, store=url, node_id="second"):
                assert (await http.wait_status(answered, "completed"))["result"] == 2
                await http.wait_status(cancelled, "cancelled")
            events = [m["event"] for m in await http.events(answered)]
            assert events.count("Asking") == 1
            assert (await http.events(cancelled))[-1]["event"] == "WorkflowCancelledEvent"


def seen_asking(status: dict[str, Any]) -> bool:
    return bool(status["seq"] >= 2)


async def test_llama_index_routes_reach_a_run_another_process_runs() -> None:
    """With --llama-compat, an HTTP node's LlamaIndex routes work on runs a worker runs: the
    synchronous run answers its result, an event sent to a waiting handler reaches it (one
    sent to a step that does not exist, or does not take it, is refused: 400), and a cancel
    cancels."""
    with fresh_database() as url:
        async with (
            served(DURABLE_FLOWS, store=url, max_runs=0, llama_compat=True) as http,
            served(DURABLE_FLOWS, store=url, node_id="worker"),
        ):
            client = http.client
            ran = await client.post("/workflows/count/run", json={"start_event": {"n": 2}})
            assert ran.status_code == 200, ran.text
            assert ran.json()["result"]["value"]["result"] == {"counted": 2}
            waiting = (await client.post("/workflows/gate/run-nowait", json={})).json()
            url_events = f"/events/{waiting['handler_id']}"
            go = {"event": {"type": "Go", "value": {"count": 3}}}
            nope = await client.post(url_events, json={**go, "step": "nope"})
            assert (nope.status_code, "nope" in nope.json()["detail"]) == (400, True)
            wrong = await client.post(url_events, json={**go, "step": "gate"})  # takes no Go
            assert wrong.status_code == 400
            sent = await client.post(url_events, json=go)
            assert sent.json() == {"status": "sent"}
            done = await wait_for(
                lambda: client.get(f"/handlers/{waiting['handler_id']}"),
                lambda response: response.json()["status"] == "completed",
            )
            assert done.json()["result"]["value"]["result"] == 3
            doomed = (await client.post("/workflows/gate/run-nowait", json={})).json()
            cancelled = await client.post(f"/handlers/{doomed['handler_id']}/cancel")
            assert cancelled.json() == {"status": "cancelled"}
            await http.wait_status(doomed["handler_id"], "cancelled")


# -- what an adversarial review found --


def terminate(connection: Any) -> None:
    """End the database session of ``connection`` (as a restart, or an admin, would)."""
    import psycopg

    with psycopg.connect(require_postgres(), autocommit=True) as db:
        db.execute("SELECT pg_terminate_backend(%s)", (connection.info.backend_pid,))


async def test_a_process_goes_on_after_its_connections_are_dropped() -> None:
    """The database ends every session of a node's (as after a restart): its claims, renewals
    and control carry on over new connections, and a run sent to it after that runs, takes an
    answer and completes."""
    with fresh_database() as url:
        async with (
            served(DURABLE_FLOWS, store=url, max_runs=0, node_id="http") as http,
            served(DURABLE_FLOWS, store=url, node_id="worker", lease=1.5) as worker,
        ):
            store = worker.app._registry._store  # type: ignore[union-attr]
            assert isinstance(store, PostgresStore)
            for connection in (store._leaser, store._listener, *store._readers):
                terminate(connection)
            run_id = await http.start("gate")
            await wait_for(partial(http.status, run_id), seen_asking)
            go = {"type": "Go", "data": {"count": 1}}
            assert (await http.client.post(f"/runs/{run_id}/events", json=go)).status_code == 202
            assert (await http.wait_status(run_id, "completed"))["result"] == 1
            assert worker.app._registry.fatal is None  # type: ignore[union-attr]


async def test_a_dropped_listening_connection_does_not_give_the_runs_away() -> None:
    """A process's liveness lock is held by two of its sessions: when one drops (its listening
    connection), the process still looks alive and its runs stay its own."""
    with fresh_database() as url:
        async with node(url, "a") as a, node(url, "b") as b:
            await a.flushed(a.append(NewRun(run_row("r", await a.next_number()))))
            assert a._listener is not None
            terminate(a._listener)
            for _ in range(5):
                assert await b.claim(SERVED) == []
                await trio.sleep(0.05)


async def test_commits_of_two_processes_do_not_mix_their_serials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A commit whose connection was lost before it reached the database is made again, even
    though another process committed meanwhile (each process keeps its own serial: another's
    is never taken for its own); one that did reach it is not made twice."""
    import psycopg

    with fresh_database() as url:
        async with node(url, "a") as a, node(url, "b") as b:
            await a.flushed(a.append(NewRun(run_row("ra", await a.next_number()))))
            await b.flushed(b.append(NewRun(run_row("rb", await b.next_number()))))
            for reached in (False, True):
                assert a._writer is not None
                writer, commit = a._writer, a._writer.commit

                def lost(
                    writer: Any = writer, commit: Any = commit, reached: bool = reached
                ) -> None:
                    if reached:
                        commit()
                    writer.close()
                    raise psycopg.OperationalError("server closed the connection unexpectedly")

                monkeypatch.setattr(writer, "commit", lost)
                seq = 2 if reached else 1
                ticket = a.append(NewEvent("ra", event(seq)))
                await wait_until(lambda: a._unsure is not None)
                await b.flushed(b.append(NewEvent("rb", event(seq))))  # b commits meanwhile
                await a.flushed(ticket)
            assert a.failed is None
            assert await owned_rows(a, "ra") == ("a", 1, 2)


class GateV2(Workflow):
    """Another graph under the name ``gate`` (a deploy changed it)."""

    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="v2")


async def test_a_run_no_process_can_run_fails_after_the_grace() -> None:
    """A run whose workflow's graph changed (every process runs new code) is not replayed into
    the new graph; once it has waited unserved_grace for a process with its graph, one that
    cannot run it fails it, saying why."""
    with fresh_database() as url:
        async with served(DURABLE_FLOWS, store=url, node_id="old") as old:
            run_id = await old.start("gate")
            await wait_for(partial(old.status, run_id), seen_asking)
        flows = {**DURABLE_FLOWS, "gate": GateV2(timeout=None)}
        async with served(flows, store=url, node_id="new", unserved_grace=0.5) as new:
            status = await new.wait_status(run_id, "failed")
            assert "no process serving workflow 'gate'" in status["error"]["message"]
            assert (await new.events(run_id))[-1]["event"] == "WorkflowFailedEvent"


async def test_a_run_purged_elsewhere_is_let_go_by_its_process() -> None:
    """LlamaIndex's purge of a run another process runs (waiting for an answer): both
    processes soon say there is no such run, and the one that ran it has let it go."""
    with fresh_database() as url:
        async with (
            served(DURABLE_FLOWS, store=url, max_runs=0, llama_compat=True) as http,
            served(DURABLE_FLOWS, store=url, node_id="worker", lease=1.5) as worker,
        ):
            run_id = await http.start("gate")
            await wait_for(partial(http.status, run_id), seen_asking)
            purged = await http.client.post(f"/handlers/{run_id}/cancel", params={"purge": "true"})
            assert purged.json() == {"status": "deleted"}
            assert (await http.client.get(f"/runs/{run_id}")).status_code == 404
            await wait_for(
                lambda: worker.client.get(f"/runs/{run_id}"),
                lambda response: response.status_code == 404,
            )
            registry = worker.app._registry
            assert registry is not None
            await wait_until(lambda: run_id not in registry._records)


async def test_an_answer_is_left_for_the_next_owner_by_a_run_stopping_here() -> None:
    """An answer read from the inbox for a run that is stopping here (a shutdown suspended it:
    its journal records nothing more) is not taken: it stays for the process that goes on
    with the run."""
    with fresh_database() as url:
        async with served(DURABLE_FLOWS, store=url, node_id="first") as first:
            run_id = await first.start("gate")
            await wait_for(partial(first.status, run_id), seen_asking)
            registry = first.app._registry
            assert registry is not None
            store = registry._store
            assert isinstance(store, PostgresStore)
            registry._records[run_id].handler._suspend()  # as a shutdown does
            registry._deliver(run_id, 1, b'{"type": "Go", "data": {"count": 1}}')
            assert not [op for op in store._pending if isinstance(op, InboxTaken)]
            assert 1 not in registry._taken.get(run_id, set())


async def test_a_run_holds_from_its_claim_whatever_came_before() -> None:
    """A process's hold on a run counts from when it claimed the run (or started it), not from
    its last renewal of others: a run claimed after a quiet while may start its steps."""
    with fresh_database() as url:
        async with node(url, "a", lease=0.5, tending=False) as a:
            await trio.sleep(1)  # longer than a lease, with nothing renewed
            await a.flushed(a.append(NewRun(run_row("r", await a.next_number()), queued=True)))
            (claimed,) = await a.claim(SERVED)
            assert a.holds(claimed.run_id)
            a.append(NewRun(run_row("started", await a.next_number())))
            assert a.holds("started")
            await trio.sleep(0.5)  # and its lease runs out, unrenewed
            assert not a.holds(claimed.run_id)


# -- what a second adversarial review found --


async def test_runs_claimed_and_not_started_go_back() -> None:
    """A claim whose runs cannot be read (the database went away just after it) gives them
    back: another process claims them at once, rather than after their leases, and the one
    that claimed them no longer renews them."""
    with fresh_database() as url:
        async with node(url, "a") as a, node(url, "b") as b:
            flow = FlowForRows()
            row = attrs.evolve(run_row("r", await a.next_number()), fingerprint=fingerprint(flow))
            await a.flushed(a.append(NewRun(row, queued=True)))

            async def unreachable(run_id: str) -> list[tuple[int, str, bytes]]:
                raise StoreUnavailable("the database went away")

            a.journal = unreachable  # type: ignore[method-assign]
            with pytest.raises(StoreUnavailable):
                await unfinished(a, {"flow": flow}, max_recoveries=3)
            assert a._leases == {}
            claimed = await b.claim({"flow": fingerprint(flow)})
            assert [claimed.run_id for claimed in claimed] == ["r"]


class FlowForRows(Workflow):
    """A workflow for rows made here (`unfinished` takes the workflows themselves)."""

    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent()


async def test_a_client_resumes_past_what_a_node_has_read_of_a_run() -> None:
    """A node's feed of a run another process runs holds what its clients have read so far; a
    client resuming after a later seq (another node gave it, or this node's own status says)
    gets the rest, not a refusal."""
    with fresh_database() as url:
        async with (
            served(DURABLE_FLOWS, store=url, max_runs=0, node_id="http") as http,
            served(DURABLE_FLOWS, store=url, node_id="worker"),
        ):
            run_id = await http.start("count", {"n": 3000})
            host, port = http.url.removeprefix("http://").split(":")
            with trio.socket.socket() as slow:  # a client that reads a little, then stops
                slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await slow.connect((host, int(port)))
                request = f"GET /runs/{run_id}/events HTTP/1.1\r\nHost: {http.url[7:]}\r\n\r\n"
                await slow.send(request.encode())
                assert b" 200 " in await slow.recv(300)
                status = await http.wait_status(run_id, "completed")
                rest = await http.events(run_id, after=status["seq"] - 2)
                assert [m["event"] for m in rest] == ["Tick", "StopEvent"]
                assert [int(m["id"]) for m in rest] == [status["seq"] - 1, status["seq"]]


async def test_a_cancel_ends_a_waiting_run_though_no_process_has_room() -> None:
    """A run submitted while every process is full, then cancelled, ends cancelled at once,
    running nothing, rather than wait for room."""
    with fresh_database() as url:
        async with (
            served(DURABLE_FLOWS, store=url, max_runs=0, node_id="http") as http,
            served(DURABLE_FLOWS, store=url, node_id="worker", max_runs=1),
        ):
            busy = await http.start("gate")
            await wait_for(partial(http.status, busy), seen_asking)
            waiting = await http.start("count", {"n": 1})
            assert (await http.client.post(f"/runs/{waiting}/cancel")).status_code == 202
            await http.wait_status(waiting, "cancelled")
            events = await http.events(waiting)
            assert [m["event"] for m in events] == ["WorkflowCancelledEvent"]
            assert (await http.status(busy))["status"] == "running"


async def test_open_store_refuses_a_shared_database() -> None:
    """`trioflow.open_store` runs one program's runs; a PostgreSQL store is shared by
    processes that serve, answer and take over its runs: refused, saying what to use."""
    from trioflow import open_store as open_run_store

    with pytest.raises(StoreError, match="trioflow serve and trioflow worker"):
        async with open_run_store("postgresql://user@localhost/db"):
            pass


async def test_a_url_whose_scheme_has_capitals_names_the_same_store() -> None:
    """``PostgreSQL://...`` is accepted as URLs' schemes are, and opens the same database
    (libpq reads only ``postgresql://``)."""
    from trioflow._store import open_store as open_engine_store

    with fresh_database() as url:
        async with open_engine_store("PostgreSQL" + url.removeprefix("postgresql")) as store:
            assert isinstance(store, PostgresStore)
            assert await store.run("none") is None


async def test_a_database_out_of_reach_is_a_503_and_a_broken_loop_stops_the_process() -> None:
    """A request that needs the database while it cannot be reached is answered 503
    ``store_unavailable`` with Retry-After (the client may ask again); the claim and control
    loops wait that out, and any other failure of theirs stops the process as a fatal error
    does (`serve` raises it), rather than leave it serving without them."""
    with fresh_database() as url, pytest.raises(BaseExceptionGroup) as stopped:
        async with served(DURABLE_FLOWS, store=url, node_id="n") as node:
            registry = node.app._registry
            assert registry is not None
            store = registry._store
            assert isinstance(store, PostgresStore)
            run = store.run

            async def out_of_reach(run_id: str) -> None:
                raise StoreUnavailable("the database restarts")

            store.run = out_of_reach  # type: ignore[method-assign]
            response = await node.client.get("/runs/some-run")
            assert (response.status_code, response.headers["retry-after"]) == (503, "1")
            assert response.json()["error"]["code"] == "store_unavailable"
            store.run = run  # type: ignore[method-assign]

            async def broken() -> None:
                raise RuntimeError("a bug in a loop")

            store.control = broken  # type: ignore[assignment,method-assign]
            store.signals.everything()  # (the control loop looks now)
            with trio.fail_after(5):
                fatal = await node.app.wait_fatal()
            assert isinstance(fatal, RuntimeError)
            assert registry.closing
            await trio.sleep_forever()  # the server stops
    assert stopped.group_contains(RuntimeError, match="a bug in a loop")
