"""The JSON wire format: events and results out, start events and sent events in, graphs."""

from __future__ import annotations

import datetime
import enum
import json
import math
import pickle
import time
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import pytest

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RetryPolicy,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    TrioflowError,
    Workflow,
    WorkflowTimedOutEvent,
    step,
)
from trioflow._wire import (
    BadJsonError,
    EncodeError,
    WireError,
    decode_event,
    decode_start_event,
    describe_workflow,
    dumps,
    encode_envelope,
    encode_event_data,
    encode_exception,
    encode_value,
    envelope_data,
    loads,
    mark_unencodable,
    qualified_name,
    sendable_event_types,
    type_name,
)


def roundtrip(value: Any) -> Any:
    """``value`` through `dumps` and back, which only works if it is JSON as it stands."""
    return json.loads(dumps(value))


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@attrs.frozen
class Point:
    x: int
    y: int = 0


class Progress(Event):
    value: float


class Basket(Event):
    """One of each kind of value the encoder knows, and one it does not."""

    inner: Event
    error: BaseException
    pair: tuple[int, str]
    colour: Colour
    point: Point
    thing: object
    when: datetime.datetime
    blob: bytes
    tags: frozenset[str]
    scores: dict[Any, Any]
    ratio: float


class Order(StartEvent):
    item: str
    count: int
    price: float = 1.0
    tags: tuple[str, ...] = ()
    points: list[Point] = attrs.field(factory=list)
    colour: Colour | None = None
    note: int | None = None
    extra: Any = None


class Quote(Event):
    total: float


class Review(InputRequiredEvent):
    """A question that no annotation names: a step asks it with wait_for_event."""

    question: str


class Verdict(HumanResponseEvent):
    """A reply that no annotation names: a step awaits it with wait_for_event."""

    approved: bool
    reason: str = ""


class Skip(HumanResponseEvent):
    """A reply without fields."""


class Receipt(StopEvent):
    total: float


class Shop(Workflow):
    """Prices an order and asks a human
    to approve it.

    This second paragraph is not part of the description.
    """

    @step(num_workers=2, timeout=30, retry=RetryPolicy(max_attempts=2, delay=0.5, backoff=2))
    async def price(self, ctx: Context, ev: Order) -> Quote:
        await ctx.write_event_to_stream(Progress(value=0.5))  # streamed only: in no annotation
        return Quote(total=ev.count * ev.price)

    @step
    async def approve(self, ctx: Context, ev: Quote) -> Receipt | None:
        question = Review(question=f"approve {ev.total}?")
        verdict = await ctx.wait_for_event(Verdict, waiter_event=question)
        return Receipt(total=ev.total) if verdict.approved else None

    @step
    def rescue(self, ev: StepFailedEvent) -> Receipt:
        return Receipt(total=0.0)


class Echo(Workflow):
    @step
    async def echo(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.get("text"))


# --- Encoding -----------------------------------------------------------------------------


def test_envelope_of_a_simple_event() -> None:
    """An envelope carries seq, short and qualified type name, when it was made (seconds
    since the epoch), and the fields as data, last."""
    before = time.time()
    envelope = encode_envelope(3, Progress(value=0.5))
    assert before <= envelope["time"] <= time.time()
    assert envelope == {
        "seq": 3,
        "type": "Progress",
        "qualified_name": f"{__name__}.Progress",
        "time": envelope["time"],
        "data": {"value": 0.5},
    }
    assert dumps(envelope) == (
        b'{"seq":3,"type":"Progress","qualified_name":"' + __name__.encode() + b'.Progress",'
        b'"time":' + repr(envelope["time"]).encode() + b',"data":{"value":0.5}}'
    )
    assert bytes(envelope_data(dumps(envelope))) == b'{"value":0.5}'


def test_start_event_fields_are_its_data() -> None:
    """A plain StartEvent's free-form fields, and a typed one's declared fields, are its data."""
    assert encode_event_data(StartEvent(topic="trio", n=(1, 2))) == {"topic": "trio", "n": [1, 2]}
    order = Order(item="tea", count=2, tags=("hot",))
    assert roundtrip(encode_event_data(order)) == {
        "item": "tea",
        "count": 2,
        "price": 1.0,
        "tags": ["hot"],
        "points": [],
        "colour": None,
        "note": None,
        "extra": None,
    }


