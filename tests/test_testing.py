"""trioflow.testing: runs on the autojump clock, recorded events and outcomes, answered input
requests, and clear errors for what a test got wrong."""

from __future__ import annotations

import pickle
import time
from typing import Any, cast

import pytest
import trio
import trio.testing

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    LifecycleEvent,
    RunStatus,
    StartEvent,
    StepFailedEvent,
    StepRetryEvent,
    StepStartedEvent,
    StopEvent,
    SyncContext,
    Workflow,
    WorkflowFailedEvent,
    WorkflowRuntimeError,
    WorkflowTimedOutEvent,
    WorkflowTimeoutError,
    step,
)
from trioflow.examples import (
    Approval,
    ApprovalFlow,
    ApprovalRequired,
    FlakyError,
    FlakyFlow,
    Progress,
)
from trioflow.testing import (
    NO_ANSWER,
    Answers,
    UnansweredInputError,
    run_workflow,
    run_workflow_sync,
)

MockClock = trio.testing.MockClock


class Tick(Event):
    n: int


class Done(Event):
    ticks: int


class Counting(Workflow):
    """Ticks once a second, then hands over to a second step that finishes."""

    @step
    async def count(self, ctx: Context, ev: StartEvent) -> Done:
        for n in range(ev.get("n", 3)):
            await trio.sleep(1)
            await ctx.write_event_to_stream(Tick(n=n))
        return Done(ticks=ev.get("n", 3))

    @step
    async def finish(self, ev: Done) -> StopEvent:
        return StopEvent(result=ev.ticks)


class AskName(InputRequiredEvent):
    prompt: str


class AskAge(InputRequiredEvent):
    prompt: str


class Name(HumanResponseEvent):
    name: str


class Age(HumanResponseEvent):
    age: int


class Survey(Workflow):
    """Asks two questions of two types, one after the other."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        name = await ctx.wait_for_event(Name, waiter_event=AskName(prompt="name?"))
        age = await ctx.wait_for_event(Age, waiter_event=AskAge(prompt="age?"))
        return StopEvent(result=f"{name.name} ({age.age})")


class AsksThenFails(Workflow):
    """Streams a request and fails in the same breath: the run is decided before the test
    reads the request."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.write_event_to_stream(AskName(prompt="name?"))
        raise ValueError("gone before anyone answered")


class Sleeper(Workflow):
    """Sleeps for an hour of trio time."""

    @step
    async def sleep(self, ev: StartEvent) -> StopEvent:
        await trio.sleep(3600)
        return StopEvent(result="rested")


class Receipt(StopEvent):
    total: int


class Typed(Workflow):
    @step
    async def pay(self, ev: StartEvent) -> Receipt:
        return Receipt(total=ev.get("amount", 0))


class Threaded(Workflow):
    """A ``def`` step, which takes real time in its worker thread."""

    @step
    def work(self, ctx: SyncContext, ev: StartEvent) -> StopEvent:
        time.sleep(0.05)
        return StopEvent(result="worked")


# -- time and events --


async def test_retries_with_delays_finish_instantly_on_virtual_time(
    autojump_clock: MockClock,
) -> None:
    """FlakyFlow's sleeps and retry delays (2 failures: 3 x 0.2 s work, 2 x 0.3 s delay) take
    exactly 1.2 s of trio time, and the failed attempts are on record."""
    run = await run_workflow(FlakyFlow(), failures=2)
    assert run.assert_completed() == {"succeeded_on_attempt": 3}
    assert run.duration == pytest.approx(1.2)
    assert trio.current_time() == pytest.approx(1.2)
    assert [(ev.step_name, ev.attempt) for ev in run.events_of(StepFailedEvent)] == [
        ("attempt", 1),
        ("attempt", 2),
    ]
    assert all(isinstance(ev.exception, FlakyError) for ev in run.events_of(StepFailedEvent))


