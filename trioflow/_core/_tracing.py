"""Optional OpenTelemetry spans: one span per run, one per step execution.

Off by default, and free when off: the runtime only looks at `current_tracer` when a run
starts. `enable_tracing` needs the ``otel`` extra (``opentelemetry-api``). A run's span is the
current span while its step workers start, and trio tasks inherit the context they are started
in, so every step span is a child of its run's span, and the caller's current span is the
parent of the run's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_tracer: Any = None

#: Span attribute names.
WORKFLOW = "trioflow.workflow"
RUN_ID = "trioflow.run_id"
STEP = "trioflow.step"
ATTEMPT = "trioflow.attempt"
OUTCOME = "trioflow.outcome"


def enable_tracing(tracer_provider: Any = None) -> None:
    """Emit OpenTelemetry spans for the runs started from now on: ``trioflow.run <workflow>``
    per run and ``trioflow.step <step>`` per step execution, with the attributes
    ``trioflow.workflow``, ``trioflow.run_id``, ``trioflow.step``, ``trioflow.attempt`` and
    ``trioflow.outcome``.

    Args:
        tracer_provider: the provider to take the tracer from; the global one by default.

    Raises:
        RuntimeError: OpenTelemetry is not installed (``pip install 'trioflow[otel]'``).
    """
    global _tracer
    try:
        from opentelemetry import trace
    except ImportError:
        raise RuntimeError("tracing needs OpenTelemetry: pip install 'trioflow[otel]'") from None
    from .. import __version__

    _tracer = trace.get_tracer("trioflow", __version__, tracer_provider=tracer_provider)


def disable_tracing() -> None:
    """Stop emitting spans for runs started from now on."""
    global _tracer
    _tracer = None


def current_tracer() -> Any:
    """The tracer runs use, or None while tracing is off."""
    return _tracer


@contextmanager
def run_span(tracer: Any, workflow: str, run_id: str) -> Iterator[Any]:
    """Open the run's span and make it current for the block (the step workers start inside
    it). The caller ends it with `end_run_span` once the outcome is known."""
    from opentelemetry import trace

    span = tracer.start_span(
        f"trioflow.run {workflow}", attributes={WORKFLOW: workflow, RUN_ID: run_id}
    )
    with trace.use_span(span, end_on_exit=False):
        yield span


def end_run_span(span: Any, outcome: str, failure: BaseException | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute(OUTCOME, outcome)
    if failure is not None:
        span.record_exception(failure)
        span.set_status(Status(StatusCode.ERROR, f"{type(failure).__name__}: {failure}"))
    span.end()


@contextmanager
def step_span(tracer: Any, workflow: str, run_id: str, step: str, attempt: int) -> Iterator[None]:
    """A span around one execution of a step, ending with its outcome."""
    from opentelemetry.trace import Status, StatusCode

    attributes = {WORKFLOW: workflow, RUN_ID: run_id, STEP: step, ATTEMPT: attempt}
    with tracer.start_as_current_span(
        f"trioflow.step {step}",
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except Exception as exc:
            span.set_attribute(OUTCOME, "failed")
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        except BaseException:
            span.set_attribute(OUTCOME, "cancelled")
            raise
        span.set_attribute(OUTCOME, "succeeded")
