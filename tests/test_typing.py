"""What type checkers see: results typed from ``Workflow[R]``, streams typed from the types named
to ``stream_events``, and server options spelt out as keywords that mirror `ServerOptions`.

mypy (strict, over ``tests/`` too: ``scripts/test``) checks this file: `typing.assert_type`
fails it on a type that differs, and, as ``warn_unused_ignores`` is on, every
``# type: ignore[code]`` below asserts that its line is an error. The functions whose names
start with ``_checked`` are only type-checked, never run; the tests run their code as well
where the values are worth asserting.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, assert_type

import attrs
import pytest

import trioflow
from trioflow import (
    Context,
    Event,
    ServerOptions,
    StartEvent,
    StepStartedEvent,
    StopEvent,
    StreamIterator,
    Workflow,
    WorkflowApp,
    WorkflowHandler,
    WorkflowValidationError,
    step,
)
from trioflow._server import _serve as serve_module
from trioflow._server._serve import SERVER_OPTIONS

# -- workflows --


class Progress(Event):
    value: float


class Note(Event):
    text: str


class Done(StopEvent):
    """A stop event of its own: `run()` returns the event itself."""

    words: int


class Plain(Workflow):
    """A workflow as LlamaIndex users write it: `run()` returns ``StopEvent.result``, Any."""

    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(Progress(value=1.0))
        return StopEvent(result=f"hello {ev.get('name', 'world')}")


class Typed(Workflow[Done]):
    """A workflow that says what its run returns: its stop event."""

    @step
    async def go(self, ctx: Context, ev: StartEvent) -> Done:
        await ctx.write_event_to_stream(Progress(value=0.5))
        await ctx.write_event_to_stream(Note(text="half way"))
        return Done(words=2)


class Counted(Workflow[int]):
    """A plain stop event whose result's type the class declares: the author's word, which
    nothing can check, as ``StopEvent.result`` is Any."""

    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=3)


# -- run() and result() --


async def test_a_plain_workflow_returns_any() -> None:
    """``class F(Workflow)`` keeps returning ``StopEvent.result``, typed Any (and a plain
    `WorkflowHandler` is ``WorkflowHandler[Any]``): nothing changes for existing code."""
    result = await Plain().run(name="trio")
    assert_type(result, Any)
    assert result == "hello trio"
    async with Plain().start() as handler:
        assert_type(handler, WorkflowHandler[Any])
        assert_type(handler, WorkflowHandler)
        assert await handler.result() == "hello world"


async def test_a_typed_workflow_returns_its_stop_event() -> None:
    """``class F(Workflow[Done])``: `run`, `result` and `result_nowait` are typed as, and
    return, the Done event itself."""
    result = await Typed().run()
    assert_type(result, Done)
    assert result == Done(words=2)
    async with Typed().start() as handler:
        assert_type(handler, WorkflowHandler[Done])
        done = await handler.result()
        assert_type(done, Done)
        assert_type(handler.result_nowait(), Done)
        assert done.words == 2


async def test_a_declared_result_type_types_the_result() -> None:
    """``Workflow[int]`` over a plain StopEvent types ``run()`` as int."""
    result = await Counted().run()
    assert_type(result, int)
    assert result == 3


async def _checked_return_from_inside_start() -> Done:
    # Leaving start() never swallows an exception, and its type says so: a function returning
    # from inside the block needs no return after it (mypy: "Missing return statement").
    async with Typed().start() as handler:
        return await handler.result()


def test_workflow_and_handler_are_generic_at_run_time_too() -> None:
    """Subscripting works at run time (``Workflow[Done]`` is a base class above); a subclass of
    a subscripted class is still an ordinary workflow."""
    assert typing.get_origin(Workflow[Done]) is Workflow
    assert typing.get_origin(WorkflowHandler[int]) is WorkflowHandler
    assert typing.get_origin(StreamIterator[Note]) is StreamIterator
    assert issubclass(Typed, Workflow)
    assert Typed().graph.stop_event_type is Done


# -- the declared result type, checked against the graph --


def _workflow(declared: Any, stop: type[StopEvent]) -> type[Workflow]:
    """A workflow class subclassing ``Workflow[declared]`` that ends with ``stop``."""
    if stop is Done:

        class EndsWithDone(Workflow[declared]):
            @step
            async def go(self, ev: StartEvent) -> Done:
                return Done(words=1)

        return EndsWithDone

    class EndsWithStopEvent(Workflow[declared]):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    return EndsWithStopEvent


class HasWords(typing.Protocol):
    words: int


@pytest.mark.parametrize(
    ("declared", "stop"),
    [(Done, Done), (StopEvent, Done), (Any, Done), (Any, StopEvent), (int, StopEvent),
     (object, Done), (int | None, StopEvent), (list[Done], StopEvent), (HasWords, Done)],
)  # fmt: skip
def test_a_declared_result_that_fits_the_steps_is_accepted(
    declared: object, stop: type[StopEvent]
) -> None:
    """``Workflow[R]`` is accepted when run() returns an R: the stop event when it is a
    subclass, or the result of a plain StopEvent, which may be anything that is no event
    (unions, generic aliases, protocols and Any are not checked)."""
    assert _workflow(declared, stop)().graph.stop_event_type is stop


@pytest.mark.parametrize(
    ("declared", "stop", "message"),
    [(Done, StopEvent, "make the steps return Done, or declare the result's type"),
     (StopEvent, StopEvent, "not the event: declare the result's type"),
     (int, Done, "end it with Done, which run() returns: declare Workflow[Done]")],
)  # fmt: skip
def test_a_declared_result_that_the_steps_contradict_is_refused(
    declared: type, stop: type[StopEvent], message: str
) -> None:
    """A ``Workflow[R]`` whose steps make run() return something else is a validation
    problem, so the type checker is never told a lie about what run() returns."""
    with pytest.raises(WorkflowValidationError) as info:
        _workflow(declared, stop)()
    assert f"it is declared Workflow[{declared.__name__}], but its steps" in str(info.value)
    assert message in str(info.value)


T = typing.TypeVar("T")


class GenericBase(Workflow[T]):
    @step
    async def go(self, ev: StartEvent) -> Done:
        return Done(words=1)


def test_only_workflow_itself_subscripted_declares_a_result() -> None:
    """The check reads ``Workflow[R]`` where a class subclasses it, inherited by subclasses.
    A generic base passing its own type variable on declares nothing, and so neither does a
    subscripted subclass of it (a limit: its ``R`` is not traced through the base)."""

    class Sub(Typed):
        pass

    class Concrete(GenericBase[Done]):
        pass

    class Unchecked(GenericBase[int]):
        pass

    assert Sub().graph.stop_event_type is Done
    assert GenericBase().graph.stop_event_type is Done
    assert Concrete().graph.stop_event_type is Done
    assert Unchecked().graph.stop_event_type is Done


# -- stream_events --


async def test_stream_events_yields_the_named_types_and_the_stop_event() -> None:
    """``stream_events(A, B)`` is an iterator of ``A | B | StopEvent``, as an async iterator
    and in ``async with``; what it yields is of those types."""
    async with Typed().start() as handler:
        events = handler.stream_events(Progress, Note)
        assert_type(events, StreamIterator[Progress | Note | StopEvent])
        async with events:
            seen = []
            async for ev in events:
                assert_type(ev, Progress | Note | StopEvent)
                assert isinstance(ev, Progress | Note | StopEvent)
                seen.append(ev)
    assert seen == [Progress(value=0.5), Note(text="half way"), Done(words=2)]


async def test_stream_events_of_one_type() -> None:
    """One type: ``A | StopEvent``; narrowing away the terminal event leaves A."""
    async with Typed().start() as handler, handler.stream_events(Progress) as events:
        async for ev in events:
            assert_type(ev, Progress | StopEvent)
            if not isinstance(ev, StopEvent):
                assert_type(ev, Progress)
                assert ev.value == 0.5


async def test_stream_events_without_types_yields_any_event() -> None:
    """No types: `Event`; a plain ``StreamIterator`` annotation means the same."""
    async with Plain().start() as handler:
        events = handler.stream_events()
        assert_type(events, StreamIterator[Event])
        assert_type(events, StreamIterator)
        assert [ev async for ev in events] == [Progress(value=1.0), StopEvent(result="hello world")]


def _checked_stream_events(
    handler: WorkflowHandler, types: list[type[Event]], pair: tuple[type[Progress], type[Note]]
) -> None:
    assert_type(handler.stream_events(Progress, Progress), StreamIterator[Progress | StopEvent])
    assert_type(
        handler.stream_events(Progress, StepStartedEvent),
        StreamIterator[Progress | StepStartedEvent | StopEvent],
    )
    assert_type(
        handler.stream_events(Progress, Note, Done, Progress, Note, Done),
        StreamIterator[Progress | Note | Done | StopEvent],
    )
    # Seven types and more, and types of a length unknown to the checker: any Event.
    assert_type(
        handler.stream_events(Progress, Note, Done, Progress, Note, Done, Progress),
        StreamIterator[Event],
    )
    assert_type(handler.stream_events(*types), StreamIterator[Event])
    assert_type(handler.stream_events(*pair), StreamIterator[Progress | Note | StopEvent])
    # An iterator of fewer types is one of more (it is covariant).
    wider: StreamIterator[Event] = handler.stream_events(Progress)
    handler.stream_events(int)  # type: ignore[type-var]
    del wider


# -- server options --


async def _checked_options(flow: Plain, app: WorkflowApp, asgi: Callable[..., Any]) -> None:
    WorkflowApp(flow, retain=10, allowed_hosts="example.test", abandon_after=None)
    WorkflowApp({"plain": flow}, cors_origins=("https://a.example",), token=None)
    WorkflowApp(flow, retian=10)  # type: ignore[call-arg]
    WorkflowApp(flow, retain="10")  # type: ignore[arg-type]
    await trioflow.serve(flow, port=0, retain=10, cors_origins=["https://a.example"])
    await trioflow.serve(flow, retian=10)  # type: ignore[call-overload]
    await trioflow.serve(app, port=0)
    await trioflow.serve(app, retain=10)  # type: ignore[call-overload]
    await trioflow.serve(asgi, shutdown_grace=1.0, max_connections=10)
    await trioflow.serve(asgi, retain=10)  # type: ignore[call-overload]


def test_a_misspelt_option_fails_at_run_time_too() -> None:
    """What the type checker refuses, Python refuses too (and ServerOptions validates)."""
    with pytest.raises(TypeError, match="retian"):
        WorkflowApp(Plain(), retian=10)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="retain must be an int >= 1"):
        WorkflowApp(Plain(), retain=0)


def _option_annotations() -> dict[str, Any]:
    """Each field of `ServerOptions` with the type its ``__init__`` accepts: its converter's
    argument type (``allowed_hosts`` takes a string or any iterable of them), else its own."""
    accepted = {}
    for field in attrs.fields(attrs.resolve_types(ServerOptions)):
        converter: Any = getattr(field.converter, "converter", field.converter)  # a Converter?
        if converter is None:
            accepted[field.name] = field.type
        else:
            (first, *_) = inspect.signature(converter, eval_str=True).parameters.values()
            accepted[field.name] = first.annotation
    return accepted


def _keyword_options(function: Callable[..., object], after: str) -> list[inspect.Parameter]:
    """The keyword-only parameters of ``function`` after the one called ``after``."""
    parameters = list(inspect.signature(function, eval_str=True).parameters.values())
    names = [p.name for p in parameters]
    options = parameters[names.index(after) + 1 :]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in options)
    return options


def test_workflow_app_keywords_mirror_server_options() -> None:
    """`WorkflowApp`'s keywords are exactly the fields of `ServerOptions`, in order, with the
    same defaults and the types its ``__init__`` accepts: the one definition of the options
    stays one."""
    fields = attrs.fields(ServerOptions)
    keywords = _keyword_options(WorkflowApp.__init__, after="workflows")
    assert [p.name for p in keywords] == [f.name for f in fields]
    assert {p.name: p.default for p in keywords} == {f.name: f.default for f in fields}
    assert {p.name: p.annotation for p in keywords} == _option_annotations()


def _overloads_of_serve() -> Sequence[Callable[..., object]]:
    # get_overloads() finds them by the module they were defined in, which trioflow's
    # __init__ rewrites to "trioflow" for the public name's sake.
    defined = types.SimpleNamespace(__module__=serve_module.__name__, __qualname__="serve")
    return typing.get_overloads(defined)  # type: ignore[arg-type]


def _serve_overloads() -> dict[str, list[inspect.Parameter]]:
    """The options of each overload of `serve`, by the type of what it serves."""
    found = {}
    for overload in _overloads_of_serve():
        (app, *_) = inspect.signature(overload, eval_str=True).parameters.values()
        kind = "app" if app.annotation is WorkflowApp else "asgi"
        if typing.get_origin(app.annotation) in (typing.Union, types.UnionType):
            kind = "workflows"  # Workflow | Mapping[str, Workflow]
        found[kind] = _keyword_options(overload, after="task_status")
    assert len(found) == 3
    return found


def test_serve_keywords_mirror_server_options() -> None:
    """`serve`'s overload for workflows takes every `ServerOptions` field as `WorkflowApp`
    does (``allowed_hosts`` defaults to the loopback names and ``host``, so shows ``...``);
    the one for any ASGI app takes the options serve itself follows; a `WorkflowApp` brings
    its own."""
    overloads = _serve_overloads()
    app_keywords = _keyword_options(WorkflowApp.__init__, after="workflows")
    assert [_described(p) for p in overloads["workflows"]] == [
        _described(p.replace(default=...) if p.name == "allowed_hosts" else p) for p in app_keywords
    ]
    assert [_described(p) for p in overloads["asgi"]] == [
        _described(p) for p in app_keywords if p.name in SERVER_OPTIONS
    ]
    assert overloads["app"] == []


def test_serve_overloads_agree_with_its_implementation() -> None:
    """What every overload of `serve` shares (host, port, ...) is the implementation's."""
    implementation = inspect.signature(trioflow.serve, eval_str=True).parameters
    shared = [implementation[name] for name in ("host", "port", "shutdown_trigger", "task_status")]
    overloads = _overloads_of_serve()
    assert len(overloads) == 3
    for overload in overloads:
        parameters = inspect.signature(overload, eval_str=True).parameters
        assert [parameters[p.name] for p in shared] == shared


def _described(parameter: inspect.Parameter) -> tuple[str, object, object]:
    return parameter.name, parameter.default, parameter.annotation
