"""What LlamaIndex users move with, on `Workflow` and `Context` (issue 15, item 7): a workflow's
name, the step's context from code the step calls, and a bound on a workflow's runs at once."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    StartEvent,
    StopEvent,
    SyncContext,
    Workflow,
    WorkflowRuntimeError,
    step,
)


class Named(Workflow):
    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent()


def test_a_workflow_is_named_by_its_class_unless_given_a_name() -> None:
    assert Named().workflow_name == f"{__name__}.Named"
    assert Named(workflow_name="research").workflow_name == "research"
    with pytest.raises(ValueError, match="workflow_name must be a non-empty string"):
        Named(workflow_name="")


class Note(Event):
    text: str


async def tell(text: str) -> None:
    """Code a step calls, not handed the step's context."""
    await Context.get_step_context().write_event_to_stream(Note(text=text))


class Helped(Workflow):
    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Note:
        assert Context.get_step_context() is ctx
        await tell("from an async step")
        return Note(text="go")

    @step
    def second(self, ctx: SyncContext, ev: Note) -> StopEvent:
        assert Context.get_step_context() is ctx  # its thread sees its own
        return StopEvent(result="done")


async def test_code_a_step_calls_gets_the_steps_context() -> None:
    async with Helped().start() as handler:
        notes = [e.text async for e in handler.stream_events() if isinstance(e, Note)]
    assert await handler.result() == "done"
    assert notes == ["from an async step"]
    with pytest.raises(WorkflowRuntimeError, match="only be called from within a step"):
        Context.get_step_context()


async def test_runs_of_a_workflow_wait_for_a_slot(autojump_clock: trio.testing.MockClock) -> None:
    """num_concurrent_runs=1: runs started together run one after the other, each within its
    own timeout (which counts from its start, not from its wait)."""
    running: list[int] = []
    most = 0

    class Slow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            nonlocal most
            running.append(1)
            most = max(most, len(running))
            await trio.sleep(0.3)
            running.pop()
            return StopEvent(result=trio.current_time())

    flow = Slow(timeout=0.5, num_concurrent_runs=1)
    ends: list[float] = []

    async def one() -> None:
        ends.append(await flow.run())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    assert most == 1
    assert sorted(ends) == pytest.approx([0.3, 0.6, 0.9])
    unbounded = Slow(timeout=None)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(unbounded.run)
    assert most == 3


class Ping(HumanResponseEvent):
    """Sent by the caller."""


async def test_events_sent_to_a_run_waiting_for_its_slot_are_handled_once_it_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A run waiting for a slot already takes events: they wait in its steps' inboxes, and
    its steps' workers start for them once it runs."""
    pinged: list[str] = []

    class Pinged(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await trio.sleep(1)
            return StopEvent(result="begun")

        @step(num_workers=2)
        async def ping(self, ev: Ping) -> None:
            pinged.append(f"ping at {trio.current_time():g}")

    flow = Pinged(timeout=10, num_concurrent_runs=1)
    async with flow.start() as first, flow.start() as second:
        for _ in range(3):
            await second.send_event(Ping())  # before the second run has its slot
        assert await first.result() == "begun"
        assert await second.result() == "begun"
    assert pinged == ["ping at 1"] * 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_num_concurrent_runs_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="num_concurrent_runs must be an int >= 1 or None"):
        Named(num_concurrent_runs=bad)  # type: ignore[arg-type]


async def test_a_slot_is_given_back_however_a_run_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A run that fails gives its slot back; so does a caller cancelled while it waited."""

    class Failing(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            await trio.sleep(1)
            raise KeyError("boom")

    flow = Failing(timeout=None, num_concurrent_runs=1)
    with pytest.raises(KeyError):
        await flow.run()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flow.run)  # holds the slot for a second, then fails
        await trio.sleep(0.1)
        with trio.move_on_after(0.2):  # gives up waiting for the slot
            await flow.run()
        nursery.cancel_scope.cancel()
    assert flow._run_slots is not None
    assert flow._run_slots.borrowed_tokens == 0
    with pytest.raises(KeyError):  # the slot is free again
        await flow.run()


# -- steps added from outside the class --


class Drafted(Event):
    text: str


class Outlined(Workflow):
    """A workflow whose second step is added from outside it."""

    @step
    async def outline(self, ev: StartEvent) -> Drafted:
        return Drafted(text="outline")


@step(workflow=Outlined)
async def finish(ctx: Context, ev: Drafted) -> StopEvent:
    await ctx.store.set("finished", True)
    return StopEvent(result=f"{ev.text}, finished")


async def test_a_step_added_from_outside_runs_as_the_classes_own() -> None:
    """``@step(workflow=...)`` on a function (it takes no ``self``) makes it a step of that
    class, with its context and retries as any step's."""
    assert [spec.name for spec in Outlined().graph.steps] == ["outline", "finish"]
    assert await Outlined().run() == "outline, finished"


def test_adding_a_step_is_checked() -> None:
    """A function without ``@step``, or a second step of one name, is refused; a subclass
    does not have the steps added to its base."""
    from trioflow import WorkflowValidationError

    async def plain(ev: Drafted) -> StopEvent:
        return StopEvent()

    with pytest.raises(WorkflowValidationError, match="not decorated with @step"):
        Outlined.add_step(plain)

    @step
    async def finish(ev: Drafted) -> StopEvent:  # the name of a step it has
        return StopEvent()

    with pytest.raises(WorkflowValidationError, match="has a step 'finish' already"):
        Outlined.add_step(finish)

    class Longer(Outlined):
        pass

    with pytest.raises(WorkflowValidationError, match="no step accepts it"):
        Longer()  # its outline's Drafted goes nowhere: it has no `finish`


async def test_a_server_starts_runs_of_a_bounded_workflow_at_once() -> None:
    """A workflow with num_concurrent_runs=1 served over HTTP: a second start is answered at
    once (201) while the first run holds the slot waiting for an answer; the second runs once
    the first has ended."""
    from _http import DURABLE_FLOWS, GateFlow, served, wait_for

    flows = {**DURABLE_FLOWS, "gate": GateFlow(timeout=None, num_concurrent_runs=1)}
    async with served(flows) as server:
        first = await server.start("gate")
        with trio.fail_after(5):
            second = await server.start("gate")
        await wait_for(lambda: server.status(first), lambda s: s["seq"] >= 2)
        assert (await server.status(second))["seq"] == 0  # waiting for the slot
        go = {"type": "Go", "data": {"count": 1}}
        assert (await server.client.post(f"/runs/{first}/events", json=go)).status_code == 202
        await server.wait_status(first, "completed")
        await wait_for(lambda: server.status(second), lambda s: s["seq"] >= 2)
        assert (await server.client.post(f"/runs/{second}/events", json=go)).status_code == 202
        assert (await server.wait_status(second, "completed"))["result"] == 1


def test_a_step_added_from_outside_may_bear_a_workflow_attributes_name() -> None:
    """An added step is no attribute of its class: named ``run``, it shadows nothing."""

    class Short(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Drafted:
            return Drafted(text="x")

    @step(workflow=Short)
    async def run(ev: Drafted) -> StopEvent:
        return StopEvent(result=ev.text)

    assert trio.run(Short().run) == "x"