async def test_events_are_recorded_in_stream_order_terminal_last(
    autojump_clock: MockClock,
) -> None:
    """`events` is the stream as it came, ending with the terminal event; `events_of` filters
    by isinstance and keeps the order."""
    run = await run_workflow(Counting(), n=3)
    assert run.events == [Tick(n=0), Tick(n=1), Tick(n=2), StopEvent(result=3)]
    assert run.events_of(Tick) == [Tick(n=0), Tick(n=1), Tick(n=2)]
    assert run.events_of(StopEvent) == [StopEvent(result=3)]
    assert run.terminal == StopEvent(result=3)
    assert run.status is RunStatus.COMPLETED
    assert run.error is None
    assert run.input_requests == []
    assert run.workflow == "Counting"
    assert run.duration == 3


async def test_a_start_event_can_be_passed_instead_of_fields(autojump_clock: MockClock) -> None:
    """The start event goes positionally, as to `Workflow.run`."""
    run = await run_workflow(Counting(), StartEvent(n=1))
    assert run.result == 1
    assert run.events_of(Tick) == [Tick(n=0)]


async def test_lifecycle_events_only_on_request(autojump_clock: MockClock) -> None:
    """Lifecycle events are recorded with ``lifecycle=True``, in stream order among the
    others, and never by default."""
    plain = await run_workflow(FlakyFlow(), failures=1)
    assert plain.events_of(LifecycleEvent) == []

    run = await run_workflow(FlakyFlow(), failures=1, lifecycle=True)
    assert [type(ev).__name__ for ev in run.events] == [
        "StepStartedEvent",
        "StepFinishedEvent",
        "StepFailedEvent",
        "StepRetryEvent",
        "StepStartedEvent",
        "StepFinishedEvent",
        "StopEvent",
    ]
    (retry,) = run.events_of(StepRetryEvent)
    assert (retry.step_name, retry.attempt, retry.delay) == ("attempt", 2, 0.3)
    assert [ev.attempt for ev in run.events_of(StepStartedEvent)] == [1, 2]


async def test_a_stop_event_subclass_is_the_result(autojump_clock: MockClock) -> None:
    """As with `run()`, a workflow's `StopEvent` subclass is the result itself."""
    run = await run_workflow(Typed(), amount=7)
    assert run.result == Receipt(total=7)
    assert run.result is run.terminal


async def test_run_workflow_is_a_cancel_point_on_every_path() -> None:
    """Under a cancelled scope, run_workflow raises Cancelled first: before it starts a run,
    and before it would refuse bad arguments."""
    for answers in (None, cast(Any, 42)):
        with trio.CancelScope() as scope:
            scope.cancel()
            await run_workflow(Counting(), answers=answers)
        assert scope.cancelled_caught


# -- outcomes other than success --


async def test_a_failing_step_is_recorded_not_raised(autojump_clock: MockClock) -> None:
    """A failure that ends the run is the record's `error` (the step's own exception) with
    status FAILED, the failed step, and the stream's failure events."""
    run = await run_workflow(FlakyFlow(), failures=3, recover=False)
    assert run.status is RunStatus.FAILED
    error = run.assert_failed(FlakyError)
    assert error is run.error
    assert str(error) == "attempt 3 of 3 planned failures"
    # The error handler re-raised the step's exception, so its failure ended the run.
    assert run.failed_step == "recover"
    assert isinstance(run.terminal, WorkflowFailedEvent)
    assert run.terminal.exception is error
    assert run.result is None


async def test_assert_completed_explains_a_failure(autojump_clock: MockClock) -> None:
    """assert_completed on a failed run raises AssertionError naming the step, the error and
    what was streamed, caused by the step's exception."""
    run = await run_workflow(FlakyFlow(), failures=3, recover=False)
    with pytest.raises(AssertionError) as info:
        run.assert_completed()
    message = str(info.value)
    assert f"FlakyFlow run {run.run_id}" in message
    assert "failed in step 'recover' with FlakyError('attempt 3 of 3 planned failures')" in message
    assert "it streamed StepFailedEvent x4, WorkflowFailedEvent" in message
    assert info.value.__cause__ is run.error


