"""``GET /openapi.json`` and ``GET /health``: the document is valid OpenAPI 3.1 and lists every
route the app serves; its schemas take exactly the bodies the server takes (asked of a real
server); health answers 200 while the server serves and 503 before and during a shutdown."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import typing
import uuid
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import attrs
import httpx
import pytest
import trio
import trio.testing
from _http import FLOWS, Stuck, served
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # ships no types
from openapi_spec_validator import validate

import trioflow
from trioflow import (
    Event,
    HumanResponseEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowApp,
    step,
)
from trioflow._server._app import _ROUTES
from trioflow._server._openapi import openapi_json
from trioflow._wire import (
    WireError,
    decode_start_event,
    encode_event_data,
    event_schema,
)

# -- workflows whose events have fields of every kind --


class Color(enum.Enum):
    RED = "red"
    TWO = 2


@attrs.frozen
class Point:
    x: int
    y: float = 0.0
    children: list[Point] = attrs.Factory(list)


@dataclasses.dataclass
class Size:
    w: int
    h: int = 1


class Inner(Event):
    n: int


class Order(StartEvent):
    count: int
    ratio: float
    name: str
    flag: bool
    tags: list[str] = attrs.Factory(list)
    pair: tuple[int, str] = (0, "")
    unique: frozenset[int] = frozenset()
    scores: dict[str, float] = attrs.Factory(dict)
    by_id: dict[int, str] = attrs.Factory(dict)
    maybe: int | None = None
    either: int | str = 0
    mode: Literal["fast", "slow"] = "fast"
    color: Color = Color.RED
    point: Point | None = None
    size: Size | None = None
    when: dt.datetime | None = None
    day: dt.date | None = None
    wait: dt.timedelta = dt.timedelta(0)
    blob: bytes = b""
    ident: uuid.UUID | None = None
    amount: Decimal = Decimal(0)
    path: Path | None = None
    anything: Any = None
    inner: Inner | None = None


class OrderFlow(Workflow):
    @step
    async def take(self, ev: Order) -> StopEvent:
        return StopEvent(result=ev.count)


class SchemaReply(HumanResponseEvent):
    text: str
    score: float = 0.0
    tags: tuple[str, ...] = ()


class SchemaPoke(HumanResponseEvent):
    """An answer without fields."""


class Twin(HumanResponseEvent):
    """Shares its short name with `TWINS[1]`; a workflow that takes it has it by that name,
    the other by its qualified name."""


def _twin() -> type[HumanResponseEvent]:
    class Twin(HumanResponseEvent):
        pass

    return Twin


TWINS = (Twin, _twin())


class Listening(Workflow):
    """Takes every `SchemaReply`, `SchemaPoke` and `Twin` it is sent, until cancelled."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @step
    async def wait(self, ev: StartEvent) -> StopEvent:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    @step
    async def take(self, ev: SchemaReply | SchemaPoke | Twin) -> None:
        return None


BASE = {"count": 1, "ratio": 0.5, "name": "n", "flag": True}

#: Start events the server takes: 201.
VALID_ORDERS: list[Any] = [
    BASE,
    {**BASE, "ratio": 2},  # an int is a fine float
    {**BASE, "tags": ["a", "b"], "pair": [1, "x"], "unique": [1, 1, 2], "scores": {"a": 1.5}},
    {**BASE, "by_id": {}, "maybe": None, "either": "x", "mode": "slow", "color": 2},
    {**BASE, "point": {"x": 1, "children": [{"x": 2, "y": 1}]}},
    {**BASE, "size": {"w": 1, "extra": 0}},  # a dataclass ignores keys it does not know
    {**BASE, "when": "2024-05-01T10:00:00+00:00", "day": "2024-05-01", "wait": 1.5},
    {**BASE, "blob": "aGk=", "ident": "12345678-1234-5678-1234-567812345678", "amount": "1.5"},
    {**BASE, "path": "/tmp/x", "anything": {"any": ["thing", None]}},
    {**BASE, "inner": {"type": "Inner", "data": {"n": 1}}},
    {**BASE, "inner": {"type": f"{__name__}.Inner", "data": {"n": 1}}},  # its qualified name
]