def test_values_inside_an_event_become_json() -> None:
    """Nested events, exceptions, tuples, enums, attrs values, dates, bytes, sets, odd keys
    and NaN all take a JSON form; an object without one is sent as its repr."""
    basket = Basket(
        inner=Progress(value=1.0),
        error=ValueError("no stock"),
        pair=(1, "a"),
        colour=Colour.GREEN,
        point=Point(x=3),
        thing=object(),
        when=datetime.datetime(2024, 5, 17, 12, 30, tzinfo=datetime.UTC),
        blob=b"\x00\xff",
        tags=frozenset({"b", "a"}),
        scores={1: "one", Colour.RED: [1], (1, 2): None},
        ratio=math.nan,
    )
    data = roundtrip(encode_event_data(basket))
    thing = data.pop("thing")
    assert thing.startswith("<object object at")
    assert data == {
        "inner": {"type": "Progress", "data": {"value": 1.0}},
        "error": {"type": "ValueError", "message": "no stock"},
        "pair": [1, "a"],
        "colour": "green",
        "point": {"x": 3, "y": 0},
        "when": "2024-05-17T12:30:00+00:00",
        "blob": "AP8=",
        "tags": ["a", "b"],
        "scores": {"1": "one", "red": [1], "[1,2]": None},
        "ratio": None,
    }


def test_step_failed_event_encodes_its_exception_and_input_event() -> None:
    """A StepFailedEvent's exception is {type, message} and its input event {type, data}."""
    failed = StepFailedEvent(
        step_name="price",
        attempt=2,
        exception=KeyError("tea"),
        input_event=Progress(value=0.1),
        elapsed_seconds=1.5,
        failed_at=1796130000.25,
    )
    assert roundtrip(encode_envelope(7, failed))["data"] == {
        "step_name": "price",
        "attempt": 2,
        "exception": {"type": "KeyError", "message": "'tea'"},
        "input_event": {"type": "Progress", "data": {"value": 0.1}},
        "elapsed_seconds": 1.5,
        "failed_at": 1796130000.25,
    }


def test_runtime_terminal_event_is_named_by_its_public_name() -> None:
    """A runtime event's qualified name is the public one, and its tuple field an array."""
    envelope = roundtrip(encode_envelope(1, WorkflowTimedOutEvent(timeout=5, active_steps=("a",))))
    assert envelope["qualified_name"] == "trioflow.WorkflowTimedOutEvent"
    assert envelope["data"] == {"result": None, "timeout": 5, "active_steps": ["a"]}


def test_encode_value_of_run_results() -> None:
    """A StopEvent given as a result is its data; other results follow the value rules."""
    assert encode_value(Receipt(total=6.0)) == {"result": None, "total": 6.0}
    assert encode_value({"jokes": ("a", "b"), "when": datetime.date(2024, 1, 2)}) == {
        "jokes": ["a", "b"],
        "when": "2024-01-02",
    }
    assert encode_value(Progress(value=1.0)) == {"type": "Progress", "data": {"value": 1.0}}
    assert encode_value(math.inf) is None
    assert encode_value(None) is None


def test_encode_exception_is_type_and_message_only() -> None:
    """Nothing but the class name and message goes over the wire: no notes, no traceback."""

    def fail() -> None:
        error = RuntimeError("step broke")
        error.add_note("in step 'price'")
        raise error

    with pytest.raises(RuntimeError) as caught:
        fail()
    assert caught.value.__traceback__ is not None
    assert encode_exception(caught.value) == {"type": "RuntimeError", "message": "step broke"}


class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class _BrokenMapping(Mapping[str, int]):
    def __getitem__(self, key: str) -> int:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return "<broken mapping>"


def test_encoding_never_raises() -> None:
    """Broken objects and self-containing values still encode, as reprs, and stay JSON."""
    cycle: list[Any] = []
    cycle.extend([cycle, cycle])
    data = roundtrip(
        encode_event_data(StartEvent(broken=_BrokenRepr(), mapping=_BrokenMapping(), cycle=cycle))
    )
    assert data["broken"].startswith(f"<{__name__}._BrokenRepr object at")
    assert data["mapping"] == "<broken mapping>"
    assert data["cycle"] == ["[[...], [...]]", "[[...], [...]]"]


def test_dumps_is_compact_utf8_and_refuses_nan() -> None:
    """dumps writes compact UTF-8 without escaping, and never writes invalid JSON."""
    assert dumps({"a": ["é", 1]}) == '{"a":["é",1]}'.encode()
    with pytest.raises(ValueError, match="JSON"):
        dumps(math.nan)


