"""A workflow's graph: its steps with resolved annotations, checked once per class.

`graph_of` builds and caches the graph of a `Workflow` subclass. Every problem found is
collected and raised together as one `WorkflowValidationError`, each message naming the step
and the event type involved.

Names are checked too, because a clash there fails late and obscurely: a step is a method of
the user's class, so a step called ``start`` or ``timeout`` replaces what `Workflow` itself
uses, and a start event's field called ``get`` replaces `StartEvent.get`.
"""

from __future__ import annotations

import dis
import functools
import inspect
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs

from .._errors import WorkflowValidationError
from .._events import (
    RUNTIME_STOP_EVENTS,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
)
from .._step import StepConfig, StepDeclaration, declaration_of
from ..collect import Cardinality, Collect
from ._checks import Finding, findings
from ._context import Context
from ._levels import bindings
from ._resources import ResourceParameter, resource_parameters
from ._state_store import DICT_STATE, DictState, StateClass, state_class, state_problem
from ._sync import SyncContext

EventTypes = tuple[type[Event], ...]


@attrs.frozen(kw_only=True)
class StepSpec:
    """One step with its annotations resolved."""

    name: str
    accepts: EventTypes
    returns: EventTypes
    config: StepConfig
    #: ``async def`` (runs in its worker task) or plain ``def`` (runs in a worker thread).
    is_async: bool
    #: Where the method takes ``ctx``: "first", "last", or None when it takes only the event.
    context_position: str | None
    #: The step function's code, by which the loop-blocking detector recognises it.
    code: types.CodeType
    #: A step added from outside the class (`Workflow.add_step`): the function itself, which
    #: takes no ``self``; None for a method.
    function: Callable[..., Any] | None = None
    #: A join (more than one event parameter): the event type of each, in order. The step
    #: runs once one event of each has come (``accepts`` holds them all).
    slots: EventTypes = ()
    #: Where ``ctx`` sits among the parameters of a join (None: it takes none).
    context_index: int | None = None
    #: A collecting step (a ``list[E]`` parameter): when it runs (``accepts`` holds ``E``).
    collect: Collect | None = None
    #: The event types a fan-out returns inside ``list[...]`` (``returns`` holds them too).
    fans_out: EventTypes = ()
    #: The event types it may return on their own (``returns`` without list-only ones).
    bare_returns: EventTypes = ()
    #: The state type its ``ctx: Context[MyState]`` names (None: plain ``Context``, or none).
    state_type: type | None = None
    #: Its ``Annotated[T, Resource(...)]`` parameters, made for each call (`_resources`).
    #: The other attributes describe its parameters as if these were not there.
    resources: tuple[ResourceParameter, ...] = ()

    @property
    def is_error_handler(self) -> bool:
        """Whether the step accepts `StepFailedEvent`, and so receives final failures."""
        return any(issubclass(t, StepFailedEvent) for t in self.accepts)


