"""The JSON wire format of the HTTP server: events and results out, events in, graphs described.

Going out (`encode_envelope`, `encode_event_data`, `encode_value`) nothing raises: a step may
stream any object, and a value that has no JSON form is sent as its ``repr``. The rules, applied
at any depth:

- attrs instances and dataclasses: an object of their public fields (names without a leading
  ``_``); an event inside a value: ``{"type": short name, "data": {...}}``.
- exceptions: ``{"type": class name, "message": str(exc)}``; never a traceback.
- lists, tuples and other sequences, sets and frozensets: arrays (a set sorted when its items
  compare, so that equal sets encode equally).
- mappings: objects; a key that is not a string becomes its JSON text (``1`` -> ``"1"``).
- enums: their value; datetime, date and time: ISO 8601 strings; timedelta: seconds.
- bytes: base64 (RFC 4648, padded), which browsers decode with ``atob`` and Python with
  `base64.b64decode`; UUID, Decimal and paths: their ``str``.
- a float that is NaN or infinite: ``null``, as ``JSON.stringify`` does (JSON has no such
  numbers).

Coming in (`decode_start_event`, `decode_event`) everything is checked against the declared field
types, strictly where JSON can tell the difference: ``"3"`` is no int and ``true`` no int, though
an int is a fine float. Problems raise `WireError` naming the field by its path
(``items[2].name``). The values of fields typed ``Any`` or ``object``, and of a plain
`StartEvent`'s free-form fields, are taken as they are.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import dataclasses
import datetime as dt
import enum
import inspect
import itertools
import json
import math
import sys
import threading
import typing
import uuid
import weakref
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
from pathlib import PurePath
from types import CodeType, SimpleNamespace, UnionType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs
import cattrs.preconf.json
from cattrs.errors import StructureHandlerNotFoundError

# The public names, imported from where they are defined: `trioflow/__init__.py` may import the
# server, which imports this module, before those names exist on the package.
from ._errors import TrioflowError
from ._events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
)

if TYPE_CHECKING:
    from ._graph import StepSpec
    from ._step import RetryPolicy
    from ._workflow import Workflow

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


def dumps(value: Any) -> bytes:
    """Serialize a JSON-able value as compact UTF-8 JSON.

    Args:
        value: made of dicts, lists, strings, numbers, booleans and None, as the encoders here
            return.

    Raises:
        ValueError: ``value`` holds NaN or an infinity, which JSON cannot express.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def type_name(event_type: type) -> str:
    """The short name of a type: ``"Progress"``."""
    return event_type.__name__


def qualified_name(event_type: type) -> str:
    """The module-qualified name of a type: ``"pkg.mod.Progress"``."""
    return f"{event_type.__module__}.{event_type.__qualname__}"


# --- Encoding -----------------------------------------------------------------------------


def encode_event_data(event: Event) -> dict[str, Any]:
    """The fields of ``event`` as JSON-able values, following the module's encoding rules.

    Declared public fields come first, then a `StartEvent`'s free-form fields. Never raises.
    """
    data: dict[str, Any] = {}
    for field in _attrs_fields(type(event)):
        if _is_public(field.name):
            try:
                value = getattr(event, field.name)
            except AttributeError:  # an `init=False` field without a default, never set
                continue
            data[field.name] = _encode(value)
    if isinstance(event, StartEvent):
        for key, value in event._extra.items():
            data.setdefault(key, _encode(value))
    return data


def encode_envelope(seq: int, event: Event) -> dict[str, Any]:
    """The envelope of one stream event: ``{"seq", "type", "qualified_name", "data"}``."""
    return {
        "seq": seq,
        "type": type_name(type(event)),
        "qualified_name": qualified_name(type(event)),
        "data": encode_event_data(event),
    }


def encode_value(value: Any) -> Any:
    """A run's result as JSON; a `StopEvent` (a workflow's own subclass) becomes its data."""
    if isinstance(value, StopEvent):
        return encode_event_data(value)
    return _encode(value)