def test_dumps_escapes_what_line_readers_split_on() -> None:
    """U+2028, U+2029 and U+0085 go out as JSON escapes, so that no str.splitlines (httpx's
    aiter_lines) splits an NDJSON line or SSE field; other text stays UTF-8."""
    value = {"a\u2028": "x\u2029y\x85z é \U0001f600"}
    text = dumps(value)
    assert text == b'{"a\\u2028":"x\\u2029y\\u0085z \xc3\xa9 \xf0\x9f\x98\x80"}'
    assert len(text.decode().splitlines()) == 1
    assert json.loads(text) == value


def test_dumps_writes_a_lone_surrogate_as_its_escape() -> None:
    """A string with a lone surrogate (a step may make one) is written, losslessly, as a
    \\udfff escape: valid UTF-8, read back as the same string."""
    value = ["a\udfffb", {"\ud800": "\u2028\udc00"}]
    text = dumps(value)
    assert text == b'["a\\udfffb",{"\\ud800":"\\u2028\\udc00"}]'
    assert json.loads(text) == value


def test_dumps_refuses_an_int_too_long_to_convert_naming_where() -> None:
    """An int of more digits than Python converts to text has no JSON text: EncodeError (a
    ValueError) names its place; mark_unencodable puts a marker string there instead."""
    value = {"seq": 1, "data": {"n": [1, 10**5000], "nan": math.nan}}
    with pytest.raises(EncodeError) as caught:
        dumps(value)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == "data.n[1]"
    assert str(caught.value) == (
        "data.n[1] is an integer of more than 4300 digits, more than Python converts to text "
        "(sys.set_int_max_str_digits)"
    )
    marked = mark_unencodable(value)
    assert marked == {
        "seq": 1,
        "data": {
            "n": [1, "<an integer of more than 4300 digits, too long to encode>"],
            "nan": None,
        },
    }
    assert json.loads(dumps(marked)) == marked
    fine = {"a": [1, "b"]}
    assert mark_unencodable(fine) is fine


def test_an_int_too_long_to_convert_as_a_mapping_key_still_encodes() -> None:
    """A key is encoded as the JSON text of its value, which for such an int is the marker."""
    data = encode_event_data(StartEvent(scores={(10**5000,): 1}))
    assert json.loads(dumps(data)) == {
        "scores": {'["<an integer of more than 4300 digits, too long to encode>"]': 1}
    }


def test_type_names() -> None:
    """type_name is the class name; qualified_name adds module and nesting."""

    class Local(Event):
        pass

    assert type_name(Local) == "Local"
    assert qualified_name(Local) == f"{__name__}.{Local.__qualname__}"
    assert qualified_name(StopEvent) == "trioflow.StopEvent"


# --- Decoding start events ----------------------------------------------------------------


def test_plain_start_event_keeps_every_key() -> None:
    """A plain StartEvent takes any keys, with their JSON values as given."""
    event = decode_start_event(StartEvent, {"topic": "trio", "n": [1, {"a": None}]})
    assert type(event) is StartEvent
    assert event == StartEvent(topic="trio", n=[1, {"a": None}])


def test_typed_start_event_is_built_with_its_types_and_defaults() -> None:
    """A typed start event's fields are structured to their types; left-out fields default."""
    event = decode_start_event(
        Order,
        {
            "item": "tea",
            "count": 2,
            "price": 3,
            "tags": ["hot", "green"],
            "points": [{"x": 1}, {"x": 2, "y": 3}],
            "colour": "red",
            "extra": {"any": ["json"]},
        },
    )
    assert event == Order(
        item="tea",
        count=2,
        price=3.0,
        tags=("hot", "green"),
        points=[Point(x=1), Point(x=2, y=3)],
        colour=Colour.RED,
        extra={"any": ["json"]},
    )
    assert isinstance(event, Order)
    assert type(event.price) is float  # an int is a fine float, and becomes one


