"""The public surface: everything in API.md is importable from trioflow, under its name."""

from __future__ import annotations

import types

import trioflow
from trioflow import _errors

API_NAMES = {
    "Context", "Event", "HumanResponseEvent", "InputRequiredEvent", "RetryPolicy",
    "StartEvent", "StepFailedEvent", "StopEvent", "TrioflowError", "Workflow",
    "WorkflowCancelledError", "WorkflowCancelledEvent", "WorkflowFailedEvent",
    "WorkflowHandler", "WorkflowRuntimeError", "WorkflowTimedOutEvent", "WorkflowTimeoutError",
    "WorkflowValidationError", "step",
}  # fmt: skip


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted, names only real attributes, and covers every API.md name."""
    assert trioflow.__all__ == sorted(trioflow.__all__)
    assert all(hasattr(trioflow, name) for name in trioflow.__all__)
    assert set(trioflow.__all__) >= API_NAMES
    public = {
        name
        for name, value in vars(trioflow).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)  # examples
    }
    assert public == set(trioflow.__all__)


def test_public_objects_show_the_public_module() -> None:
    """Public objects report module 'trioflow' in reprs and tracebacks."""
    for name in trioflow.__all__:
        assert getattr(trioflow, name).__module__ == "trioflow", name


def test_import_does_not_load_the_http_layer() -> None:
    """`import trioflow` leaves the server (and hypercorn) unloaded until a name needs it."""
    import subprocess
    import sys

    code = (
        "import sys, trioflow\n"
        "assert 'trioflow._server' not in sys.modules and 'hypercorn' not in sys.modules\n"
        "assert 'trioflow._wire' not in sys.modules\n"
        "trioflow.WorkflowApp\n"
        "assert 'trioflow._server' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_error_tree() -> None:
    """Every trioflow error derives from TrioflowError, and the tree is documented."""
    for name in ("WorkflowValidationError", "WorkflowRuntimeError", "WorkflowTimeoutError",
                 "WorkflowCancelledError"):  # fmt: skip
        assert issubclass(getattr(trioflow, name), trioflow.TrioflowError)
        assert name in (_errors.__doc__ or "")
    assert issubclass(trioflow.TrioflowError, Exception)


def test_errors_pickle() -> None:
    """Errors survive pickling with their arguments (they call super().__init__)."""
    import pickle

    error = trioflow.WorkflowValidationError("Flow", ["a", "b"])
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == ("a", "b")
    assert str(copy) == str(error)