@attrs.define(eq=False)
class WorkflowGraph:
    """The validated steps of a workflow class and the routes between them."""

    workflow_name: str
    steps: tuple[StepSpec, ...]
    start_event_type: type[StartEvent]
    stop_event_type: type[StopEvent]
    #: Routes of the event classes the step annotations name, which the graph holds anyway:
    #: a plain dict keyed by class, the fastest lookup there is, filled once.
    _routes: dict[type[Event], tuple[int, ...]] = attrs.field(init=False)
    #: Routes of any other class (a subclass of an annotated one, perhaps made on the fly),
    #: keyed by ``id`` so that the cache keeps no class alive: a workflow that makes event
    #: classes in a loop would otherwise keep every one. `_other_refs` holds a weak reference
    #: to each class, whose callback drops the entry before the id can be reused.
    _other_routes: dict[int, tuple[int, ...]] = attrs.field(factory=dict, init=False)
    _other_refs: dict[int, weakref.ref[type[Event]]] = attrs.field(factory=dict, init=False)
    _index: dict[str, int] = attrs.field(init=False)
    #: For each step, the error-handler steps that receive its final failure. A handler's own
    #: failure goes to none: a failing error handler ends the run.
    handlers_for: tuple[tuple[int, ...], ...] = attrs.field(init=False)

    #: Event classes that steps may return and that are simply routed (not stop events, not
    #: for the caller); the runtime checks a returned event against this set first.
    plain_events: frozenset[type[Event]] = attrs.field(init=False)
    #: For each step, the collecting steps its fan-out feeds (`_levels`).
    bindings: tuple[tuple[int, ...], ...] = attrs.field(init=False)
    #: Some step fans out, collects or joins: runs keep account of streams (`_fanout`).
    scoped: bool = attrs.field(init=False)
    #: The class of a run's state (`Store`): the one the steps name, or `DictState`.
    state_class: StateClass = DICT_STATE
    #: What the graph checks a workflow may skip found (`_checks`), each step's skips applied.
    findings: tuple[Finding, ...] = ()

    def problems(self, skipped: frozenset[str]) -> list[str]:
        """The findings of the checks not in ``skipped``, as problems."""
        return _as_problems(self.findings, skipped)

    #: Some step takes resources: runs have an owner of run-scoped ones (`_resources`).
    resourced: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._index = {spec.name: i for i, spec in enumerate(self.steps)}
        handlers = [i for i, spec in enumerate(self.steps) if spec.is_error_handler]

        def handles(handler: int, failed: StepSpec) -> bool:
            names = self.steps[handler].config.failures_of
            return names is None or failed.name in names

        self.handlers_for = tuple(
            () if spec.is_error_handler else tuple(h for h in handlers if handles(h, spec))
            for spec in self.steps
        )
        self._routes = {t: self._route(t) for t in self.event_types()}
        self.bindings = bindings(self.steps)
        self.scoped = any(spec.fans_out or spec.collect or spec.slots for spec in self.steps)
        self.resourced = any(spec.resources for spec in self.steps)
        self.plain_events = frozenset(
            t
            for spec in self.steps
            for t in spec.returns
            if not issubclass(t, StopEvent | InputRequiredEvent) and self.routes_for(t)
        )

    def routes_for(self, event_type: type[Event]) -> tuple[int, ...]:
        """Indexes of the steps that accept events of ``event_type`` (cached per type)."""
        # The runtime asks for every routed event: the annotated classes, nearly all of them,
        # take the try alone, as fast as a dict lookup gets.
        try:
            return self._routes[event_type]
        except KeyError:
            return self._route_of_other(event_type)

    def _route_of_other(self, event_type: type[Event]) -> tuple[int, ...]:
        key = id(event_type)
        route = self._other_routes.get(key)
        if route is None:
            route = self._route(event_type)
            # The callback holds the two dicts, not the graph, so it keeps nothing else alive.
            forget = functools.partial(_forget_route, self._other_routes, self._other_refs, key)
            self._other_refs[key] = weakref.ref(event_type, forget)
            self._other_routes[key] = route
        return route

    def _route(self, event_type: type[Event]) -> tuple[int, ...]:
        return tuple(i for i, spec in enumerate(self.steps) if issubclass(event_type, spec.accepts))

    def step_index(self, name: str) -> int | None:
        """Index of the step called ``name``, or None."""
        return self._index.get(name)

    def event_types(self) -> list[type[Event]]:
        """Every event type the steps accept or return, start and stop included, in order of
        first mention."""
        seen: dict[type[Event], None] = {}
        for spec in self.steps:
            seen.update(dict.fromkeys(spec.accepts + spec.returns))
        return list(seen)


def _forget_route(
    routes: dict[int, tuple[int, ...]],
    refs: dict[int, weakref.ref[type[Event]]],
    key: int,
    _dead: weakref.ref[type[Event]],
) -> None:
    # Runs while the class is being freed, before its id can belong to another object.
    routes.pop(key, None)
    refs.pop(key, None)