def test_encoded_event_decodes_to_an_equal_event() -> None:
    """What encode_event_data makes, decode_start_event and decode_event read back."""

    class Shipment(Event):
        parcel: Progress
        sent: datetime.datetime
        label: bytes
        sizes: frozenset[int]
        weights: dict[str, float]

    shipment = Shipment(
        parcel=Progress(value=0.5),
        sent=datetime.datetime(2024, 1, 2, 3, 4, 5),
        label=b"\x00label\xff",
        sizes=frozenset({3, 1}),
        weights={"a": 1.5},
    )
    data = roundtrip(encode_event_data(shipment))
    assert decode_event({"Shipment": Shipment}, {"type": "Shipment", "data": data}) == shipment
    order = Order(item="tea", count=2, points=[Point(x=1)], colour=Colour.GREEN, tags=("a",))
    assert decode_start_event(Order, roundtrip(encode_event_data(order))) == order


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"count": 1}, "item", "missing required field 'item'"),
        (
            {"item": "tea", "count": 1, "colour_name": "red"},
            "colour_name",
            "unknown field 'colour_name' (Order takes: item, count, price, tags, points,",
        ),
        (
            {"item": "tea", "count": "3"},
            "count",
            """field 'count': expected int, got string "3\"""",
        ),
        ({"item": "tea", "count": True}, "count", "field 'count': expected int, got boolean true"),
        ({"item": "tea", "count": 1.5}, "count", "field 'count': expected int, got number 1.5"),
        ({"item": 5, "count": 1}, "item", "field 'item': expected str, got number 5"),
        ({"item": "tea", "count": 1, "price": "1"}, "price", "expected float, got string"),
        ({"item": "tea", "count": 1, "note": 1.5}, "note", "expected int, got number 1.5"),
        ({"item": "tea", "count": 1, "tags": ["a", 1]}, "tags[1]", "expected str, got number 1"),
        ({"item": "tea", "count": 1, "tags": "ab"}, "tags", "expected tuple[str, ...], got"),
        (
            {"item": "tea", "count": 1, "points": [{"x": 1}, {"x": 2}, {"x": "3"}]},
            "points[2].x",
            "field 'points[2].x': expected int",
        ),
        (
            {"item": "tea", "count": 1, "points": [{"y": 1}]},
            "points[0].x",
            "missing required field 'points[0].x'",
        ),
        (
            {"item": "tea", "count": 1, "colour": "blue"},
            "colour",
            """expected Colour (one of "red", "green"), got string "blue\"""",
        ),
    ],
)
def test_typed_start_event_rejects_what_does_not_fit(
    data: dict[str, Any], field: str, message: str
) -> None:
    """Unknown and missing fields and values of the wrong JSON type raise a WireError naming
    the field by its path; nothing is converted ("3" is no int, true is no int)."""
    with pytest.raises(WireError) as caught:
        decode_start_event(Order, data)
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value) == caught.value.message


@pytest.mark.parametrize("data", [[], None, "count=1", 3])
def test_start_event_body_must_be_an_object(data: Any) -> None:
    """A start event is built only from a JSON object; the error names no field."""
    with pytest.raises(WireError, match="the start event must be a JSON object") as caught:
        decode_start_event(Order, data)
    assert caught.value.field is None


def test_postponed_annotations_of_a_class_defined_in_a_function() -> None:
    """Annotations are resolved where possible; a name only the function knew means Any."""

    class Leg(Event):
        km: float

    class Trip(StartEvent):
        days: int
        legs: list[Leg] = attrs.field(factory=list)
        first: Leg | None = None

    trip = decode_start_event(Trip, {"days": 2, "legs": [{"km": 1}], "first": {"km": "far"}})
    assert isinstance(trip, Trip)
    fields: Any = (trip.legs, trip.first)
    assert fields == ([{"km": 1}], {"km": "far"})  # list[Any] and Any: JSON values, unchecked
    with pytest.raises(WireError, match="expected int") as caught:
        decode_start_event(Trip, {"days": "2"})
    assert caught.value.field == "days"