#: Start events the server refuses: 422.
INVALID_ORDERS: list[Any] = [
    {},
    [BASE],
    {key: value for key, value in BASE.items() if key != "flag"},
    {**BASE, "unknown": 1},
    {**BASE, "count": "1"},
    {**BASE, "count": True},
    {**BASE, "count": 1.5},
    {**BASE, "ratio": "0.5"},
    {**BASE, "flag": 1},
    {**BASE, "name": None},
    {**BASE, "tags": "a"},
    {**BASE, "tags": [1]},
    {**BASE, "pair": [1]},
    {**BASE, "pair": [1, 2]},
    {**BASE, "unique": [[1]]},
    {**BASE, "scores": {"a": "x"}},
    {**BASE, "by_id": {"1": "x"}},  # JSON keys are strings, never ints
    {**BASE, "maybe": "1"},
    {**BASE, "either": 1.5},
    {**BASE, "mode": "medium"},
    {**BASE, "color": "RED"},  # the member's name, not its value
    {**BASE, "point": {"y": 1.0}},
    {**BASE, "point": {"x": 1, "z": 0}},
    {**BASE, "point": {"x": 1, "children": [{"x": "2"}]}},
    {**BASE, "size": {"h": 1}},
    {**BASE, "when": 3},
    {**BASE, "wait": "1s"},
    {**BASE, "wait": True},
    {**BASE, "blob": 1},
    {**BASE, "amount": 1.5},
    {**BASE, "path": 1},
    {**BASE, "anything": 1, "inner": {"n": 1}},
    {**BASE, "inner": {"type": "Inner"}},
    {**BASE, "inner": {"type": "Other", "data": {"n": 1}}},
    {**BASE, "inner": {"type": "Inner", "data": {"n": 1}, "seq": 1}},
]


def validator(document: dict[str, Any], schema: Any) -> Any:
    """A JSON Schema 2020-12 validator of ``schema``, a schema of ``document`` (its ``$ref``s
    point into the document's components)."""
    root = {**schema, "components": document["components"]}
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root)


def component(document: dict[str, Any], name: str) -> Any:
    return validator(document, {"$ref": f"#/components/schemas/{name}"})


# -- the document --


@pytest.mark.parametrize("options", [{}, {"token": "s3cret"}])
def test_the_document_is_valid_openapi_3_1(options: dict[str, Any]) -> None:
    """The document validates as OpenAPI 3.1 and names trioflow and its version."""
    document = WorkflowApp(
        {**FLOWS, "order": OrderFlow(), "listening": Listening()}, **options
    ).openapi()
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "trioflow"
    assert document["info"]["version"] == trioflow.__version__


_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def _matches(pattern: tuple[str, ...], path: str) -> bool:
    parts = [unquote(part) for part in path.split("/") if part]
    if len(parts) != len(pattern):
        return False
    return all(expected in ("*", part) for expected, part in zip(pattern, parts, strict=True))


def test_every_route_is_documented_and_nothing_else() -> None:
    """Each method of each route in `_ROUTES` (HEAD wherever GET is) has an operation in the
    document, and each operation is a route's: a route added without docs fails here."""
    document = WorkflowApp(FLOWS).openapi()
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in _METHODS
    }
    served = set()
    for pattern, methods in _ROUTES:
        for method in [*methods, *(["HEAD"] if "GET" in methods else [])]:
            served.add((pattern, method))
            assert any(m == method and _matches(pattern, p) for p, m in documented), (
                pattern,
                method,
            )
    for path, method in documented:
        assert any(m == method and _matches(p, path) for p, m in served), (path, method)
    # POST /workflows/{name}/runs is one path per workflow, each with its start event.
    assert {f"/workflows/{name}/runs" for name in FLOWS} <= set(document["paths"])


def test_every_error_status_answers_the_error_schema() -> None:
    """Every 4xx and 5xx answer of every operation is `Error` (health's 503 excepted, which
    says why the server does not serve), and every operation may answer 403 and 500."""
    document = WorkflowApp(FLOWS, token="s3cret").openapi()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation["responses"]
            assert {"403", "500"} <= set(responses), (path, method)
            assert ("401" in responses) is (path != "/health"), (path, method)
            for status, response in responses.items():
                if int(status) < 400 or (path, status) == ("/health", "503") or method == "head":
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)


def test_the_document_is_built_once_and_handed_out_fresh() -> None:
    """The JSON text is made once per app; `WorkflowApp.openapi` gives a new dict each time,
    so a caller that changes it changes nothing the server answers."""
    app = WorkflowApp(FLOWS)
    assert openapi_json(app) is openapi_json(app)
    first = app.openapi()
    first["paths"].clear()
    assert app.openapi()["paths"]
    assert json.loads(openapi_json(app)) == app.openapi()


