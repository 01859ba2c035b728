"""The server's bounds in bytes and clients, the run list's pages, and the answers about a run
whose end races a request: each against a real server on 127.0.0.1."""

from __future__ import annotations

import logging
import random
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import trio
from _http import ForeverFlow, Go, served, sse_messages, wait_until

from trioflow import Context, StartEvent, StopEvent, Workflow, step
from trioflow._server._feed import BATCH_BYTES, RunFeed

# -- retention in bytes --


async def test_the_history_is_bounded_in_bytes_as_well_as_in_events() -> None:
    """With nobody attached, 100 entries of 10 KB in a history of 1,024 entries and 64 KiB
    keep only what fits in 64 KiB, the newest; an entry larger than the limit is kept alone."""
    feed = RunFeed(retain=1024, retain_bytes=64 * 1024)
    feed.stop_holding()
    for seq in range(1, 101):
        await feed.append(seq, "Tick", b'"' + b"x" * 10_000 + b'"')
    assert feed.size <= 64 * 1024
    assert feed.last_seq - feed.first_seq + 1 == 6  # 6 entries of ~10 KB fit
    await feed.append(101, "Big", b'"' + b"y" * 100_000 + b'"')
    assert (feed.first_seq, feed.last_seq) == (101, 101)
    assert feed.size == feed.newest_size > 100_000


async def test_a_watcher_holds_the_pump_back_by_bytes() -> None:
    """An attached watcher that takes nothing holds the pump once the history's bytes are
    full, long before its count is: the pump waits rather than evict."""
    feed = RunFeed(retain=1024, retain_bytes=64 * 1024)
    with feed.watch():
        appended = 0
        with trio.move_on_after(1):  # the append that does not fit waits for room
            for seq in range(1, 101):
                await feed.append(seq, "Tick", b'"' + b"x" * 10_000 + b'"')
                appended = seq
        assert appended == 6
        assert feed.size <= 64 * 1024


async def test_a_batch_is_bounded_in_bytes() -> None:
    """A watcher takes at most BATCH_BYTES at a time (a larger entry alone): that is what a
    client that stops reading holds."""
    feed = RunFeed(retain=1024)
    for seq in range(1, 51):
        size = 200_000 if seq == 30 else 10_000
        await feed.append(seq, "Tick", b'"' + b"x" * size + b'"')
    with feed.watch() as watcher:
        batches = []
        while watcher.cursor < 50:
            batches.append(await watcher.next_batch())
    assert [e.seq for batch in batches for e in batch] == list(range(1, 51))
    for batch in batches:
        assert len(batch) == 1 or sum(len(e.frame) for e in batch) <= BATCH_BYTES
    assert [[e.seq for e in b] for b in batches if any(e.seq == 30 for e in b)] == [[30]]
    assert len(batches) > 50 * 10_000 // BATCH_BYTES


async def test_a_finished_run_keeps_at_most_retain_bytes_of_events() -> None:
    """A run nobody watches writes 200 events of 10 KB: the server keeps its newest events up
    to retain_bytes, and a client asking for the first gets 410, never a gap."""
    async with served(retain_bytes=100_000, hold_for_first_client=0) as server:
        run_id = await server.start("count", {"n": 200, "size": 10_000})
        await server.wait_status(run_id, "completed")
        record = server.app._registry.get(run_id)  # type: ignore[union-attr]
        assert record is not None
        await wait_until(lambda: record.done.is_set())
        assert record.feed.size <= 100_000
        expired = await server.client.get(f"/runs/{run_id}/events")
        assert expired.status_code == 410
        oldest = record.feed.first_seq
        events = await server.events(run_id, after=oldest - 1)
        assert [int(e["id"]) for e in events] == list(range(oldest, 202))
        assert events[-1]["event"] == "StopEvent"


async def test_finished_runs_are_forgotten_by_bytes() -> None:
    """Each finished run keeps ~60 KB; with keep_finished_bytes of 150,000 the server keeps
    the newest two of five (404 for the others), whatever keep_finished allows."""
    options: dict[str, Any] = {"keep_finished_bytes": 150_000, "hold_for_first_client": 0}
    async with served(keep_finished=100, **options) as server:
        run_ids = []
        for _ in range(5):
            run_id = await server.start("count", {"n": 6, "size": 10_000})
            await server.wait_status(run_id, "completed")
            record = server.app._registry.get(run_id)  # type: ignore[union-attr]
            assert record is not None
            await wait_until(lambda record=record: record.done.is_set())  # type: ignore[misc]
            run_ids.append(run_id)
        statuses = [(await server.client.get(f"/runs/{r}")).status_code for r in run_ids]
        assert statuses == [404, 404, 404, 200, 200]