def _at_most_30(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value > 30:
        raise ValueError("at most 30 nights")


def test_validators_and_converters_run_and_name_their_field() -> None:
    """Field validators and converters run; their error names the field they guard, or the
    event when the check spans fields."""

    class Booking(StartEvent):
        seats: int = attrs.field(validator=attrs.validators.gt(0))
        guest: str = attrs.field(converter=str.strip, validator=attrs.validators.min_len(1))
        nights: int = attrs.field(default=1, validator=_at_most_30)
        room: str = attrs.field(default="", validator=attrs.validators.instance_of(str))

        def __attrs_post_init__(self) -> None:
            if self.room == "suite" and self.seats > 2:
                raise ValueError("a suite sleeps two")

    good = decode_start_event(Booking, {"seats": 2, "guest": "  ada "})
    assert isinstance(good, Booking)
    assert good.guest == "ada"
    cases = [
        ({"seats": 0, "guest": "ada"}, "seats", "'seats' must be > 0"),
        ({"seats": 1, "guest": "   "}, "guest", "Length of 'guest' must be >= 1"),
        ({"seats": 1, "guest": "ada", "nights": 31}, "nights", "at most 30 nights"),
        ({"seats": 3, "guest": "ada", "room": "suite"}, None, "invalid Booking: a suite sleeps"),
    ]
    for data, field, message in cases:
        with pytest.raises(WireError) as caught:
            decode_start_event(Booking, data)
        assert (caught.value.field, message in caught.value.message) == (field, True)


# --- Events sent into a run ---------------------------------------------------------------


def test_sendable_event_types_of_a_workflow() -> None:
    """A caller may send the graph's plain events and any human response, named short or
    qualified; never start, stop, input-required or step-failed events."""
    sendable = sendable_event_types(Shop())
    assert sendable["Quote"] is Quote
    assert sendable[qualified_name(Quote)] is Quote
    assert sendable["Verdict"] is Verdict  # awaited by wait_for_event, in no annotation
    assert sendable["Skip"] is Skip
    for never in (Order, Receipt, Review, StepFailedEvent):
        assert qualified_name(never) not in sendable
        assert never not in sendable.values()


def test_decode_event_by_short_and_qualified_name() -> None:
    """The type is found by short name or by qualified name; "data" may be left out."""
    sendable = sendable_event_types(Shop())
    body = {"type": "Verdict", "data": {"approved": True}}
    assert decode_event(sendable, body) == Verdict(approved=True)
    body = {"type": qualified_name(Verdict), "data": {"approved": False, "reason": "cost"}}
    assert decode_event(sendable, body) == Verdict(approved=False, reason="cost")
    assert decode_event(sendable, {"type": "Skip"}) == Skip()
    assert decode_event(sendable, {"type": "Quote", "data": {"total": 4}}) == Quote(total=4.0)


def test_a_short_name_two_types_share_asks_for_the_qualified_name() -> None:
    """Two sendable types named alike are reachable only by their qualified names."""

    class Ping(HumanResponseEvent):
        n: int

    def elsewhere() -> type[Event]:
        class Ping(HumanResponseEvent):
            n: int

        return Ping

    other = elsewhere()
    sendable = sendable_event_types(Shop())
    assert "Ping" not in sendable
    with pytest.raises(WireError, match="ambiguous") as caught:
        decode_event(sendable, {"type": "Ping", "data": {"n": 1}})
    assert caught.value.field == "type"
    assert qualified_name(Ping) in caught.value.message
    assert qualified_name(other) in caught.value.message
    assert decode_event(sendable, {"type": qualified_name(other), "data": {"n": 1}}) == other(n=1)  # type: ignore[call-arg]


def test_a_graphs_own_type_keeps_its_short_name_whatever_else_shares_it() -> None:
    """A type of another module named as one of the workflow's own does not make the
    workflow's ambiguous: its short name is the workflow's type."""

    def elsewhere() -> type[Event]:
        class Quote(HumanResponseEvent):
            total: float

        return Quote

    other = elsewhere()
    sendable = sendable_event_types(Shop())
    assert sendable["Quote"] is Quote
    assert sendable[qualified_name(other)] is other


def test_unknown_event_type_lists_the_known_names() -> None:
    """An unknown type is an error on "type" that lists the short names to choose from."""
    sendable = {"Quote": Quote, "Verdict": Verdict}
    with pytest.raises(WireError) as caught:
        decode_event(sendable, {"type": "Order", "data": {}})
    assert caught.value.field == "type"
    assert caught.value.message == "unknown event type 'Order' (known types: Quote, Verdict)"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ([], None, 'the body must be a JSON object {"type": ..., "data": {...}}, got array'),
        ({"data": {}}, "type", '"type" must be the name of an event type, got null'),
        ({"type": 3}, "type", '"type" must be the name of an event type, got number'),
        (
            {"type": "Verdict", "data": {}, "id": 1},
            "id",
            """unknown key 'id': the body takes "type" and "data\"""",
        ),
        (
            {"type": "Verdict", "data": [True]},
            "data",
            "field 'data': expected a JSON object of fields, got array",
        ),
        ({"type": "Verdict"}, "data.approved", "missing required field 'data.approved'"),
        (
            {"type": "Verdict", "data": {"approved": "yes"}},
            "data.approved",
            """field 'data.approved': expected bool, got string "yes\"""",
        ),
        (
            {"type": "Verdict", "data": {"approved": 1}},
            "data.approved",
            "field 'data.approved': expected bool, got number 1",
        ),
        (
            {"type": "Verdict", "data": {"approved": True, "by": "ada"}},
            "data.by",
            "unknown field 'data.by' (Verdict takes: approved, reason)",
        ),
        ({"type": "Skip", "data": {"x": 1}}, "data.x", "(Skip takes no fields)"),
    ],
)
def test_decode_event_rejects_bad_bodies(body: Any, field: str | None, message: str) -> None:
    """A body of the wrong shape, or data that do not fit the type, is a WireError whose
    field is the path in the body."""
    with pytest.raises(WireError) as caught:
        decode_event(sendable_event_types(Shop()), body)
    assert caught.value.field == field
    assert message in caught.value.message