class InvalidGraph(WorkflowValidationError):
    """`graph_of`'s error: the problems, and the ``findings`` of the checks a workflow may
    skip, which only a workflow knows whether it does (`problems_with`)."""

    def __init__(self, workflow_name: str, problems: Sequence[str], found: Sequence[Finding]):
        super().__init__(workflow_name, problems)
        self.findings = tuple(found)

    def problems_with(self, skipped: frozenset[str]) -> list[str]:
        """The problems, and the findings of the checks not in ``skipped``."""
        return [*self.problems, *_as_problems(self.findings, skipped)]


def _as_problems(found: Sequence[Finding], skipped: frozenset[str]) -> list[str]:
    return [f"[{f.check}] {f.message}" for f in found if f.check not in skipped]


_GRAPHS: weakref.WeakKeyDictionary[type, WorkflowGraph] = weakref.WeakKeyDictionary()


def graph_of(workflow_class: type) -> WorkflowGraph:
    """The graph of ``workflow_class``, built and validated on first use."""
    try:
        return _GRAPHS[workflow_class]
    except KeyError:
        graph = _build(workflow_class)
        _GRAPHS[workflow_class] = graph
        return graph


#: Where a workflow class keeps the steps added to it from outside (`Workflow.add_step`): in
#: its own ``__dict__``, so that a subclass does not have them (as in LlamaIndex).
ADDED_STEPS = "_trioflow_added_steps"


def declared_steps(workflow_class: type) -> dict[str, StepDeclaration]:
    # Walk the MRO base first, so a subclass may override a step, or hide it with a non-step.
    declared: dict[str, StepDeclaration] = {}
    for klass in reversed(workflow_class.__mro__):
        for name, value in vars(klass).items():
            declaration = declaration_of(value)
            if declaration is not None:
                declared[name] = declaration
            else:
                declared.pop(name, None)
    declared.update(added_steps(workflow_class))
    return declared


def added_steps(workflow_class: type) -> dict[str, StepDeclaration]:
    """The steps added to ``workflow_class`` itself from outside it, by name."""
    added: dict[str, StepDeclaration] = vars(workflow_class).get(ADDED_STEPS, {})
    return added


def forget_graph(workflow_class: type) -> None:
    """Drop the cached graph of ``workflow_class`` (its steps changed): the next use builds
    and checks it again."""
    _GRAPHS.pop(workflow_class, None)


def _build(workflow_class: type) -> WorkflowGraph:
    name = workflow_class.__name__
    problems: list[str] = []
    steps = []
    declared = declared_steps(workflow_class)
    added = added_steps(workflow_class)
    # (An added step is no attribute of the class: it shadows nothing.)
    _check_step_names({k: v for k, v in declared.items() if k not in added}, problems)
    for step_name, declaration in declared.items():
        spec = _resolve(step_name, declaration, problems, free=step_name in added)
        if spec is not None:
            steps.append(spec)
    if not steps and not problems:
        problems.append("it has no steps (decorate async methods with @step)")
    start = _single_type(steps, problems, "start", _start_types(steps))
    stop = _single_type(steps, problems, "stop", _stop_types(steps, problems))
    _check_flow(steps, problems)
    _check_collecting(steps, problems)
    _check_error_handlers(steps, problems)
    if start is not None:
        _check_start_fields(start, problems)
    if stop is not None:
        _check_declared_result(workflow_class, stop, problems)
    state = _state_class(steps, problems)
    if problems or start is None or stop is None:
        # With what the checks a workflow may skip find: its own error lists them with the
        # rest, those it skips left out (`Workflow.graph`).
        raise InvalidGraph(name, problems, findings(steps, start))
    return WorkflowGraph(
        workflow_name=name,
        steps=tuple(steps),
        start_event_type=start,
        stop_event_type=stop,
        state_class=state,
        findings=findings(steps, start),
    )


