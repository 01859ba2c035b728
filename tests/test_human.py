"""Human in the loop: wait_for_event, InputRequiredEvent to the caller, replies into a run."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowRuntimeError,
    step,
)


class Ask(InputRequiredEvent):
    question: str


class Answer(HumanResponseEvent):
    user: str
    text: str


class Interview(Workflow):
    """Asks once per user and waits for that user's answer; the body must run once."""

    entered = 0

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        type(self).entered += 1
        answer = await ctx.wait_for_event(
            Answer,
            waiter_event=Ask(question=f"{ev.user}, your name?"),
            requirements={"user": ev.user},
            timeout=ev.get("timeout"),
        )
        return StopEvent(result=answer.text)


async def test_wait_for_event_suspends_and_resumes_with_matching_reply() -> None:
    """The waiter event is streamed; only a reply matching `requirements` resumes the step,
    whose body ran once."""
    Interview.entered = 0
    async with Interview().start(user="ada") as handler:
        async for ev in handler.stream_events():
            if isinstance(ev, Ask):
                assert ev.question == "ada, your name?"
                with pytest.raises(WorkflowRuntimeError, match="accepts Answer"):
                    await handler.send_event(Answer(user="bob", text="wrong user"))
                await handler.send_event(Answer(user="ada", text="Ada"))
        assert await handler.result() == "Ada"
    assert Interview.entered == 1


async def test_wait_for_event_times_out(autojump_clock: trio.testing.MockClock) -> None:
    """Without a reply, wait_for_event raises trio.TooSlowError after `timeout`."""
    with pytest.raises(trio.TooSlowError):
        await Interview().run(user="ada", timeout=5)
    assert trio.current_time() == pytest.approx(5)


async def test_oldest_matching_waiter_takes_the_event_and_it_goes_nowhere_else() -> None:
    """Two steps wait for the same type: replies resume them oldest first, and an event a
    waiter takes is not also routed to steps accepting it."""
    order: list[str] = []

    class Go(Event):
        pass

    class Reply(HumanResponseEvent):
        n: int

    class Flow(Workflow):
        @step
        async def first(self, ctx: Context, ev: StartEvent) -> Go:
            reply = await ctx.wait_for_event(Reply)
            order.append(f"first:{reply.n}")
            return Go()

        @step
        async def second(self, ctx: Context, ev: Go) -> StopEvent:
            reply = await ctx.wait_for_event(Reply)
            order.append(f"second:{reply.n}")
            return StopEvent(result=order)

        @step
        async def also_accepts(self, ev: Reply) -> None:
            order.append("routed")

    async with Flow().start() as handler:
        await trio.testing.wait_all_tasks_blocked()
        await handler.send_event(Reply(n=1))
        await trio.testing.wait_all_tasks_blocked()
        await handler.send_event(Reply(n=2))
        assert await handler.result() == ["first:1", "second:2"]


async def test_returned_or_sent_input_required_reaches_the_stream() -> None:
    """An InputRequiredEvent sent with ctx.send_event and no step to accept it goes to the
    caller's stream; a full stream makes that an error rather than a wait or a loss."""
    errors: list[str] = []

    class Flow(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.send_event(Ask(question="one"))
            try:
                ctx.send_event(Ask(question="two"))  # the buffer of 1 is full now
            except WorkflowRuntimeError as exc:
                errors.append(str(exc))
            return StopEvent()

    async with Flow(stream_buffer=1).start() as handler:
        await trio.testing.wait_all_tasks_blocked()  # nobody reads until the step is done
        events = [ev async for ev in handler.stream_events()]
    assert events == [Ask(question="one"), StopEvent()]
    assert "use `await ctx.write_event_to_stream(ev)`" in errors[0]


async def test_send_event_into_an_ended_run_raises() -> None:
    """Replying after the run ended raises WorkflowRuntimeError: nothing is dropped."""
    async with Interview().start(user="ada") as handler:
        handler.cancel()
        with pytest.raises(WorkflowRuntimeError, match="has ended"):
            await handler.send_event(Answer(user="ada", text="late"))


async def test_wait_for_event_validates_its_arguments() -> None:
    """A non-Event type or a bad timeout fails the waiting step with a clear error."""

    class Flow(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.wait_for_event(int)  # type: ignore[type-var]
            return StopEvent()

    with pytest.raises(TypeError, match="waits for an Event subclass"):
        await Flow().run()
