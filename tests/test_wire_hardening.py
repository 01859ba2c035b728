"""The wire format against hostile and odd JSON, over a real server: what is refused coming in
(400 bad_json or 422), and what a run's output can hold without breaking its stream."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import trio
from _http import GateFlow, Server, served, wait_for

from trioflow import Context, Event, StartEvent, StopEvent, Workflow, step

# -- workflows --


class Said(Event):
    value: Any


class Echo(Workflow):
    """Streams its start event's ``value`` back as `Said`, then returns it."""

    @step
    async def echo(self, ctx: Context, ev: StartEvent) -> StopEvent:
        value = ev.get("value")
        await ctx.write_event_to_stream(Said(value=value))
        return StopEvent(result=value)


class Named(StartEvent):
    name: str


class NamedFlow(Workflow):
    @step
    async def greet(self, ev: Named) -> StopEvent:
        return StopEvent(result=f"hello {ev.name}")


class MakesSurrogate(Workflow):
    """Makes a string holding a lone surrogate itself, streams it and returns it."""

    @step
    async def make(self, ctx: Context, ev: StartEvent) -> StopEvent:
        text = "a" + chr(0xDFFF) + "b"
        await ctx.write_event_to_stream(Said(value=text))
        return StopEvent(result={"text": text})


class StreamsHugeInt(Workflow):
    """Streams an int too long for `str`, then waits: only a failure can end the run."""

    @step
    async def stream(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Said(value=1))
        await ctx.write_event_to_stream(Said(value=[2, 10**5000]))
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class ReturnsHugeInt(Workflow):
    """Returns a result holding an int too long for `str`."""

    @step
    async def finish(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result={"big": 10**5000, "small": 1})


FLOWS: dict[str, Workflow] = {
    "echo": Echo(timeout=None),
    "named": NamedFlow(timeout=None),
    "surrogate": MakesSurrogate(timeout=None),
    "streams_huge": StreamsHugeInt(timeout=None),
    "returns_huge": ReturnsHugeInt(timeout=None),
    "gate": GateFlow(timeout=None),
}

LONG_INT = b"9" * 5000
TOO_LONG = "<an integer of more than 4300 digits, too long to encode>"


async def post_start(server: Server, name: str, body: bytes) -> httpx.Response:
    return await server.client.post(
        f"/workflows/{name}/runs", content=body, headers={"content-type": "application/json"}
    )


def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


async def ndjson_lines(server: Server, run_id: str) -> list[str]:
    """The NDJSON stream's lines, split as httpx splits them (on U+2028 too)."""
    headers = {"accept": "application/x-ndjson"}
    async with server.client.stream("GET", f"/runs/{run_id}/events", headers=headers) as r:
        assert r.status_code == 200
        return [line async for line in r.aiter_lines() if line]


