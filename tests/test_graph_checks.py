"""The graph checks a workflow or a step may skip: reachability, dead ends, terminal events."""

from __future__ import annotations

import pytest

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowValidationError,
    step,
)


class Ping(Event):
    pass


class Pong(Event):
    pass


class Stray(Event):
    pass


class Ask(InputRequiredEvent):
    pass


class Reply(HumanResponseEvent):
    pass


def problems(flow: type[Workflow], **options: object) -> list[str]:
    with pytest.raises(WorkflowValidationError) as info:
        flow(**options)  # type: ignore[arg-type]
    return list(info.value.problems)


class Unreachable(Workflow):
    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @step
    async def island(self, ev: Ping) -> Pong:
        return Pong()

    @step
    async def shore(self, ev: Pong) -> Ping | StopEvent:
        return StopEvent()


def test_unreachable_steps_are_reported_and_may_be_skipped() -> None:
    (problem,) = problems(Unreachable)
    assert problem.startswith("[reachability] unreachable steps 'island', 'shore': no path")
    assert Unreachable(skip_graph_checks={"reachability"}).graph.steps


def test_a_step_may_skip_a_check_for_itself() -> None:
    class Partly(Unreachable):
        @step(skip_graph_checks=["reachability"])
        async def island(self, ev: Ping) -> Pong:
            return Pong()

    (problem,) = problems(Partly)
    assert "unreachable step 'shore':" in problem

    class Both(Partly):
        @step(skip_graph_checks="reachability")
        async def shore(self, ev: Pong) -> Ping | StopEvent:
            return StopEvent()

    Both()  # does not raise


class Loop(Workflow):
    @step
    async def go(self, ev: StartEvent) -> Ping | StopEvent:
        return Ping()

    @step
    async def ping(self, ev: Ping) -> Pong:
        return Pong()

    @step
    async def pong(self, ev: Pong) -> Ping:
        return Ping()


def test_steps_that_cannot_lead_to_the_end_are_dead_ends() -> None:
    (problem,) = problems(Loop)
    assert problem.startswith("[dead_end] dead-end steps 'ping', 'pong': nothing returned")
    Loop(skip_graph_checks=["dead_end"])  # does not raise


def test_a_returned_event_nobody_takes_is_a_terminal_event() -> None:
    class Leaky(Workflow):
        @step
        async def go(self, ev: StartEvent) -> Stray | StopEvent:
            return StopEvent()

    assert problems(Leaky) == ["[terminal_event] step 'go' returns Stray, but no step accepts it"]
    Leaky(skip_graph_checks={"terminal_event"})  # does not raise


def test_the_caller_and_error_handlers_are_ways_in_and_out() -> None:
    """Steps fed by what the caller sends, error handlers, and steps that ask the caller are
    neither unreachable nor dead ends."""

    class Human(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> Ask:
            return Ask()

        @step
        async def answered(self, ev: Reply) -> StopEvent:
            return StopEvent()

        @step
        async def rescue(self, ev: StepFailedEvent) -> StopEvent:
            return StopEvent()

    Human()  # does not raise


def test_unknown_checks_are_refused() -> None:
    with pytest.raises(ValueError, match="'reachability', 'dead_end', 'terminal_event', not 'x'"):
        Loop(skip_graph_checks={"x"})
    with pytest.raises(ValueError, match=r"a step skips graph checks .* not 'terminal_event'"):
        step(skip_graph_checks=["terminal_event"])


def test_checks_are_listed_with_every_other_problem() -> None:
    class Broken(Unreachable):
        @step
        async def go(self, ev: StartEvent, other: Stray) -> StopEvent:  # type: ignore[override]
            return StopEvent()

    found = problems(Broken)
    assert any("accepts Stray, but no step returns it" in p for p in found)
    assert any(p.startswith("[reachability]") for p in found)
    found = problems(Broken, skip_graph_checks={"reachability"})
    assert not any(p.startswith("[reachability]") for p in found)


async def test_a_skipped_check_leaves_the_runtime_as_it_is() -> None:
    """Skipping a check changes no routing: a returned event nobody takes still fails the
    run, with the runtime's own message."""

    class Leaky(Workflow):
        @step
        async def go(self, ev: StartEvent) -> Stray | StopEvent:
            return Stray()

    from trioflow import WorkflowRuntimeError

    with pytest.raises(WorkflowRuntimeError, match="no step of Leaky accepts Stray"):
        await Leaky(skip_graph_checks={"terminal_event"}).run()


class Plain(Workflow):
    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=1)


def test_workflow_skip_graph_checks_none() -> None:
    """None (LlamaIndex's default) skips nothing."""
    assert Plain(skip_graph_checks=None).graph.steps


def test_step_skip_graph_checks_none() -> None:
    class Flow(Workflow):
        @step(skip_graph_checks=None)
        async def only(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=1)

    Flow()


def chain(n: int, broken_at: int | None = None) -> type[Workflow]:
    """A workflow of ``n`` steps, step ``k`` taking event ``E{k-1}`` and returning ``E{k}``
    (the last a StopEvent), except that step ``broken_at`` returns a `Stray`."""
    events = [type(f"E{k}", (Event,), {}) for k in range(n - 1)]
    steps = {}
    for k in range(n):
        returns = StopEvent if k == n - 1 else Stray if k == broken_at else events[k]

        async def link(self: Workflow, ev: Event) -> Event:
            return StopEvent()

        link.__name__ = f"s{k}"
        link.__annotations__ = {"ev": events[k - 1] if k else StartEvent, "return": returns}
        steps[f"s{k}"] = step(link)
    return type("Chain", (Workflow,), steps)


def test_a_long_chain_is_checked_whole() -> None:
    """1,000 steps in a chain validate (the checks follow types, never every pair of steps);
    one link broken leaves the steps after it unreachable, those before it dead ends, and
    its event taken by nobody."""
    assert chain(1000)(timeout=None).graph.findings == ()
    found = problems(chain(1000, broken_at=499))
    assert len(found) == 4
    nobody_returns, unreached, dead, stray = found
    assert nobody_returns.startswith("step 's500' accepts E499, but no step returns it")
    assert unreached.startswith("[reachability] unreachable steps 's500', 's501'")
    assert "'s999'" in unreached
    assert "'s499'" not in unreached
    assert dead.startswith("[dead_end] dead-end steps 's0', 's1'")
    assert "'s499'" in dead
    assert "'s500'" not in dead
    assert stray == "[terminal_event] step 's499' returns Stray, but no step accepts it"
