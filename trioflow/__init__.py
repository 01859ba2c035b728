"""trioflow: event-driven workflows on trio, with live, bounded, cancellable event streams."""

from ._app import ServerOptions, WorkflowApp
from ._blocking import LoopBlockedWarning, TrioflowWarning
from ._context import Context, Store
from ._errors import (
    TrioflowError,
    WorkflowCancelledError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from ._events import (
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
    WorkflowTimedOutEvent,
)
from ._handler import RunStatistics, WorkflowHandler
from ._runtime import RunStatus
from ._serve import serve
from ._step import RetryPolicy, step
from ._stream import StreamIterator
from ._sync import SyncContext, SyncStore
from ._tracing import disable_tracing, enable_tracing
from ._workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "Context",
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "LifecycleEvent",
    "LoopBlockedWarning",
    "RetryPolicy",
    "RunStatistics",
    "RunStatus",
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
    "Workflow",
    "WorkflowApp",
    "WorkflowCancelledError",
    "WorkflowCancelledEvent",
    "WorkflowFailedEvent",
    "WorkflowHandler",
    "WorkflowRuntimeError",
    "WorkflowTimedOutEvent",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
    "disable_tracing",
    "enable_tracing",
    "serve",
    "step",
]

# Show the public name in reprs and tracebacks (trioflow.StopEvent, not
# trioflow._events.StopEvent), as trio does. Pickle finds them here too.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("trioflow._"):
        _obj.__module__ = __name__
del _name, _obj