# -- item 6: lone surrogates and integers too long for str --


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"value": "a\\udfffb"}', "value"),
        (b'{"value": ["ok", {"deep": "\\ud800"}]}', "value[1].deep"),
        (b'{"value": {"\\udc00": 1}}', "value"),
        (b'{"value": ' + LONG_INT + b"}", "value"),
    ],
)
async def test_a_value_no_run_could_send_back_is_refused_with_422(body: bytes, field: str) -> None:
    """A lone surrogate (in a string or a key) or an integer of over 4,300 digits is valid
    JSON that a run echoing it could not stream: 422 naming the field, and no run starts."""
    async with served(FLOWS) as server:
        response = await post_start(server, "echo", body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "unsupported_value"
        assert error["message"].startswith(f"field {field!r} ")
        assert (await server.client.get("/runs")).json()["runs"] == []


async def test_a_surrogate_pair_and_an_escaped_backslash_u_are_taken() -> None:
    """What only looks like a lone surrogate is taken: a pair is one character, and
    ``"\\\\udfff"`` is six."""
    async with served(FLOWS) as server:
        response = await post_start(server, "echo", b'{"value": ["\\ud83d\\ude00", "\\\\udfff"]}')
        assert response.status_code == 201, response.text
        run_id = response.json()["run_id"]
        status = await server.wait_status(run_id, "completed")
        assert status["result"] == ["\U0001f600", "\\udfff"]


async def test_a_long_integer_in_a_wrongly_typed_field_is_422_not_500() -> None:
    """An integer of over 4,300 digits for a str field: a 422, never a 500."""
    async with served(FLOWS) as server:
        response = await post_start(server, "named", b'{"name": ' + LONG_INT + b"}")
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"].startswith("field 'name' ")


async def test_a_sent_event_is_refused_the_same_way() -> None:
    """POST /runs/{id}/events refuses a lone surrogate with the same 422 as a start."""
    async with served(FLOWS) as server:
        run_id = await server.start("gate")
        body = b'{"type": "Go", "data": {"count": "\\udfff"}}'
        response = await server.client.post(f"/runs/{run_id}/events", content=body)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "unsupported_value"
        assert error["message"].startswith("field 'data.count' holds a string with a lone")


async def test_a_lone_surrogate_a_step_makes_is_sent_as_its_escape() -> None:
    """A step may make a string with a lone surrogate: it goes out losslessly as a \\udfff
    escape in both stream formats and the status, and the stream ends as usual."""
    async with served(FLOWS) as server:
        run_id = await server.start("surrogate")
        events = await server.events(run_id)
        assert [e["event"] for e in events] == ["Said", "StopEvent"]
        assert events[0]["data"]["data"]["value"] == "a\udfffb"
        assert events[1]["data"]["data"]["result"] == {"text": "a\udfffb"}
        lines = await ndjson_lines(server, run_id)
        assert len(lines) == 2
        assert '"a\\udfffb"' in lines[0]
        status = await server.wait_status(run_id, "completed")
        assert status["result"] == {"text": "a\udfffb"}


async def test_an_event_holding_an_int_too_long_to_encode_fails_the_run() -> None:
    """A streamed event holding an int too long for str cannot kill the stream: it goes out
    with a marker in place of the int, and the run fails with an error naming the event, the
    field and why; the stream ends with the failure."""
    async with served(FLOWS) as server:
        run_id = await server.start("streams_huge")
        status = await server.wait_status(run_id, "failed")
        message = (
            "the Said event (seq 2) cannot be encoded as JSON: data.value[1] is an integer of "
            "more than 4300 digits"
        )
        assert status["error"]["type"] == "EncodeError"
        assert status["error"]["message"].startswith(message)
        assert "step" not in status["error"]  # no step failed: the server failed the run
        events = await server.events(run_id)
        assert [e["event"] for e in events] == ["Said", "Said", "WorkflowFailedEvent"]
        assert events[1]["data"]["data"]["value"] == [2, TOO_LONG]
        failure = events[2]["data"]["data"]["exception"]
        assert failure["message"].startswith(message)


async def test_a_result_holding_an_int_too_long_to_encode_still_ends_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The run has completed when its stop event turns out not to encode: the stream still
    ends with the stop event, and the status answers 200, with a marker in place of the int;
    the server logs what its clients miss."""
    caplog.set_level(logging.WARNING, "trioflow.server")
    async with served(FLOWS) as server:
        run_id = await server.start("returns_huge")
        events = await server.events(run_id)
        assert [e["event"] for e in events] == ["StopEvent"]
        assert events[0]["data"]["data"]["result"] == {"big": TOO_LONG, "small": 1}
        status = await server.wait_status(run_id, "completed")
        assert status["result"] == {"big": TOO_LONG, "small": 1}
        listed = (await server.client.get("/runs")).json()["runs"]
        assert [run["run_id"] for run in listed] == [run_id]
    assert any(
        "StopEvent event (seq 1) cannot be encoded" in record.getMessage()
        for record in caplog.records
    )


# -- item 7: numbers JSON has not, duplicate keys, deep nesting --


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"value": NaN}', "NaN is no JSON number"),
        (b'{"interval": Infinity}', "Infinity is no JSON number"),
        (b'{"value": [-Infinity]}', "-Infinity is no JSON number"),
        (b'{"value": 1e999}', "the number 1e999 is too large for a float"),
        (b'{"value": 1, "value": 2}', 'an object names the key "value" twice'),
        (b'{"value": {"a": 1, "b": 2, "a": 3}}', 'an object names the key "a" twice'),
        (b'{"value": "\xed\xbf\xbf"}', "the body is not UTF-8"),
    ],
)
async def test_what_json_has_not_or_leaves_open_is_bad_json(body: bytes, says: str) -> None:
    """NaN, infinities, numbers that overflow a float, a key named twice and raw (UTF-8
    encoded) surrogates are refused as bad JSON (400), not taken or guessed at."""
    async with served(FLOWS) as server:
        response = await post_start(server, "echo", body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "bad_json"
        assert says in error["message"]


async def test_json_nested_too_deeply_is_bad_json() -> None:
    """Arrays nested more than 128 deep are refused as bad JSON, before any field's type is
    checked: some 980 levels in a str field used to be a 500 (the error message's own
    rendering of the value ran out of stack)."""
    depths = [129, 200, *range(960, 1000), 100_000]
    async with served(FLOWS) as server:
        answers = {}
        for depth in depths:
            response = await post_start(server, "named", b'{"name": ' + nested(depth) + b"}")
            error = response.json()["error"]
            answers[depth] = (response.status_code, error["code"], error["message"])
    refused = (
        400,
        "bad_json",
        "the body is not valid JSON: the body nests arrays and objects more than 128 deep",
    )
    assert answers == dict.fromkeys(depths, refused)


async def test_json_nested_128_deep_goes_through_and_back_out() -> None:
    """The deepest JSON taken is checked against a wrong type (422) and echoed by a run intact:
    the limit leaves room for the server's own frames."""
    async with served(FLOWS) as server:
        body = b'{"name": ' + nested(127) + b"}"  # 128 levels with the body's object
        wrong = await post_start(server, "named", body)
        assert wrong.status_code == 422, wrong.text
        response = await post_start(server, "echo", b'{"value": ' + nested(127) + b"}")
        assert response.status_code == 201, response.text
        run_id = response.json()["run_id"]
        events = await server.events(run_id)
        assert events[0]["data"]["data"]["value"] == json.loads(nested(127))


# -- item 8: line and paragraph separators --


SEPARATORS = "a\u2028b\u2029c\x85d"


async def test_line_separators_are_escaped_so_line_readers_keep_events_whole() -> None:
    """U+2028, U+2029 and U+0085 go out as JSON escapes: httpx's aiter_lines (which splits on
    them, as str.splitlines does) reads each NDJSON line and SSE field whole."""
    async with served(FLOWS) as server:
        run_id = await server.start("echo", {"value": SEPARATORS})
        lines = await ndjson_lines(server, run_id)
        assert [json.loads(line)["type"] for line in lines] == ["Said", "StopEvent"]
        assert json.loads(lines[0])["data"]["value"] == SEPARATORS
        assert "\\u2028" in lines[0]
        assert "\\u2029" in lines[0]
        assert "\\u0085" in lines[0]
        events = await server.events(run_id)
        assert [e["data"]["data"] for e in events] == [
            {"value": SEPARATORS},
            {"result": SEPARATORS},
        ]
        status = await wait_for(lambda: server.status(run_id), lambda s: "result" in s)
        assert status["result"] == SEPARATORS


async def test_status_and_errors_escape_line_separators_too() -> None:
    """Every JSON response goes through the same writer: an error quoting a value holding
    U+2028 has it escaped."""
    async with served(FLOWS) as server:
        response = await post_start(server, "named", '{"name": ["\u2028"]}'.encode())
        assert response.status_code == 422
        assert "\u2028".encode() not in response.content
        assert b"\\u2028" in response.content
        assert "\u2028" in response.json()["error"]["message"]