def test_a_value_too_long_or_too_deep_to_show_is_a_wire_error() -> None:
    """A value whose error message cannot quote it (an int too long for str, a list nested
    deeper than the stack) is still a WireError, never a ValueError or a RecursionError."""
    with pytest.raises(WireError, match="field 'item': expected str, got number"):
        decode_start_event(Order, {"item": 10**5000, "count": 1})
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(WireError, match="field 'item': expected str, got array"):
        decode_start_event(Order, {"item": deep, "count": 1})
    with pytest.raises(WireError, match=r"field .data\.approved.: expected bool, got number"):
        decode_event(
            sendable_event_types(Shop()),
            {"type": "Verdict", "data": {"approved": 10**5000}},
        )


@attrs.frozen
class Node:
    children: list[Node] = attrs.field(factory=list)


class Tree(StartEvent):
    root: Node


def test_a_value_too_deep_to_check_is_a_wire_error() -> None:
    """A value of a recursive type nested deeper than the checks' stack is a WireError."""
    root: dict[str, Any] = {"children": []}
    for _ in range(1000):
        root = {"children": [root]}
    with pytest.raises(WireError, match="nested too deeply to check"):
        decode_start_event(Tree, {"root": root})
    assert decode_start_event(Tree, {"root": {"children": [{}]}}) == Tree(
        root=Node(children=[Node()])
    )


def test_wire_error_is_a_trioflow_error_and_pickles() -> None:
    """WireError belongs to trioflow's error tree and survives pickling with its field."""
    assert issubclass(WireError, TrioflowError)
    error = pickle.loads(pickle.dumps(WireError("field 'n': expected int", "n")))
    assert isinstance(error, WireError)
    assert (error.message, error.field, str(error)) == (
        "field 'n': expected int",
        "n",
        error.message,
    )


