"""Steps and validation: every graph problem is found at construction, reported together."""

from __future__ import annotations

import gc
import random
import weakref
from typing import Union

import attrs
import pytest

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    SyncContext,
    Workflow,
    WorkflowFailedEvent,
    WorkflowValidationError,
    step,
)


class A(Event):
    n: int = 0


class B(Event):
    n: int = 0


class Orphan(Event):
    pass


class Draft(Event):
    pass


def problems_of(workflow_class: type[Workflow]) -> list[str]:
    with pytest.raises(WorkflowValidationError) as info:
        workflow_class()
    return list(info.value.problems)


def test_valid_graph_with_union_optional_and_postponed_annotations() -> None:
    """Unions, `X | None`, Optional and string annotations resolve to the right event types."""

    class Flow(Workflow):
        @step
        async def first(self, ctx: Context, ev: StartEvent) -> A | B:
            return A()

        @step
        async def second(self, ev: Union[A, B]) -> StopEvent | None:  # noqa: UP007
            return StopEvent()

    graph = Flow().graph
    assert graph.start_event_type is StartEvent
    assert graph.stop_event_type is StopEvent
    by_name = {spec.name: spec for spec in graph.steps}
    assert by_name["first"].returns == (A, B)
    assert by_name["second"].accepts == (A, B)
    assert by_name["second"].returns == (StopEvent,)
    assert by_name["first"].context_position == "first"
    assert by_name["second"].context_position is None


def test_locally_defined_event_classes_resolve() -> None:
    """Events defined inside a function resolve with postponed annotations."""

    class Local(Event):
        pass

    class Flow(Workflow):
        @step
        async def first(self, ev: StartEvent) -> Local:
            return Local()

        @step
        async def second(self, ev: Local) -> StopEvent:
            return StopEvent()

    assert {t.__name__ for t in Flow().graph.event_types()} == {"StartEvent", "Local", "StopEvent"}


def test_every_problem_reported_together() -> None:
    """Missing start, missing stop, and unconsumed/unproduced events come in one error."""

    class Broken(Workflow):
        @step
        async def a(self, ev: A) -> Orphan:
            return Orphan()

    problems = problems_of(Broken)
    text = "\n".join(problems)
    assert "no step accepts the start event" in text
    assert "no step returns a stop event" in text
    assert "step 'a' accepts A, but no step returns it" in text
    assert "[terminal_event] step 'a' returns Orphan, but no step accepts it" in text
    assert "[dead_end] dead-end step 'a'" in text
    assert len(problems) == 5


def test_error_message_lists_problems() -> None:
    """str() of the error names the workflow and each problem."""

    class Empty(Workflow):
        pass

    with pytest.raises(WorkflowValidationError, match=r"Empty is not a valid workflow") as info:
        Empty()
    assert "it has no steps" in str(info.value)


def test_step_accepting_stop_event_is_rejected() -> None:
    """A step may not accept StopEvent or its subclasses."""

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

        @step
        async def watch(self, ev: WorkflowFailedEvent) -> None:
            return None

    assert any("step 'watch' accepts WorkflowFailedEvent" in p for p in problems_of(Flow))


def test_runtime_terminal_event_cannot_be_returned() -> None:
    """Returning a runtime terminal event type is a validation problem."""

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent | WorkflowFailedEvent:
            return StopEvent()

    assert any("only the runtime produces" in p for p in problems_of(Flow))


def test_several_start_or_stop_types_are_rejected() -> None:
    """A workflow has exactly one start event type and one stop event type."""

    class MyStart(StartEvent):
        x: int

    class MyStop(StopEvent):
        pass

    class Flow(Workflow):
        @step
        async def one(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

        @step
        async def two(self, ev: MyStart) -> MyStop:
            return MyStop()

    text = "\n".join(problems_of(Flow))
    assert "one start event type" in text
    assert "one stop event type" in text


def test_human_in_the_loop_families_are_exempt() -> None:
    """InputRequiredEvent needs no consumer, HumanResponseEvent no producer."""

    class Ask(InputRequiredEvent):
        question: str

    class Reply(HumanResponseEvent):
        text: str

    class Flow(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> Ask:
            return Ask(question="?")

        @step
        async def answer(self, ev: Reply) -> StopEvent:
            return StopEvent(result=ev.text)

    Flow()  # does not raise


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("async def s(self, ev) -> StopEvent: ...", "needs an annotation"),
        ("async def s(self, ev: StartEvent): ...", "no return annotation"),
        ("async def s(self, ev: int) -> StopEvent: ...", "must name Event subclasses"),
        ("async def s(self, ev: StartEvent) -> int: ...", "must name Event subclasses"),
        ("async def s(self, ev: StartEvent | None) -> StopEvent: ...", "must not accept None"),
        ("async def s(self) -> StopEvent: ...", "must take (self, ev)"),
        ("async def s(self, ev: StartEvent, *, k: int) -> StopEvent: ...", "plain positional"),
        ("async def s(self, a: StartEvent | A, b: A) -> StopEvent: ...", "names a union"),
        ("async def s(self, a: list[A], b: A) -> StopEvent: ...", "cannot be joined"),
        ("async def s(self, a: list[int]) -> StopEvent: ...", "a list whose items must name"),
        ("async def s(self, a: StartEvent) -> list[int]: ...", "a list whose items must name"),
        ("async def s(self, ctx: Context, c: Context) -> StopEvent: ...", "the context twice"),
        ("async def s(self, ev: Missing) -> StopEvent: ...", "cannot resolve its annotations"),
    ],
)
def test_bad_signatures_get_clear_messages(source: str, message: str) -> None:
    """Each kind of bad step signature is reported with a message naming the step."""
    namespace: dict[str, object] = {}
    exec(
        "from __future__ import annotations\n" + source,
        {**globals(), "StopEvent": StopEvent, "StartEvent": StartEvent, "A": A, "Context": Context},
        namespace,
    )
    flow = type("Flow", (Workflow,), {"s": step(namespace["s"])})  # type: ignore[call-overload]
    problems = problems_of(flow)
    assert any(message in p and "step 's'" in p for p in problems), problems


