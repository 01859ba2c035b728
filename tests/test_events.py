"""Events: frozen keyword-only attrs classes made by plain subclassing."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Mapping
from typing import Any

import attrs
import pytest

from trioflow import (
    Event,
    StartEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)


class Point(Event):
    x: int
    y: int = 0


class Labelled(Point):
    label: str  # required after a defaulted field: fine because fields are keyword-only


class Topic(StartEvent):
    topic: str


class Answer(StopEvent):
    confidence: float


def test_subclass_is_attrs_class_constructed_by_keyword() -> None:
    """A plain subclass becomes an attrs class whose fields are keyword-only."""
    point = Point(x=1)
    assert attrs.has(Point)
    assert (point.x, point.y) == (1, 0)
    with pytest.raises(TypeError):
        Point(1)  # type: ignore[call-arg]


def test_events_compare_by_value_and_are_immutable() -> None:
    """Equal fields make equal events; assigning a field raises."""
    assert Point(x=1, y=2) == Point(x=1, y=2)
    assert Point(x=1) != Point(x=2)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Point(x=1).x = 5  # type: ignore[misc]


def test_inherited_fields_and_required_field_after_default() -> None:
    """A subclass adds fields, required ones included, after inherited defaulted ones."""
    event = Labelled(x=1, label="a")
    assert (event.x, event.y, event.label) == (1, 0, "a")
    assert repr(event) == "Labelled(x=1, y=0, label='a')"


def test_events_hold_references_not_copies() -> None:
    """In-process nothing is copied: a field is the very object given."""

    class Box(Event):
        items: list[int]

    items = [1, 2]
    assert Box(items=items).items is items


def test_start_event_keeps_arbitrary_fields() -> None:
    """StartEvent(**kw) exposes its fields as attributes and through get()."""
    event = StartEvent(topic="trio", n=3)
    assert event.topic == "trio"
    assert event.get("n") == 3
    assert event.get("missing", "dflt") == "dflt"
    assert event == StartEvent(topic="trio", n=3)
    assert event != StartEvent(topic="asyncio", n=3)
    assert repr(event) == "StartEvent(topic='trio', n=3)"
    with pytest.raises(AttributeError, match="no field 'missing'"):
        _ = event.missing


def test_start_event_survives_copy_and_pickle() -> None:
    """A StartEvent with extra fields copies and pickles without recursion."""
    event = StartEvent(topic="trio")
    assert copy.copy(event) == event
    assert pickle.loads(pickle.dumps(event)) == event


def test_typed_start_event_accepts_only_declared_fields() -> None:
    """A StartEvent subclass with declared fields rejects unknown ones."""
    assert Topic(topic="x").topic == "x"
    assert Topic(topic="x").get("topic") == "x"
    with pytest.raises(TypeError):
        Topic(topic="x", other=1)  # type: ignore[call-arg]


def test_stop_event_subclass_with_required_field() -> None:
    """A StopEvent subclass may add a required field next to the defaulted result."""
    answer = Answer(confidence=0.9)
    assert answer.result is None
    assert answer.confidence == 0.9
    assert StopEvent(result=1).result == 1


def test_terminal_events_are_stop_events() -> None:
    """The runtime's terminal events are StopEvent subclasses carrying what ended the run."""
    error = ValueError("boom")
    failed = WorkflowFailedEvent(step_name="s", exception=error)
    timed_out = WorkflowTimedOutEvent(timeout=1.5, active_steps=("a",))
    for event in (failed, timed_out, WorkflowCancelledEvent()):
        assert isinstance(event, StopEvent)
    assert failed.exception is error
    assert timed_out.active_steps == ("a",)


def test_events_pickle() -> None:
    """Events round-trip through pickle under their public module."""
    assert pickle.loads(pickle.dumps(Point(x=1, y=2))) == Point(x=1, y=2)
    assert pickle.loads(pickle.dumps(StopEvent(result=[1]))) == StopEvent(result=[1])
    assert StopEvent.__module__ == "trioflow"


def test_type_hints_of_subclasses_resolve() -> None:
    """typing.get_type_hints works on user subclasses of the built-in events, whose own
    annotations name things that the public module `trioflow` does not export."""
    import typing

    class Order(StartEvent):
        item: str

    class Done(StopEvent):
        total: int

    assert typing.get_type_hints(Order)["item"] is str
    assert typing.get_type_hints(Done)["total"] is int
    assert typing.get_type_hints(Order)["_extra"] == Mapping[str, Any]
