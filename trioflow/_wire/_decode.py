"""The JSON wire format coming in: start events and sent events, strictly checked.

`decode_start_event` and `decode_event` check everything against the declared field types,
strictly where JSON can tell the difference: ``"3"`` is no int and ``true`` no int, though an
int is a fine float. Problems raise `WireError` naming the field by its path
(``items[2].name``). The values of fields typed ``Any`` or ``object``, and of a plain
`StartEvent`'s free-form fields, are taken as they are. Values are read in the forms `_wire`
writes them in: bytes as base64, dates and times as ISO 8601 strings, timedelta as seconds, an
event inside a field as ``{"type": ..., "data": {...}}``.

Bodies are parsed by `loads`, more strictly than `json.loads`, since what RFC 8259 leaves to
the reader would otherwise reach a run: `BadJsonError` (bad JSON: the server's 400) for text
that is not UTF-8 or not JSON, for ``NaN`` and ``Infinity`` (JSON has no such numbers, and
``{"interval": Infinity}`` would make a run sleep forever), for numbers too large for a float
(``1e999``), for an object naming a key twice (which JSON readers settle differently), and for
arrays and objects nested more than `MAX_DEPTH` deep. `WireError` (the server's 422) for valid
JSON holding a value that no field takes: a string with a lone surrogate (``"\\udfff"``, no
Unicode character), or an integer of more digits than Python converts to text
(`sys.get_int_max_str_digits`), either of which a run could not send back out as it came in.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import itertools
import json
import math
import re
import sys
import typing
import uuid
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    MutableSequence,
    MutableSet,
    Sequence,
)
from collections.abc import Set as AbstractSet
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs
import cattrs.preconf.json
from cattrs.errors import StructureHandlerNotFoundError

from .._errors import TrioflowError
from .._events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
)
from ._typeinfo import (
    field_types,
    is_subclass,
    is_union,
    qualified_name,
    takes_free_form_fields,
    type_name,
    type_str,
    wire_fields,
)

if TYPE_CHECKING:
    from .._workflow import Workflow

_T = TypeVar("_T")

#: Events a caller never sends into a run: the runtime and the steps make these.
_NOT_SENDABLE = (StartEvent, StopEvent, StepFailedEvent, InputRequiredEvent)


class WireError(TrioflowError):
    """Input from the wire that does not fit: the server answers 422 with `message`.

    Attributes:
        message: what is wrong, naming the offending field; meant for the caller.
        field: the dotted path of the offending field (``"count"``, ``"items[2].name"``), or
            None when the input as a whole is wrong.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field)  # both in args, so the error pickles
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class BadJsonError(TrioflowError):
    """A body that is not JSON as `loads` reads it: the server answers 400 with `message`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


#: How deeply a body's arrays and objects may nest (serde_json's limit). Reading, checking and
#: echoing a value all recurse, so a deep one would run out of stack somewhere; well below
#: Python's recursion limit, this one also leaves room for the frames of the server.
MAX_DEPTH = 128


def loads(body: bytes) -> Any:
    """Parse a request body as JSON, strictly (see the module docstring).

    Raises:
        BadJsonError: the body is not UTF-8, not JSON, holds ``NaN``, an infinity or a number
            too large for a float, names a key twice in an object, or nests more than
            `MAX_DEPTH` deep.
        WireError: the body is valid JSON but holds a value that no field takes: a string
            (or a key) with a lone surrogate, or an integer of more digits than Python
            converts; ``field`` names where.
    """
    try:
        text = body.decode("utf-8-sig")  # RFC 8259: UTF-8; a reader may skip a BOM
    except UnicodeDecodeError as error:
        raise BadJsonError(f"the body is not UTF-8: {error}") from None
    try:
        value = _parse(_strict, text)
        long_ints = False
    except ValueError:  # from int(), the one other error valid JSON raises: where is it?
        value = _parse(_marking, text)
        long_ints = True
    # Only an object or an array opened more than `MAX_DEPTH` times can nest that deep, and
    # only a \u escape makes a surrogate (the text is valid UTF-8): both are rare, so look
    # closer only then.
    if text.count("[") + text.count("{") > MAX_DEPTH and _too_deep_value(value):
        raise BadJsonError(_too_deep())
    if long_ints or ("\\u" in text and _SURROGATE_ESCAPE.search(text)):
        refusal = _find_refused(value)
        if refusal is not None:
            raise refusal
    return value


def decode_start_event(start_type: type[StartEvent], data: Any) -> StartEvent:
    """Build a run's start event from the JSON value of a request body.

    A start event that takes free-form fields (`StartEvent` itself) keeps every key with its
    value as given. A typed start event takes exactly its declared fields, each checked against
    its type; defaults apply to the fields left out, and the class's validators and converters
    run.

    Args:
        start_type: the workflow's start event type.
        data: the parsed body, which must be a JSON object.

    Raises:
        WireError: ``data`` is no object, or names an unknown field, lacks a required one, or
            holds a value that does not fit its field (its type, or a validator).
    """
    if not isinstance(data, dict):
        raise WireError(
            f"the start event must be a JSON object of {type_name(start_type)} fields, "
            f"got {_json_kind(data)}"
        )
    try:
        return _build(start_type, data)
    except _Invalid as problem:
        raise problem.wire_error(()) from problem.__cause__
    except RecursionError:
        raise _too_deep_to_check() from None


def sendable_event_types(workflow: Workflow) -> dict[str, type[Event]]:
    """The event types a caller may send into a run of ``workflow``, by name.

    These are the graph's event types other than start, stop, step-failed and input-required
    events, and every `HumanResponseEvent` subclass in the process (a step may await one with
    `Context.wait_for_event` without naming it in an annotation). Each is listed under its
    qualified name, and under its short name when no other type listed shares it; a short
    name that one of the graph's own types has is that type's, whatever other modules of the
    process define (an ``Answer`` elsewhere does not make this workflow's ``Answer``
    ambiguous).
    """
    responses = [t for t in _subclasses(HumanResponseEvent) if not issubclass(t, _NOT_SENDABLE)]
    in_graph = [t for t in workflow.graph.event_types() if not issubclass(t, _NOT_SENDABLE)]
    # The graph's own types go last, so they win should a stale class (one from an earlier
    # call of the function that defines it) share their qualified name.
    table = _name_table([*responses, *in_graph])
    own = _name_table(in_graph)
    table.update({name: t for name, t in own.items() if "." not in name})
    return table


def decode_event(types: Mapping[str, type[Event]], body: Any) -> Event:
    """Build an event sent into a run from the JSON value ``{"type": ..., "data": {...}}``.

    ``"data"`` may be left out for an event without required fields. Field paths in errors
    start at the body (``data.count``); the fields are checked as by `decode_start_event`.

    Args:
        types: the event types to choose from, as `sendable_event_types` returns them.
        body: the parsed request body.

    Raises:
        WireError: the body is not of that shape, the type is unknown or an ambiguous short
            name (field ``type``), or the data do not fit the type (field ``data...``).
    """
    if not isinstance(body, dict):
        raise WireError(
            'the body must be a JSON object {"type": ..., "data": {...}}, '
            f"got {_json_kind(body)}"
        )
    for key in body:
        if key not in ("type", "data"):
            key = _clip(key)
            raise WireError(f'unknown key {key!r}: the body takes "type" and "data"', key)
    name = body.get("type")
    if not isinstance(name, str):
        raise WireError(f'"type" must be the name of an event type, got {_json_kind(name)}', "type")
    event_type = _lookup(types, name)
    data = body.get("data", {})
    try:
        if not isinstance(data, dict):
            raise _Invalid("value", f"expected a JSON object of fields, got {_json_kind(data)}")
        return _build(event_type, data)
    except _Invalid as problem:
        raise problem.wire_error(("data",)) from problem.__cause__
    except RecursionError:
        raise _too_deep_to_check() from None


# --- Parsing a body ------------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise BadJsonError(f"{name} is no JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise BadJsonError(f"the number {_clip(text)} is too large for a float")
    return number


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    made = dict(pairs)
    if len(made) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadJsonError(f"an object names the key {_clip(json.dumps(key))} twice")
            seen.add(key)
    return made


class _LongInt:
    """Where `_marking` read an integer of too many digits."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _int_or_long(text: str) -> int | _LongInt:
    try:
        return int(text)
    except ValueError:
        return _LongInt(len(text.lstrip("-")))


