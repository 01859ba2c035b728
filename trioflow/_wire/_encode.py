"""The encoding side of the wire format: events and results out.

Going out (`encode_envelope`, `encode_event_data`, `encode_value`) nothing raises: a step may
stream any object, and a value that has no JSON form is sent as its ``repr``. The rules, applied
at any depth:

- attrs instances and dataclasses: an object of their public fields (names without a leading
  ``_``); an event inside a value: ``{"type": short name, "data": {...}}``.
- exceptions: ``{"type": class name, "message": str(exc)}``, and in a stream event's
  envelope where the server sends them, ``"traceback"`` (`encode_envelope`).
- lists, tuples and other sequences, sets and frozensets: arrays (a set sorted when its items
  compare, so that equal sets encode equally).
- mappings: objects; a key that is not a string becomes its JSON text (``1`` -> ``"1"``).
- enums: their value; datetime, date and time: ISO 8601 strings; timedelta: seconds.
- bytes: base64 (RFC 4648, padded), which browsers decode with ``atob`` and Python with
  `base64.b64decode`; UUID, Decimal and paths: their ``str``.
- a float that is NaN or infinite: ``null``, as ``JSON.stringify`` does (JSON has no such
  numbers).

`dumps` writes the text: UTF-8, except that U+2028, U+2029 and U+0085 are written as JSON
escapes (``\\u2028``), since line-based readers (``str.splitlines``, httpx's ``aiter_lines``)
would split an NDJSON line or an SSE field on them, and so is a lone surrogate (``\\udfff``),
which has no UTF-8 form: any string can be sent, losslessly. One value has no JSON text: an
int of more digits than Python converts to text (`sys.get_int_max_str_digits`, 4,300 by
default); `dumps` refuses it with `EncodeError` naming where it is, and `mark_unencodable`
replaces it with a marker string (``"<an integer of more than 4300 digits, too long to
encode>"``) for the places that must send something all the same: the HTTP server's pump
sends a run's event that way, failing the run if it is still running, and a run's result.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import math
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import attrs
import cattrs.preconf.json

from .._errors import TrioflowError
from .._events import Event, StartEvent, StopEvent
from ._typeinfo import attrs_fields, is_public, is_subclass, qualified_name, type_name


class EncodeError(TrioflowError, ValueError):
    """A value that has no JSON text, from `dumps`.

    Attributes:
        message: what cannot be encoded, and where.
        field: the path of the value (``"data.n"``, ``"items[2]"``), or None for the whole.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field)  # both in args, so the error pickles
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


# Made once: `json.dumps` with options builds an encoder per call, which the pump would pay
# for every event. No check for cycles: the encoders here break them (`_encode`), and one
# that slipped through would end as a RecursionError, which `dumps` reports.
_encode_text = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode


def dumps(value: Any) -> bytes:
    """Serialize a JSON-able value as compact UTF-8 JSON (see the module docstring for the
    characters written as escapes).

    Args:
        value: made of dicts, lists, strings, numbers, booleans and None, as the encoders here
            return.

    Raises:
        EncodeError: ``value`` holds NaN or an infinity, which JSON cannot express, or an int
            of more digits than Python converts to text, or is nested too deeply to write.
            It is a `ValueError`.
    """
    try:
        text = _encode_text(value)
    except (ValueError, RecursionError) as error:
        raise _unencodable(value, error) from None
    if text.isascii():  # nothing to escape: the common case, and the fast one
        return text.encode()
    # These three can only stand in a string, where their JSON escapes mean the same.
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    text = text.replace("\x85", "\\u0085")
    # A lone surrogate (which can only stand in a string too) becomes \udXXX: its JSON escape.
    return text.encode("utf-8", "backslashreplace")


def mark_unencodable(value: Any) -> Any:
    """``value`` itself if `dumps` can write it; else a copy in which each int too long to
    convert to text is replaced by a marker string, each NaN or infinity by None, and each
    part nested too deeply to write by a marker string. Never raises for what the encoders
    here return."""
    try:
        dumps(value)
    except EncodeError:
        return _marked(value, (), [])
    return value