def _resolve(
    name: str, declaration: StepDeclaration, problems: list[str], *, free: bool = False
) -> StepSpec | None:
    """The step ``name`` of ``declaration``: a method, or with ``free`` a function added from
    outside the class, which takes no ``self``."""
    func = declaration.func
    label = f"step {name!r}"
    if inspect.isasyncgenfunction(func) or not (
        inspect.iscoroutinefunction(func) or inspect.isfunction(func)
    ):
        problems.append(f"{label} must be an `async def` method (or a plain `def` one)")
        return None
    try:
        hints = typing.get_type_hints(
            func, localns=dict(declaration.local_names), include_extras=True
        )
    except Exception as exc:  # NameError, or anything a broken annotation raises
        problems.append(
            f"{label}: cannot resolve its annotations ({type(exc).__name__}: {exc}); define "
            "the event classes it names before the workflow class, or at module level"
        )
        return None
    parameters = list(inspect.signature(func).parameters.values())[0 if free else 1 :]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind not in positional for p in parameters):
        shape = "([ctx,] ev)" if free else "(self, [ctx,] ev)"
        problems.append(f"{label} may only take plain positional parameters: {shape}")
        return None
    resources = resource_parameters(
        label, parameters, hints, declaration.local_names, problems, _taken_as
    )
    if resources is None:
        return None
    if resources:  # the rest are sorted as if these were not there
        taken_positions = {r.position for r in resources}
        parameters = [p for i, p in enumerate(parameters) if i not in taken_positions]
    taken = _parameters(label, parameters, hints, problems)
    if taken is None:
        return None
    state_type = None
    if taken.context_index is not None:
        context_hint = hints.get(parameters[taken.context_index].name)
        state_type = _state_type(label, _unannotated(context_hint), problems)
    if "return" not in hints:
        problems.append(
            f"{label} has no return annotation: annotate the events it returns or sends "
            "(`-> Draft`, `-> Draft | None`, `-> list[Draft]`, `-> None`)"
        )
        return None
    returned = _return_types(hints["return"])
    if isinstance(returned, str):
        problems.append(f"{label}: its return annotation {returned}")
        return None
    bare, fans_out = returned
    return StepSpec(
        name=name,
        accepts=taken.accepts,
        returns=tuple(dict.fromkeys(bare + fans_out)),
        config=declaration.config,
        is_async=inspect.iscoroutinefunction(func),
        context_position=taken.context_position,
        code=inspect.unwrap(func).__code__,
        function=func if free else None,
        slots=taken.slots,
        context_index=taken.context_index,
        collect=taken.collect,
        fans_out=fans_out,
        bare_returns=bare,
        state_type=state_type,
        resources=resources,
    )


@attrs.frozen
class _Taken:
    """What a step's parameters say it takes."""

    accepts: EventTypes
    context_position: str | None = None
    context_index: int | None = None
    slots: EventTypes = ()
    collect: Collect | None = None