_strict = json.JSONDecoder(
    object_pairs_hook=_object, parse_float=_finite_float, parse_constant=_no_constants
)
#: Reads an integer of too many digits as a `_LongInt`, to find it: only for a body that
#: `_strict` refused for one.
_marking = json.JSONDecoder(
    object_pairs_hook=_object,
    parse_float=_finite_float,
    parse_constant=_no_constants,
    parse_int=_int_or_long,
)

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _parse(decoder: json.JSONDecoder, text: str) -> Any:
    try:
        return decoder.decode(text)
    except json.JSONDecodeError as error:
        raise BadJsonError(str(error)) from None
    except RecursionError:  # deeper than Python's stack allows, so deeper than MAX_DEPTH
        raise BadJsonError(_too_deep()) from None


def _too_deep_value(value: Any) -> bool:
    """Whether parsed JSON nests more than `MAX_DEPTH` deep: a level at a time, no recursion.
    (Reading the text instead would have to skip its strings, which costs more.)"""
    level = [value]
    for _ in range(MAX_DEPTH + 1):
        level = [item for item in level if type(item) is dict or type(item) is list]
        if not level:
            return False
        below: list[Any] = []
        for container in level:
            below += container.values() if type(container) is dict else container
        level = below
    return True


def _too_deep() -> str:
    return f"the body nests arrays and objects more than {MAX_DEPTH} deep"