async def test_served_at_get_openapi_json_and_head() -> None:
    """GET /openapi.json answers the document; HEAD answers its headers only."""
    async with served() as server:
        response = await server.client.get("/openapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == server.app.openapi()
        head = await server.client.head("/openapi.json")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(response.content))


# -- schemas against the server --


async def test_start_event_schema_takes_what_the_server_takes() -> None:
    """A body fits the start event's schema exactly when the server starts a run with it
    (201), and else the server answers 422: the schema is read from the same field types."""
    async with served({"order": OrderFlow()}, max_runs=1000) as server:
        document = (await server.client.get("/openapi.json")).json()
        operation = document["paths"]["/workflows/order/runs"]["post"]
        schema = validator(
            document, operation["requestBody"]["content"]["application/json"]["schema"]
        )
        samples = [(body, True) for body in VALID_ORDERS] + [(b, False) for b in INVALID_ORDERS]
        for body, valid in samples:
            response = await server.client.post("/workflows/order/runs", json=body)
            assert response.status_code == (201 if valid else 422), (body, response.text)
            assert schema.is_valid(body) is valid, body


def test_string_formats_and_defaults_are_documented() -> None:
    """Dates, bytes and UUIDs carry their `format` or `contentEncoding` (annotations: the
    server's parsers judge the strings), defaults their plain JSON value, a timedelta is
    seconds, and only the fields without a default are required."""
    schema = event_schema(Order)
    fields = schema["$defs"]["Order-Input"]
    properties = fields["properties"]
    assert fields["required"] == ["count", "ratio", "name", "flag"]
    assert fields["additionalProperties"] is False
    assert properties["when"] == {
        "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
        "default": None,
    }
    assert properties["day"]["anyOf"][0] == {"type": "string", "format": "date"}
    assert properties["blob"] == {"type": "string", "contentEncoding": "base64"}
    assert properties["ident"]["anyOf"][0] == {"type": "string", "format": "uuid"}
    assert properties["wait"]["type"] == "number"
    assert properties["color"] == {"title": "Color", "enum": ["red", 2], "default": "red"}
    assert properties["pair"]["default"] == [0, ""]
    assert properties["anything"] == {"default": None}


async def test_sent_event_schema_takes_what_the_server_takes() -> None:
    """``POST /runs/{id}/events``: a body fits the schema of the events the run's workflow
    takes exactly when the server takes it (202), else it answers 422."""
    valid: list[Any] = [
        {"type": "SchemaReply", "data": {"text": "yes"}},
        {"type": f"{__name__}.SchemaReply", "data": {"text": "yes", "score": 1, "tags": ["a"]}},
        {"type": "SchemaPoke"},  # "data" may be left out: a SchemaPoke needs no fields
        {"type": f"{__name__}.Twin"},
        # The workflow's own Twin keeps its short name, whatever else shares it.
        {"type": "Twin"},
    ]
    invalid: list[Any] = [
        {"type": "SchemaReply"},  # its required field is missing
        {"type": "SchemaReply", "data": {"text": 1}},
        {"type": "SchemaReply", "data": {"text": "yes", "tags": "a"}},
        {"type": "SchemaReply", "data": {"text": "yes"}, "seq": 1},
        {"type": "Nope", "data": {}},
        {"type": "SchemaPoke", "data": {"text": "yes"}},
        {"data": {"text": "yes"}},
        ["SchemaReply"],
    ]
    async with served({"listening": Listening()}) as server:
        document = (await server.client.get("/openapi.json")).json()
        run_id = await server.start("listening")
        for schema in (
            component(document, "listening-SentEvent"),
            component(document, "SentEvent"),
        ):
            for body, fits in [(b, True) for b in valid] + [(b, False) for b in invalid]:
                response = await server.client.post(f"/runs/{run_id}/events", json=body)
                assert response.status_code == (202 if fits else 422), (body, response.text)
                assert schema.is_valid(body) is fits, body
        await server.client.post(f"/runs/{run_id}/cancel")


