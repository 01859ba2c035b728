"""Retry policies as objects (`trioflow.retry_policy`): the policy protocol LlamaIndex has,
its built-in policies and tenacity-like parts, and steps retried by them, in memory and in a
durable run."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioflow import (
    RetryPolicy,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    open_store,
    step,
)
from trioflow.retry_policy import (
    ConstantDelayRetryPolicy,
    ExponentialBackoffRetryPolicy,
    Policy,
    retry_if_exception_message,
    retry_if_exception_type,
    retry_if_not_exception_type,
    retry_policy,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
    wait_chain,
    wait_exponential,
    wait_fixed,
    wait_incrementing,
    wait_random_exponential,
)


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


def answers(
    policy: Policy, *calls: tuple[float, int], error: Exception | None = None
) -> list[float | None]:
    return [policy.next(elapsed, attempts, error or Flaky()) for elapsed, attempts in calls]


def test_the_default_policy_waits_five_seconds_and_makes_three_attempts() -> None:
    """As LlamaIndex's: attempts counts the failures so far; None says no more."""
    assert answers(retry_policy(), (0, 1), (5, 2), (10, 3)) == [5, 5, None]


def test_retry_conditions_say_which_errors_are_retried() -> None:
    policy = retry_policy(retry=retry_if_exception_type(Flaky), wait=wait_fixed(1))
    assert answers(policy, (0, 1)) == [1]
    assert answers(policy, (0, 1), error=Fatal()) == [None]
    either = retry_if_exception_type(Flaky) | retry_if_exception_message(match="again")
    assert [either(Fatal("try again")), either(Flaky()), either(Fatal("no"))] == [True, True, False]
    both = retry_if_not_exception_type(Fatal) & retry_if_exception_message(message="x")
    assert [both(Flaky("x")), both(Fatal("x")), both(Flaky("y"))] == [True, False, False]
    with pytest.raises(TypeError, match="one of message= or match="):
        retry_if_exception_message()
    with pytest.raises(TypeError, match="exception types"):
        retry_if_exception_type(int)  # type: ignore[arg-type]


def test_waits_grow_combine_and_chain() -> None:
    exponential = wait_exponential(multiplier=0.5, max=3)
    assert [exponential(n) for n in range(5)] == [0.5, 1, 2, 3, 3]
    assert [(wait_fixed(1) + wait_incrementing(0, 2))(n) for n in range(3)] == [1, 3, 5]
    assert [wait_chain(wait_fixed(1), wait_fixed(timedelta(seconds=4)))(n) for n in range(3)] == [
        1,
        4,
        4,
    ]
    jittered = wait_random_exponential(multiplier=1, max=8)
    assert all(0 <= jittered(n) <= min(2**n, 8) for n in range(6) for _ in range(20))
    with pytest.raises(ValueError, match="wait must be seconds"):
        wait_fixed(-1)


def test_stops_count_attempts_and_time() -> None:
    after_two = retry_policy(wait=wait_fixed(1), stop=stop_after_attempt(2))
    assert answers(after_two, (0, 1), (1, 2)) == [1, None]
    by_delay = retry_policy(wait=wait_fixed(0.5), stop=stop_before_delay(5))
    assert answers(by_delay, (4.4, 1), (4.5, 1)) == [0.5, None]  # the next wait counts too
    either = retry_policy(wait=wait_fixed(1), stop=stop_after_attempt(10) | stop_after_delay(3))
    assert answers(either, (2, 1), (3, 2)) == [1, None]
    both = retry_policy(wait=wait_fixed(1), stop=stop_after_attempt(2) & stop_after_delay(3))
    assert answers(both, (0, 2), (3, 2)) == [1, None]


def test_llama_index_policies_and_the_simple_spelling() -> None:
    assert answers(ConstantDelayRetryPolicy(maximum_attempts=2, delay=3), (0, 1), (3, 2)) == [
        3,
        None,
    ]
    exponential = ExponentialBackoffRetryPolicy(jitter=False)
    assert answers(exponential, *[(0, n) for n in range(1, 7)]) == [1, 2, 4, 8, None, None]
    simple = RetryPolicy(max_attempts=3, delay=1, backoff=2, retry_on=(Flaky,))
    assert answers(simple, (0, 1), (1, 2), (3, 3)) == [1, 2, None]
    assert answers(simple, (0, 1), error=Fatal()) == [None]
    assert isinstance(simple, Policy)