def _find_refused(value: Any) -> WireError | None:
    """The first value (in document order) that `loads` refuses in parsed JSON, if any."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return _refused(path, _lone_surrogate("holds a string with", value))
        elif isinstance(value, _LongInt):
            limit = sys.get_int_max_str_digits()
            return _refused(
                path,
                f"is an integer of {value.digits} digits: trioflow takes at most {limit} "
                "(Python's limit for converting integers, sys.set_int_max_str_digits)",
            )
        elif isinstance(value, dict):
            for key in value:
                if _SURROGATE.search(key):
                    return _refused(path, _lone_surrogate("has a key with", key))
            stack.extend((item, (*path, _clip(key))) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((value[i], (*path, f"[{i}]")) for i in reversed(range(len(value))))
    return None


def _refused(path: tuple[str, ...], problem: str) -> WireError:
    field = _join_path(path) or None
    return WireError(f"{'the body' if field is None else f'field {field!r}'} {problem}", field)


def _lone_surrogate(what: str, text: str) -> str:
    found = _SURROGATE.search(text)
    assert found is not None
    return (
        f"{what} a lone surrogate (\\u{ord(found[0]):04x}), which is no Unicode character and "
        "has no UTF-8 form (a character beyond U+FFFF is escaped as a pair: \\ud83d\\ude00)"
    )


# --- Problems and their paths -------------------------------------------------------------

_Problem = Literal["value", "missing", "unknown"]


class _Invalid(Exception):
    """A value that does not fit, found ``path`` below where it was caught."""

    def __init__(self, kind: _Problem, detail: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(kind, detail, path)
        #: "value" (``detail`` says what is wrong), "missing" or "unknown" (a field).
        self.kind: _Problem = kind
        self.detail = detail
        self.path = path

    def under(self, segment: str) -> _Invalid:
        """The same problem seen from one level up."""
        return _Invalid(self.kind, self.detail, (segment, *self.path))

    def wire_error(self, prefix: tuple[str, ...]) -> WireError:
        """The problem as the `WireError` for the caller, its path under ``prefix``."""
        field = _join_path((*prefix, *self.path)) or None
        if self.kind == "missing":
            message = f"missing required field {field!r}"
        elif self.kind == "unknown":
            message = f"unknown field {field!r} {self.detail}"
        elif field is None:
            message = self.detail
        else:
            message = f"field {field!r}: {self.detail}"
        return WireError(message, field)


def _too_deep_to_check() -> WireError:
    return WireError("the value is nested too deeply to check against its fields' types")


def _join_path(path: Iterable[str]) -> str:
    text = ""
    for segment in path:
        text += segment if segment.startswith("[") or not text else f".{segment}"
    return text


def _mismatch(tp: Any, value: Any) -> _Invalid:
    """The problem of a value of the wrong kind: ``expected int, got string "3"``."""
    return _Invalid("value", f"expected {_expected(tp)}, got {_quote(value)}")


def _expected(tp: Any) -> str:
    """What a caller must send for ``tp``, in words."""
    if is_subclass(tp, enum.Enum):
        members = ", ".join(_json_text(member.value) for member in tp)
        return f"{type_name(tp)} (one of {members})"
    if is_subclass(tp, Event):
        return f'{type_name(tp)} (an event {{"type": ..., "data": {{...}}}})'
    if attrs.has(tp):
        return f"{type_name(tp)} (a JSON object)"
    hint = _FORMAT_HINTS.get(tp)
    return f"{type_str(tp)} ({hint})" if hint else type_str(tp)


_FORMAT_HINTS: dict[Any, str] = {
    bytes: "a base64 string",
    dt.datetime: "an ISO 8601 string",
    dt.date: "an ISO 8601 string",
    dt.time: "an ISO 8601 string",
    dt.timedelta: "a number of seconds",
    uuid.UUID: "a UUID string",
    Decimal: "a decimal number as a string",
}


def _quote(value: Any) -> str:
    """A value the caller sent, as the caller sent it: ``string "3"``, ``null``."""
    if value is None:
        return "null"
    return f"{_json_kind(value)} {_clip(_json_text(value))}"


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)
    except (ValueError, RecursionError):  # an int too long to convert, or a deep value
        return "(too large to show)"


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    for kind, python_type in _JSON_KINDS:
        if isinstance(value, python_type):
            return kind
    return type(value).__name__


_JSON_KINDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("boolean", bool),
    ("number", (int, float)),
    ("string", str),
    ("array", list),
    ("object", dict),
)


def _clip(text: str, limit: int = 60) -> str:
    # Error messages quote what the caller sent; keep a huge value from filling the response.
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# --- Building events and attrs values -----------------------------------------------------


def _build(cls: type[_T], data: dict[str, Any]) -> _T:
    """An instance of the event or attrs class ``cls`` from a JSON object of its fields."""
    if takes_free_form_fields(cls):
        return _construct(cls, data, {})
    fields = wire_fields(cls)
    for key in data:
        if key not in fields:
            raise _Invalid("unknown", _field_list(cls, fields), (_clip(key),))
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, field in fields.items():
        if key in data:
            kwargs[key] = _structure_at(key, data[key], hints.get(field.name, Any))
        elif field.default is attrs.NOTHING:
            raise _Invalid("missing", "", (key,))
    return _construct(cls, kwargs, fields)


def _field_list(cls: type, fields: Mapping[str, Any]) -> str:
    if not fields:
        return f"({type_name(cls)} takes no fields)"
    return f"({type_name(cls)} takes: {', '.join(fields)})"


def _construct(
    cls: type[_T], kwargs: dict[str, Any], fields: Mapping[str, attrs.Attribute[Any]]
) -> _T:
    try:
        return cls(**kwargs)
    except Exception as exc:  # a validator, a converter, __attrs_post_init__
        key = _field_that_raised(exc, kwargs, fields)
        detail = _exception_text(exc)
        if key is None:
            raise _Invalid("value", f"invalid {type_name(cls)}: {detail}") from exc
        raise _Invalid("value", detail, (key,)) from exc


def _exception_text(exc: Exception) -> str:
    # attrs' own validators raise TypeError(message, attribute, type, value).
    if len(exc.args) > 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def _field_that_raised(
    exc: Exception, kwargs: dict[str, Any], fields: Mapping[str, attrs.Attribute[Any]]
) -> str | None:
    """Which field's validator or converter raised ``exc``, where that can be told."""
    by_name = {field.name: key for key, field in fields.items()}
    for arg in exc.args:
        if isinstance(arg, attrs.Attribute) and arg.name in by_name:
            return by_name[arg.name]
    # Run each field's converter and validator again, on their own, and look for the same
    # error. The stand-in for the instance carries the given values, for validators that
    # compare fields.
    given = {field.name: kwargs[key] for key, field in fields.items() if key in kwargs}
    stand_in = SimpleNamespace(**given)
    for key, field in fields.items():
        if key in kwargs and _raises_alike(exc, field, kwargs[key], stand_in):
            return key
    return None


