"""Test helpers: run a workflow to its end, collect what it streamed, answer its questions.

`run_workflow` runs one workflow inside a trio test and returns a `RunRecord`: the result or
the error, every streamed event in order (the terminal event included) and the input requests
it made. A failing run is recorded, not raised, so a test asserts on it like on any other
outcome. The run's `InputRequiredEvent` s are answered from ``answers``: a table from request
type to response (an event or a function), or one function for every request. A request that
nothing answers cancels the run and raises `UnansweredInputError`, never a hang.

Time is the test's: under pytest-trio's ``autojump_clock`` fixture (or `run_workflow_sync`,
which makes its own ``trio.testing.MockClock(autojump_threshold=0)``), sleeps, retry delays
and timeouts take no real time and always happen in the same order.

This module is for tests; ``trioflow`` itself does not import it.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, TypeAlias, TypeVar

import attrs
import trio
import trio.testing

from trioflow import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    LifecycleEvent,
    RunEndedError,
    RunStatus,
    StartEvent,
    StopEvent,
    TrioflowError,
    Workflow,
    WorkflowFailedEvent,
    WorkflowHandler,
    WorkflowTimeoutError,
)

__all__ = [
    "NO_ANSWER",
    "Answers",
    "RunRecord",
    "UnansweredInputError",
    "run_workflow",
    "run_workflow_sync",
]

_E = TypeVar("_E", bound=Event)


class _NoAnswer(enum.Enum):
    NO_ANSWER = "NO_ANSWER"

    def __repr__(self) -> str:
        return "trioflow.testing.NO_ANSWER"


#: An answer that leaves a request unanswered on purpose, to test what the workflow does then
#: (its ``wait_for_event`` timeout, say). ``None`` is not accepted for this: a function that
#: forgot its ``return`` would otherwise leave the run waiting without a word.
NO_ANSWER: Final = _NoAnswer.NO_ANSWER

_Response: TypeAlias = Event | _NoAnswer
#: A function answering a request: it takes the `InputRequiredEvent` and returns the event to
#: send back (or `NO_ANSWER`), or an awaitable of it (an ``async def``).
_Responder: TypeAlias = Callable[[Any], _Response | Awaitable[_Response]]
_Answer: TypeAlias = Event | _NoAnswer | _Responder
#: What ``answers=`` takes: a table from `InputRequiredEvent` subclass to its answer (an event,
#: a function, or `NO_ANSWER`), or one function that answers every request. The keys are typed
#: ``type[Any]`` because a mapping's key type is invariant: a table kept in a variable,
#: ``dict[type[ApprovalRequired], ...]``, would not fit ``type[InputRequiredEvent]``. They are
#: checked when the run starts instead.
Answers: TypeAlias = Mapping[type[Any], _Answer] | _Responder


class UnansweredInputError(TrioflowError):
    """The run asked for input that ``answers`` has no entry for; the run was cancelled.

    Attributes:
        request: the `InputRequiredEvent` that nothing answered.
        answered: the request types ``answers`` has entries for.
    """

    def __init__(self, request: InputRequiredEvent, answered: tuple[type[Event], ...]) -> None:
        super().__init__(request, answered)
        self.request = request
        self.answered = answered

    def __str__(self) -> str:
        kind = type(self.request).__name__
        if self.answered:
            known = "answers has entries for " + ", ".join(t.__name__ for t in self.answered)
        else:
            known = "no answers were given"
        return (
            f"nothing answers {self.request!r}: {known}. Add answers={{{kind}: ...}} (a "
            f"{HumanResponseEvent.__name__}, a function of the request, or NO_ANSWER); "
            "the run was cancelled"
        )


# eq=False: two runs are never the same run, and the list fields would make the hash that a
# frozen attrs class generates fail.
@attrs.frozen(kw_only=True, eq=False)
class RunRecord:
    """What one run did, from `run_workflow`: its outcome and everything it streamed.

    ``events`` and ``input_requests`` are lists, so that they compare equal to list literals
    in assertions.
    """

    #: The workflow's class name.
    workflow: str
    run_id: str
    #: How the run ended: completed, failed, timed out or cancelled.
    status: RunStatus
    #: What ``run()`` would have returned (None unless completed).
    result: Any
    #: What ``run()`` would have raised: a step's own exception (noted with its step),
    #: `trioflow.WorkflowTimeoutError` or `trioflow.WorkflowCancelledError`; None if completed.
    error: Exception | None
    #: Every streamed event in order, the terminal event last. Lifecycle events only when
    #: asked for (``lifecycle=True``).
    events: list[Event]
    #: The `InputRequiredEvent` s the run asked, in order, answered or not.
    input_requests: list[InputRequiredEvent]
    #: Seconds the run took on trio's clock: virtual seconds on a mock clock.
    duration: float

    @property
    def terminal(self) -> StopEvent:
        """The terminal event: the workflow's stop event, or the runtime's
        `trioflow.WorkflowFailedEvent`, `trioflow.WorkflowTimedOutEvent` or
        `trioflow.WorkflowCancelledEvent`."""
        last = self.events[-1]
        assert isinstance(last, StopEvent)  # every stream ends with one
        return last

    @property
    def failed_step(self) -> str | None:
        """The step whose failure ended the run, if a step's failure did."""
        terminal = self.terminal
        if isinstance(terminal, WorkflowFailedEvent):
            return terminal.step_name or None  # "" when no step failed it (the server did)
        return None

    def events_of(self, kind: type[_E]) -> list[_E]:
        """The streamed events that are instances of ``kind`` (subclasses included), in order."""
        return [event for event in self.events if isinstance(event, kind)]

    def assert_completed(self) -> Any:
        """Assert that the run completed, and return its result.

        Raises:
            AssertionError: it did not; the message says how it ended and what it streamed,
                and the run's error is the assertion's ``__cause__``.
        """
        if self.status is RunStatus.COMPLETED:
            return self.result
        message = f"expected {self._name} to complete, but {self._outcome}"
        raise AssertionError(message) from self.error

    def assert_failed(
        self, expected: type[Exception] | tuple[type[Exception], ...] = Exception
    ) -> Exception:
        """Assert that a step's failure ended the run, with an exception of type ``expected``,
        and return that exception.

        Raises:
            AssertionError: the run did not fail, or failed with another exception (then the
                assertion's ``__cause__``).
        """
        error = self.error
        if self.status is RunStatus.FAILED and isinstance(error, expected):
            return error
        names = (
            " or ".join(t.__name__ for t in expected)
            if isinstance(expected, tuple)
            else expected.__name__
        )
        message = f"expected {self._name} to fail with {names}, but {self._outcome}"
        raise AssertionError(message) from error

    @property
    def _name(self) -> str:
        return f"{self.workflow} run {self.run_id}"

    @property
    def _outcome(self) -> str:
        status, error = self.status, self.error
        if status is RunStatus.COMPLETED:
            said = f"it completed with {self.result!r}"
        elif status is RunStatus.FAILED:
            where = f" in step {self.failed_step!r}" if self.failed_step else ""
            said = f"it failed{where} with {error!r}"
        else:
            said = f"it ended {status.value}: {error}"
        return f"{said}; it streamed {_summarize(self.events)}"