# -- the run list --


async def test_the_run_list_pages_newest_first_and_never_inlines_results() -> None:
    """GET /runs: newest first, ``limit`` per page, ``next_cursor`` to the next, filters by
    workflow and status; results are left out (GET /runs/{id} has them)."""
    async with served() as server:
        finished = []
        for n in range(5):
            run_id = await server.start("count", {"n": n})
            await server.wait_status(run_id, "completed")
            finished.append(run_id)
        running = await server.start("forever")
        everything = [running, *reversed(finished)]

        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 2}
            if cursor is not None:
                params["cursor"] = cursor
            page = (await server.client.get("/runs", params=params)).json()
            assert len(page["runs"]) <= 2
            seen += [run["run_id"] for run in page["runs"]]
            assert all("result" not in run for run in page["runs"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == everything

        counted = (await server.client.get("/runs", params={"workflow": "count"})).json()
        assert [run["run_id"] for run in counted["runs"]] == list(reversed(finished))
        live = (await server.client.get("/runs", params={"status": "running,failed"})).json()
        assert [run["run_id"] for run in live["runs"]] == [running]
        assert (await server.status(finished[0]))["result"] == {"counted": 0}

        bad_params: list[dict[str, str | int]] = [
            {"limit": 0},
            {"limit": "x"},
            {"cursor": "-1"},
            {"status": "done"},
        ]
        for bad_param in bad_params:
            bad = await server.client.get("/runs", params=bad_param)
            assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")
        unknown = await server.client.get("/runs", params={"workflow": "nope"})
        assert unknown.status_code == 404


async def test_a_failed_runs_summary_has_a_short_error() -> None:
    """The list shows a failure's type, step and the start of its message."""

    class Loud(Workflow):
        @step
        async def shout(self, ev: StartEvent) -> StopEvent:
            raise ValueError("a" * 5000)

    async with served({"loud": Loud()}) as server:
        run_id = await server.start("loud")
        await server.wait_status(run_id, "failed")
        (summary,) = (await server.client.get("/runs")).json()["runs"]
        assert summary["error"]["type"] == "ValueError"
        assert summary["error"]["step"] == "shout"
        assert len(summary["error"]["message"]) == 200
        assert len((await server.status(run_id))["error"]["message"]) == 5000


# -- clients per run --


async def test_clients_per_run_are_capped() -> None:
    """With max_clients_per_run=2, a third client of the same run gets 429 too_many_clients;
    once one leaves, another may come."""
    async with served(max_clients_per_run=2) as server:
        run_id = await server.start("forever")
        url = f"/runs/{run_id}/events"
        async with server.client.stream("GET", url) as first:
            assert first.status_code == 200
            async with server.client.stream("GET", url) as second:
                assert second.status_code == 200
                await wait_until(lambda: _watchers(server, run_id) == 2)
                third = await server.client.get(url)
                assert third.status_code == 429
                assert third.json()["error"]["code"] == "too_many_clients"
                assert third.headers["retry-after"] == "1"
        await wait_until(lambda: _watchers(server, run_id) == 0)
        async with (
            server.client.stream("GET", url) as again,
            aclosing(sse_messages(again)) as messages,
        ):
            assert again.status_code == 200
            async for message in messages:
                if message.get("event") == "Tick":
                    break


def _watchers(server: Any, run_id: str) -> int:
    record = server.app._registry.get(run_id)
    assert record is not None
    watchers: int = record.feed.watchers
    return watchers


# -- the end of a run racing requests --


class Quick(Workflow):
    """Ends after a few milliseconds, about when the requests racing it arrive; takes any
    number of `Go` events meanwhile."""

    @step
    async def end(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await trio.sleep(random.random() * 0.01)
        return StopEvent(result="done")

    @step
    async def absorb(self, ev: Go) -> None:
        pass


async def test_cancel_racing_the_end_answers_what_happened() -> None:
    """Cancels sent while runs end: a 202 always means the run ends cancelled, a 409 that it
    ended otherwise; an event the run takes, sent meanwhile, is accepted (202) or refused
    with 409 run_ended, never 422."""
    async with served({"quick": Quick(), "forever": ForeverFlow(timeout=None)}) as server:
        answers: list[tuple[str, int]] = []

        async def race() -> None:
            run_id = await server.start("quick")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_post, server.client, f"/runs/{run_id}/cancel", answers)
                nursery.start_soon(_post, server.client, f"/runs/{run_id}/events", answers)

        for _ in range(40):
            await race()
        by_run: dict[str, dict[str, int]] = {}
        for path, code in answers:
            run_id, kind = path.split("/")[2], path.split("/")[3]
            by_run.setdefault(run_id, {})[kind] = code
        for run_id, codes in by_run.items():
            final = (await _final_status(server, run_id))["status"]
            assert codes["cancel"] == (202 if final == "cancelled" else 409), (codes, final)
            assert codes["events"] in (202, 409), codes


async def _post(client: httpx.AsyncClient, path: str, answers: list[tuple[str, int]]) -> None:
    body = {"type": "Go", "data": {"count": 1}} if path.endswith("events") else None
    response = await client.post(path, json=body)
    answers.append((path, response.status_code))


async def _final_status(server: Any, run_id: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            status: dict[str, Any] = await server.status(run_id)
            if status["status"] != "running":
                return status
            await trio.sleep(0.005)


# -- headers, Host, HEAD --


async def test_the_dashboard_cannot_be_framed_and_nothing_is_sniffed() -> None:
    async with served() as server:
        page = await server.client.get("/")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        for response in (page, await server.client.get("/workflows")):
            assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("host", ["LOCALHOST", "localhost.", "LocalHost.:{port}", "127.0.0.1."])
async def test_host_names_compare_as_dns_does(host: str) -> None:
    async with served() as server:
        port = server.url.rsplit(":", 1)[1]
        response = await server.client.get("/workflows", headers={"host": host.format(port=port)})
        assert response.status_code == 200


async def test_head_works_where_get_does() -> None:
    """HEAD answers as GET would, without a body; on a stream it attaches no client."""
    async with served() as server:
        run_id = await server.start("count", {"n": 3})
        await server.wait_status(run_id, "completed")
        for path in ("/", "/workflows", "/runs", f"/runs/{run_id}"):
            get, head = await server.client.get(path), await server.client.head(path)
            assert head.status_code == get.status_code == 200, path
            assert head.headers["content-type"] == get.headers["content-type"]
            assert head.headers["content-length"] == str(len(get.content))
            assert head.content == b""
        stream = await server.client.head(f"/runs/{run_id}/events")
        assert (stream.status_code, stream.content) == (200, b"")
        assert stream.headers["content-type"].startswith("text/event-stream")
        ended = await server.client.head(f"/runs/{run_id}/events", params={"after": 4})
        assert ended.status_code == 204
        missing = await server.client.head("/runs/nope")
        assert missing.status_code == 404
        assert (await server.client.request("PUT", "/runs")).headers["allow"] == "HEAD, GET"


@pytest.mark.parametrize(
    "host", ["LOCALHOST:1@evil", "localhost:abc", "[::1].evil", "localhost.evil.com", "[::1]:"]
)
async def test_host_names_with_anything_but_a_port_are_refused(host: str) -> None:
    async with served() as server:
        response = await server.client.get("/workflows", headers={"host": host})
        assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden_host")


async def test_numbers_too_long_in_the_query_are_bad_requests() -> None:
    """A limit or cursor of 5,000 digits is a 400, not a 500 from int()."""
    async with served() as server:
        for name in ("limit", "cursor"):
            response = await server.client.get("/runs", params={name: "1" * 5000})
            assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request")


async def test_a_websocket_upgrade_is_refused_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """trioflow serves no WebSocket: an upgrade gets 403, and nothing is logged as an error."""
    async with served() as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(
                b"GET /workflows HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            with trio.fail_after(5):
                answer = await stream.receive_some(4096)
        assert answer.startswith(b"HTTP/1.1 403")
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


class Big(Workflow):
    """Returns a result of about 1 MB."""

    @step
    async def make(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result={"text": "x" * 1_000_000, "n": 1})


async def test_a_large_result_is_shared_by_every_request_and_sent_in_parts() -> None:
    """GET /runs/{id} of a run with a 1 MB result: the result's JSON is made once and every
    answer sends slices of it (a client that stops reading holds a part, not a copy); the
    body arrives whole and equal to what the status says."""
    async with served({"big": Big()}) as server:
        run_id = await server.start("big")
        status = await server.wait_status(run_id, "completed")
        assert status["result"] == {"text": "x" * 1_000_000, "n": 1}
        record = server.app._registry.get(run_id)  # type: ignore[union-attr]
        assert record is not None
        first, second = record.describe(), record.describe()
        assert first[2] is second[2]  # the result's JSON, shared
        head = await server.client.head(f"/runs/{run_id}")
        assert int(head.headers["content-length"]) == sum(len(part) for part in first)