def _raises_alike(exc: Exception, field: attrs.Attribute[Any], value: Any, stand_in: Any) -> bool:
    try:
        converter: Any = field.converter
        if converter is not None:
            if getattr(converter, "takes_self", False) or getattr(converter, "takes_field", False):
                return False  # it wants the instance or the field: don't guess
            value = converter(value)
        if field.validator is not None:
            field.validator(stand_in, field, value)
    except Exception as again:
        return type(again) is type(exc) and again.args == exc.args
    return False


# --- Event types by name ------------------------------------------------------------------


def _lookup(known: Mapping[str, type[Event]], name: str) -> type[Event]:
    """The event type called ``name`` in ``known``.

    Raises:
        WireError: on field ``type``: no type is called ``name``, or more than one by that
            short name.
    """
    try:
        return known[name]
    except KeyError:
        pass
    clashing = sorted({qualified_name(t) for t in known.values() if type_name(t) == name})
    if len(clashing) > 1:
        raise WireError(
            f"event type name {_clip(name)!r} is ambiguous: use one of {', '.join(clashing)}",
            "type",
        )
    names = sorted({type_name(t) for t in known.values()})
    if len(names) > _MAX_LISTED:  # a field typed `Event` takes any of the process's events
        names[_MAX_LISTED:] = [f"and {len(names) - _MAX_LISTED} more"]
    listed = f"known types: {', '.join(names)}" if names else "no event types can be sent"
    raise WireError(f"unknown event type {_clip(name)!r} ({listed})", "type")


