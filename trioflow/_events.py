"""Events: the values that steps consume and emit, and that the stream carries.

Every subclass of `Event` is turned into a frozen, keyword-only attrs class when its ``class``
statement runs, so users write plain annotated fields and no decorator. `dataclass_transform`
(PEP 681) tells type checkers the same.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from typing import Any, dataclass_transform

import attrs


@dataclass_transform(
    kw_only_default=True,
    frozen_default=True,
    field_specifiers=(attrs.field,),
)
class Event:
    """Base class of all events.

    Subclass it with annotated fields; instances construct by keyword, compare by value and are
    immutable::

        class Progress(Event):
            value: float

    Fields may use `attrs.field` for defaults, factories, validators and converters. Nothing is
    copied: an event holds references to the values it is given.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "self" in inspect.get_annotations(cls):
            # attrs would fail with a SyntaxError from its generated `__init__(self, *, self)`.
            raise TypeError(f"{cls.__qualname__}: an event field cannot be named 'self'")
        # Dict classes (not slots) so attrs can finish the class in place: `__init_subclass__`
        # cannot swap the class object for the new one that `slots=True` builds. `auto_detect`
        # keeps any dunder the subclass writes itself (StartEvent's `__init__`, a custom
        # `__repr__`), and `kw_only` lets a subclass add required fields after defaulted ones.
        attrs.define(cls, frozen=True, kw_only=True, slots=False, auto_detect=True, order=False)


attrs.define(Event, frozen=True, kw_only=True, slots=False, order=False)


class StartEvent(Event):
    """The event that starts a run.

    ``StartEvent(**fields)`` keeps arbitrary keyword fields, read as attributes (``ev.topic``) or
    with `get`. A subclass that declares fields is a typed start event and accepts exactly those.
    """

    _extra: Mapping[str, Any] = attrs.field(
        factory=dict, init=False, repr=False, hash=False, alias="_extra"
    )

    # A typed subclass gets attrs' generated __init__ (declared fields only, since auto_detect
    # looks at each class's own body), so a misspelt field is an error and not a new field.
    def __init__(self, /, **fields: Any) -> None:
        # `self` is positional-only, so `StartEvent(self=...)` is a field like any other.
        for name in fields:
            if name.startswith("_") or hasattr(type(self), name):
                raise TypeError(_unreadable_field(type(self), name))
        # The keyword dict is new for this call, so keeping it copies none of the user's values.
        object.__setattr__(self, "_extra", fields)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails. Private names are never fields; refusing them
        # also keeps copy and pickle (which probe before `_extra` exists) out of a recursion.
        if not name.startswith("_"):
            try:
                return self._extra[name]
            except KeyError:
                pass
        raise AttributeError(f"{type(self).__name__!r} event has no field {name!r}")

    def get(self, key: str, default: Any = None) -> Any:
        """Return the field ``key``, or ``default`` when the event has no such field."""
        try:
            return getattr(self, key)
        except AttributeError:
            return default

    def __repr__(self) -> str:
        fields = attrs.fields(type(self))  # type: ignore[arg-type]  # made attrs at runtime
        declared = [f"{a.name}={getattr(self, a.name)!r}" for a in fields if a.repr]
        extra = [f"{key}={value!r}" for key, value in self._extra.items()]
        return f"{type(self).__name__}({', '.join(declared + extra)})"


def _unreadable_field(cls: type, name: str) -> str:
    # `ev.<name>` would not return such a field: private names are never looked up in the
    # free-form fields, and a class attribute (`get`) is found before them.
    why = "it is private" if name.startswith("_") else f"ev.{name} is {cls.__name__}.{name}"
    return f"{cls.__name__} cannot take a field named {name!r}: {why}; rename the field"


class StopEvent(Event):
    """The event that ends a run; ``result`` is what `Workflow.run` returns.

    A workflow may use a subclass (with fields of its own, required ones included); then `run`
    and `WorkflowHandler.result` return the event itself rather than ``result``.
    """

    result: Any = None


class InputRequiredEvent(Event):
    """Base class of events that ask the caller for input (human in the loop).

    They go to the stream; the caller answers with a `HumanResponseEvent` subclass through
    `WorkflowHandler.send_event`. They need no consuming step.
    """


