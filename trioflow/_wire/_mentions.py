"""The event types a workflow's steps make or await beyond their annotations, and what kind
of event each type is to a run: what both descriptions of a graph (`_describe`,
`_representation`) read."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from types import CodeType
from typing import TYPE_CHECKING, Any

from .._events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
)
from ._typeinfo import is_subclass

if TYPE_CHECKING:
    from .._core._graph import StepSpec
    from .._workflow import Workflow


def mentioned_event_types(workflow: Workflow | type[Workflow], spec: StepSpec) -> list[type[Event]]:
    """Event types the step's code names that its annotations do not (``workflow``: a
    workflow, or its class)."""
    cls = workflow if isinstance(workflow, type) else type(workflow)
    step_function: Any = spec.function or getattr(cls, spec.name, None)
    annotated = set(spec.accepts + spec.returns)
    found = {
        value: None
        for value in _objects_named_in(inspect.unwrap(step_function))
        if is_subclass(value, Event) and value not in _BASE_EVENTS and value not in annotated
    }
    return list(found)


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


_EVENT_KINDS: tuple[tuple[type[Event], str], ...] = (
    (StartEvent, "start"),
    (StopEvent, "stop"),
    (InputRequiredEvent, "input_required"),
    (HumanResponseEvent, "human_response"),
    (StepFailedEvent, "step_failed"),
)


def event_kind(event_type: type[Event]) -> str:
    return next((kind for base, kind in _EVENT_KINDS if issubclass(event_type, base)), "event")