async def test_assert_failed_rejects_success_and_other_errors(autojump_clock: MockClock) -> None:
    """assert_failed raises AssertionError when the run completed, or failed with an
    exception of another type (then caused by it)."""
    ok = await run_workflow(FlakyFlow(), failures=0)
    with pytest.raises(AssertionError, match=r"to fail with Exception, but it completed with"):
        ok.assert_failed()

    failed = await run_workflow(FlakyFlow(), failures=3, recover=False)
    with pytest.raises(AssertionError, match="to fail with KeyError or TypeError") as info:
        failed.assert_failed((KeyError, TypeError))
    assert info.value.__cause__ is failed.error


async def test_a_timeout_is_recorded_at_its_virtual_time(autojump_clock: MockClock) -> None:
    """A run past its workflow timeout is recorded TIMED_OUT with WorkflowTimeoutError and
    the WorkflowTimedOutEvent, exactly at the timeout; assert_failed refuses it."""
    run = await run_workflow(Sleeper(timeout=5))
    assert run.status is RunStatus.TIMED_OUT
    assert isinstance(run.error, WorkflowTimeoutError)
    assert run.terminal == WorkflowTimedOutEvent(timeout=5, active_steps=("sleep",))
    assert run.duration == 5
    with pytest.raises(AssertionError, match="but it ended timed_out"):
        run.assert_failed()


# -- answering input requests --


async def test_approval_answered_from_a_table(autojump_clock: MockClock) -> None:
    """The table's response for the request's type is sent; the run completes, and the
    request is on record, in the stream where it was asked."""
    answers: Answers = {ApprovalRequired: Approval(approved=True, comment="go")}
    run = await run_workflow(ApprovalFlow(), answers=answers, action="ship it")
    assert run.assert_completed() == {"action": "ship it", "done": True, "comment": "go"}
    ask = ApprovalRequired(action="ship it", question="May I ship it?")
    assert run.input_requests == [ask]
    assert [type(ev).__name__ for ev in run.events] == [
        *["Progress"] * 3,
        "ApprovalRequired",
        *["Progress"] * 3,
        "StopEvent",
    ]
    assert run.duration == pytest.approx(1.2)


async def test_approval_answered_by_a_function_of_the_request(autojump_clock: MockClock) -> None:
    """A function answers from the request it is given: it approves one action, not another."""
    seen: list[InputRequiredEvent] = []

    def approve_deploys(request: ApprovalRequired) -> Approval:
        seen.append(request)
        return Approval(approved=request.action.startswith("deploy"))

    yes = await run_workflow(ApprovalFlow(), answers={ApprovalRequired: approve_deploys})
    no = await run_workflow(ApprovalFlow(), answers=approve_deploys, action="drop the database")
    assert yes.result["done"] is True
    assert no.result["done"] is False
    assert seen == [*yes.input_requests, *no.input_requests]
    # Declined: the workflow skips the second round of progress.
    assert len(no.events_of(Progress)) == 3


async def test_an_async_answer_takes_virtual_time(autojump_clock: MockClock) -> None:
    """An async answering function is awaited; a human who takes 5 minutes costs 300 s of
    trio time, not of the test's."""

    async def slow_human(request: ApprovalRequired) -> Approval:
        await trio.sleep(300)
        return Approval(approved=True)

    run = await run_workflow(ApprovalFlow(timeout=600), answers=slow_human)
    assert run.result["done"] is True
    assert run.duration == pytest.approx(301.2)


async def test_the_most_specific_table_entry_answers(autojump_clock: MockClock) -> None:
    """Entries match along the request's class hierarchy, the most specific first: a base
    class entry answers what has no entry of its own."""

    def fallback(request: InputRequiredEvent) -> Event:
        return Age(age=36)

    run = await run_workflow(
        Survey(), answers={AskName: Name(name="Ada"), InputRequiredEvent: fallback}
    )
    assert run.result == "Ada (36)"
    assert run.input_requests == [AskName(prompt="name?"), AskAge(prompt="age?")]