def encode_exception(exc: BaseException) -> dict[str, Any]:
    """``{"type": class name, "message": str(exc)}``: no traceback goes over the wire."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not turn reporting one error into another
        message = _safe_repr(exc)
    return {"type": type(exc).__name__, "message": message}


def _encode(value: Any) -> Any:
    # A value met again inside itself (a list holding itself) is given as its repr, which
    # marks the cycle: without this, two such references would take exponential time.
    inside = _encoding.inside
    if id(value) in inside:
        return _safe_repr(value)
    inside.add(id(value))
    # Every level guards itself, so one broken object costs only its own place in the output.
    try:
        return _converter.unstructure(value)
    except Exception:
        return _safe_repr(value)
    finally:
        inside.discard(id(value))


class _Encoding(threading.local):
    """The values being encoded, outermost first, in this thread."""

    def __init__(self) -> None:
        self.inside: set[int] = set()


_encoding = _Encoding()


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return object.__repr__(value)


def _is_public(name: str) -> bool:
    return not name.startswith("_")


def _attrs_fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    # Events are made attrs classes at runtime, which the type checker cannot see.
    return tuple(attrs.fields(typing.cast("type[attrs.AttrsInstance]", cls)))


def _unstructure_number(value: Any) -> Any:
    if isinstance(value, enum.Enum):  # IntEnum and friends find this hook before Enum's
        return _encode(value.value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return int(value)


def _unstructure_str(value: str) -> Any:
    return _encode(value.value) if isinstance(value, enum.Enum) else value


def _unstructure_bytes(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(value).decode("ascii")


def _unstructure_mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    return {_encode_key(key): _encode(item) for key, item in value.items()}


def _encode_key(key: Any) -> str:
    encoded = _encode(key)
    return encoded if isinstance(encoded, str) else dumps(encoded).decode()


def _unstructure_set(value: AbstractSet[Any]) -> list[Any]:
    items = [_encode(item) for item in value]
    try:
        return sorted(items)
    except TypeError:  # mixed or unorderable items keep the set's own order
        return items


def _unstructure_sequence(value: Iterable[Any]) -> list[Any]:
    return [_encode(item) for item in value]


def _unstructure_attrs(value: Any) -> dict[str, Any]:
    fields = _attrs_fields(type(value))
    return {f.name: _encode(getattr(value, f.name)) for f in fields if _is_public(f.name)}


def _unstructure_dataclass(value: Any) -> dict[str, Any]:
    fields = dataclasses.fields(value)
    return {f.name: _encode(getattr(value, f.name)) for f in fields if _is_public(f.name)}


def _unstructure_event(value: Event) -> dict[str, Any]:
    return {"type": type_name(type(value)), "data": encode_event_data(value)}


def _is_subclass(cls: Any, parent: type | tuple[type, ...]) -> bool:
    return isinstance(cls, type) and issubclass(cls, parent)


# --- Decoding -----------------------------------------------------------------------------


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


def sendable_event_types(workflow: Workflow) -> dict[str, type[Event]]:
    """The event types a caller may send into a run of ``workflow``, by name.

    These are the graph's event types other than start, stop, step-failed and input-required
    events, and every `HumanResponseEvent` subclass in the process (a step may await one with
    `Context.wait_for_event` without naming it in an annotation). Each is listed under its
    qualified name, and under its short name when no other type listed shares it.
    """
    responses = [t for t in _subclasses(HumanResponseEvent) if not issubclass(t, _NOT_SENDABLE)]
    in_graph = [t for t in workflow.graph.event_types() if not issubclass(t, _NOT_SENDABLE)]
    # The graph's own types go last, so they win should a stale class (one from an earlier
    # call of the function that defines it) share their qualified name.
    return _name_table([*responses, *in_graph])


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
    data = body.get("data", {})
    try:
        event_type = _lookup(types, name)
        if not isinstance(data, dict):
            raise _Invalid("value", f"expected a JSON object of fields, got {_json_kind(data)}")
        return _build(event_type, data)
    except _Invalid as problem:
        raise problem.wire_error(("data",)) from problem.__cause__
    except _UnknownType as unknown:
        raise WireError(unknown.message, "type") from None


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


class _UnknownType(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _join_path(path: Iterable[str]) -> str:
    text = ""
    for segment in path:
        text += segment if segment.startswith("[") or not text else f".{segment}"
    return text


def _build(cls: type[_T], data: dict[str, Any]) -> _T:
    """An instance of the event or attrs class ``cls`` from a JSON object of its fields."""
    if _takes_free_form_fields(cls):
        return _construct(cls, data, {})
    fields = _wire_fields(cls)
    for key in data:
        if key not in fields:
            raise _Invalid("unknown", _field_list(cls, fields), (_clip(key),))
    hints = _field_types(cls)
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


def _wire_fields(cls: type) -> dict[str, attrs.Attribute[Any]]:
    """The fields a caller may set, by the keyword the class takes."""
    return {
        field.alias or field.name: field
        for field in _attrs_fields(cls)
        if field.init and _is_public(field.name)
    }


def _takes_free_form_fields(cls: type) -> bool:
    # Asking the signature, rather than testing for StartEvent, also covers a subclass that
    # writes an ``__init__(**fields)`` of its own; a subclass without one takes no fields.
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


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


def _structure_at(segment: str, value: Any, tp: Any) -> Any:
    try:
        return _structure(value, tp)
    except _Invalid as problem:
        raise problem.under(segment) from problem.__cause__


def _structure(value: Any, tp: Any) -> Any:
    try:
        return _converter.structure(value, tp)
    except _Invalid:
        raise
    except StructureHandlerNotFoundError:
        raise _Invalid("value", f"{_type_str(tp)} values cannot be sent as JSON") from None
    except Exception:
        raise _Invalid("value", _mismatch(tp, value)) from None


def _mismatch(tp: Any, value: Any) -> str:
    return f"expected {_expected(tp)}, got {_describe(value)}"


def _expected(tp: Any) -> str:
    """What a caller must send for ``tp``, in words."""
    if _is_subclass(tp, enum.Enum):
        members = ", ".join(dumps(_encode(member.value)).decode() for member in tp)
        return f"{type_name(tp)} (one of {members})"
    if _is_subclass(tp, Event):
        return f'{type_name(tp)} (an event {{"type": ..., "data": {{...}}}})'
    if attrs.has(tp):
        return f"{type_name(tp)} (a JSON object)"
    hint = _FORMAT_HINTS.get(tp)
    return f"{_type_str(tp)} ({hint})" if hint else _type_str(tp)


_FORMAT_HINTS: dict[Any, str] = {
    bytes: "a base64 string",
    dt.datetime: "an ISO 8601 string",
    dt.date: "an ISO 8601 string",
    dt.time: "an ISO 8601 string",
    dt.timedelta: "a number of seconds",
    uuid.UUID: "a UUID string",
    Decimal: "a decimal number as a string",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return f"{_json_kind(value)} {_clip(json.dumps(value, ensure_ascii=False, default=repr))}"


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
        raise _Invalid("value", _mismatch(tp, value))
    return tp(value)


def _structure_enum(value: Any, tp: type[enum.Enum]) -> enum.Enum:
    for member in tp:
        if _same_json_value(member.value, value):
            return member
    raise _Invalid("value", _mismatch(tp, value))


def _same_json_value(expected: Any, value: Any) -> bool:
    # In Python True == 1; on the wire they are different values.
    return bool(expected == value) and isinstance(expected, bool) == isinstance(value, bool)


def _structure_literal(value: Any, tp: Any) -> Any:
    for option in typing.get_args(tp):
        if _same_json_value(option.value if isinstance(option, enum.Enum) else option, value):
            return option
    raise _Invalid("value", _mismatch(tp, value))


def _structure_bytes(value: Any, tp: type) -> bytes:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            pass
    raise _Invalid("value", _mismatch(tp, value))


def _from_string(parse: Callable[[str], Any]) -> Callable[[Any, type], Any]:
    def structure(value: Any, tp: type) -> Any:
        if not isinstance(value, str):
            raise _Invalid("value", _mismatch(tp, value))
        return parse(value)

    return structure


def _structure_timedelta(value: Any, tp: type) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("value", _mismatch(tp, value))
    return dt.timedelta(seconds=value)


_SEQUENCES: dict[Any, type] = {list: list, MutableSequence: list, tuple: tuple, Sequence: tuple}
_SETS: dict[Any, type] = {set: set, MutableSet: set, frozenset: frozenset, AbstractSet: frozenset}
_MAPPINGS = frozenset({dict, Mapping, MutableMapping})


def _origin(tp: Any) -> Any:
    return typing.get_origin(tp) or tp


def _is_array_type(tp: Any) -> bool:
    origin = _origin(tp)
    return origin in _SEQUENCES or origin in _SETS


def _structure_array(value: Any, tp: Any) -> Any:
    if type(value) is not list:
        raise _Invalid("value", _mismatch(tp, value))
    origin = _origin(tp)
    args = typing.get_args(tp)
    item_types: Iterable[Any]
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _Invalid(
                "value",
                f"expected {_type_str(tp)} (an array of {len(args)} items), "
                f"got an array of {len(value)}",
            )
        item_types = args
    else:
        item_types = itertools.repeat(args[0] if args else Any)
    items = [
        _structure_at(f"[{i}]", item, item_type)
        for i, (item, item_type) in enumerate(zip(value, item_types, strict=False))
    ]
    return (_SEQUENCES.get(origin) or _SETS[origin])(items)


def _structure_object(value: Any, tp: Any) -> dict[Any, Any]:
    if type(value) is not dict:
        raise _Invalid("value", _mismatch(tp, value))
    key_type, value_type = typing.get_args(tp) or (Any, Any)
    structured = {}
    for key, item in value.items():
        segment = f"[{json.dumps(key, ensure_ascii=False)}]"
        structured[_structure_at(segment, key, key_type)] = _structure_at(segment, item, value_type)
    return structured


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, UnionType)


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
    raise _Invalid("value", _mismatch(tp, value))


def _structure_attrs(value: Any, tp: type[_T]) -> _T:
    if type(value) is not dict:
        raise _Invalid("value", _mismatch(tp, value))
    return _build(tp, value)


def _structure_nested_event(value: Any, tp: type[Event]) -> Event:
    """An event inside a field, in the shape it is encoded in: ``{"type", "data"}``."""
    if type(value) is not dict or set(value) - {"type", "data"}:
        raise _Invalid("value", _mismatch(tp, value))
    name = value.get("type")
    if not isinstance(name, str):
        raise _Invalid("value", _mismatch(str, name), ("type",))
    try:
        event_type = _lookup(_name_table([tp, *_subclasses(tp)]), name)
    except _UnknownType as unknown:
        raise _Invalid("value", unknown.message, ("type",)) from None
    data = value.get("data", {})
    if type(data) is not dict:
        raise _Invalid("value", _mismatch(dict, data), ("data",))
    try:
        return _build(event_type, data)
    except _Invalid as problem:
        raise problem.under("data") from problem.__cause__


def _lookup(known: Mapping[str, type[Event]], name: str) -> type[Event]:
    try:
        return known[name]
    except KeyError:
        pass
    clashing = sorted({qualified_name(t) for t in known.values() if type_name(t) == name})
    if len(clashing) > 1:
        raise _UnknownType(
            f"event type name {_clip(name)!r} is ambiguous: use one of {', '.join(clashing)}"
        )
    names = sorted({type_name(t) for t in known.values()})
    if len(names) > _MAX_LISTED:  # a field typed `Event` takes any of the process's events
        names[_MAX_LISTED:] = [f"and {len(names) - _MAX_LISTED} more"]
    listed = f"known types: {', '.join(names)}" if names else "no event types can be sent"
    raise _UnknownType(f"unknown event type {_clip(name)!r} ({listed})")


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


# --- Field types --------------------------------------------------------------------------

_FIELD_TYPES: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()


def _field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of ``cls`` (cached per class)."""
    try:
        return _FIELD_TYPES[cls]
    except KeyError:
        pass
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        # A name that only existed where the class was defined (inside a function), or a
        # trioflow base whose module the package renamed: resolve field by field instead.
        hints = {field.name: _resolve_leniently(cls, field) for field in _attrs_fields(cls)}
    _FIELD_TYPES[cls] = hints
    return hints