async def test_stream_envelopes_fit_their_workflows_events_schema() -> None:
    """Every envelope of a run's stream fits its workflow's ``<name>-Events`` (the envelope of
    its own type, the terminal event's included) and `Envelope`; a wrong ``data`` does not."""
    async with served() as server:
        document = (await server.client.get("/openapi.json")).json()
        for name, fields in (("count", {"n": 2}), ("fail", {})):
            run_id = await server.start(name, fields)
            params = {"format": "ndjson"}
            async with server.client.stream("GET", f"/runs/{run_id}/events", params=params) as r:
                envelopes = [json.loads(line) async for line in r.aiter_lines() if line.strip()]
            assert envelopes
            for schema in (component(document, f"{name}-Events"), component(document, "Envelope")):
                for envelope in envelopes:
                    assert schema.is_valid(envelope), envelope
        tick = component(document, "Tick-Envelope")
        assert not tick.is_valid(
            {"seq": 1, "type": "Tick", "qualified_name": "_http.Tick", "data": {}}
        )
        events = component(document, "count-Events")
        assert events.is_valid(
            {"seq": 9, "type": "X", "qualified_name": "m.X", "time": 1.5, "data": {}}
        )
        assert not events.is_valid(
            {"seq": 1, "type": "Tick", "qualified_name": "_http.Tick", "data": {"n": "1"}}
        )


# -- schemas against the decoder and the encoder --


class Kind(enum.Enum):
    PAIR = (1, 2)  # no JSON value equals a tuple: it cannot be sent
    ONE = 1


class TD(typing.TypedDict, total=False):
    a: int
    b: typing.Required[str]


@attrs.frozen
class Hidden:
    _secret: int  # set by no key the wire has: never constructible from JSON


UserId = typing.NewType("UserId", int)


@pytest.mark.parametrize(
    ("tp", "bodies"),
    [
        (dict[int, str], [{}, {"1": "x"}]),
        (Kind, [1, [1, 2], "PAIR"]),
        (TD, [{"b": "x"}, {"a": 1}, {"b": "x", "z": 1}, {"b": 1}]),
        (Hidden, [{}, {"secret": 1}, {"_secret": 1}]),
        (BaseException, [{"type": "E", "message": "m"}]),
        (typing.Annotated[int, "meta"], [1, "1"]),
        (UserId, [1, "1"]),
        (set[int] | None, [None, [1], [None]]),
        (tuple[str, ...], [[], ["a", "b"], ["a", 1]]),
        (Literal[1, True, "x"], [1, True, "x", 2, False]),
    ],
)
def test_schema_of_a_field_type_takes_what_the_decoder_takes(tp: Any, bodies: list[Any]) -> None:
    """For types at the edges of the wire format, the schema of a field of type ``tp`` fits a
    value exactly when `decode_start_event` takes it."""

    class Holder(StartEvent):
        value: tp

    schema = Draft202012Validator(event_schema(Holder))
    for body in bodies:
        try:
            decode_start_event(Holder, {"value": body})
            taken = True
        except WireError:
            taken = False
        assert schema.is_valid({"value": body}) is taken, body


class Report(Event):
    """Every kind of field, going out."""

    count: int
    ratio: float
    missing: float
    when: dt.datetime
    wait: dt.timedelta
    blob: bytes
    ident: uuid.UUID
    path: Path
    color: Color
    point: Point
    size: Size
    inner: Event
    error: BaseException
    items: frozenset[str]
    by_id: dict[int, str]
    maybe: int | None = None


def test_encoded_events_fit_their_out_schema() -> None:
    """What `encode_event_data` writes fits the event's ``"out"`` schema: NaN as null, an
    exception as {type, message}, a nested event as {type, data}, int keys as strings."""
    report = Report(
        count=1,
        ratio=0.5,
        missing=math.nan,
        when=dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
        wait=dt.timedelta(seconds=3),
        blob=b"hi",
        ident=uuid.UUID(int=1),
        path=Path("/tmp"),
        color=Color.TWO,
        point=Point(1, children=[Point(2)]),
        size=Size(3),
        inner=Inner(n=1),
        error=ValueError("bad"),
        items=frozenset({"b", "a"}),
        by_id={1: "one"},
    )
    schema = Draft202012Validator(event_schema(Report, "out"))
    data = encode_event_data(report)
    assert schema.is_valid(data), list(schema.iter_errors(data))
    assert not schema.is_valid({**data, "count": "1"})
    assert not schema.is_valid({**data, "error": "bad"})


# -- health --