class HumanResponseEvent(Event):
    """Base class of events that the caller sends into a run. They need no producing step."""


class StepFailedEvent(Event):
    """A step's attempt raised ``exception`` while handling ``input_event``: its ``attempt``
    (from 1), the seconds since this step execution's first failure (``elapsed_seconds``, 0
    for the first) and when it failed (``failed_at``, seconds since the epoch). The last two
    describe the failure rather than say which it is: events are equal without them."""

    step_name: str
    attempt: int
    exception: BaseException
    input_event: Event
    elapsed_seconds: float = attrs.field(default=0.0, eq=False)
    failed_at: float = attrs.field(factory=time.time, eq=False)

    @property
    def attempts(self) -> int:
        """The attempts made so far, this one included (LlamaIndex's name): ``attempt``."""
        return self.attempt


class CollectedEvents(Event):
    """What a collecting or joining step runs on: the ``events`` it was given, in the order of
    its parameters (a join) or of their arrival (a ``list[E]`` parameter). Lifecycle and
    failure events name it as their ``input_event``; steps never receive it themselves."""

    events: tuple[Event, ...]


class WorkflowFailedEvent(StopEvent):
    """Terminal event: step ``step_name`` raised ``exception`` and nothing handled it."""

    step_name: str
    exception: BaseException


class WorkflowCancelledEvent(StopEvent):
    """Terminal event: the run was cancelled before it finished."""


class WorkflowTimedOutEvent(StopEvent):
    """Terminal event: the run exceeded its ``timeout``; ``active_steps`` were still running."""

    timeout: float
    active_steps: tuple[str, ...] = ()


class LifecycleEvent(Event):
    """Base class of the events about the run's own machinery: steps starting, finishing and
    being retried. They reach the stream only while its consumer asks for them by type
    (``handler.stream_events(StepStartedEvent, ...)``), never in a default stream."""


class StepStartedEvent(LifecycleEvent):
    """Attempt ``attempt`` of step ``step_name`` starts on ``input_event``."""

    step_name: str
    attempt: int
    input_event: Event


class StepFinishedEvent(LifecycleEvent):
    """Attempt ``attempt`` of step ``step_name`` ended after ``duration`` seconds, returning
    (``succeeded``) or raising (a `StepFailedEvent` follows). ``returned`` counts the events
    it returned by their class's short name: ``{"Query": 3}`` for a fan-out of three, ``{}``
    for ``None`` (and for a failure)."""

    step_name: str
    attempt: int
    duration: float
    succeeded: bool
    # Compared, not hashed (a dict): events stay hashable, as equal ones still hash alike.
    returned: Mapping[str, int] = attrs.field(factory=dict, hash=False)


class StepRetryEvent(LifecycleEvent):
    """Step ``step_name`` failed with ``exception`` and runs again as attempt ``attempt``
    after ``delay`` seconds."""

    step_name: str
    attempt: int
    delay: float
    exception: BaseException


class WorkflowIdleEvent(LifecycleEvent):
    """The run waits with nothing to do: no step is running except those waiting for an event
    (``wait_for_event``), and no event waits for a step. Only an event from outside (an
    answer) moves it on. Written once per time it becomes idle (LlamaIndex's event)."""


#: The terminal events the runtime itself produces; a workflow never returns these.
RUNTIME_STOP_EVENTS: tuple[type[StopEvent], ...] = (
    WorkflowFailedEvent,
    WorkflowCancelledEvent,
    WorkflowTimedOutEvent,
)


def _resolve_own_annotations(*classes: type) -> None:
    # `trioflow/__init__.py` renames these classes' module to "trioflow", where names such as
    # `Any` and `Mapping` do not exist; `typing.get_type_hints` on a user's subclass would then
    # fail on our postponed annotations. Evaluated here, they need no module to resolve in.
    for cls in classes:
        cls.__annotations__ = inspect.get_annotations(cls, eval_str=True)


_resolve_own_annotations(
    StepStartedEvent,
    StepFinishedEvent,
    StepRetryEvent,
    WorkflowIdleEvent,
    StartEvent,
    StopEvent,
    StepFailedEvent,
    CollectedEvents,
    WorkflowFailedEvent,
    WorkflowCancelledEvent,
    WorkflowTimedOutEvent,
)