def _resolve_leniently(cls: type, field: attrs.Attribute[Any]) -> Any:
    annotation: Any = field.type
    if annotation is None:
        return Any
    if not isinstance(annotation, str):
        return annotation
    owner = next((k for k in cls.__mro__ if field.name in vars(k).get("__annotations__", {})), cls)
    module = sys.modules.get(owner.__module__)
    names = _NamesOrAny(vars(owner), vars(module) if module else {})
    try:
        # What get_type_hints does too: the annotation is source code of the class, never
        # anything from the wire.
        return eval(annotation, {}, names)
    except Exception:
        return Any


class _NamesOrAny(dict[str, Any]):
    """A namespace in which a name that cannot be found is `typing.Any`."""

    def __init__(self, local_names: Mapping[str, Any], global_names: Mapping[str, Any]) -> None:
        super().__init__(local_names)
        self._global_names = global_names

    def __missing__(self, key: str) -> Any:
        if key in self._global_names:
            return self._global_names[key]
        return getattr(builtins, key, Any)


def _type_str(tp: Any) -> str:
    """A type as a reader writes it: ``str``, ``tuple[str, ...]``, ``int | None``."""
    if tp is Any:
        return "Any"
    if tp is None or tp is type(None):
        return "None"
    if isinstance(tp, str):
        return tp
    if isinstance(tp, typing.ForwardRef):
        return tp.__forward_arg__
    args = typing.get_args(tp)
    if _is_union(tp):
        return " | ".join(_type_str(arg) for arg in args)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None:
        name = getattr(origin, "__name__", None) or _type_str(origin)
        return f"{name}[{', '.join(map(_type_arg_str, args))}]" if args else name
    if isinstance(tp, type):
        return tp.__name__
    return repr(tp).replace("typing.", "")


