"""What the JSON wire format sees of a class: its names, its fields and their types.

Encoding (`_wire`), decoding (`_decode`) and describing (`_describe`) all name types, list the
fields of event and attrs classes, and read those fields' declared types; this module does that
once for all three, and imports none of them.
"""

from __future__ import annotations

import builtins
import inspect
import sys
import typing
import weakref
from collections.abc import Mapping
from types import UnionType
from typing import Any, Literal

import attrs


def type_name(event_type: type) -> str:
    """The short name of a type: ``"Progress"``."""
    return event_type.__name__


def qualified_name(event_type: type) -> str:
    """The module-qualified name of a type: ``"pkg.mod.Progress"``."""
    return f"{event_type.__module__}.{event_type.__qualname__}"


def event_bases(event_type: type) -> tuple[str, ...]:
    """The short names of the event classes ``event_type`` derives from, nearest first, up to
    and without the root ``Event``: ``("StopEvent",)`` for a workflow's own stop event."""
    from .._events import Event

    return tuple(
        type_name(base)
        for base in event_type.__mro__[1:]
        if base is not Event and issubclass(base, Event)
    )


def is_subclass(cls: Any, parent: type | tuple[type, ...]) -> bool:
    """`issubclass` for anything: a type hint such as ``list[int]`` is no subclass of anything."""
    return isinstance(cls, type) and issubclass(cls, parent)


def is_union(tp: Any) -> bool:
    """Whether ``tp`` is ``A | B`` or ``Optional[A]``, in either spelling."""
    return typing.get_origin(tp) in (typing.Union, UnionType)


def is_public(name: str) -> bool:
    """Whether a field goes over the wire: names with a leading ``_`` never do."""
    return not name.startswith("_")


def attrs_fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    """The attrs fields of ``cls``, private ones included."""
    # Events are made attrs classes at runtime, which the type checker cannot see.
    return tuple(attrs.fields(typing.cast("type[attrs.AttrsInstance]", cls)))


def wire_fields(cls: type) -> dict[str, attrs.Attribute[Any]]:
    """The fields a caller may set, by the keyword the class takes."""
    return {
        field.alias or field.name: field
        for field in attrs_fields(cls)
        if field.init and is_public(field.name)
    }


def takes_free_form_fields(cls: type) -> bool:
    """Whether ``cls`` takes arbitrary keyword fields, as a plain `StartEvent` does."""
    # Asking the signature, rather than testing for StartEvent, also covers a subclass that
    # writes an ``__init__(**fields)`` of its own; a subclass without one takes no fields.
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


# --- Field types --------------------------------------------------------------------------

_FIELD_TYPES: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of ``cls``, by field name (cached per class).

    A name an annotation uses that cannot be found any more resolves to `typing.Any`.
    """
    try:
        return _FIELD_TYPES[cls]
    except KeyError:
        pass
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        # A name that only existed where the class was defined (inside a function), or a
        # trioflow base whose module the package renamed: resolve field by field instead.
        hints = {field.name: _resolve_leniently(cls, field) for field in attrs_fields(cls)}
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


# --- Types as text ------------------------------------------------------------------------


def type_str(tp: Any) -> str:
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
    if is_union(tp):
        return " | ".join(type_str(arg) for arg in args)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None:
        name = getattr(origin, "__name__", None) or type_str(origin)
        return f"{name}[{', '.join(map(_type_arg_str, args))}]" if args else name
    if isinstance(tp, type):
        return tp.__name__
    return repr(tp).replace("typing.", "")


def _type_arg_str(arg: Any) -> str:
    if arg is Ellipsis:
        return "..."
    if isinstance(arg, list):  # Callable[[int], str]
        return f"[{', '.join(map(type_str, arg))}]"
    return type_str(arg)