def _summarize(events: Iterable[Event]) -> str:
    """The types of ``events`` in order, repeats counted: ``Progress x3, Token, StopEvent``."""
    runs: list[list[Any]] = []
    for event in events:
        name = type(event).__name__
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    if not runs:
        return "nothing"
    return ", ".join(name if count == 1 else f"{name} x{count}" for name, count in runs)


async def run_workflow(
    flow: Workflow,
    start_event: StartEvent | None = None,
    /,
    *,
    answers: Answers | None = None,
    lifecycle: bool = False,
    **fields: Any,
) -> RunRecord:
    """Run ``flow`` to its end, streaming and recording every event and answering its input
    requests, and return what happened.

    A run that fails, times out or is cancelled is recorded (``status`` and ``error``), not
    raised. Run it on the test's ``autojump_clock`` fixture to make time virtual.

    Args:
        flow: the workflow to run.
        start_event: the start event; or pass its fields as keywords, as to ``flow.run()``
            (fields named ``answers`` or ``lifecycle`` need ``start_event``).
        answers: how to answer each `InputRequiredEvent` the run streams: a mapping from
            request type (looked up along the request's class hierarchy, most specific first)
            to the event to send back, a function of the request returning it (sync or
            async), or `NO_ANSWER`; or one such function for every request.
        lifecycle: also stream and record the `trioflow.LifecycleEvent` s (step started,
            finished, retried).

    Raises:
        UnansweredInputError: the run asked for input that ``answers`` does not answer (the
            run is cancelled first).
        TypeError: ``flow`` is not a workflow instance, ``answers`` is malformed, the start
            event does not fit, or an answer is not an event.
        BaseException: ``KeyboardInterrupt`` or ``SystemExit`` from a step, as ``run()``
            raises them; an error from an answering function or from sending its answer,
            with a note naming the request.
    """
    await trio.lowlevel.checkpoint()
    _check_workflow(flow)
    book = _AnswerBook.of(answers)
    events: list[Event] = []
    requests: list[InputRequiredEvent] = []
    result: Any = None
    error: Exception | None = None
    started = trio.current_time()
    async with flow.start(start_event, **fields) as handler:
        types: tuple[type[Event], ...] = (Event, LifecycleEvent) if lifecycle else ()
        async with handler.stream_events(*types) as stream:
            async for event in stream:
                events.append(event)
                if isinstance(event, InputRequiredEvent):
                    requests.append(event)
                    await _answer(handler, event, book, events)
        try:
            result = await handler.result()
        except Exception as exc:  # the run's outcome, which the record reports
            error = exc
    if isinstance(error, WorkflowTimeoutError | trio.TooSlowError):
        _explain_threads_on_autojump(flow, error)
    return RunRecord(
        workflow=type(flow).__name__,
        run_id=handler.run_id,
        status=handler.status,
        result=result,
        error=error,
        events=events,
        input_requests=requests,
        duration=trio.current_time() - started,
    )


