"""The ``@step`` decorator and the options a step carries.

Decorating only records a `StepDeclaration` on the function; annotations are resolved and the
graph is checked when the workflow is constructed (`trioflow._core._graph`), because postponed
annotations may name classes that do not exist yet while the class body runs.
"""

from __future__ import annotations

import inspect
import math
import random
import sys
from collections.abc import Callable, Iterable, Mapping
from types import FrameType
from typing import Any, Literal, TypeVar, get_args, overload

import attrs

from ._retry import Policy, check_policy

DEFAULT_NUM_WORKERS = 4
"""Workers per step unless ``@step(num_workers=...)`` says otherwise (LlamaIndex's default)."""

STEP_ATTRIBUTE = "__trioflow_step__"

_F = TypeVar("_F", bound=Callable[..., Any])


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often and how soon a failing step is tried again.

    Args:
        max_attempts: attempts in all, the first included (1 means no retry).
        delay: seconds to wait before the first retry.
        backoff: factor applied to the delay after each retry.
        retry_on: exception types that are retried; any other fails the step at once.
        jitter: up to this many seconds, drawn uniformly at random, are added to each delay,
            so that many runs failing together do not retry in lockstep.
    """

    max_attempts: int = 3
    delay: float = 0.0
    backoff: float = 1.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    jitter: float = 0.0

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not (isinstance(self.delay, int | float) and 0 <= self.delay < math.inf):
            raise ValueError(f"delay must be a finite number >= 0, got {self.delay!r}")
        if not (isinstance(self.backoff, int | float) and 1 <= self.backoff < math.inf):
            raise ValueError(f"backoff must be a finite number >= 1, got {self.backoff!r}")
        if not (isinstance(self.jitter, int | float) and 0 <= self.jitter < math.inf):
            raise ValueError(f"jitter must be a finite number >= 0, got {self.jitter!r}")
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on):
            raise TypeError(f"retry_on must be a tuple of exception types, got {self.retry_on!r}")

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (2 for the first retry)."""
        delay = self.delay * self.backoff ** (attempt - 2)
        return float(delay + (random.uniform(0, self.jitter) if self.jitter else 0))

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        """The policy's answer after ``attempts`` failed attempts (see `trioflow.retry_policy`):
        the delay before the next one, or None once ``max_attempts`` failed or for an error
        not in ``retry_on``."""
        if attempts >= self.max_attempts or not isinstance(error, self.retry_on):
            return None
        return self.delay_before(attempts + 1)


@attrs.frozen(kw_only=True)
class StepConfig:
    """The options given to ``@step``."""

    num_workers: int = DEFAULT_NUM_WORKERS
    #: A `RetryPolicy`, or any policy (`trioflow.retry_policy`).
    retry: Policy | None = None
    timeout: float | None = None
    #: For an error-handler step: the names of the steps whose failures it handles (None: all).
    failures_of: tuple[str, ...] | None = None
    #: The graph checks this step is exempt from (`trioflow._core._checks`).
    skip_graph_checks: frozenset[str] = frozenset()


@attrs.frozen(kw_only=True)
class StepDeclaration:
    """What ``@step`` records on a function: the function, its options, and the names that
    were visible where it was defined (for resolving its annotations later)."""

    func: Callable[..., Any]
    config: StepConfig
    local_names: Mapping[str, Any]


@overload
def step(func: _F, /) -> _F: ...


@overload
def step(
    *,
    num_workers: int = DEFAULT_NUM_WORKERS,
    retry: Policy | None = None,
    timeout: float | None = None,
    failures_of: Iterable[str] | None = None,
    retry_policy: Policy | None = None,
    workflow: type | None = None,
    skip_graph_checks: Iterable[str] | None = None,
) -> Callable[[_F], _F]: ...