class Recorder:
    """A policy of one's own: it records what it is asked, and retries twice, a second apart."""

    def __init__(self) -> None:
        self.asked: list[tuple[float, int, str]] = []

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        self.asked.append((elapsed_time, attempts, str(error)))
        return 1.0 if attempts < 3 else None


def flaky_flow(policy: Any, failures: int, error: type[Exception] = Flaky) -> Workflow:
    class Flow(Workflow):
        calls = 0

        @step(retry=policy)
        async def work(self, ev: StartEvent) -> StopEvent:
            Flow.calls += 1
            await trio.sleep(0.5)
            if Flow.calls <= failures:
                raise error(f"failure {Flow.calls}")
            return StopEvent(result=Flow.calls)

    return Flow(timeout=None)


async def test_a_step_is_retried_as_its_policy_says(autojump_clock: trio.testing.MockClock) -> None:
    """The policy is asked after each failure with the failures so far and the seconds since
    the first (trio's clock); each failure that is retried is streamed as a StepFailedEvent."""
    policy = Recorder()
    flow = flaky_flow(policy, failures=2)
    async with flow.start() as handler:
        failed = [e async for e in handler.stream_events() if isinstance(e, StepFailedEvent)]
    assert await handler.result() == 3
    assert policy.asked == [(0.0, 1, "failure 1"), (1.5, 2, "failure 2")]
    assert [(e.attempts, str(e.exception)) for e in failed] == [(1, "failure 1"), (2, "failure 2")]
    # What each failure says of itself: the seconds since the first, and when (wall time).
    assert [e.elapsed_seconds for e in failed] == [0.0, 1.5]
    assert all(abs(e.failed_at - time.time()) < 60 for e in failed)


async def test_the_last_failure_says_how_long_the_step_tried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The StepFailedEvent an error handler gets, once the policy gives up, says the attempts
    made and the seconds from the first failure to the last."""
    seen: list[StepFailedEvent] = []

    class Flow(Workflow):
        @step(retry=retry_policy(wait=wait_fixed(2), stop=stop_after_attempt(3)))
        async def work(self, ev: StartEvent) -> StopEvent:
            await trio.sleep(1)
            raise Flaky("never")

        @step
        async def rescue(self, ev: StepFailedEvent) -> StopEvent:
            seen.append(ev)
            return StopEvent(result="rescued")

    assert await Flow(timeout=None).run() == "rescued"
    (last,) = seen
    assert (last.attempts, last.elapsed_seconds) == (3, 6.0)  # failures at 1, 4 and 7 s


async def test_an_error_the_policy_does_not_retry_fails_the_step_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = flaky_flow(retry_policy(retry=retry_if_exception_type(Flaky)), 1, error=Fatal)
    with pytest.raises(Fatal, match="failure 1"):
        await flow.run()
    assert trio.current_time() == 0.5  # no wait


async def test_a_policy_that_fails_fails_the_step_with_its_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A policy whose ``next`` raises, or answers what is no delay, fails the step with that
    error, the step's own as its cause."""

    class Broken:
        def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
            raise RuntimeError("the policy broke")

    class Negative:
        def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
            return -1.0

    with pytest.raises(RuntimeError, match="the policy broke") as broke:
        await flaky_flow(Broken(), 1).run()
    assert isinstance(broke.value.__cause__, Flaky)
    with pytest.raises(TypeError, match="returns seconds >= 0 or None"):
        await flaky_flow(Negative(), 1).run()


def test_what_a_step_takes_as_a_policy_is_checked() -> None:
    with pytest.raises(TypeError, match="object with next"):
        step(retry=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="not both"):
        step(retry=RetryPolicy(), retry_policy=retry_policy())

    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(delay=0))  # LlamaIndex's keyword
        async def work(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="ok")

    assert Flow().graph.steps[0].config.retry is not None