async def test_an_unanswered_request_cancels_the_run_and_names_itself(
    autojump_clock: MockClock,
) -> None:
    """A request that nothing answers raises UnansweredInputError at once (no hang), naming
    the request and the types that do have answers, and what had streamed."""
    with pytest.raises(UnansweredInputError) as info:
        await run_workflow(Survey(), answers={AskName: Name(name="Ada")})
    error = info.value
    assert error.request == AskAge(prompt="age?")
    assert error.answered == (AskName,)
    assert "nothing answers AskAge(prompt='age?'): answers has entries for AskName" in str(error)
    assert "Add answers={AskAge: ...}" in str(error)
    assert error.__notes__ == ["trioflow.testing: the run had streamed AskName, AskAge"]
    assert trio.current_time() == 0  # no waiting for the workflow's timeout


async def test_no_answers_at_all_fails_at_the_first_request(autojump_clock: MockClock) -> None:
    """Without ``answers``, the first request fails the test when it is asked (after the
    prepare step's 0.6 s), far before the workflow's 600 s timeout."""
    with pytest.raises(UnansweredInputError, match="no answers were given") as info:
        await run_workflow(ApprovalFlow(timeout=600))
    assert isinstance(info.value.request, ApprovalRequired)
    assert trio.current_time() == pytest.approx(0.6)


def test_unanswered_input_error_pickles() -> None:
    """UnansweredInputError survives pickling with its message and fields."""
    error = UnansweredInputError(AskAge(prompt="age?"), (AskName,))
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert (copy.request, copy.answered) == (error.request, error.answered)


async def test_no_answer_leaves_a_request_unanswered_on_purpose(
    autojump_clock: MockClock,
) -> None:
    """NO_ANSWER records the request and sends nothing: the run waits until its timeout,
    which on virtual time comes at once."""
    run = await run_workflow(ApprovalFlow(timeout=60), answers={ApprovalRequired: NO_ANSWER})
    assert run.status is RunStatus.TIMED_OUT
    assert len(run.input_requests) == 1
    assert run.duration == 60


@pytest.mark.parametrize("answers", [None, {AskName: Name(name="late")}])
async def test_a_request_after_the_run_ended_is_not_the_test_s_fault(
    autojump_clock: MockClock, answers: Answers | None
) -> None:
    """A request read after the run's outcome was decided is recorded but neither needs an
    answer nor takes one: the record shows the failure that ended the run."""
    run = await run_workflow(AsksThenFails(), answers=answers)
    assert run.input_requests == [AskName(prompt="name?")]
    assert str(run.assert_failed(ValueError)) == "gone before anyone answered"


async def test_an_answer_that_is_not_an_event_is_a_type_error(autojump_clock: MockClock) -> None:
    """A function that returns None (a forgotten return) raises TypeError pointing to
    NO_ANSWER, noted with the request; it does not leave the run waiting silently."""

    def forgot_to_return(request: ApprovalRequired) -> Any:
        Approval(approved=True)

    with pytest.raises(TypeError, match="is None: answer with an event") as info:
        await run_workflow(ApprovalFlow(), answers={ApprovalRequired: forgot_to_return})
    assert "NO_ANSWER" in str(info.value)
    assert info.value.__notes__[-1].startswith(
        "trioflow.testing: raised while answering ApprovalRequired("
    )
    assert trio.current_time() == pytest.approx(0.6)


async def test_an_answering_function_s_error_propagates_with_a_note(
    autojump_clock: MockClock,
) -> None:
    """An exception from an answering function ends the run and reaches the test as itself,
    noted with the request it was answering."""

    def broken(request: InputRequiredEvent) -> Event:
        raise LookupError("no such user")

    with pytest.raises(LookupError, match="no such user") as info:
        await run_workflow(Survey(), answers=broken)
    assert info.value.__notes__ == [
        "trioflow.testing: raised while answering AskName(prompt='name?')"
    ]