def _type_arg_str(arg: Any) -> str:
    if arg is Ellipsis:
        return "..."
    if isinstance(arg, list):  # Callable[[int], str]
        return f"[{', '.join(map(_type_str, arg))}]"
    return _type_str(arg)


# --- Describing a workflow ----------------------------------------------------------------


def describe_workflow(name: str, workflow: Workflow) -> dict[str, Any]:
    """The graph of ``workflow`` as JSON: its steps, its event types and the fields of each.

    ``"input"`` lists the start event's fields, so a UI can build a form; for a start event
    with free-form fields it is empty and ``"free_form"`` is true. ``"events"`` holds the
    graph's event types, then the event types that a step's code refers to (as a global or
    closure variable) without naming them in an annotation: what it only streams, the
    `InputRequiredEvent` it asks with and the `HumanResponseEvent` it awaits with
    `Context.wait_for_event`.

    Args:
        name: the name the workflow is served under.
        workflow: the workflow.
    """
    graph = workflow.graph
    cls = type(workflow)
    start_type = graph.start_event_type
    free_form = _takes_free_form_fields(start_type)
    return {
        "name": name,
        "workflow": qualified_name(cls),
        "doc": _first_paragraph(cls.__doc__),
        "start_event": type_name(start_type),
        "stop_event": type_name(graph.stop_event_type),
        "input": [] if free_form else _describe_fields(start_type),
        "free_form": free_form,
        "steps": [_describe_step(spec) for spec in graph.steps],
        "events": [_describe_event(t) for t in _described_event_types(workflow)],
    }


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n", 1)[0].split())