def test_unannotated_context_parameter_is_accepted() -> None:
    """With an annotated event parameter, the other unannotated parameter is the context."""

    class Flow(Workflow):
        @step
        async def go(self, ctx, ev: StartEvent) -> StopEvent:  # type: ignore[no-untyped-def]
            return StopEvent()

    assert Flow().graph.steps[0].context_position == "first"


def test_step_options_are_validated() -> None:
    """Bad @step options fail at decoration time."""
    with pytest.raises(ValueError, match="num_workers"):
        step(num_workers=0)
    with pytest.raises(ValueError, match="timeout"):
        step(timeout=-1)
    with pytest.raises(TypeError, match="RetryPolicy"):
        step(retry=3)  # type: ignore[call-overload]


def test_subclass_overrides_a_step() -> None:
    """A subclass's step replaces the base class's step of the same name."""

    class Base(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="base")

    class Child(Base):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="child")

    assert [s.name for s in Child().graph.steps] == ["go"]


def test_workflow_options_are_validated() -> None:
    """Bad Workflow(timeout, stream_buffer) values raise ValueError."""

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    with pytest.raises(ValueError, match="timeout"):
        Flow(timeout=0)
    with pytest.raises(ValueError, match="stream_buffer"):
        Flow(stream_buffer=-1)
    assert Flow(timeout=None).timeout is None


def test_failures_of_is_validated() -> None:
    """failures_of must sit on an error handler and name existing, non-handler steps."""

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

        @step(failures_of=["go", "nope"])
        async def on_error(self, ev: StepFailedEvent) -> None:
            return None

        @step(failures_of=["on_error"])
        async def on_handler_error(self, ev: StepFailedEvent) -> None:
            return None

        @step(failures_of=["go"])
        async def not_a_handler(self, ev: StartEvent) -> None:
            return None

    text = "\n".join(problems_of(Flow))
    assert "step 'on_error' handles failures of 'nope': no such step" in text
    assert "failures of 'on_error', an error handler" in text
    assert "step 'not_a_handler' sets failures_of but does not accept StepFailedEvent" in text


def test_error_handlers_need_no_producer_and_route_by_failures_of() -> None:
    """StepFailedEvent needs no producing step; handlers_for honours failures_of and gives a
    handler's own failure to no handler."""

    class Flow(Workflow):
        @step
        async def a(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

        @step
        async def b(self, ev: StartEvent) -> None:
            return None

        @step
        async def catch_all(self, ev: StepFailedEvent) -> None:
            return None

        @step(failures_of="b")
        async def only_b(self, ev: StepFailedEvent) -> None:
            return None

    graph = Flow().graph
    names = [s.name for s in graph.steps]
    handlers = {names[i]: sorted(names[h] for h in hs) for i, hs in enumerate(graph.handlers_for)}
    assert handlers == {
        "a": ["catch_all"],
        "b": ["catch_all", "only_b"],
        "catch_all": [],
        "only_b": [],
    }


def test_sync_steps_are_accepted() -> None:
    """A plain def step is valid, with a SyncContext or Context parameter."""

    class Flow(Workflow):
        @step
        def go(self, ctx: SyncContext, ev: StartEvent) -> StopEvent:
            return StopEvent()

    assert Flow().graph.steps[0].is_async is False


async def test_subclass_init_without_super_still_runs() -> None:
    """A Workflow subclass whose __init__ skips super().__init__() runs with the defaults."""

    class Flow(Workflow):
        def __init__(self, greeting: str) -> None:
            self.greeting = greeting

        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=self.greeting)

    flow = Flow("hi")
    assert (flow.timeout, flow.stream_buffer) == (45.0, 256)
    assert await flow.run() == "hi"


# --- Names: steps and start-event fields ---------------------------------------------------

