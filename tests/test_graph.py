"""Steps and validation: every graph problem is found at construction, reported together."""

from __future__ import annotations

from typing import Union

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
    assert "step 'a' returns Orphan, but no step accepts it" in text
    assert len(problems) == 4


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
        ("async def s(self, a: StartEvent, b: A) -> StopEvent: ...", "exactly one event parameter"),
        ("async def s(self, ev: Missing) -> StopEvent: ...", "cannot resolve its annotations"),
    ],
)
def test_bad_signatures_get_clear_messages(source: str, message: str) -> None:
    """Each kind of bad step signature is reported with a message naming the step."""
    namespace: dict[str, object] = {}
    exec(
        "from __future__ import annotations\n" + source,
        {**globals(), "StopEvent": StopEvent, "StartEvent": StartEvent, "A": A},
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
