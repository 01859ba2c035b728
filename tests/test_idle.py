"""`WorkflowIdleEvent`: written when a run waits with nothing to do, while asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    LifecycleEvent,
    RetryPolicy,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowIdleEvent,
    open_store,
    step,
)


class Question(InputRequiredEvent):
    n: int


class Answer(HumanResponseEvent):
    n: int


class Chunk(Event):
    n: int


class Done(Event):
    n: int


class Interview(Workflow):
    """Asks twice, waiting in the step each time."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        total = 0
        for n in range(2):
            answer = await ctx.wait_for_event(Answer, waiter_event=Question(n=n))
            total += answer.n
        await trio.sleep(ev.get("then_sleep", 0))
        return StopEvent(result=total)


async def answering(flow: Workflow, *types: type[Event], **fields: Any) -> tuple[list[str], object]:
    """Run ``flow``, answer each question with its number + 10, and note what streams."""
    seen: list[str] = []
    async with flow.start(**fields) as handler:
        async for ev in handler.stream_events(*types):
            seen.append(type(ev).__name__)
            if isinstance(ev, Question):
                await handler.send_event(Answer(n=ev.n + 10))
        return seen, await handler.result()


async def test_a_run_waiting_for_an_answer_says_it_is_idle() -> None:
    seen, result = await answering(Interview(), Question, WorkflowIdleEvent)
    assert result == 21
    assert seen == ["Question", "WorkflowIdleEvent", "Question", "WorkflowIdleEvent", "StopEvent"]


async def test_nobody_hears_of_idleness_unless_asking() -> None:
    seen, _ = await answering(Interview())
    assert seen == ["Question", "Question", "StopEvent"]
    seen, _ = await answering(Interview(), LifecycleEvent, Question)
    assert seen.count("WorkflowIdleEvent") == 2


async def test_a_run_asking_by_returning_a_question_is_idle_too() -> None:
    class Returning(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> Question:
            return Question(n=1)

        @step
        async def answered(self, ev: Answer) -> StopEvent:
            return StopEvent(result=ev.n)

    seen, result = await answering(Returning(), Question, WorkflowIdleEvent)
    assert (seen, result) == (["Question", "WorkflowIdleEvent", "StopEvent"], 11)


async def test_sleeping_and_retrying_steps_are_not_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts = 0

    class Busy(Workflow):
        @step(retry=RetryPolicy(max_attempts=3, delay=10))
        async def work(self, ev: StartEvent) -> StopEvent:
            nonlocal attempts
            attempts += 1
            await trio.sleep(5)
            if attempts < 3:
                raise ValueError("again")
            return StopEvent(result=attempts)

    seen, result = await answering(Busy(), WorkflowIdleEvent)
    assert (seen, result) == (["StopEvent"], 3)


async def test_fan_out_members_waiting_make_one_idle_run() -> None:
    class Reviews(Workflow):
        @step
        async def split(self, ev: StartEvent) -> list[Chunk]:
            return [Chunk(n=n) for n in range(3)]

        @step
        async def review(self, ctx: Context, ev: Chunk) -> Done:
            answer = await ctx.wait_for_event(
                Answer, waiter_event=Question(n=ev.n), requirements={"n": ev.n + 10}
            )
            return Done(n=answer.n)

        @step
        async def join(self, done: list[Done]) -> StopEvent:
            return StopEvent(result=sorted(d.n for d in done))

    seen: list[str] = []
    asked: list[int] = []
    async with Reviews().start() as handler:
        async for ev in handler.stream_events(Question, WorkflowIdleEvent):
            seen.append(type(ev).__name__)
            if isinstance(ev, Question):
                asked.append(ev.n)
            elif isinstance(ev, WorkflowIdleEvent) and seen.count("WorkflowIdleEvent") == 1:
                # All three asked: answer them all.
                for n in asked:
                    await handler.send_event(Answer(n=n + 10))
        assert await handler.result() == [10, 11, 12]
    # Idle once all three asked; and again, perhaps, while the later answers are on their way
    # (the first answered review done, the others still waiting): it is so.
    assert seen[:4] == ["Question"] * 3 + ["WorkflowIdleEvent"]
    assert seen[-1] == "StopEvent"
    assert set(seen[4:-1]) <= {"WorkflowIdleEvent"}


async def test_a_durable_run_says_it_is_idle_too(tmp_path: Path) -> None:
    """On a store: a run waiting for answers (plain and fanned out) says so, as in memory."""
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        seen: list[str] = []
        async with store.start(Interview()) as handler:
            async for ev in handler.stream_events(Question, WorkflowIdleEvent):
                seen.append(type(ev).__name__)
                if isinstance(ev, Question):
                    await handler.send_event(Answer(n=ev.n + 10))
            assert await handler.result() == 21
    assert seen == ["Question", "WorkflowIdleEvent", "Question", "WorkflowIdleEvent", "StopEvent"]
