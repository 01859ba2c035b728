"""A workflow's graph as JSON: its steps, its event types and the fields of each.

The server answers ``GET /workflows/{name}`` with `describe_workflow`, and a UI builds its
forms from it: field types are written as a reader writes them (``tuple[str, ...]``), and a
default is given where it has a plain JSON form.
"""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .._events import (
    Event,
)
from .._retry import Policy, max_attempts
from .._step import RetryPolicy
from ._mentions import event_kind, mentioned_event_types
from ._typeinfo import (
    field_types,
    qualified_name,
    takes_free_form_fields,
    type_name,
    type_str,
    wire_fields,
)

if TYPE_CHECKING:
    from .._core._graph import StepSpec
    from .._workflow import Workflow


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
    # (Imported here: `_representation` reads `_schema`, which reads this module.)
    from ._representation import get_workflow_representation

    graph = workflow.graph
    cls = type(workflow)
    start_type = graph.start_event_type
    free_form = takes_free_form_fields(start_type)
    return {
        "name": name,
        "workflow": qualified_name(cls),
        "doc": _first_paragraph(cls.__doc__),
        "start_event": type_name(start_type),
        "stop_event": type_name(graph.stop_event_type),
        "input": [] if free_form else _describe_fields(start_type),
        "free_form": free_form,
        "steps": [
            _describe_step(spec, mentioned_event_types(workflow, spec)) for spec in graph.steps
        ],
        "events": [_describe_event(t) for t in described_event_types(workflow)],
        # The same as nodes and edges (`get_workflow_representation`): what draws it.
        "graph": get_workflow_representation(workflow).to_dict(),
    }


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n", 1)[0].split())


def _describe_step(spec: StepSpec, mentions: list[type[Event]]) -> dict[str, Any]:
    config = spec.config
    return {
        "name": spec.name,
        "accepts": [type_name(t) for t in spec.accepts],
        "returns": [type_name(t) for t in spec.returns],
        "num_workers": config.num_workers,
        "timeout": None if config.timeout is None else float(config.timeout),
        "retry": _describe_retry(config.retry),
        "error_handler": spec.is_error_handler,
        # For an error handler: the steps whose final failures it takes (None: every step's).
        "failures_of": list(config.failures_of) if config.failures_of is not None else None,
        "runs_in": "task" if spec.is_async else "thread",
        # The event types it returns in a list (a fan-out); of a collecting step, when it runs
        # (``take``: at the n-th event, None: once the stream is done); of a join, the event
        # type of each of its parameters.
        "fans_out": [type_name(t) for t in spec.fans_out],
        "collects": None if spec.collect is None else {"take": spec.collect.take},
        "joins": [type_name(t) for t in spec.slots],
        # Event types its code names beyond its annotations: what it streams or sends, the
        # question it asks, the reply it awaits.
        "mentions": [type_name(t) for t in mentions],
    }


def _describe_retry(retry: Policy | None) -> dict[str, Any] | None:
    if retry is None:
        return None
    if not isinstance(retry, RetryPolicy):  # a policy object: its kind, and its bound if said
        return {"policy": type(retry).__name__, "max_attempts": max_attempts(retry)}
    return {
        "max_attempts": retry.max_attempts,
        "delay": float(retry.delay),
        "backoff": float(retry.backoff),
    }


# --- Event types --------------------------------------------------------------------------


def described_event_types(workflow: Workflow) -> list[type[Event]]:
    """The event types of ``workflow``'s graph, then those its steps' code names without an
    annotation (see `describe_workflow`)."""
    listed = dict.fromkeys(workflow.graph.event_types())
    for spec in workflow.graph.steps:
        listed.update(dict.fromkeys(mentioned_event_types(workflow, spec)))
    return list(listed)


def _describe_event(event_type: type[Event]) -> dict[str, Any]:
    free_form = takes_free_form_fields(event_type)
    return {
        "name": type_name(event_type),
        "qualified_name": qualified_name(event_type),
        "kind": event_kind(event_type),
        "fields": [] if free_form else _describe_fields(event_type),
    }


# --- Fields -------------------------------------------------------------------------------


def _describe_fields(cls: type) -> list[dict[str, Any]]:
    hints = field_types(cls)
    described = []
    for key, field in wire_fields(cls).items():
        entry: dict[str, Any] = {
            "name": key,
            "type": type_str(hints.get(field.name, Any)),
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
    try:
        return {"default": _plain_json(default)}
    except _NotPlain:
        return {}


class _NotPlain(Exception):
    """A value without a JSON form of its own: the wire would send a repr or a stand-in."""


def _plain_json(value: Any) -> Any:
    """``value`` as JSON, as `_wire` encodes it, if that is no repr or lossy stand-in.

    Raises:
        _NotPlain: ``value`` is, or holds, anything but None, booleans, ints, strings, finite
            floats, enums of those, lists, tuples, sets and dicts with string keys.
    """
    if isinstance(value, enum.Enum):
        return _plain_json(value.value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return float(value)
    if isinstance(value, list | tuple):
        return [_plain_json(item) for item in value]
    if isinstance(value, set | frozenset):
        items = [_plain_json(item) for item in value]
        try:
            return sorted(items)  # as `_wire` sorts sets, so that equal sets encode equally
        except TypeError:
            return items
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {_plain_json(key): _plain_json(item) for key, item in value.items()}
    raise _NotPlain