def _describe_step(spec: StepSpec) -> dict[str, Any]:
    config = spec.config
    return {
        "name": spec.name,
        "accepts": [type_name(t) for t in spec.accepts],
        "returns": [type_name(t) for t in spec.returns],
        "num_workers": config.num_workers,
        "timeout": None if config.timeout is None else float(config.timeout),
        "retry": _describe_retry(config.retry),
        "error_handler": spec.is_error_handler,
        "runs_in": "task" if spec.is_async else "thread",
    }


def _describe_retry(retry: RetryPolicy | None) -> dict[str, Any] | None:
    if retry is None:
        return None
    return {
        "max_attempts": retry.max_attempts,
        "delay": float(retry.delay),
        "backoff": float(retry.backoff),
    }


def _described_event_types(workflow: Workflow) -> list[type[Event]]:
    listed = dict.fromkeys(workflow.graph.event_types())
    for spec in workflow.graph.steps:
        step_function: Any = getattr(type(workflow), spec.name, None)
        for value in _objects_named_in(inspect.unwrap(step_function)):
            if _is_subclass(value, Event) and value not in _BASE_EVENTS:
                listed.setdefault(value)
    return list(listed)


#: Classes that are only ever subclassed: a step naming them (``isinstance(ev, Event)``) does
#: not make them events of the workflow.
_BASE_EVENTS = (Event, InputRequiredEvent, HumanResponseEvent)


def _objects_named_in(function: Any) -> Iterator[Any]:
    """The global names and closure variables that ``function``'s code refers to.

    A step names in its code, though in no annotation, the events it only streams
    (``ctx.write_event_to_stream(Progress(...))``), the question it asks and the reply it
    awaits (``ctx.wait_for_event(Verdict, waiter_event=Review(...))``); this finds them
    without running the step.
    """
    for cell in getattr(function, "__closure__", None) or ():
        try:
            yield cell.cell_contents
        except ValueError:  # a cell not filled yet
            continue
    global_names = getattr(function, "__globals__", {})
    code = getattr(function, "__code__", None)
    for name in _names_in(code) if code is not None else ():
        if name in global_names:
            yield global_names[name]


def _names_in(code: CodeType) -> Iterator[str]:
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, CodeType):  # a comprehension or function inside the step
            yield from _names_in(constant)


def _describe_event(event_type: type[Event]) -> dict[str, Any]:
    free_form = _takes_free_form_fields(event_type)
    return {
        "name": type_name(event_type),
        "qualified_name": qualified_name(event_type),
        "kind": _event_kind(event_type),
        "fields": [] if free_form else _describe_fields(event_type),
    }