# --- Parsing bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"n": ', "Expecting value: line 1 column 7 (char 6)"),
        (b'{"n": 1} {}', "Extra data: line 1 column 10 (char 9)"),
        (b'{"n": NaN}', "NaN is no JSON number"),
        (b"[Infinity]", "Infinity is no JSON number"),
        (b"-Infinity", "-Infinity is no JSON number"),
        (b'{"n": 1e999}', "the number 1e999 is too large for a float"),
        (b'{"n": -1' + b"0" * 400 + b".5}", "is too large for a float"),
        (b'{"n": 1, "n": 2}', 'an object names the key "n" twice'),
        (b'[{"a": {"b": 1, "b": 1}}]', 'an object names the key "b" twice'),
        (b'"\xed\xbf\xbf"', "the body is not UTF-8"),  # a surrogate, UTF-8 encoded
        (b'"\xff"', "the body is not UTF-8"),
        ('{"n": 1}'.encode("utf-16"), "the body is not UTF-8"),
        (b"[" * 129 + b"]" * 129, "the body nests arrays and objects more than 128 deep"),
        (b'{"a":' * 129 + b"1" + b"}" * 129, "more than 128 deep"),
        (b"[" * 100_000 + b"]" * 100_000, "more than 128 deep"),
        (b"[" * 100_000, "more than 128 deep"),
    ],
)
def test_loads_refuses_bad_json(body: bytes, message: str) -> None:
    """What is not UTF-8 JSON, and what JSON has not or leaves open (NaN, infinities, numbers
    a float cannot hold, a key named twice, nesting beyond MAX_DEPTH), is BadJsonError."""
    with pytest.raises(BadJsonError) as caught:
        loads(body)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (rb'"\udfff"', None, "the body holds a string with a lone surrogate (\\udfff)"),
        (rb'{"a": "x\uD800y"}', "a", "field 'a' holds a string with a lone surrogate (\\ud800)"),
        (rb'{"a": [0, {"b": "\\\udc00"}]}', "a[1].b", "lone surrogate (\\udc00)"),
        (rb'{"\udfff": 1}', None, "the body has a key with a lone surrogate"),
        (rb'{"a": {"\udfff": 1}}', "a", "field 'a' has a key with a lone surrogate"),
        (b"9" * 4301, None, "the body is an integer of 4301 digits: trioflow takes at most 4300"),
        (b'{"a": [1, -' + b"9" * 5000 + b"]}", "a[1]", "is an integer of 5000 digits"),
    ],
)
def test_loads_refuses_values_no_field_takes(body: bytes, field: str | None, message: str) -> None:
    """Valid JSON holding a lone surrogate or an int too long to convert is a WireError (a
    422) naming where: no run could send such a value back out as it came in."""
    with pytest.raises(WireError) as caught:
        loads(body)
    assert caught.value.field == field
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"a": [1, 2.5, "x", true, null]}', {"a": [1, 2.5, "x", True, None]}),
        (rb'"\ud83d\ude00"', "\U0001f600"),  # a surrogate pair: one character
        (rb'"\\udfff"', r"\udfff"),  # an escaped backslash, then "udfff"
        (rb'"\u2028"', "\u2028"),
        (b"\xef\xbb\xbf[1]", [1]),  # a UTF-8 byte order mark, which a reader may skip
        (b"1e308", 1e308),
        (b"1e-999", 0.0),  # underflows to zero: a float's nearest value, not an overflow
        (b"9" * 4300, int("9" * 4300)),
        (b'{"a": "[[[[", "b": "]]]]"}' + b" " * 200, {"a": "[[[[", "b": "]]]]"}),
        (b'["' + b"[" * 500 + b'"]', ["[" * 500]),  # brackets in a string do not nest
        (b"[" * 128 + b"]" * 128, json.loads(b"[" * 128 + b"]" * 128)),
    ],
)
def test_loads_takes_valid_json(body: bytes, value: Any) -> None:
    """Everything else parses as json.loads parses it."""
    assert loads(body) == value


def test_bad_json_error_is_a_trioflow_error_and_pickles() -> None:
    """BadJsonError belongs to trioflow's error tree, is no WireError, and pickles."""
    assert issubclass(BadJsonError, TrioflowError)
    assert not issubclass(BadJsonError, WireError)
    error = pickle.loads(pickle.dumps(BadJsonError("NaN is no JSON number")))
    assert (error.message, str(error)) == ("NaN is no JSON number", "NaN is no JSON number")


# --- Describing a workflow ----------------------------------------------------------------


def test_describe_workflow_steps() -> None:
    """Each step lists its event types by short name, its options, and the event types its
    code names beyond its annotations (what it streams, asks and awaits)."""
    described = roundtrip(describe_workflow("shop", Shop()))
    assert {k: described[k] for k in ("name", "workflow", "doc", "start_event", "stop_event")} == {
        "name": "shop",
        "workflow": f"{__name__}.Shop",
        "doc": "Prices an order and asks a human to approve it.",
        "start_event": "Order",
        "stop_event": "Receipt",
    }
    assert described["steps"] == [
        {
            "name": "price",
            "accepts": ["Order"],
            "returns": ["Quote"],
            "num_workers": 2,
            "timeout": 30.0,
            "retry": {"max_attempts": 2, "delay": 0.5, "backoff": 2.0},
            "error_handler": False,
            "failures_of": None,
            "runs_in": "task",
            "fans_out": [],
            "collects": None,
            "joins": [],
            "mentions": ["Progress"],
        },
        {
            "name": "approve",
            "accepts": ["Quote"],
            "returns": ["Receipt"],
            "num_workers": 4,
            "timeout": None,
            "retry": None,
            "error_handler": False,
            "failures_of": None,
            "runs_in": "task",
            "fans_out": [],
            "collects": None,
            "joins": [],
            "mentions": ["Review", "Verdict"],
        },
        {
            "name": "rescue",
            "accepts": ["StepFailedEvent"],
            "returns": ["Receipt"],
            "num_workers": 4,
            "timeout": None,
            "retry": None,
            "error_handler": True,
            "failures_of": None,
            "runs_in": "thread",
            "fans_out": [],
            "collects": None,
            "joins": [],
            "mentions": [],
        },
    ]