def run_workflow_sync(
    flow: Workflow,
    start_event: StartEvent | None = None,
    /,
    *,
    answers: Answers | None = None,
    lifecycle: bool = False,
    autojump: bool = True,
    **fields: Any,
) -> RunRecord:
    """`run_workflow` for a plain (non-async) test: runs it in its own ``trio.run``.

    Args:
        autojump: run on ``trio.testing.MockClock(autojump_threshold=0)``, where sleeps,
            retry delays and timeouts take no real time; False runs on the real clock, which
            workflows with ``def`` steps need when they have a timeout (on the autojump clock,
            time jumps to the next deadline while a worker thread works).

        The other arguments are `run_workflow`'s.

    Raises:
        RuntimeError: called inside a trio run (use ``await run_workflow(...)`` there).
        UnansweredInputError, TypeError, BaseException: as `run_workflow`.
    """
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "run_workflow_sync() starts its own trio.run(); in an async test, use "
            "`await run_workflow(...)` with pytest-trio's autojump_clock fixture"
        )
    clock = trio.testing.MockClock(autojump_threshold=0) if autojump else None
    run = functools.partial(
        run_workflow, flow, start_event, answers=answers, lifecycle=lifecycle, **fields
    )
    return trio.run(run, clock=clock)


def _check_workflow(flow: object) -> None:
    # Typed callers cannot get this wrong; untyped ones pass the class more often than not.
    if not isinstance(flow, Workflow):
        got = f"the class {flow.__name__}" if isinstance(flow, type) else repr(flow)
        raise TypeError(f"run_workflow() takes a Workflow instance, got {got}")


# -- answering input requests --