def _unencodable(value: Any, error: BaseException) -> EncodeError:
    found: list[tuple[str, str]] = []
    _marked(value, (), found)
    if not found:  # a bug of the search: report what json said rather than nothing
        return EncodeError(f"the value cannot be encoded as JSON: {error}")
    place, problem = found[0]
    return EncodeError(f"{place or 'the value'} {problem}", place or None)


def _marked(value: Any, path: tuple[str, ...], found: list[tuple[str, str]]) -> Any:
    """``value`` with what has no JSON text replaced, as `mark_unencodable` says; the place
    of each replaced value (``data.n``) and what is wrong with it go to ``found``."""
    try:
        if isinstance(value, dict):
            return {
                key: _marked(item, (*path, _segment(key)), found) for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [_marked(item, (*path, f"[{i}]"), found) for i, item in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            found.append((_place(path), f"is {value!r}, which JSON cannot express"))
            return None
        if isinstance(value, int) and not isinstance(value, bool) and not _has_text(value):
            limit = sys.get_int_max_str_digits()
            found.append(
                (
                    _place(path),
                    f"is an integer of more than {limit} digits, more than Python converts to "
                    "text (sys.set_int_max_str_digits)",
                )
            )
            return f"<an integer of more than {limit} digits, too long to encode>"
        return value
    except RecursionError:
        found.append((_place(path), "is nested too deeply to encode"))
        return "<nested too deeply to encode>"


def _has_text(value: int) -> bool:
    try:
        int.__repr__(value)  # what json calls, limit included
    except ValueError:
        return False
    return True


def _segment(key: Any) -> str:
    return key if isinstance(key, str) else _safe_repr(key)  # str() of a huge int raises


def _place(path: tuple[str, ...]) -> str:
    text = ""
    for segment in path:
        text += segment if segment.startswith("[") or not text else f".{segment}"
    return text


def encode_event_data(event: Event) -> dict[str, Any]:
    """The fields of ``event`` as JSON-able values, following the module's encoding rules.

    Declared public fields come first, then a `StartEvent`'s free-form fields. Never raises.
    """
    data: dict[str, Any] = {}
    for field in attrs_fields(type(event)):
        if is_public(field.name):
            try:
                value = getattr(event, field.name)
            except AttributeError:  # an `init=False` field without a default, never set
                continue
            data[field.name] = _encode(value)
    if isinstance(event, StartEvent):
        for key, value in event._extra.items():
            data.setdefault(key, _encode(value))
    return data


def encode_envelope(seq: int, event: Event, *, tracebacks: bool = False) -> dict[str, Any]:
    """The envelope of one stream event: ``{"seq", "type", "qualified_name", "time",
    "data"}``, ``time`` being now (seconds since the epoch): envelopes are made as their event
    enters the stream, once, and kept as made, so a replay has the time it was first written.
    With ``tracebacks``, the exceptions it holds (a failure's) with their traceback text."""
    _encoding.tracebacks = tracebacks
    try:
        return {
            "seq": seq,
            "type": type_name(type(event)),
            "qualified_name": qualified_name(type(event)),
            "time": time.time(),
            "data": encode_event_data(event),  # last: `envelope_data` relies on it
        }
    finally:
        _encoding.tracebacks = False


def envelope_data(text: bytes, start: int = 0, end: int | None = None) -> memoryview:
    """The ``"data"`` value of the envelope at ``text[start:end]``, as `dumps` wrote what
    `encode_envelope` made: a slice, not a copy. ``"data"`` is its last key, and the ones
    before it hold a number and names, which cannot contain ``,"data":``."""
    at = text.index(b',"data":', start) + 8
    return memoryview(text)[at : (len(text) if end is None else end) - 1]


def encode_value(value: Any) -> Any:
    """A run's result as JSON; a `StopEvent` (a workflow's own subclass) becomes its data."""
    if isinstance(value, StopEvent):
        return encode_event_data(value)
    return _encode(value)


def encode_exception(exc: BaseException) -> dict[str, Any]:
    """``{"type": class name, "message": str(exc)}``; inside `encode_envelope` asked for
    tracebacks, also ``"traceback"``: its text as Python prints it, notes included (which
    say the step it was raised in, and where a re-raised failure began)."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not turn reporting one error into another
        message = _safe_repr(exc)
    encoded = {"type": type(exc).__name__, "message": message}
    if _encoding.tracebacks:
        try:
            encoded["traceback"] = "".join(traceback.format_exception(exc))
        except Exception:  # (as for the message)
            encoded["traceback"] = message
    return encoded


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
        #: Exceptions go with their traceback text (`encode_envelope`).
        self.tracebacks = False


_encoding = _Encoding()


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return object.__repr__(value)


# --- Hooks, by kind of value --------------------------------------------------------------


def _unstructure_scalar(value: int | float | str | enum.Enum) -> Any:
    # IntEnum, StrEnum and other mixed-in enums find the int or str hook before Enum's.
    if isinstance(value, enum.Enum):
        return _encode(value.value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return int(value) if isinstance(value, int) else value


def _unstructure_bytes(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(value).decode("ascii")


def _unstructure_mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    return {_encode_key(key): _encode(item) for key, item in value.items()}


def _encode_key(key: Any) -> str:
    encoded = _encode(key)
    if isinstance(encoded, str):
        return encoded
    try:
        return dumps(encoded).decode()
    except EncodeError:  # a key is never worth failing a whole mapping for
        return dumps(mark_unencodable(encoded)).decode()


def _unstructure_set(value: AbstractSet[Any]) -> list[Any]:
    items = [_encode(item) for item in value]
    try:
        return sorted(items)
    except TypeError:  # mixed or unorderable items keep the set's own order
        return items


def _unstructure_sequence(value: Iterable[Any]) -> list[Any]:
    return [_encode(item) for item in value]


def _unstructure_fields(
    value: Any, fields: Iterable[attrs.Attribute[Any] | dataclasses.Field[Any]]
) -> dict[str, Any]:
    return {f.name: _encode(getattr(value, f.name)) for f in fields if is_public(f.name)}


def _unstructure_event(value: Event) -> dict[str, Any]:
    return {"type": type_name(type(value)), "data": encode_event_data(value)}


def _make_converter() -> cattrs.preconf.json.JsonConverter:
    """A private converter that unstructures by this module's rules.

    cattrs' own hooks go by declared field types; out here the runtime type is what counts (a
    field typed `Event` holds some subclass). Hooks registered by class win over hooks
    registered by predicate (cattrs looks a class up along its MRO first); among the
    predicates, those registered later take precedence, so the most specific come last.
    """
    converter = cattrs.preconf.json.make_converter(
        # What no hook knows goes out as its repr: a step may stream any object.
        unstructure_fallback_factory=lambda _: _safe_repr,
    )
    by_class: list[tuple[type, Callable[[Any], Any]]] = [
        (type(None), lambda value: None),
        (bool, bool),
        (int, _unstructure_scalar),
        (float, _unstructure_scalar),
        (str, _unstructure_scalar),
        (enum.Enum, _unstructure_scalar),
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
        (lambda t: is_subclass(t, Sequence), _unstructure_sequence),
        (lambda t: is_subclass(t, AbstractSet), _unstructure_set),
        (lambda t: is_subclass(t, Mapping), _unstructure_mapping),
        (
            lambda t: isinstance(t, type) and dataclasses.is_dataclass(t),
            lambda value: _unstructure_fields(value, dataclasses.fields(value)),
        ),
        (attrs.has, lambda value: _unstructure_fields(value, attrs_fields(type(value)))),
        (lambda t: is_subclass(t, Event), _unstructure_event),
    ]
    for predicate, hook in by_predicate:
        converter.register_unstructure_hook_func(predicate, hook)
    return converter


_converter = _make_converter()
