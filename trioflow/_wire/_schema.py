"""JSON Schemas (draft 2020-12, as OpenAPI 3.1 uses) of event types, derived from their fields.

`JsonSchemas` reads the same declared field types that `_decode` checks and `_encode` writes,
in two directions: ``"in"``, what `decode_start_event` and `decode_event` accept (a start
event, an event sent into a run), and ``"out"``, what `encode_event_data` writes (an event's
data in a stream's envelope). Type by type, as `_decode` reads them:

- ``int`` is an ``integer``, ``float`` a ``number`` (an int is a fine float; going out also
  ``null``, which NaN and the infinities become), ``str`` a ``string``, ``bool`` a
  ``boolean``; enums and ``Literal`` the ``enum`` of their JSON values; ``X | None`` adds
  ``null``, and a union is the ``anyOf`` of its members.
- lists, tuples, sets and their abstract kinds are arrays (a fixed tuple's items by position);
  ``dict[K, V]`` an object whose values are ``V`` (and, coming in, whose keys are ``K``: a JSON
  key is a string, so ``dict[int, V]`` only takes ``{}``, as the decoder does).
- attrs classes, dataclasses and TypedDicts are objects of their fields, each a definition of
  its own (so recursive types work): required where the field has no default, with the
  default where it has a plain JSON form, and no other keys (attrs; dataclasses and
  TypedDicts keep or ignore extra keys, so they allow them). An event inside a field is
  ``{"type": name, "data": {...}}``, one option per event type the decoder would resolve.
- datetime, date and time are strings with ``format`` (``date-time``, ``date``, ``time``),
  timedelta a number of seconds, bytes a base64 string (``contentEncoding``), UUID (``format:
  uuid``), Decimal and paths strings; an exception going out is ``{"type", "message"}`` (and
  ``"traceback"`` where a server sends it).
- ``Any``, ``object`` and types the wire format has no rule for are ``{}``: anything.

What JSON Schema cannot say, the schemas do not either: ``format`` and ``contentEncoding`` are
annotations (Python's ``fromisoformat``, ``b64decode``, ``UUID`` and ``Decimal`` judge the
strings), a JSON number with a zero fraction (``3.0``) is an ``integer`` to JSON Schema but no
``int`` to the decoder, and validators and converters run on the server only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import itertools
import re
import typing
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from decimal import Decimal
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

import attrs

from .._events import (
    RUNTIME_STOP_EVENTS,
    Event,
    HumanResponseEvent,
    StartEvent,
    StepFailedEvent,
)
from ._decode import _ARRAYS, _MAPPINGS, _MAX_LISTED, _name_table, _subclasses
from ._describe import _first_paragraph, _json_default, described_event_types
from ._encode import encode_value
from ._typeinfo import (
    attrs_fields,
    field_types,
    is_public,
    is_subclass,
    is_union,
    qualified_name,
    takes_free_form_fields,
    type_name,
    wire_fields,
)

if TYPE_CHECKING:
    from .._workflow import Workflow

#: ``"in"``: what the server accepts from a caller; ``"out"``: what it writes.
Direction = Literal["in", "out"]
#: A JSON Schema: an object, or ``True`` (anything) / ``False`` (nothing).
Schema = dict[str, Any] | bool

#: The JSON Schema dialect of the schemas made here (OpenAPI 3.1's too).
DIALECT = "https://json-schema.org/draft/2020-12/schema"

_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def event_schema(event_type: type, direction: Direction = "in") -> dict[str, Any]:
    """The JSON Schema of the fields of ``event_type`` (or of an attrs class, dataclass or
    TypedDict), standing alone: its definitions under ``$defs``.

    Args:
        event_type: the class.
        direction: ``"in"``, the JSON object the server accepts as the event's fields (a start
            event's body, the ``data`` of an event sent in); ``"out"``, the ``data`` of its
            envelope in a stream.
    """
    schemas = JsonSchemas()
    root = schemas.fields(event_type, direction)
    return {"$schema": DIALECT, **_as_object(root), "$defs": schemas.definitions}


def streamed_event_types(workflow: Workflow) -> list[type[Event]]:
    """The event types a run of ``workflow`` is known to stream: the types of its graph and
    those its steps' code names (`describe_workflow`'s ``events``) other than start events
    and replies sent in, then `StepFailedEvent` and the runtime's terminal events.

    A step may write any event to the stream, so this cannot be the whole list.
    """
    described = [
        t
        for t in described_event_types(workflow)
        if not issubclass(t, StartEvent | HumanResponseEvent)
    ]
    return list(dict.fromkeys([*described, StepFailedEvent, *RUNTIME_STOP_EVENTS]))


class JsonSchemas:
    """Makes the JSON Schemas of event types and field types, sharing one table of
    definitions (`definitions`) that the schemas refer to with ``$ref``.

    Args:
        ref_prefix: where the definitions will be: ``"#/$defs/"`` for a schema that holds them
            itself, ``"#/components/schemas/"`` in an OpenAPI document.
        reserved: names kept for definitions whose key is the name itself (an OpenAPI
            document's own components), so that no event type takes them first.
    """

    def __init__(self, ref_prefix: str = "#/$defs/", reserved: Iterable[str] = ()) -> None:
        #: The definitions, by name: valid names of OpenAPI components (``[A-Za-z0-9._-]``).
        self.definitions: dict[str, Schema] = {}
        self._ref_prefix = ref_prefix
        self._reserved = frozenset(reserved)
        self._names: dict[Hashable, str] = {}

    def define(self, key: Hashable, names: Sequence[str], build: Callable[[], Schema]) -> Schema:
        """A ``$ref`` to the definition of ``key``, built by ``build`` the first time.

        It is named by the first of ``names`` that is still free, else by the last one with a
        number added. The name is taken before ``build`` runs, so a definition may refer to
        itself.
        """
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = self._free_name(key, names)
            self.definitions[name] = True  # taken
            self.definitions[name] = build()
        return {"$ref": self._ref_prefix + name}

    def fields(self, cls: type, direction: Direction) -> Schema:
        """A ``$ref`` to the schema of the JSON object of the fields of ``cls`` (an event, an
        attrs class, a dataclass or a TypedDict): an event's body or ``data`` going in, its
        ``data`` going out."""
        names = [
            _component_name(name) + ("-Input" if direction == "in" else "")
            for name in (type_name(cls), qualified_name(cls))
        ]
        return self.define((cls, direction), names, lambda: self._object(cls, direction))

    def envelope(self, event_type: type[Event]) -> Schema:
        """A ``$ref`` to the schema of the envelope of ``event_type`` in a stream:
        ``{"seq", "type", "qualified_name", "time", "data"}``."""
        names = [
            _component_name(name) + "-Envelope"
            for name in (type_name(event_type), qualified_name(event_type))
        ]

        def build() -> Schema:
            return _envelope(
                {"const": type_name(event_type)},
                {"const": qualified_name(event_type)},
                self.fields(event_type, "out"),
                title=f"{type_name(event_type)} envelope",
            )

        return self.define((event_type, "envelope"), names, build)

    def sent_event(self, types: Mapping[str, type[Event]]) -> Schema:
        """The schema of ``{"type": name, "data": {...}}`` naming one of ``types`` (by the
        names `decode_event` looks it up by: `sendable_event_types`): an event sent in."""
        return self._event_message(_names_by_type(types), "in")

    def value(self, tp: Any, direction: Direction) -> Schema:
        """The schema of a value of the declared type ``tp``."""
        tp = _unwrap(tp)
        if tp is Any or tp is object or isinstance(tp, str | typing.ForwardRef | typing.TypeVar):
            return {}
        if tp is None or tp is type(None):
            # Coming in, a field that can only be None takes nothing (the decoder has no rule
            # for it); ``X | None`` takes null.
            return {"type": "null"} if direction == "out" else False
        if is_union(tp):
            return self._union(tp, direction)
        origin = typing.get_origin(tp)
        if origin is Literal:
            values = [v.value if isinstance(v, enum.Enum) else v for v in typing.get_args(tp)]
            return _enum(_json_values(values, direction))
        if origin is None and isinstance(tp, type):
            schema = self._class(tp, direction)
            if schema is not None:
                return schema
        return self._container(tp, origin or tp, direction)

    # -- kinds of types --

    def _union(self, tp: Any, direction: Direction) -> Schema:
        options: list[Schema] = []
        for member in typing.get_args(tp):
            schema = {"type": "null"} if member is type(None) else self.value(member, direction)
            if schema == {} or schema is True:
                return {}
            if schema is not False and schema not in options:
                options.append(schema)
        if not options:
            return False
        if len(options) == 1:
            return options[0]
        kinds: list[str] = []
        for option in options:
            if not (isinstance(option, dict) and list(option) == ["type"]):
                return {"anyOf": options}
            kind = option["type"]
            kinds += [kind] if isinstance(kind, str) else kind
        # {"type": ["integer", "null"]} reads better than an anyOf of one-keyword schemas.
        return {"type": list(dict.fromkeys(kinds))}

    def _class(self, tp: type, direction: Direction) -> Schema | None:
        """The schema of a value of class ``tp``, or None for a container or an unknown type."""
        if issubclass(tp, enum.Enum):  # before int and str: IntEnum, StrEnum
            values = _json_values([member.value for member in tp], direction)
            return {"title": type_name(tp), **_as_object(_enum(values))}
        if issubclass(tp, bool):
            return {"type": "boolean"}
        if issubclass(tp, int):
            return {"type": "integer"}
        if issubclass(tp, float):
            return {"type": "number"} if direction == "in" else {"type": ["number", "null"]}
        if issubclass(tp, str):
            return {"type": "string"}
        if issubclass(tp, bytes) or (direction == "out" and issubclass(tp, bytearray | memoryview)):
            return {"type": "string", "contentEncoding": "base64"}
        for cls, schema in _STRING_FORMATS:
            if issubclass(tp, cls):
                return dict(schema)
        if issubclass(tp, dt.timedelta):
            return {"type": "number", "description": "a duration in seconds"}
        if issubclass(tp, Path) or (direction == "out" and issubclass(tp, PurePath)):
            return {"type": "string"}
        if issubclass(tp, BaseException):
            # Going out, an exception is {"type", "message", "traceback"?}; coming in, nothing
            # makes one.
            return self._exception() if direction == "out" else False
        if issubclass(tp, Event):
            return self._nested_event(tp, direction)
        if attrs.has(tp) or dataclasses.is_dataclass(tp) or typing.is_typeddict(tp):
            return self.fields(tp, direction)
        return None

    def _container(self, tp: Any, origin: Any, direction: Direction) -> Schema:
        args = typing.get_args(tp)
        if origin in _ARRAYS or (direction == "out" and _is_array(origin)):
            if origin is tuple and args and args[-1] is not Ellipsis:
                items = [self.value(arg, direction) for arg in args]
                return {
                    "type": "array",
                    "prefixItems": items,
                    "minItems": len(items),
                    "maxItems": len(items),
                }
            return _with({"type": "array"}, "items", self.value(args[0], direction) if args else {})
        if origin in _MAPPINGS or (direction == "out" and is_subclass(origin, Mapping)):
            key_type, value_type = args or (Any, Any)
            schema = _with(
                {"type": "object"}, "additionalProperties", self.value(value_type, direction)
            )
            if direction == "in":
                # Keys are strings in JSON; the decoder checks them against the key type, so
                # `dict[int, str]` takes only `{}`. Going out, every key is written as a string.
                keys = self.value(key_type, "in")
                if keys != {"type": "string"}:
                    schema = _with(schema, "propertyNames", keys)
            return schema
        return {}

    def _object(self, cls: type, direction: Direction) -> Schema:
        """The JSON object of the fields of ``cls``."""
        schema: dict[str, Any] = {"title": type_name(cls)}
        doc = cls.__dict__.get("__doc__")
        if doc and not (dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}(")):
            schema["description"] = _first_paragraph(doc)  # its own, not a base's nor generated
        if typing.is_typeddict(cls):
            body = self._typeddict(cls, direction)
        elif dataclasses.is_dataclass(cls):
            body = self._dataclass(cls, direction)
        elif direction == "in":
            body = self._attrs_in(cls)
        else:
            body = self._attrs_out(cls)
        return False if body is False else {**schema, **_as_object(body)}

    def _attrs_in(self, cls: type) -> Schema:
        """An attrs class's fields as `_decode` takes them: by the keyword the class takes."""
        if takes_free_form_fields(cls):
            return {"type": "object"}
        if any(f.init and not is_public(f.name) and _no_default(f) for f in attrs_fields(cls)):
            return False  # a private field nobody can set from the wire: never constructible
        hints = field_types(cls)
        properties: dict[str, Schema] = {}
        required = []
        for key, field in wire_fields(cls).items():
            schema = self.value(hints.get(field.name, Any), "in")
            if _no_default(field):
                required.append(key)
            else:
                schema = _with_default(schema, _json_default(field.default))
            properties[key] = schema
        return _object_of(properties, required, additional=False)

    def _attrs_out(self, cls: type) -> Schema:
        """An attrs class's fields as `_encode` writes them: every public field, by name."""
        hints = field_types(cls)
        fields = [field for field in attrs_fields(cls) if is_public(field.name)]
        properties = {f.name: self.value(hints.get(f.name, Any), "out") for f in fields}
        # A field that is not set by __init__ and has no default may be missing.
        required = [f.name for f in fields if f.init or not _no_default(f)]
        free_form = issubclass(cls, StartEvent) and takes_free_form_fields(cls)
        return _object_of(properties, required, additional=free_form)

    def _dataclass(self, cls: Any, direction: Direction) -> Schema:
        # cattrs builds dataclasses: it takes each init field by name and ignores other keys.
        # Going out, `_encode` writes every public field.
        hints = _hints(cls)
        properties: dict[str, Schema] = {}
        required = []
        for field in dataclasses.fields(cls):
            if not (field.init if direction == "in" else is_public(field.name)):
                continue
            schema = self.value(hints.get(field.name, Any), direction)
            default = _dataclass_default(field) if direction == "in" else None
            if default is None:
                required.append(field.name)
            else:
                schema = _with_default(schema, default)
            properties[field.name] = schema
        return _object_of(properties, required, additional=direction == "in")

    def _typeddict(self, cls: Any, direction: Direction) -> Schema:
        hints = _hints(cls)
        properties = {key: self.value(tp, direction) for key, tp in hints.items()}
        required = [key for key in hints if key in cls.__required_keys__]
        return _object_of(properties, required, additional=True)

    def _nested_event(self, tp: type[Event], direction: Direction) -> Schema:
        """An event inside a field: ``{"type": name, "data": {...}}`` for ``tp`` or a
        subclass; coming in, by the names `_decode` resolves it by."""
        candidates = [tp, *_subclasses(tp)]
        if direction == "in":
            names = _names_by_type(_name_table(candidates))
        else:
            names = {t: [type_name(t)] for t in candidates}
        if len(names) > _MAX_LISTED:  # a field typed `Event`: any event of the process
            return _event_message_shape(
                {"type": "string"}, {"type": "object"}, data_required=direction == "out"
            )
        return self._event_message(names, direction)

    def _event_message(
        self, names: Mapping[type[Event], list[str]], direction: Direction
    ) -> Schema:
        options = []
        for event_type, type_names in names.items():
            data = self.fields(event_type, direction)
            options.append(
                _event_message_shape(
                    _enum(type_names),
                    data,
                    # Coming in, "data" may be left out where the event needs no fields.
                    data_required=direction == "out" or _needs_fields(event_type),
                )
            )
        if not options:
            return False
        # Coming in every name is one type's, so one option fits; going out two types may
        # share a short name.
        return (
            options[0]
            if len(options) == 1
            else {"oneOf" if direction == "in" else "anyOf": options}
        )

    def _exception(self) -> Schema:
        def build() -> Schema:
            return {
                "title": "Exception",
                "description": (
                    "An exception: its class name, its message and, in a stream the server "
                    "sends unless told to hide them, its traceback text (notes included)"
                ),
                **_object_of(
                    {
                        "type": {"type": "string"},
                        "message": {"type": "string"},
                        "traceback": {"type": "string"},
                    },
                    ["type", "message"],
                    additional=False,
                ),
            }

        return self.define(BaseException, ["Exception", "BaseException"], build)

    def _free_name(self, key: Hashable, names: Sequence[str]) -> str:
        def free(name: str) -> bool:
            return name not in self.definitions and (name not in self._reserved or name == key)

        for name in names:
            if free(name):
                return name
        return next(f"{names[-1]}-{n}" for n in itertools.count(2) if free(f"{names[-1]}-{n}"))


def any_envelope(known: Iterable[str]) -> Schema:
    """The envelope of an event type other than the ``known`` qualified names: a step may
    stream any event."""
    return _envelope(
        {"type": "string"},
        {"not": _enum(list(known))} if known else {"type": "string"},
        {"type": "object"},
        title="Envelope of another event type",
    )


def _envelope(type_: Schema, qualified: Schema, data: Schema, *, title: str) -> dict[str, Any]:
    return {
        "title": title,
        **_object_of(
            {
                "seq": {"type": "integer", "minimum": 1},
                "type": type_,
                "qualified_name": qualified,
                "time": {
                    "type": "number",
                    "description": "when the event entered the stream, seconds since the epoch",
                },
                "data": data,
            },
            ["seq", "type", "qualified_name", "time", "data"],
            additional=False,
        ),
    }


_STRING_FORMATS: tuple[tuple[type, dict[str, str]], ...] = (
    (dt.datetime, {"type": "string", "format": "date-time"}),  # before date: a subclass
    (dt.date, {"type": "string", "format": "date"}),
    (dt.time, {"type": "string", "format": "time"}),
    (uuid.UUID, {"type": "string", "format": "uuid"}),
    (Decimal, {"type": "string", "description": "a decimal number"}),
)


def _event_message_shape(type_: Schema, data: Schema, *, data_required: bool) -> dict[str, Any]:
    required = ["type", "data"] if data_required else ["type"]
    return _object_of({"type": type_, "data": data}, required, additional=False)


def _object_of(
    properties: Mapping[str, Schema], required: Sequence[str], *, additional: bool
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    if not additional:
        schema["additionalProperties"] = False
    return schema


def _names_by_type(table: Mapping[str, type[Event]]) -> dict[type[Event], list[str]]:
    """The names each type of a name table is found by: its short name first where it has
    one, then its qualified name."""
    names: dict[type[Event], list[str]] = {}
    for name, event_type in sorted(table.items(), key=lambda item: "." in item[0]):
        names.setdefault(event_type, []).append(name)
    return names


def _needs_fields(event_type: type) -> bool:
    """Whether `_decode` needs fields to build ``event_type``: ``{}`` would not do."""
    if takes_free_form_fields(event_type):
        return False
    return any(f.init and _no_default(f) for f in attrs_fields(event_type))


def _no_default(field: attrs.Attribute[Any]) -> bool:
    return field.default is attrs.NOTHING


def _dataclass_default(field: dataclasses.Field[Any]) -> dict[str, Any] | None:
    """``{"default": value}`` (or ``{}`` without a plain JSON form) for a field with a
    default; None for a required field."""
    if field.default is not dataclasses.MISSING:
        return _json_default(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return _json_default(attrs.Factory(field.default_factory))
    return None


def _with_default(schema: Schema, default: Mapping[str, Any]) -> Schema:
    if isinstance(schema, bool) or not default:
        return schema
    return {**schema, **default}


def _with(schema: dict[str, Any], keyword: str, value: Schema) -> dict[str, Any]:
    """``schema`` with ``keyword`` set, unless ``value`` allows anything anyway."""
    return schema if value == {} or value is True else {**schema, keyword: value}


def _as_object(schema: Schema) -> dict[str, Any]:
    """A schema as an object, to add keywords to (``true`` is ``{}``, ``false`` ``{"not":
    {}}``)."""
    if schema is True:
        return {}
    if schema is False:
        return {"not": {}}
    return schema


def _enum(values: Sequence[Any]) -> Schema:
    unique: list[Any] = []
    for value in values:
        if not any(_same_json(value, seen) for seen in unique):
            unique.append(value)
    if not unique:
        return False
    return {"const": unique[0]} if len(unique) == 1 else {"enum": unique}


def _same_json(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _json_values(values: Iterable[Any], direction: Direction) -> list[Any]:
    """The JSON forms of an enum's or a Literal's values: going out as `_encode` writes them;
    coming in those the decoder can match (it compares the JSON value with ``==``)."""
    if direction == "out":
        return [encode_value(value) for value in values]
    return [value for value in values if _is_plain(value)]


def _is_plain(value: Any) -> bool:
    """Whether ``value`` equals the JSON value it would be read as: only those enum members
    and literals can be sent in (a tuple never equals the list JSON gives)."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if type(value) is list:
        return all(_is_plain(item) for item in value)
    if type(value) is dict:
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False


def _is_array(origin: Any) -> bool:
    return is_subclass(origin, (Sequence, AbstractSet)) and not is_subclass(origin, (str, bytes))


def _unwrap(tp: Any) -> Any:
    """The type behind ``Annotated[T, ...]`` and ``NewType``s, which the decoder sees through."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, typing.NewType):
            tp = tp.__supertype__
        else:
            return tp


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a name that cannot be resolved any more: the fields take anything
        return {}


def _component_name(name: str) -> str:
    """``name`` as an OpenAPI component name may be spelt: ``[A-Za-z0-9._-]+``."""
    return _NAME_CHARACTERS.sub("_", name) or "_"