WORKFLOW_NAMES = sorted(name for name in dir(Workflow) if not name.startswith("__"))


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_a_step_may_not_shadow_the_workflow_base_class(name: str) -> None:
    """A step named after anything Workflow defines (run, start, timeout, graph, ...) is a
    validation problem naming the attribute, not a confusing failure at the first run."""

    async def body(self: Workflow, ev: StartEvent) -> StopEvent:
        return StopEvent()

    flow = type("Flow", (Workflow,), {name: step(body)})
    problems = problems_of(flow)
    assert len(problems) == 1
    assert problems[0].startswith(f"step {name!r} shadows Workflow.{name}")
    assert problems[0].endswith("; rename the step")


def test_a_step_named_start_is_refused_at_construction() -> None:
    """LlamaIndex's first docstring example names a step `start`: it fails when the workflow
    is made, saying what to do, instead of in `run()` with a TypeError."""

    class Flow(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Draft:  # type: ignore[override]
            return Draft()

        @step
        async def timeout(self, ev: Draft) -> StopEvent:  # type: ignore[override]
            return StopEvent()

    assert problems_of(Flow) == [
        "step 'start' shadows Workflow.start(); rename the step",
        "step 'timeout' shadows Workflow.timeout; rename the step",
    ]


def test_typed_start_event_fields_may_not_shadow_or_be_private() -> None:
    """A typed start event's field may not replace StartEvent.get, nor be private (attrs takes
    `_token` as `token=`, the wire drops it); a private `init=False` field is fine."""

    class Start(StartEvent):
        topic: str
        get: int  # type: ignore[assignment]
        _token: str
        _cache: dict[str, int] = attrs.field(init=False, factory=dict)

    class Flow(Workflow):
        @step
        async def go(self, ev: Start) -> StopEvent:
            return StopEvent()

    assert problems_of(Flow) == [
        "start event Start: field 'get' shadows StartEvent.get(); rename the field",
        "start event Start: field '_token' starts with '_', so run() takes it as token= and it "
        "never goes over the wire; rename it, or keep it internal with attrs.field(init=False)",
    ]


async def test_typed_start_event_with_plain_and_internal_fields_runs() -> None:
    """Public fields and private `init=False` fields pass validation and reach the step."""

    class Start(StartEvent):
        topic: str
        _seen: list[str] = attrs.field(init=False, factory=list)

    class Flow(Workflow):
        @step
        async def go(self, ev: Start) -> StopEvent:
            return StopEvent(result=(ev.topic, ev.get("topic"), ev._seen))

    assert await Flow().run(topic="trio") == ("trio", "trio", [])


# --- The routing cache -------------------------------------------------------------------


class Dynamic(Event):
    n: int = 0


async def test_routing_keeps_no_dynamically_made_event_class_alive() -> None:
    """Event classes made in a loop and routed through runs are freed once dropped: the
    per-class route cache holds them weakly."""

    class Flow(Workflow):
        @step
        async def send(self, ctx: Context, ev: StartEvent) -> Dynamic | None:
            ctx.send_event(ev.kind())
            return None

        @step
        async def take(self, ev: Dynamic) -> StopEvent:
            return StopEvent(result=type(ev).__name__)

    flow = Flow()
    refs = []
    for i in range(20):
        kind = type(f"Made{i}", (Dynamic,), {})
        assert await flow.run(kind=kind) == f"Made{i}"
        assert flow.graph.routes_for(kind) == flow.graph.routes_for(Dynamic)
        refs.append(weakref.ref(kind))
        del kind
    gc.collect()
    assert [ref() for ref in refs] == [None] * 20


def test_route_of_a_class_made_later_at_a_freed_ones_address_is_its_own() -> None:
    """A route is never served to another class: once a routed class is freed, a new class
    (which may reuse its memory) is routed afresh."""

    class Other(Event):
        pass

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent | Other) -> Dynamic | Other | StopEvent:
            return StopEvent()

        @step
        async def take(self, ev: Dynamic) -> None:
            return None

    graph = Flow().graph
    bases = random.Random(0).choices([Dynamic, Other], k=30)
    for i, base in enumerate(bases):
        # Freed classes' memory comes back soon (a few addresses take turns), so the bases are
        # mixed at random for some class to land where one of the other base lived.
        kind = type(f"Made{i}", (base,), {})
        assert graph.routes_for(kind) == graph.routes_for(base)
        del kind
        gc.collect()


# --- What _events.py / _workflow.py need (see the report) ----------------------------------


async def test_self_is_a_usable_free_form_field() -> None:
    """`StartEvent(self=...)` and `run(self=...)` keep `self` as a field, like any other."""

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=ev.self)

    assert StartEvent(self=1).get("self") == 1
    assert await Flow().run(self="me") == "me"


@pytest.mark.parametrize("name", ["get", "_private", "__class__"])
def test_free_form_fields_that_could_not_be_read_are_refused(name: str) -> None:
    """A free-form field that `ev.<name>` would not return (a StartEvent attribute, or a
    private name) is a TypeError naming it, not a value that silently cannot be read."""
    with pytest.raises(TypeError, match=repr(name)):
        StartEvent(**{name: 1})


def test_an_event_field_named_self_is_a_clear_type_error() -> None:
    """A field named `self` fails at the class statement with a TypeError saying so, not with
    a SyntaxError from attrs' generated code."""
    with pytest.raises(TypeError, match="'self'"):

        class Start(StartEvent):
            self: int
