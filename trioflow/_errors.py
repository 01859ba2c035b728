"""The exceptions trioflow raises.

The tree::

    TrioflowError
     ├── WorkflowValidationError    a Workflow class's graph is wrong (raised on construction)
     ├── WorkflowRuntimeError       an operation is not possible in the run's current state
     │    ├── RunEndedError         the run's outcome is decided: it takes no more events
     │    └── NotJournalable        a durable run cannot record a value as it is
     ├── WorkflowTimeoutError       the run exceeded ``Workflow(timeout=...)``
     ├── WorkflowCancelledError     the run was cancelled before it produced a result
     ├── NotInTrioError             a run was started outside trio (under asyncio, say)
     ├── WorkerLost                 the process running a step stopped before it finished
     ├── ReplayError                a durable run's journal does not fit its workflow
     └── JournaledError             an exception read back from a durable run's journal

A step's own exception is never wrapped in one of these: it propagates as itself, with a note
naming the step.
"""

from __future__ import annotations

from collections.abc import Sequence

import sniffio
import trio


class TrioflowError(Exception):
    """Base class of every exception trioflow defines."""


class WorkflowValidationError(TrioflowError):
    """A workflow's steps do not form a valid graph.

    Every problem found is reported at once: ``problems`` holds one message per problem and
    ``str()`` lists them all.
    """

    def __init__(self, workflow_name: str, problems: Sequence[str]) -> None:
        super().__init__(workflow_name, tuple(problems))
        self.workflow_name = workflow_name
        self.problems = tuple(problems)

    def __str__(self) -> str:
        count = len(self.problems)
        header = (
            f"{self.workflow_name} is not a valid workflow ({count} problem{'s' * (count > 1)}):"
        )
        return "\n".join([header, *(f"  - {problem}" for problem in self.problems)])


class WorkflowRuntimeError(TrioflowError):
    """An operation on a run is not possible: a bad route, a second stream consumer, a run
    that has ended, and the like."""


class RunEndedError(WorkflowRuntimeError):
    """The run's outcome is decided (it completed, failed, timed out or was cancelled, even if
    its steps are still unwinding): it takes no more events and cannot be cancelled."""


class WorkflowTimeoutError(TrioflowError):
    """The run did not finish within ``Workflow(timeout=...)`` seconds."""


class WorkflowCancelledError(TrioflowError):
    """The run was cancelled (``handler.cancel()`` or leaving ``start()``) before it finished."""


class NotInTrioError(TrioflowError, RuntimeError):
    """A run, or a server's lifespan, was started outside trio: under asyncio (uvicorn,
    Starlette's default ``TestClient``) or outside any event loop. trioflow runs on trio only;
    the message says how to serve or test an app on trio."""


def require_trio(what: str) -> None:
    """Raise `NotInTrioError` unless called from a trio task; ``what`` names the caller."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        pass
    else:
        return
    try:
        loop = f"under {sniffio.current_async_library()}"
    except sniffio.AsyncLibraryNotFoundError:
        loop = "outside any event loop"
    raise NotInTrioError(
        f"{what} needs trio, but this code runs {loop}. Run it with trio.run(...); serve an "
        "ASGI app on hypercorn's trio worker (`hypercorn --worker-class trio module:app`, or "
        'trioflow.serve), and test one with `TestClient(app, backend="trio")`'
    )


class NotJournalable(WorkflowRuntimeError):
    """A durable run must record a value that would not read back as it is (a store value
    that is no JSON value, an event field holding a socket): the message names it."""


class WorkerLost(TrioflowError):
    """The process running a step stopped (a crash, a kill) before the step finished: that
    attempt is lost, and the step runs again. Also what fails a run that was resumed
    ``max_recoveries`` times."""


class ReplayError(TrioflowError):
    """A durable run's journal cannot be replayed into its workflow (its code changed, it is
    no longer served, or the journal is damaged): the run fails rather than being resumed into
    the wrong graph."""


class JournaledError(TrioflowError):
    """An exception read back from a durable run's journal (in a `StepFailedEvent` that an
    error handler receives after a recovery): its ``str()`` is the original's, and
    ``type_name`` names the original's class (the object itself stayed with the process that
    raised it, so ``isinstance`` checks against that class do not hold)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