_MAX_LISTED = 20


def _name_table(event_types: Iterable[type[Event]]) -> dict[str, type[Event]]:
    """Event types by qualified name, and by short name where only one type has it."""
    table = {qualified_name(t): t for t in event_types}
    by_short_name: dict[str, list[type[Event]]] = {}
    for event_type in table.values():
        by_short_name.setdefault(type_name(event_type), []).append(event_type)
    # A qualified name always holds a dot and a short name never, so the keys cannot clash.
    table.update({name: ts[0] for name, ts in by_short_name.items() if len(ts) == 1})
    return table


def _subclasses(cls: type[_T]) -> Iterator[type[_T]]:
    for subclass in cls.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


# --- Structuring values -------------------------------------------------------------------


def _structure_at(segment: str, value: Any, tp: Any) -> Any:
    try:
        return _structure(value, tp)
    except _Invalid as problem:
        raise problem.under(segment) from problem.__cause__


def _structure(value: Any, tp: Any) -> Any:
    try:
        return _converter.structure(value, tp)
    except (_Invalid, RecursionError):  # a value too deep to check is no mismatch down here
        raise
    except StructureHandlerNotFoundError:
        raise _Invalid("value", f"{type_str(tp)} values cannot be sent as JSON") from None
    except Exception:  # a parser's own error, such as fromisoformat's
        raise _mismatch(tp, value) from None


def _structure_scalar(value: Any, tp: Any) -> Any:
    if issubclass(tp, enum.Enum):  # IntEnum and StrEnum find this hook before Enum's
        return _structure_enum(value, tp)
    kind = type(value)
    if issubclass(tp, bool):
        fits = kind is bool
    elif issubclass(tp, int):
        fits = kind is int
    elif issubclass(tp, float):
        fits = kind is int or kind is float  # JSON has one kind of number; 3 is a fine 3.0
    else:
        fits = kind is str
    if not fits:
        raise _mismatch(tp, value)
    return tp(value)


def _structure_enum(value: Any, tp: type[enum.Enum]) -> enum.Enum:
    for member in tp:
        if _same_json_value(member.value, value):
            return member
    raise _mismatch(tp, value)


def _same_json_value(expected: Any, value: Any) -> bool:
    # In Python True == 1; on the wire they are different values.
    return bool(expected == value) and isinstance(expected, bool) == isinstance(value, bool)


def _structure_literal(value: Any, tp: Any) -> Any:
    for option in typing.get_args(tp):
        if _same_json_value(option.value if isinstance(option, enum.Enum) else option, value):
            return option
    raise _mismatch(tp, value)


def _structure_bytes(value: Any, tp: type) -> bytes:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            pass
    raise _mismatch(tp, value)


def _from_string(parse: Callable[[str], Any]) -> Callable[[Any, type], Any]:
    def structure(value: Any, tp: type) -> Any:
        if not isinstance(value, str):
            raise _mismatch(tp, value)
        return parse(value)

    return structure


def _structure_timedelta(value: Any, tp: type) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _mismatch(tp, value)
    return dt.timedelta(seconds=value)


#: What a JSON array becomes, by the declared type's origin: abstract types get an immutable
#: value where there is one.
_ARRAYS: dict[Any, type] = {
    list: list,
    MutableSequence: list,
    tuple: tuple,
    Sequence: tuple,
    set: set,
    MutableSet: set,
    frozenset: frozenset,
    AbstractSet: frozenset,
}
_MAPPINGS = frozenset({dict, Mapping, MutableMapping})


def _origin(tp: Any) -> Any:
    return typing.get_origin(tp) or tp