def step(
    func: Callable[..., Any] | None = None,
    /,
    *,
    num_workers: int = DEFAULT_NUM_WORKERS,
    retry: Policy | None = None,
    timeout: float | None = None,
    failures_of: Iterable[str] | None = None,
    retry_policy: Policy | None = None,
    workflow: type | None = None,
    skip_graph_checks: Iterable[str] | None = None,
) -> Any:
    """Mark a workflow method as a step.

    Use it bare (``@step``) or with options (``@step(num_workers=2, timeout=30)``). The event
    parameter's annotation (one `Event` type or a union) says which events the step receives;
    the return annotation says which it emits. An optional parameter annotated `Context`
    receives the run's context.

    Args:
        num_workers: how many events this step may handle at once in one run.
        retry: retry a failing attempt according to this policy: a `RetryPolicy`, or any
            object with ``next(elapsed_time, attempts, error)`` (`trioflow.retry_policy`).
        timeout: seconds an attempt may run before it fails with `trio.TooSlowError`.
        failures_of: for an error-handler step (one that accepts `StepFailedEvent`), handle
            only the failures of the steps named here; by default it handles every step's.
        retry_policy: ``retry``, by LlamaIndex's name.
        workflow: on a function outside a workflow class (it takes no ``self``), the
            `Workflow` class to add it to as a step (`Workflow.add_step`).
        skip_graph_checks: graph checks this step is exempt from: "reachability" (it may
            have no path from the start event) and "dead_end" (nothing it returns need lead
            to the run's end).
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an int >= 1, got {num_workers!r}")
    if timeout is not None:
        _check_positive("timeout", timeout)
    if retry_policy is not None:
        if retry is not None:
            raise TypeError("give retry= or retry_policy= (its LlamaIndex name), not both")
        retry = retry_policy
    if retry is not None:
        check_policy(retry)
    if failures_of is not None:
        if isinstance(failures_of, str):
            failures_of = (failures_of,)
        failures_of = tuple(failures_of)
        if not all(isinstance(name, str) for name in failures_of):
            raise TypeError(f"failures_of names steps, got {failures_of!r}")
    config = StepConfig(
        num_workers=num_workers,
        retry=retry,
        timeout=timeout,
        failures_of=failures_of,
        skip_graph_checks=checks_named(skip_graph_checks, STEP_CHECKS, "a step"),
    )

    def decorate(f: _F) -> _F:
        _declare(f, config, sys._getframe(1))
        if workflow is not None:  # (without it, a function becomes a step in a class body,
            workflow.add_step(f)  # type: ignore[attr-defined]  # or by `type(...)`'s namespace)
        return f

    if func is None:
        return decorate
    _declare(func, config, sys._getframe(1))
    return func


#: The graph checks a workflow may skip (`trioflow._core._checks` runs them), and those a step
#: may skip for itself.
GraphCheck = Literal["reachability", "dead_end", "terminal_event"]
GRAPH_CHECKS: tuple[GraphCheck, ...] = get_args(GraphCheck)
STEP_CHECKS: tuple[GraphCheck, ...] = ("reachability", "dead_end")


def checks_named(names: Iterable[str] | None, known: tuple[str, ...], who: str) -> frozenset[str]:
    """``names`` (one name, several, or None for none) as a set of checks ``who`` may skip.

    Raises:
        ValueError: a name is not one of ``known``.
    """
    if names is None:  # (LlamaIndex's default)
        return frozenset()
    if isinstance(names, str):
        names = (names,)
    chosen = frozenset(names)
    unknown = sorted(n for n in chosen if n not in known)
    if unknown:
        raise ValueError(
            f"{who} skips graph checks among {', '.join(map(repr, known))}, not "
            f"{', '.join(map(repr, unknown))}"
        )
    return chosen


def _declare(func: Callable[..., Any], config: StepConfig, frame: FrameType | None) -> None:
    if not inspect.isfunction(func):
        raise TypeError(f"@step decorates functions (workflow methods), not {func!r}")
    declaration = StepDeclaration(func=func, config=config, local_names=_visible_locals(frame))
    setattr(func, STEP_ATTRIBUTE, declaration)


def _visible_locals(frame: FrameType | None) -> dict[str, Any]:
    """Snapshot the local names of the class body running ``@step`` and of the functions
    enclosing it, innermost last, so that annotations naming classes defined inside a function
    (tests do this a lot) resolve later. Module globals are read from the function itself."""
    frames: list[FrameType] = []
    # Follow only lexically enclosing scopes ("f.<locals>.Flow" is inside "f"): the callers
    # further out (a test runner, an event loop) have locals that could shadow real globals.
    inner_name = ""
    while frame is not None and frame.f_code.co_name != "<module>":
        name = frame.f_code.co_qualname
        if frames and not inner_name.startswith(name + ".<locals>."):
            break
        frames.append(frame)
        inner_name = name
        frame = frame.f_back
    names: dict[str, Any] = {}
    for outer in reversed(frames):
        names.update(outer.f_locals)
    return names


def declaration_of(obj: object) -> StepDeclaration | None:
    """The `StepDeclaration` recorded on ``obj`` by ``@step``, if any."""
    declaration = getattr(obj, STEP_ATTRIBUTE, None)
    return declaration if isinstance(declaration, StepDeclaration) else None