async def asgi_get(app: WorkflowApp, path: str) -> tuple[int, Any]:
    """GET ``path`` from ``app`` as an ASGI server would, without its lifespan."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [(b"host", b"localhost")]}
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_health_answers_ok_with_the_runs_running() -> None:
    """GET /health is 200 {"status": "ok"} with the runs running and max_runs; HEAD too."""
    async with served(max_runs=7) as server:
        response = await server.client.get("/health")
        assert (response.status_code, response.json()) == (
            200,
            {"status": "ok", "running": 0, "max_runs": 7},
        )
        run_id = await server.start("forever")
        assert (await server.client.get("/health")).json()["running"] == 1
        head = await server.client.head("/health")
        assert (head.status_code, head.content) == (200, b"")
        await server.client.post(f"/runs/{run_id}/cancel")


async def test_health_needs_no_token_and_shows_runs_only_with_it() -> None:
    """With a token, /health answers everyone whether the server serves, and the counters only
    to those with the token; /openapi.json needs the token, and documents the schemes."""
    async with served(token="s3cret") as server:
        get = server.client.get
        assert (await get("/health")).json() == {"status": "ok"}
        wrong = await get("/health", headers={"authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()) == (200, {"status": "ok"})
        right = await get("/health", headers={"authorization": "Bearer s3cret"})
        assert right.json() == {"status": "ok", "running": 0, "max_runs": 64}
        assert (await get("/health/", params={"token": "s3cret"})).json()["max_runs"] == 64
        assert (await get("/openapi.json")).status_code == 401
        document = (await get("/openapi.json", params={"token": "s3cret"})).json()
        schemes = document["components"]["securitySchemes"]
        assert schemes["bearer"]["scheme"] == "bearer"
        assert (schemes["token"]["in"], schemes["token"]["name"]) == ("query", "token")
        assert document["paths"]["/runs"]["get"]["security"] == [{"bearer": []}, {"token": []}]
        assert document["paths"]["/health"]["get"]["security"][0] == {}  # no token needed


async def test_health_is_503_before_the_app_has_started() -> None:
    """Before the ASGI lifespan has run, /health is 503 not_started."""
    status, health = await asgi_get(WorkflowApp(FLOWS), "/health")
    assert (status, health) == (503, {"status": "not_started", "running": 0, "max_runs": 64})


async def test_health_is_503_while_shutting_down() -> None:
    """Once a shutdown has begun (a run's thread holds it up here), /health is 503
    shutting_down, while the server still answers."""
    stuck, stop = Stuck(), trio.Event()
    serve: Callable[..., Any] = partial(
        trioflow.serve, {"stuck": stuck}, port=0, shutdown_trigger=stop.wait, shutdown_grace=30
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve)
            try:
                async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
                    assert (await client.post("/workflows/stuck/runs")).status_code == 201
                    assert (await client.get("/health")).status_code == 200
                    stop.set()
                    await trio.testing.wait_all_tasks_blocked()  # the shutdown has begun
                    response = await client.get("/health")
                    assert (response.status_code, response.json()) == (
                        503,
                        {"status": "shutting_down", "running": 1, "max_runs": 64},
                    )
            finally:
                stuck.release.set()  # the run ends, then the shutdown, then serve()


# -- mounted in another app --


def test_openapi_with_a_prefix_merges_into_fastapis_docs() -> None:
    """`WorkflowApp.openapi(prefix=...)` puts the paths under the mount point; merged into a
    FastAPI app's document (the README's recipe), the result is still valid OpenAPI."""
    from fastapi import FastAPI
    from fastapi.openapi.utils import get_openapi

    flows = WorkflowApp(FLOWS, token="s3cret")
    api = FastAPI(title="shop", version="1.0")

    @api.get("/items")
    async def items() -> list[str]:
        return []

    api.mount("/flows", flows)

    def openapi_with_flows() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = get_openapi(title=api.title, version=api.version, routes=api.routes)
            mounted = flows.openapi(prefix="/flows")
            document["paths"].update(mounted["paths"])
            for kind, entries in mounted["components"].items():
                document.setdefault("components", {}).setdefault(kind, {}).update(entries)
            document.setdefault("tags", []).extend(mounted["tags"])
            api.openapi_schema = document
        schema: dict[str, Any] = api.openapi_schema
        return schema

    api.openapi = openapi_with_flows  # type: ignore[method-assign]
    document = api.openapi()
    validate(document)
    assert {"/items", "/flows/workflows", "/flows/workflows/count/runs", "/flows/health"} <= set(
        document["paths"]
    )
    # The token is each operation's own, so it applies under the prefix too.
    assert document["paths"]["/flows/runs"]["get"]["security"] == [{"bearer": []}, {"token": []}]
    assert "security" not in document["paths"]["/items"]["get"]
    with pytest.raises(ValueError, match="prefix"):
        flows.openapi(prefix="flows/")