_EVENT_KINDS: tuple[tuple[type[Event], str], ...] = (
    (StartEvent, "start"),
    (StopEvent, "stop"),
    (InputRequiredEvent, "input_required"),
    (HumanResponseEvent, "human_response"),
    (StepFailedEvent, "step_failed"),
)


def _event_kind(event_type: type[Event]) -> str:
    return next((kind for base, kind in _EVENT_KINDS if issubclass(event_type, base)), "event")


def _describe_fields(cls: type) -> list[dict[str, Any]]:
    hints = _field_types(cls)
    described = []
    for key, field in _wire_fields(cls).items():
        entry: dict[str, Any] = {
            "name": key,
            "type": _type_str(hints.get(field.name, Any)),
            "required": field.default is attrs.NOTHING,
        }
        if not entry["required"]:
            entry.update(_json_default(field.default))
        described.append(entry)
    return described


#: Factories whose default is safe to make just to show it.
_PLAIN_FACTORIES: tuple[Callable[[], Any], ...] = (list, dict, tuple, set, frozenset)


def _json_default(default: Any) -> dict[str, Any]:
    """``{"default": value}`` when the default has a plain JSON form, else ``{}``."""
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # Factory is a class
        if default.takes_self or default.factory not in _PLAIN_FACTORIES:
            return {}
        default = default.factory()
    return {"default": _encode(default)} if _is_plain(default) else {}


def _is_plain(value: Any) -> bool:
    """Whether ``value`` has a JSON form that is not a repr or a lossy stand-in."""
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, enum.Enum):
        return _is_plain(value.value)
    if isinstance(value, list | tuple | set | frozenset):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


# --- The converter ------------------------------------------------------------------------


def _make_converter() -> cattrs.preconf.json.JsonConverter:
    """A private converter with this module's rules, in and out.

    cattrs' own hooks go by declared field types; out here the runtime type is what counts (a
    field typed `Event` holds some subclass), and in here JSON's types are checked strictly.
    Hooks registered later take precedence, so the most specific predicates come last.
    """
    converter = cattrs.preconf.json.make_converter(
        # What no hook knows goes out as its repr: a step may stream any object.
        unstructure_fallback_factory=lambda _: _safe_repr,
        detailed_validation=False,
    )
    _register_unstructure_hooks(converter)
    _register_structure_hooks(converter)
    return converter


def _register_unstructure_hooks(converter: cattrs.Converter) -> None:
    by_class: list[tuple[type, Callable[[Any], Any]]] = [
        (type(None), lambda value: None),
        (bool, bool),
        (int, _unstructure_number),
        (float, _unstructure_number),
        (str, _unstructure_str),
        (enum.Enum, lambda value: _encode(value.value)),
        (bytes, _unstructure_bytes),
        (bytearray, _unstructure_bytes),
        (memoryview, _unstructure_bytes),
        (dt.date, lambda value: value.isoformat()),  # datetime too: a subclass
        (dt.time, lambda value: value.isoformat()),
        (dt.timedelta, lambda value: value.total_seconds()),
        (uuid.UUID, str),
        (Decimal, str),
        (PurePath, str),
        (BaseException, encode_exception),
    ]
    for cls, hook in by_class:
        converter.register_unstructure_hook(cls, hook)
    by_predicate: list[tuple[Callable[[Any], bool], Callable[[Any], Any]]] = [
        (lambda t: _is_subclass(t, Sequence), _unstructure_sequence),
        (lambda t: _is_subclass(t, AbstractSet), _unstructure_set),
        (lambda t: _is_subclass(t, Mapping), _unstructure_mapping),
        (lambda t: isinstance(t, type) and dataclasses.is_dataclass(t), _unstructure_dataclass),
        (attrs.has, _unstructure_attrs),
        (lambda t: _is_subclass(t, Event), _unstructure_event),
    ]
    for predicate, hook in by_predicate:
        converter.register_unstructure_hook_func(predicate, hook)


def _register_structure_hooks(converter: cattrs.Converter) -> None:
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
        (_is_union, _structure_union),
        (_is_array_type, _structure_array),
        (lambda t: _origin(t) in _MAPPINGS, _structure_object),
        (lambda t: isinstance(t, type) and attrs.has(t), _structure_attrs),
        (lambda t: _is_subclass(t, Event), _structure_nested_event),
    ]
    for predicate, hook in by_predicate:
        converter.register_structure_hook_func(predicate, hook)


_converter = _make_converter()