def _structure_array(value: Any, tp: Any) -> Any:
    if type(value) is not list:
        raise _mismatch(tp, value)
    origin = _origin(tp)
    args = typing.get_args(tp)
    item_types: Iterable[Any]
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _Invalid(
                "value",
                f"expected {type_str(tp)} (an array of {len(args)} items), "
                f"got an array of {len(value)}",
            )
        item_types = args
    else:
        item_types = itertools.repeat(args[0] if args else Any)
    items = [
        _structure_at(f"[{i}]", item, item_type)
        for i, (item, item_type) in enumerate(zip(value, item_types, strict=False))
    ]
    return _ARRAYS[origin](items)


def _structure_object(value: Any, tp: Any) -> dict[Any, Any]:
    if type(value) is not dict:
        raise _mismatch(tp, value)
    key_type, value_type = typing.get_args(tp) or (Any, Any)
    structured = {}
    for key, item in value.items():
        segment = f"[{json.dumps(key, ensure_ascii=False)}]"
        structured[_structure_at(segment, key, key_type)] = _structure_at(segment, item, value_type)
    return structured


def _structure_union(value: Any, tp: Any) -> Any:
    members = typing.get_args(tp)
    if value is None and type(None) in members:
        return None
    options = [member for member in members if member is not type(None)]
    if len(options) == 1:  # an Optional: the member's own error says more, path included
        return _structure(value, options[0])
    # A member of the value's own JSON type first: 3 for ``float | int`` stays an int.
    options.sort(key=lambda member: member is not type(value))
    for member in options:
        try:
            return _structure(value, member)
        except _Invalid:
            continue
    raise _mismatch(tp, value)


def _structure_attrs(value: Any, tp: type[_T]) -> _T:
    if type(value) is not dict:
        raise _mismatch(tp, value)
    return _build(tp, value)


def _structure_nested_event(value: Any, tp: type[Event]) -> Event:
    """An event inside a field, in the shape it is encoded in: ``{"type", "data"}``."""
    if type(value) is not dict or set(value) - {"type", "data"}:
        raise _mismatch(tp, value)
    name = value.get("type")
    if not isinstance(name, str):
        raise _mismatch(str, name).under("type")
    try:
        event_type = _lookup(_name_table([tp, *_subclasses(tp)]), name)
    except WireError as unknown:
        raise _Invalid("value", unknown.message, ("type",)) from None
    data = value.get("data", {})
    if type(data) is not dict:
        raise _mismatch(dict, data).under("data")
    try:
        return _build(event_type, data)
    except _Invalid as problem:
        raise problem.under("data") from problem.__cause__


def _make_converter() -> cattrs.preconf.json.JsonConverter:
    """A private converter that structures by this module's rules.

    Hooks registered by class win over hooks registered by predicate (cattrs looks a class up
    along its MRO first); among the predicates, those registered later take precedence, so the
    most specific come last.
    """
    converter = cattrs.preconf.json.make_converter(detailed_validation=False)
    by_class: list[tuple[type, Callable[[Any, Any], Any]]] = [
        (bool, _structure_scalar),
        (int, _structure_scalar),
        (float, _structure_scalar),
        (str, _structure_scalar),
        (enum.Enum, _structure_enum),
        (bytes, _structure_bytes),
        (dt.datetime, _from_string(dt.datetime.fromisoformat)),
        (dt.date, _from_string(dt.date.fromisoformat)),
        (dt.time, _from_string(dt.time.fromisoformat)),
        (dt.timedelta, _structure_timedelta),
        (uuid.UUID, _from_string(uuid.UUID)),
        (Decimal, _from_string(Decimal)),
    ]
    for cls, hook in by_class:
        converter.register_structure_hook(cls, hook)
    by_predicate: list[tuple[Callable[[Any], bool], Callable[[Any, Any], Any]]] = [
        (lambda t: t is object, lambda value, _: value),
        (lambda t: typing.get_origin(t) is Literal, _structure_literal),
        (is_union, _structure_union),
        (lambda t: _origin(t) in _ARRAYS, _structure_array),
        (lambda t: _origin(t) in _MAPPINGS, _structure_object),
        (lambda t: isinstance(t, type) and attrs.has(t), _structure_attrs),
        (lambda t: is_subclass(t, Event), _structure_nested_event),
    ]
    for predicate, hook in by_predicate:
        converter.register_structure_hook_func(predicate, hook)
    return converter


_converter = _make_converter()