def test_describe_workflow_events_and_input_form() -> None:
    """Events carry their kind and fields (readable types, required, JSON defaults); events
    a step's code names outside its annotations (streamed, asked, awaited) are listed after
    the graph's; "input" is the typed start event's form."""
    described = roundtrip(describe_workflow("shop", Shop()))
    events = {event["name"]: event for event in described["events"]}
    assert {name: event["kind"] for name, event in events.items()} == {
        "Order": "start",
        "Quote": "event",
        "Receipt": "stop",
        "StepFailedEvent": "step_failed",
        "Progress": "event",
        "Review": "input_required",
        "Verdict": "human_response",
    }
    assert [event["name"] for event in described["events"]] == [
        *("Order", "Quote", "Receipt", "StepFailedEvent"),  # the graph's, first mention first
        *("Progress", "Review", "Verdict"),  # then what the steps' code names
    ]
    assert events["Verdict"]["qualified_name"] == qualified_name(Verdict)
    assert events["Review"]["fields"] == [{"name": "question", "type": "str", "required": True}]
    assert events["Verdict"]["fields"] == [
        {"name": "approved", "type": "bool", "required": True},
        {"name": "reason", "type": "str", "required": False, "default": ""},
    ]
    assert described["free_form"] is False
    assert described["input"] == events["Order"]["fields"]
    assert described["input"] == [
        {"name": "item", "type": "str", "required": True},
        {"name": "count", "type": "int", "required": True},
        {"name": "price", "type": "float", "required": False, "default": 1.0},
        {"name": "tags", "type": "tuple[str, ...]", "required": False, "default": []},
        {"name": "points", "type": "list[Point]", "required": False, "default": []},
        {"name": "colour", "type": "Colour | None", "required": False, "default": None},
        {"name": "note", "type": "int | None", "required": False, "default": None},
        {"name": "extra", "type": "Any", "required": False, "default": None},
    ]
    assert events["Receipt"]["fields"] == [
        {"name": "result", "type": "Any", "required": False, "default": None},
        {"name": "total", "type": "float", "required": True},
    ]


def test_describe_workflow_with_a_plain_start_event() -> None:
    """A plain StartEvent makes a free-form input with no fields; no docstring, no doc."""
    described = roundtrip(describe_workflow("echo", Echo()))
    assert (described["input"], described["free_form"], described["doc"]) == ([], True, "")
    assert (described["start_event"], described["stop_event"]) == ("StartEvent", "StopEvent")
    assert [event["kind"] for event in described["events"]] == ["start", "stop"]


# --- A run over the wire ------------------------------------------------------------------


async def test_a_run_goes_over_the_wire_and_back() -> None:
    """A start event and a reply decoded from JSON drive a real run, and every event it
    streams and its result encode to JSON."""
    workflow = Shop()
    start = decode_start_event(Order, {"item": "tea", "count": 2, "price": 3})
    envelopes: list[Any] = []
    times: list[float] = []
    async with workflow.start(start_event=start) as handler:
        async for event in handler.stream_events():
            envelopes.append(roundtrip(encode_envelope(len(envelopes) + 1, event)))
            times.append(envelopes[-1].pop("time"))
            if isinstance(event, Review):
                body = {"type": "Verdict", "data": {"approved": True}}
                await handler.send_event(decode_event(sendable_event_types(workflow), body))
        result = await handler.result()
    assert envelopes == [
        {
            "seq": 1,
            "type": "Progress",
            "qualified_name": qualified_name(Progress),
            "data": {"value": 0.5},
        },
        {
            "seq": 2,
            "type": "Review",
            "qualified_name": qualified_name(Review),
            "data": {"question": "approve 6.0?"},
        },
        {
            "seq": 3,
            "type": "Receipt",
            "qualified_name": qualified_name(Receipt),
            "data": {"result": None, "total": 6.0},
        },
    ]
    assert roundtrip(encode_value(result)) == {"result": None, "total": 6.0}
    assert times == sorted(times)