def _parameters(
    label: str, parameters: list[inspect.Parameter], hints: dict[str, Any], problems: list[str]
) -> _Taken | None:
    """Sort a step's parameters into its context and its events: one event parameter (an
    event type or a union), several (a join: one event type each), or one ``list[E]`` (it
    collects a fan-out)."""
    if not parameters:
        problems.append(f"{label} must take (self, ev) or (self, ctx: Context, ev), not none")
        return None
    is_context = [p.name in hints and _is_context(hints[p.name]) for p in parameters]
    if len(parameters) >= 2 and not any(is_context):
        # An unannotated companion of annotated event parameters is the context.
        unannotated = [p.name not in hints for p in parameters]
        if unannotated.count(True) == 1:
            is_context = unannotated
    if is_context.count(True) > 1:
        problems.append(f"{label} takes the context twice: give it one `ctx: Context` parameter")
        return None
    events = [p for p, ctx in zip(parameters, is_context, strict=True) if not ctx]
    if not events:
        problems.append(f"{label} must take an event parameter besides `ctx: Context`")
        return None
    context_index = is_context.index(True) if any(is_context) else None
    for p in events:
        if p.name not in hints:
            problems.append(
                f"{label}: parameter {p.name!r} needs an annotation naming the events the "
                "step accepts"
            )
            return None
    collected = [(p, _collection(hints[p.name])) for p in events]
    lists = [(p, c) for p, c in collected if c is not None]
    for p, found in lists:
        if isinstance(found, str):
            problems.append(f"{label}: parameter {p.name!r} {found}")
            return None
    if lists:
        if len(events) > 1:
            problems.append(
                f"{label}: a `list[E]` parameter collects a fan-out on its own; it cannot be "
                "joined with other event parameters"
            )
            return None
        types, marker = typing.cast("tuple[EventTypes, Collect]", lists[0][1])
        position = None if context_index is None else ("first" if context_index == 0 else "last")
        return _Taken(types, position, context_index, collect=marker)
    accepted: list[EventTypes] = []
    for p in events:
        found_types = _event_types(_unannotated(hints[p.name]), allow_none=False)
        if isinstance(found_types, str):
            problems.append(f"{label}: parameter {p.name!r} {found_types}")
            return None
        accepted.append(found_types)
    if len(events) == 1:
        position = None if context_index is None else ("first" if context_index == 0 else "last")
        return _Taken(accepted[0], position, context_index)
    unions = [p.name for p, types in zip(events, accepted, strict=True) if len(types) != 1]
    if unions:
        problems.append(
            f"{label} joins several event parameters, so each names one event type; "
            f"{', '.join(map(repr, unions))} names a union"
        )
        return None
    slots = tuple(types[0] for types in accepted)
    return _Taken(tuple(dict.fromkeys(slots)), None, context_index, slots=slots)


def _is_context(hint: Any) -> bool:
    """Whether ``hint`` names the context (``Context``, ``Context[State]``, ``SyncContext``)."""
    hint = _unannotated(hint)
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and issubclass(origin, Context | SyncContext)


def _taken_as(hint: Any) -> str | None:
    """What else than a resource a parameter annotated ``hint`` would be, if anything."""
    if _is_context(hint):
        return "the context"
    if isinstance(_collection(hint), tuple):
        return "a list of events"
    if isinstance(_event_types(hint, allow_none=False), tuple):
        return "an event"
    return None