async def test_an_answer_no_step_takes_is_the_runtime_s_error(autojump_clock: MockClock) -> None:
    """An answer nothing in the run accepts raises trioflow's WorkflowRuntimeError, noted
    with the request, rather than being dropped."""
    with pytest.raises(WorkflowRuntimeError) as info:
        await run_workflow(Survey(), answers={AskName: Age(age=1)})
    assert info.value.__notes__[-1] == (
        "trioflow.testing: raised while answering AskName(prompt='name?')"
    )


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        (Approval, "answers is the class Approval; an answer is an event instance"),
        ({ApprovalRequired: Approval}, r"answers\[ApprovalRequired\] is the class Approval"),
        ({Approval: Approval(approved=True)}, "keys are InputRequiredEvent subclasses"),
        ({ApprovalRequired: "yes"}, "must be an event, a function of the request or NO_ANSWER"),
        (42, "answers must be a mapping"),
    ],
)
async def test_malformed_answers_fail_before_the_run_starts(
    autojump_clock: MockClock, answers: Any, message: str
) -> None:
    """A malformed ``answers`` is a TypeError saying what is wrong, before any step runs (not
    when the first request comes, 0.6 s into the run)."""
    with pytest.raises(TypeError, match=message):
        await run_workflow(ApprovalFlow(), answers=answers)
    assert trio.current_time() == 0


async def test_a_workflow_class_instead_of_an_instance_is_a_type_error() -> None:
    """Passing the class, a common slip, says so."""
    with pytest.raises(TypeError, match="takes a Workflow instance, got the class Counting"):
        await run_workflow(cast(Any, Counting))


async def test_start_fields_that_do_not_fit_are_the_runtime_s_type_error() -> None:
    """A start field the typed start event lacks raises run()'s own TypeError."""
    with pytest.raises(TypeError, match="cannot make the start event Proposal"):
        await run_workflow(ApprovalFlow(), colour="blue")


# -- the sync entry point --


def test_run_workflow_sync_runs_an_hour_on_virtual_time() -> None:
    """run_workflow_sync runs in its own trio.run on an autojump MockClock: an hour's sleep
    is over at once, with the hour on record."""
    run = run_workflow_sync(Sleeper(timeout=None))
    assert run.assert_completed() == "rested"
    assert run.duration == 3600


def test_run_workflow_sync_answers_and_records_like_the_async_one() -> None:
    """The sync entry takes the same arguments and returns the same record."""
    run = run_workflow_sync(
        ApprovalFlow(),
        answers={ApprovalRequired: Approval(approved=False, comment="not today")},
        action="deploy",
        lifecycle=True,
    )
    assert run.result == {"action": "deploy", "done": False, "comment": "not today"}
    assert run.events_of(StepStartedEvent)[0].step_name == "prepare"
    assert run.duration == pytest.approx(0.6)


def test_run_workflow_sync_raises_an_unanswered_request() -> None:
    """UnansweredInputError comes out of the sync entry as itself."""
    with pytest.raises(UnansweredInputError, match="nothing answers AskName"):
        run_workflow_sync(Survey())


async def test_run_workflow_sync_refuses_to_run_inside_trio() -> None:
    """Inside a trio run, the sync entry says to await run_workflow instead."""
    with pytest.raises(RuntimeError, match=r"use `await run_workflow\(\.\.\.\)`"):
        run_workflow_sync(Counting())


def test_a_def_step_timeout_on_the_autojump_clock_is_explained() -> None:
    """A def step's real-time work lets the autojump clock jump to the run's timeout; the
    recorded error says so, and autojump=False runs it on the real clock."""
    jumped = run_workflow_sync(Threaded(timeout=5))
    assert jumped.status is RunStatus.TIMED_OUT
    assert jumped.error is not None
    (note,) = jumped.error.__notes__
    assert "Threaded has def steps (work) and runs on an autojumping MockClock" in note
    assert "autojump=False" in note

    assert run_workflow_sync(Threaded(timeout=5), autojump=False).result == "worked"