async def test_a_durable_run_is_retried_as_its_policy_says(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """On a store, the policy decides too; the failures retried are journaled and streamed."""
    policy = Recorder()
    flow = flaky_flow(policy, failures=2)
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        async with store.start(flow) as handler:
            failed = [e async for e in handler.stream_events() if isinstance(e, StepFailedEvent)]
        assert await handler.result() == 3
    assert [attempts for _, attempts, _ in policy.asked] == [1, 2]
    assert [(e.attempt, e.elapsed_seconds > 0) for e in failed] == [(1, False), (2, True)]


def test_a_workflow_described_says_its_steps_policies() -> None:
    """The graph as JSON (``GET /workflows/{name}``, ``trioflow draw --format json``) names a
    policy object's kind and, when its stop says, its attempts at most."""
    from trioflow._wire import describe_workflow

    class Flow(Workflow):
        @step(retry=retry_policy(stop=stop_after_attempt(4)))
        async def composed(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    (described,) = describe_workflow("flow", Flow())["steps"]
    assert described["retry"] == {"policy": "ComposedRetryPolicy", "max_attempts": 4}


def test_parts_of_ones_own_combine_as_llama_indexs_do() -> None:
    """A stop written to LlamaIndex's protocol (``upcoming_sleep`` by keyword), a condition or
    a wait that is a plain function, on either side of ``|``, ``&`` and ``+``."""

    def under_budget(attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return elapsed_time + upcoming_sleep > 100

    policy = retry_policy(
        retry=(lambda error: "again" in str(error)) | retry_if_exception_type(Fatal),
        wait=(lambda attempts: 1.0) + wait_fixed(1),
        stop=stop_after_attempt(3) | under_budget,
    )
    assert answers(policy, (0, 1), (2, 2), (4, 3), error=Flaky("again")) == [2, 2, None]
    assert answers(policy, (0, 1), error=Fatal()) == [2]
    assert answers(policy, (0, 1), error=Flaky("no")) == [None]
    assert [wait_incrementing(10, -4)(n) for n in range(4)] == [10, 6, 2, 0]  # down to 0
    assert answers(retry_policy(stop=stop_after_attempt(0)), (0, 1)) == [None]


async def test_a_policy_whose_bound_cannot_be_read_is_still_asked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A policy's own ``max_attempts`` failing (it only labels log lines) changes nothing: the
    step is retried as ``next`` says, and its last failure goes to the error handlers."""

    class Odd(Recorder):
        @property
        def max_attempts(self) -> int:
            raise RuntimeError("no bound")

    seen: list[int] = []

    class Flow(Workflow):
        @step(retry=Odd())
        async def work(self, ev: StartEvent) -> StopEvent:
            raise Flaky("always")

        @step
        async def rescue(self, ev: StepFailedEvent) -> StopEvent:
            seen.append(ev.attempt)
            return StopEvent(result="rescued")

    assert await Flow(timeout=None).run() == "rescued"
    assert seen == [3]


def test_conditions_on_a_message_not_matched_and_on_causes() -> None:
    from trioflow.retry_policy import (
        retry_if_exception_cause_type,
        retry_if_not_exception_message,
    )

    permanent = retry_if_not_exception_message(match="invalid_api_key|denied")
    assert [permanent(Flaky("timeout")), permanent(Flaky("permission denied"))] == [True, False]
    caused = retry_if_exception_cause_type(ConnectionError)
    wrapped = Flaky("wrapped")
    wrapped.__cause__ = Fatal("outer")
    wrapped.__cause__.__cause__ = ConnectionError("down")  # along the chain
    assert caused(wrapped)
    implicit = Flaky("no cause")
    implicit.__context__ = ConnectionError("context only")
    assert not caused(implicit)  # __context__ is not followed, as in tenacity


async def test_a_step_reads_where_its_retries_stand(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """``ctx.retry_info()``: 0 and nothing on the first attempt, then the retry number, the
    seconds since the first failure and the last failure; afresh for the next execution; in
    memory and in a durable run alike. Outside a step it raises."""
    from trioflow import Context, WorkflowRuntimeError

    seen: list[tuple[int, float, str | None]] = []

    class Flow(Workflow):
        @step(retry=retry_policy(wait=wait_fixed(2), stop=stop_after_attempt(3)), num_workers=1)
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            info = ctx.retry_info()
            seen.append((info.retry_number, info.elapsed_seconds, str(info.last_exception or "")))
            await trio.sleep(1)
            if info.retry_number < 2:
                raise Flaky(f"failure {info.retry_number + 1}")
            return StopEvent(result="ok")

    assert await Flow(timeout=None).run() == "ok"
    assert seen == [(0, 0.0, ""), (1, 0.0, "failure 1"), (2, 3.0, "failure 2")]
    seen.clear()
    async with open_store(f"sqlite:///{tmp_path}/runs.db") as store:
        assert await store.run(Flow(timeout=None)) == "ok"
    assert [number for number, _, _ in seen] == [0, 1, 2]
    with pytest.raises(WorkflowRuntimeError, match="use it in a step"):
        Context(Flow()).retry_info()