@attrs.frozen
class _AnswerBook:
    """``answers=``, checked: how to find a request's answer."""

    #: One function for every request, or None to use ``table``.
    responder: _Responder | None = None
    table: Mapping[type[InputRequiredEvent], _Answer] = attrs.field(factory=dict)

    @classmethod
    def of(cls, answers: Answers | None) -> _AnswerBook:
        """Check ``answers`` before the run starts, so that a mistake fails at once."""
        if answers is None:
            return cls()
        if isinstance(answers, type):
            raise TypeError(_a_class_is_no_answer("answers", answers))
        if not isinstance(answers, Mapping):
            if not callable(answers):
                raise TypeError(
                    "answers must be a mapping from InputRequiredEvent subclass to answer, "
                    f"or a function of the request; got {answers!r}"
                )
            return cls(responder=answers)
        for kind, answer in answers.items():
            if not (isinstance(kind, type) and issubclass(kind, InputRequiredEvent)):
                raise TypeError(f"answers' keys are InputRequiredEvent subclasses, got {kind!r}")
            if isinstance(answer, type):
                raise TypeError(_a_class_is_no_answer(f"answers[{kind.__name__}]", answer))
            if not (isinstance(answer, Event | _NoAnswer) or callable(answer)):
                raise TypeError(
                    f"answers[{kind.__name__}] must be an event, a function of the request "
                    f"or NO_ANSWER, got {answer!r}"
                )
        return cls(table=dict(answers))

    def find(self, request: InputRequiredEvent) -> _Answer | None:
        """The answer to ``request``: the table's entry for its class or the nearest base
        class that has one; None when nothing answers it."""
        if self.responder is not None:
            return self.responder
        for kind in type(request).__mro__:
            if kind in self.table:
                return self.table[kind]
        return None


def _a_class_is_no_answer(where: str, cls: type) -> str:
    return (
        f"{where} is the class {cls.__name__}; an answer is an event instance "
        f"({cls.__name__}(...)) or a function of the request"
    )


async def _answer(
    handler: WorkflowHandler,
    request: InputRequiredEvent,
    book: _AnswerBook,
    events: list[Event],
) -> None:
    answer = book.find(request)
    if answer is None:
        # A request streamed after the run's outcome was decided (its failure, say) needs no
        # answer: raising here would hide that outcome behind a complaint about the test.
        if handler.status is RunStatus.RUNNING:
            # Raising out of the `start()` block cancels the run: no step code runs after.
            error = UnansweredInputError(request, tuple(book.table))
            error.add_note(f"trioflow.testing: the run had streamed {_summarize(events)}")
            raise error
        return
    try:
        response = await _respond(answer, request)
        if response is NO_ANSWER:
            return
        # The run's outcome may be decided while we answer; the record reports it, and an
        # answer to a run that has ended is moot.
        with contextlib.suppress(RunEndedError):
            await handler.send_event(response)
    except Exception as exc:
        exc.add_note(f"trioflow.testing: raised while answering {request!r}")
        raise


async def _respond(answer: _Answer, request: InputRequiredEvent) -> Event | _NoAnswer:
    response: object = answer
    if callable(answer):
        response = answer(request)
        if inspect.isawaitable(response):
            response = await response
    if not isinstance(response, Event | _NoAnswer):
        source = f" from {answer!r}" if callable(answer) else ""
        raise TypeError(
            f"the answer to {request!r}{source} is {response!r}: answer with an event "
            "(a HumanResponseEvent), or NO_ANSWER to leave the request unanswered"
        )
    return response


# -- time --


def _explain_threads_on_autojump(flow: Workflow, error: Exception) -> None:
    """Note on a timeout that a ``def`` step on an autojumping clock is the likely cause: a
    worker thread takes real time, and while it does every task waits, so the clock jumps
    to the next deadline."""
    clock = trio.lowlevel.current_clock()
    if not (isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold < math.inf):
        return
    threaded = [spec.name for spec in flow.graph.steps if not spec.is_async]
    if threaded:
        error.add_note(
            f"trioflow.testing: {type(flow).__name__} has def steps ({', '.join(threaded)}) "
            "and runs on an autojumping MockClock, which jumps to the next deadline while a "
            "worker thread works; run it on the real clock (run_workflow_sync(..., "
            "autojump=False), or no autojump_clock fixture)"
        )
