"""trioflow: event-driven workflows on trio, with live, bounded, cancellable event streams."""

import typing as _typing

from ._core._blocking import LoopBlockedWarning, TrioflowWarning
from ._core._context import Context
from ._core._state import RunStatus
from ._core._state_store import DictState, Store
from ._core._stream import StreamIterator
from ._core._sync import SyncContext, SyncStore
from ._core._tracing import disable_tracing, enable_tracing
from ._errors import (
    JournaledError,
    NotInTrioError,
    NotJournalable,
    ReplayError,
    RunEndedError,
    TrioflowError,
    WorkerLost,
    WorkflowCancelledError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from ._events import (
    CollectedEvents,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    LifecycleEvent,
    StartEvent,
    StepFailedEvent,
    StepFinishedEvent,
    StepRetryEvent,
    StepStartedEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowIdleEvent,
    WorkflowTimedOutEvent,
)
from ._handler import RunStatistics, WorkflowHandler
from ._resource import Resource, ResourceConfig
from ._step import RetryPolicy, step
from ._workflow import Workflow

if _typing.TYPE_CHECKING:
    from ._durable._runstore import RunStore, open_store
    from ._server._app import ServerOptions, WorkflowApp
    from ._server._group import NumberedEvent, RunGroup, open_run_group
    from ._server._serve import serve

__version__ = "0.1.0"

# The HTTP server (and hypercorn with it) costs 110-180 ms to import: it is loaded on first use.
_LAZY = {
    "NumberedEvent": "._server._group",
    "RunGroup": "._server._group",
    "open_run_group": "._server._group",
    "RunStore": "._durable._runstore",
    "open_store": "._durable._runstore",
    "ServerOptions": "._server._app",
    "WorkflowApp": "._server._app",
    "serve": "._server._serve",
}

__all__ = [
    "CollectedEvents",
    "Context",
    "DictState",
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "JournaledError",
    "LifecycleEvent",
    "LoopBlockedWarning",
    "NotInTrioError",
    "NotJournalable",
    "NumberedEvent",
    "ReplayError",
    "Resource",
    "ResourceConfig",
    "RetryPolicy",
    "RunEndedError",
    "RunGroup",
    "RunStatistics",
    "RunStatus",
    "RunStore",
    "ServerOptions",
    "StartEvent",
    "StepFailedEvent",
    "StepFinishedEvent",
    "StepRetryEvent",
    "StepStartedEvent",
    "StopEvent",
    "Store",
    "StreamIterator",
    "SyncContext",
    "SyncStore",
    "TrioflowError",
    "TrioflowWarning",
    "WorkerLost",
    "Workflow",
    "WorkflowApp",
    "WorkflowCancelledError",
    "WorkflowCancelledEvent",
    "WorkflowFailedEvent",
    "WorkflowHandler",
    "WorkflowIdleEvent",
    "WorkflowRuntimeError",
    "WorkflowTimedOutEvent",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
    "disable_tracing",
    "enable_tracing",
    "open_run_group",
    "open_store",
    "serve",
    "step",
]


# Show the public name in reprs and tracebacks (trioflow.StopEvent, not
# trioflow._events.StopEvent), as trio does. Pickle finds them here too.
def _show_as_public(obj: _typing.Any) -> None:
    if getattr(obj, "__module__", "").startswith("trioflow._"):
        obj.__module__ = __name__


for _name in __all__:
    if _name not in _LAZY:
        _show_as_public(globals()[_name])
del _name


def __getattr__(name: str) -> _typing.Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    _show_as_public(value)
    globals()[name] = value
    return value