def _unannotated(hint: Any) -> Any:
    """``T`` of ``Annotated[T, ...]``; any other hint as it is."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint


def _collection(hint: Any) -> tuple[EventTypes, Collect] | str | None:
    """The event types and the marker of a collecting parameter (``list[E]``, perhaps in
    ``Annotated`` with `Collect`, `Take` or `All`, perhaps optional), a message saying what is
    wrong with it, or None for a hint that is no list."""
    marker: Collect | None = None
    if typing.get_origin(hint) is typing.Annotated:
        hint, *metadata = typing.get_args(hint)
        markers = [m for m in metadata if isinstance(m, Collect | Cardinality)]
        if len(markers) > 1:
            return "has more than one Collect marker"
        if markers:
            found = markers[0]
            marker = found if isinstance(found, Collect) else Collect(found)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        if len(members) == 1 and typing.get_origin(members[0]) is list:
            hint = members[0]  # `list[E] | None`: the list
    if typing.get_origin(hint) is not list:
        if marker is not None:
            return "has a Collect marker, which goes on a `list[E]` parameter only"
        return None
    found_types = _event_types(_item(hint), allow_none=False)
    if isinstance(found_types, str):
        return f"is a list whose items {found_types}"
    return found_types, marker if marker is not None else Collect()


def _item(list_hint: Any) -> Any:
    """``E`` of ``list[E]`` (`Any` of a bare ``list``)."""
    args = typing.get_args(list_hint)
    return args[0] if args else Any


def _return_types(hint: Any) -> tuple[EventTypes, EventTypes] | str:
    """The event types a return annotation names on their own, and those it names inside
    ``list[...]`` (a fan-out), or a message saying what is wrong with it."""
    hint = _unannotated(hint)
    members = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else (hint,)
    )
    bare: list[Any] = []
    listed: list[type[Event]] = []
    for member in members:
        if typing.get_origin(member) is list:
            found = _event_types(_item(member), allow_none=False)
            if isinstance(found, str):
                return f"is a list whose items {found}"
            listed.extend(found)
        else:
            bare.append(member)
    if not bare:
        return (), tuple(dict.fromkeys(listed))
    single = _event_types(typing.Union[tuple(bare)], allow_none=True)  # noqa: UP007
    if isinstance(single, str):
        return single
    return single, tuple(dict.fromkeys(listed))


def _state_type(label: str, hint: Any, problems: list[str]) -> type | None:
    """The state type ``ctx: Context[MyState]`` names (None for none, ``DictState`` or
    ``Any``), or None with a problem noted."""
    args = typing.get_args(hint)
    if not args:
        return None
    state = args[0]
    if state is Any or state is DictState or isinstance(state, typing.TypeVar):
        return None  # (a generic helper's ``Context[S]`` names no class)
    problem = state_problem(state)
    if problem is not None:
        problems.append(f"{label}: {problem}")
        return None
    assert isinstance(state, type)
    return state


def _state_class(steps: list[StepSpec], problems: list[str]) -> StateClass:
    """The class of the workflow's state: the one its steps name or, where they name classes
    of one line of subclasses (a subclass of a workflow extending its base's state), the most
    derived, as LlamaIndex picks."""
    named: dict[type, list[str]] = {}
    for spec in steps:
        if spec.state_type is not None:
            named.setdefault(spec.state_type, []).append(spec.name)
    if not named:
        return DICT_STATE
    derived = [t for t in named if all(issubclass(t, other) for other in named)]
    if len(derived) == 1:
        return state_class(derived[0])
    if len(named) > 1:
        listed = "; ".join(
            f"Context[{_type_name(state)}] in step{'s' * (len(names) > 1)} "
            + ", ".join(repr(n) for n in names)
            for state, names in named.items()
        )
        problems.append(
            f"its steps name different state types ({listed}): a run has one state, so "
            "the steps that name one must name the same class, or classes of which one "
            "derives from all the others (or take a plain Context)"
        )
        return DICT_STATE
    return state_class(next(iter(named)))


def _event_types(hint: Any, *, allow_none: bool) -> EventTypes | str:
    """The event types an annotation names, or a message saying why it names none."""
    hint = _unannotated(hint)
    members = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else (hint,)
    )
    found: list[type[Event]] = []
    for member in members:
        if member is None or member is type(None):
            if not allow_none:
                return "must not accept None: annotate it with Event types only"
            continue
        if not (isinstance(member, type) and issubclass(member, Event)):
            return f"must name Event subclasses (or a union of them), not {_type_name(member)}"
        found.append(member)
    if not found and not allow_none:
        return "must name at least one Event subclass"
    return tuple(found)


def _type_name(obj: Any) -> str:
    return obj.__name__ if isinstance(obj, type) else repr(obj)


def _start_types(steps: list[StepSpec]) -> Iterator[tuple[type[Event], str]]:
    for spec in steps:
        for event_type in spec.accepts:
            if issubclass(event_type, StartEvent):
                yield event_type, spec.name


def _stop_types(steps: list[StepSpec], problems: list[str]) -> Iterator[tuple[type[Event], str]]:
    for spec in steps:
        for event_type in spec.returns:
            if issubclass(event_type, RUNTIME_STOP_EVENTS):
                problems.append(
                    f"step {spec.name!r} returns {event_type.__name__}, a terminal event "
                    "that only the runtime produces"
                )
            elif issubclass(event_type, StopEvent):
                yield event_type, spec.name


def _single_type(
    steps: list[StepSpec],
    problems: list[str],
    kind: str,
    found: Iterable[tuple[type[Event], str]],
) -> Any:
    by_type: dict[type[Event], list[str]] = {}
    for event_type, step_name in found:
        by_type.setdefault(event_type, []).append(step_name)
    if len(by_type) == 1:
        return next(iter(by_type))
    if not by_type and steps:
        problems.append(
            "no step accepts the start event (annotate one step's event parameter with "
            "StartEvent or a subclass)"
            if kind == "start"
            else "no step returns a stop event (annotate a step's return with StopEvent or a "
            "subclass)"
        )
    elif by_type:
        listed = ", ".join(
            f"{t.__name__} (step {', '.join(map(repr, names))})" for t, names in by_type.items()
        )
        problems.append(f"a workflow has one {kind} event type, these steps use several: {listed}")
    return None


def _check_flow(steps: list[StepSpec], problems: list[str]) -> None:
    """Every event type a step accepts is produced by someone. An annotation naming a base
    class matches its subclasses both ways, so a broad annotation is trusted rather than
    second-guessed."""
    produced = [t for spec in steps for t in spec.returns]

    def related(a: type[Event], others: list[type[Event]]) -> bool:
        return any(issubclass(a, b) or issubclass(b, a) for b in others)

    for spec in steps:
        for event_type in spec.accepts:
            name = event_type.__name__
            if issubclass(event_type, StopEvent):
                problems.append(
                    f"step {spec.name!r} accepts {name}: stop events end the run and are never "
                    "delivered to steps"
                )
            elif issubclass(event_type, StartEvent | HumanResponseEvent | StepFailedEvent):
                continue  # produced by the caller, or by the runtime
            elif not related(event_type, produced):
                problems.append(
                    f"step {spec.name!r} accepts {name}, but no step returns it (add it to the "
                    "return annotation of the step that sends it)"
                )
        # (What a step returns that no step accepts: a check a workflow may skip, `_checks`.)


def _check_collecting(steps: list[StepSpec], problems: list[str]) -> None:
    """A collecting step runs once per stream of a fan-out that feeds it: one that no fan-out
    feeds would never run."""
    fed = {i for bound in bindings(steps) for i in bound}
    for i, spec in enumerate(steps):
        if spec.collect is not None and i not in fed:
            names = ", ".join(t.__name__ for t in spec.accepts)
            problems.append(
                f"step {spec.name!r} collects list[{names}], but no fan-out makes them: a "
                "collecting step runs once per stream of a step that returns `list[...]` whose "
                "events lead to these"
            )


def _check_error_handlers(steps: list[StepSpec], problems: list[str]) -> None:
    """``failures_of`` belongs on error handlers and names steps whose failures they can get."""
    by_name = {spec.name: spec for spec in steps}
    for spec in steps:
        names = spec.config.failures_of
        if names is None:
            continue
        if not spec.is_error_handler:
            problems.append(
                f"step {spec.name!r} sets failures_of but does not accept StepFailedEvent, so it "
                "is no error handler"
            )
            continue
        for name in names:
            if name not in by_name:
                problems.append(f"step {spec.name!r} handles failures of {name!r}: no such step")
            elif by_name[name].is_error_handler:
                problems.append(
                    f"step {spec.name!r} handles failures of {name!r}, an error handler: a failing "
                    "error handler ends the run"
                )


def _check_declared_result(
    workflow_class: type, stop: type[StopEvent], problems: list[str]
) -> None:
    """A ``Workflow[R]`` whose ``R`` is a class tells type checkers what ``run()`` returns;
    hold that to what it returns: the stop event itself when the steps end the run with a
    `StopEvent` subclass, else ``StopEvent.result`` (which may be anything, so a plain stop
    event is only held to not being declared as an event)."""
    declared = _declared_result(workflow_class)
    if declared is Any or not isinstance(declared, type) or typing.get_origin(declared):
        return  # Any, a type variable, a union, a generic alias: nothing to check
    as_declared = f"it is declared Workflow[{declared.__name__}]"
    try:
        if stop is not StopEvent and not issubclass(stop, declared):
            problems.append(
                f"{as_declared}, but its steps end it with {stop.__name__}, which run() "
                f"returns: declare Workflow[{stop.__name__}]"
            )
        elif stop is StopEvent and issubclass(declared, StopEvent):
            instead = (
                "" if declared is StopEvent else f"make the steps return {declared.__name__}, or "
            )
            problems.append(
                f"{as_declared}, but its steps end it with a plain StopEvent, so run() returns "
                f"the event's result, not the event: {instead}declare the result's type"
            )
    except TypeError:  # a class issubclass() refuses: a protocol not @runtime_checkable
        pass


def _declared_result(workflow_class: type) -> object:
    """The ``R`` of the ``Workflow[R]`` that ``workflow_class`` or a base class subclasses, or
    None."""
    from .._workflow import Workflow  # imported late: _workflow imports this module

    for klass in workflow_class.__mro__:
        # Only a class with a subscripted base has __orig_bases__ of its own.
        for base in vars(klass).get("__orig_bases__", ()):
            if typing.get_origin(base) is Workflow:
                return typing.get_args(base)[0]
    return None


def _check_step_names(declared: dict[str, StepDeclaration], problems: list[str]) -> None:
    """No step may replace an attribute that `Workflow` defines or sets: ``run`` would stop
    running the workflow, ``start`` makes the first `run()` fail with a confusing TypeError."""
    reserved = _workflow_attributes()
    for name in declared:
        if name in reserved:
            problems.append(f"step {name!r} shadows {reserved[name]}; rename the step")


@functools.cache
def _workflow_attributes() -> dict[str, str]:
    """Every attribute of the `Workflow` base class, each with how a problem names it
    (``Workflow.start()``, ``Workflow.timeout``). Computed, not listed, so it cannot drift."""
    from .._workflow import Workflow  # imported late: _workflow imports this module

    # `dir` lists an instance attribute only while the class also has a default for it.
    names = set(dir(Workflow)) | _assigned_by(Workflow.__init__)
    return {name: _qualified(Workflow, name) for name in names}


def _assigned_by(function: Callable[..., Any]) -> set[str]:
    """The attribute names ``function`` assigns to (``self.timeout = ...``)."""
    return {
        str(instruction.argval)
        for instruction in dis.get_instructions(function)
        if instruction.opname == "STORE_ATTR"
    }


def _qualified(cls: type, name: str) -> str:
    value = inspect.getattr_static(cls, name, None)
    is_method = isinstance(value, staticmethod | classmethod) or (
        callable(value) and not isinstance(value, type)
    )
    return f"{cls.__name__}.{name}{'()' if is_method else ''}"


def _check_start_fields(start: type[StartEvent], problems: list[str]) -> None:
    """A typed start event's fields are the run's keyword arguments: none may replace what
    `StartEvent` itself offers (``ev.get(...)``), and none may be private, since attrs takes
    ``_x`` as ``x=`` and the wire never carries a private field."""
    own = {field.name for field in _attrs_fields(StartEvent)}
    label = f"start event {start.__name__}"
    for field in _attrs_fields(start):
        if field.name in own:
            continue
        if hasattr(StartEvent, field.name):
            shadowed = _qualified(StartEvent, field.name)
            problems.append(f"{label}: field {field.name!r} shadows {shadowed}; rename the field")
        elif field.name.startswith("_") and field.init:
            problems.append(
                f"{label}: field {field.name!r} starts with '_', so run() takes it as "
                f"{field.alias}= and it never goes over the wire; rename it, or keep it "
                "internal with attrs.field(init=False)"
            )


def _attrs_fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    # Events are made attrs classes at run time, which the type checker cannot see.
    return tuple(attrs.fields(typing.cast("type[attrs.AttrsInstance]", cls)))
