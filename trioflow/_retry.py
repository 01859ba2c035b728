"""Retry policies as objects: what a step's ``retry=`` takes beyond `RetryPolicy`.

A policy is any object with ``next(elapsed_time, attempts, error) -> float | None``, as in
LlamaIndex Workflows (`Policy`): asked after each failed attempt of a step, it returns the
seconds to wait before the next attempt, or None to stop (the failure is then the step's).
``attempts`` counts the failed attempts so far (1 when the first one failed); ``elapsed_time``
is the seconds since the step's first failure (0 at the first call), on trio's clock.

`retry_policy` builds one from three parts, as tenacity does: a *retry condition* (which
errors are retried: `retry_if_exception_type` and the like, combined with ``|`` and ``&``), a
*wait* (how long before the next attempt: `wait_fixed`, `wait_exponential`, ..., added with
``+``) and a *stop* (when to give up: `stop_after_attempt`, `stop_after_delay`, ..., combined
with ``|`` and ``&``). ``trioflow.RetryPolicy(max_attempts=..., delay=..., backoff=...)`` stays
the simple spelling, and is a policy too.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import attrs

#: A time in seconds, or a `datetime.timedelta`.
Seconds = float | timedelta


def _seconds(value: Seconds, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise ValueError(f"{name} must be seconds >= 0 (or a timedelta), got {value!r}")
    return float(seconds)


def _exception_types(
    types: type[BaseException] | Sequence[type[BaseException]],
) -> tuple[type[BaseException], ...]:
    found = (types,) if isinstance(types, type) else tuple(types)
    if not found or not all(isinstance(t, type) and issubclass(t, BaseException) for t in found):
        raise TypeError(f"exception types are classes of exceptions, got {types!r}")
    return found


@attrs.frozen
class RetryInfo:
    """Where the step execution under way stands (`Context.retry_info`): ``retry_number`` is 0
    on its first attempt, 1 on the first retry; ``elapsed_seconds`` since its first failure;
    the last failure's error and when it happened (seconds since the epoch), None on the
    first attempt."""

    retry_number: int = 0
    elapsed_seconds: float = 0.0
    last_exception: Exception | None = None
    last_failed_at: float | None = None


#: The attempt under way of the step execution in this task, once one has failed (None: its
#: first attempt). Set by the step worker around each retry.
current_retry: ContextVar[RetryInfo | None] = ContextVar("trioflow_retry", default=None)


@runtime_checkable
class Policy(Protocol):
    """What ``@step(retry=...)`` takes: asked after each failed attempt."""

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        """Seconds to wait before the next attempt, or None: no more attempts."""
        ...


# -- retry conditions: which errors are retried --


class RetryCondition:
    """Whether an error is retried; ``a | b`` retries what either does, ``a & b`` what both do."""

    def __call__(self, error: BaseException) -> bool:
        raise NotImplementedError

    def __or__(self, other: Callable[[BaseException], bool]) -> RetryCondition:
        return retry_any(self, other)

    def __and__(self, other: Callable[[BaseException], bool]) -> RetryCondition:
        return retry_all(self, other)

    def __ror__(self, other: Callable[[BaseException], bool]) -> RetryCondition:
        return retry_any(other, self)

    def __rand__(self, other: Callable[[BaseException], bool]) -> RetryCondition:
        return retry_all(other, self)


class retry_if_exception(RetryCondition):
    """Retry the errors for which ``predicate(error)`` is true."""

    def __init__(self, predicate: Callable[[BaseException], bool]) -> None:
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, got {predicate!r}")
        self.predicate = predicate

    def __call__(self, error: BaseException) -> bool:
        return bool(self.predicate(error))


class retry_if_exception_type(retry_if_exception):
    """Retry errors of these types (and their subclasses)."""

    def __init__(
        self, exception_types: type[BaseException] | Sequence[type[BaseException]] = Exception
    ) -> None:
        types = _exception_types(exception_types)
        super().__init__(lambda error: isinstance(error, types))


class retry_if_not_exception_type(retry_if_exception):
    """Retry errors of any type but these."""

    def __init__(
        self, exception_types: type[BaseException] | Sequence[type[BaseException]] = Exception
    ) -> None:
        types = _exception_types(exception_types)
        super().__init__(lambda error: not isinstance(error, types))


retry_unless_exception_type = retry_if_not_exception_type


class retry_if_exception_message(retry_if_exception):
    """Retry errors whose message (``str(error)``) is ``message``, or matches the regular
    expression ``match`` (one of the two)."""

    def __init__(
        self, message: str | None = None, match: str | re.Pattern[str] | None = None
    ) -> None:
        if (message is None) == (match is None):
            raise TypeError("give retry_if_exception_message one of message= or match=")
        if message is not None:
            super().__init__(lambda error: str(error) == message)
        else:
            pattern = re.compile(match or "")
            super().__init__(lambda error: pattern.search(str(error)) is not None)


class retry_if_not_exception_message(retry_if_exception_message):
    """Retry errors whose message is not ``message`` and does not match ``match``."""

    def __call__(self, error: BaseException) -> bool:
        return not super().__call__(error)


class retry_if_exception_cause_type(RetryCondition):
    """Retry errors raised ``from`` an error of these types, anywhere along the ``__cause__``
    chain (not ``__context__``, as tenacity)."""

    def __init__(
        self, exception_types: type[BaseException] | Sequence[type[BaseException]] = Exception
    ) -> None:
        self.exception_types = _exception_types(exception_types)

    def __call__(self, error: BaseException) -> bool:
        cause = error.__cause__
        while cause is not None:
            if isinstance(cause, self.exception_types):
                return True
            cause = cause.__cause__
        return False


class retry_any(RetryCondition):
    """Retry what any of the conditions retries."""

    def __init__(self, *conditions: Callable[[BaseException], bool]) -> None:
        self.conditions = conditions

    def __call__(self, error: BaseException) -> bool:
        return any(condition(error) for condition in self.conditions)


class retry_all(RetryCondition):
    """Retry what every one of the conditions retries."""

    def __init__(self, *conditions: Callable[[BaseException], bool]) -> None:
        self.conditions = conditions

    def __call__(self, error: BaseException) -> bool:
        return all(condition(error) for condition in self.conditions)


class retry_always(RetryCondition):
    def __call__(self, error: BaseException) -> bool:
        return True


class retry_never(RetryCondition):
    def __call__(self, error: BaseException) -> bool:
        return False


# -- waits: how long before the next attempt (``attempts`` is 0 before the first retry) --


class Wait:
    """Seconds to wait before a retry, from the retries made so far (0 before the first);
    ``a + b`` waits the sum."""

    def __call__(self, attempts: int) -> float:
        raise NotImplementedError

    def __add__(self, other: Callable[[int], float]) -> Wait:
        return wait_combine(self, other)

    def __radd__(self, other: object) -> Wait:  # sum([...]) starts from 0
        if other == 0:
            return self
        if callable(other):
            return wait_combine(other, self)
        return NotImplemented


class wait_fixed(Wait):
    def __init__(self, wait: Seconds) -> None:
        self.wait = _seconds(wait, "wait")

    def __call__(self, attempts: int) -> float:
        return self.wait


class wait_none(wait_fixed):
    def __init__(self) -> None:
        super().__init__(0)


class wait_exponential(Wait):
    """``multiplier * exp_base ** attempts``, kept between ``min`` and ``max``."""

    def __init__(
        self,
        multiplier: float = 1.0,
        exp_base: float = 2.0,
        max: Seconds = 60.0,
        min: Seconds = 0.0,
    ) -> None:
        self.multiplier, self.exp_base = float(multiplier), float(exp_base)
        self.max, self.min = _seconds(max, "max"), _seconds(min, "min")

    def _bound(self, attempts: int) -> float:
        try:
            delay = self.multiplier * self.exp_base**attempts
        except OverflowError:
            delay = math.inf
        return float(max(self.min, min(delay, self.max)))

    def __call__(self, attempts: int) -> float:
        return self._bound(attempts)


class wait_random_exponential(wait_exponential):
    """A random wait between ``min`` and `wait_exponential`'s ("full jitter")."""

    def __call__(self, attempts: int) -> float:
        return random.uniform(self.min, self._bound(attempts))


wait_full_jitter = wait_random_exponential


class wait_exponential_jitter(Wait):
    """``initial * exp_base ** attempts`` plus up to ``jitter`` seconds at random, at most
    ``max``."""

    def __init__(
        self,
        initial: Seconds = 1.0,
        exp_base: float = 2.0,
        max: Seconds = 60.0,
        jitter: Seconds = 1.0,
    ) -> None:
        self.initial, self.exp_base = _seconds(initial, "initial"), float(exp_base)
        self.max, self.jitter = _seconds(max, "max"), _seconds(jitter, "jitter")

    def __call__(self, attempts: int) -> float:
        try:
            delay = self.initial * self.exp_base**attempts
        except OverflowError:
            delay = math.inf
        return float(min(min(delay, self.max) + random.uniform(0, self.jitter), self.max))


class wait_incrementing(Wait):
    """``start + increment * attempts``, at most ``max``."""

    def __init__(
        self, start: Seconds = 0.0, increment: Seconds = 100.0, max: Seconds = math.inf
    ) -> None:
        self.start = _seconds(start, "start")
        step = increment.total_seconds() if isinstance(increment, timedelta) else increment
        self.increment = float(step)  # (may be negative: the waits shrink, down to 0)
        self.max = _seconds(max, "max")

    def __call__(self, attempts: int) -> float:
        return float(max(0.0, min(self.start + self.increment * attempts, self.max)))


class wait_random(Wait):
    def __init__(self, min: Seconds = 0.0, max: Seconds = 1.0) -> None:
        self.min, self.max = _seconds(min, "min"), _seconds(max, "max")

    def __call__(self, attempts: int) -> float:
        return random.uniform(self.min, self.max)


class wait_chain(Wait):
    """The first wait before the first retry, the second before the second, ..., the last for
    the rest."""

    def __init__(self, *waits: Wait) -> None:
        if not waits:
            raise ValueError("wait_chain takes at least one wait")
        self.waits = waits

    def __call__(self, attempts: int) -> float:
        return self.waits[min(attempts, len(self.waits) - 1)](attempts)


class wait_combine(Wait):
    """The sum of the waits."""

    def __init__(self, *waits: Callable[[int], float]) -> None:
        self.waits = waits

    def __call__(self, attempts: int) -> float:
        return float(sum(wait(attempts) for wait in self.waits))


# -- stops: when to give up --


class Stop:
    """Whether to give up, from the failed attempts so far, the seconds since the first
    failure and the wait the next attempt would begin with; ``a | b`` gives up when either
    does, ``a & b`` when both do."""

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        raise NotImplementedError

    def __or__(self, other: Callable[..., bool]) -> Stop:
        return stop_any(self, other)

    def __and__(self, other: Callable[..., bool]) -> Stop:
        return stop_all(self, other)

    def __ror__(self, other: Callable[..., bool]) -> Stop:
        return stop_any(other, self)

    def __rand__(self, other: Callable[..., bool]) -> Stop:
        return stop_all(other, self)


class stop_after_attempt(Stop):
    """Give up once ``max_attempt_number`` attempts failed (the first included)."""

    def __init__(self, max_attempt_number: int) -> None:
        if isinstance(max_attempt_number, bool) or not isinstance(max_attempt_number, int):
            raise TypeError(f"max_attempt_number must be an int, got {max_attempt_number!r}")
        if max_attempt_number < 0:
            raise ValueError(f"max_attempt_number must be >= 0, got {max_attempt_number}")
        self.max_attempt_number = max_attempt_number

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return attempts >= self.max_attempt_number


class stop_after_delay(Stop):
    """Give up once ``max_delay`` seconds have passed since the first failure."""

    def __init__(self, max_delay: Seconds) -> None:
        self.max_delay = _seconds(max_delay, "max_delay")

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return elapsed_time >= self.max_delay


class stop_before_delay(stop_after_delay):
    """Give up when the next attempt would begin ``max_delay`` seconds or more after the
    first failure."""

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return elapsed_time + upcoming_sleep >= self.max_delay


class stop_any(Stop):
    def __init__(self, *stops: Callable[..., bool]) -> None:
        self.stops = stops

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return any(
            stop(attempts, elapsed_time, upcoming_sleep=upcoming_sleep) for stop in self.stops
        )


class stop_all(Stop):
    def __init__(self, *stops: Callable[..., bool]) -> None:
        self.stops = stops

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return all(
            stop(attempts, elapsed_time, upcoming_sleep=upcoming_sleep) for stop in self.stops
        )


class stop_never(Stop):
    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return False


# -- policies --


@attrs.frozen
class ComposedRetryPolicy:
    """A policy made of a retry condition, a wait and a stop (`retry_policy`)."""

    retry: Callable[[BaseException], bool] | None
    wait: Callable[[int], float]
    stop: Callable[..., bool]

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        if self.retry is not None and not self.retry(error):
            return None
        delay = float(self.wait(max(attempts - 1, 0)))
        if self.stop(attempts, elapsed_time, upcoming_sleep=delay):
            return None
        return delay

    @property
    def max_attempts(self) -> int | None:
        """The attempts it allows at most, when its stop says so simply (for log lines)."""
        stop = self.stop
        return stop.max_attempt_number if isinstance(stop, stop_after_attempt) else None


def retry_policy(
    retry: Callable[[BaseException], bool] | None = None,
    wait: Callable[[int], float] | None = None,
    stop: Callable[..., bool] | None = None,
) -> ComposedRetryPolicy:
    """A policy that retries the errors ``retry`` says (all by default), after ``wait``
    (`wait_fixed` (5) by default) until ``stop`` says no more (`stop_after_attempt` (3) by
    default: three attempts in all)."""
    for name, given in (("retry", retry), ("wait", wait), ("stop", stop)):
        if given is not None and not callable(given):
            raise TypeError(f"{name} must be callable, got {given!r}")
    return ComposedRetryPolicy(retry, wait or wait_fixed(5), stop or stop_after_attempt(3))


def ConstantDelayRetryPolicy(maximum_attempts: int = 3, delay: Seconds = 5) -> ComposedRetryPolicy:
    """LlamaIndex's: ``maximum_attempts`` attempts in all, ``delay`` seconds apart."""
    return retry_policy(wait=wait_fixed(delay), stop=stop_after_attempt(maximum_attempts))


def ExponentialBackoffRetryPolicy(
    maximum_attempts: int = 5,
    initial_delay: Seconds = 1.0,
    multiplier: float = 2.0,
    max_delay: Seconds = 60.0,
    jitter: bool = True,
) -> ComposedRetryPolicy:
    """LlamaIndex's: waits of ``initial_delay * multiplier ** n`` (at most ``max_delay``; with
    ``jitter``, a random wait up to that), ``maximum_attempts`` attempts in all."""
    initial = _seconds(initial_delay, "initial_delay")
    wait: Wait = (wait_random_exponential if jitter else wait_exponential)(
        multiplier=initial, exp_base=multiplier, max=max_delay
    )
    return retry_policy(wait=wait, stop=stop_after_attempt(maximum_attempts))


def check_policy(policy: Any) -> None:
    """Raise `TypeError` unless ``policy`` can be asked what to do after a failure."""
    if not callable(getattr(policy, "next", None)):
        raise TypeError(
            "retry must be a RetryPolicy or an object with next(elapsed_time, attempts, error)"
            f" -> seconds or None (see trioflow.retry_policy), got {policy!r}"
        )


def next_delay(
    policy: Policy, elapsed_time: float, attempts: int, error: Exception
) -> tuple[float | None, Exception]:
    """Ask ``policy`` after the ``attempts``-th failure (``error``): the seconds to wait before
    the next attempt (None: none), and the step's failure, which is the policy's own error if
    asking it failed (with the step's as its cause)."""
    try:
        delay = policy.next(elapsed_time, attempts, error)
    except Exception as broken:
        broken.__cause__ = error
        return None, broken
    if delay is None:
        return None, error
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not delay >= 0:
        wrong = TypeError(
            f"the retry policy {policy!r} returned {delay!r}; it returns seconds >= 0 or None"
        )
        wrong.__cause__ = error
        return None, wrong
    return float(delay), error


def max_attempts(policy: Policy) -> int | None:
    """The attempts ``policy`` allows at most, if it says (for log lines)."""
    try:
        value = getattr(policy, "max_attempts", None)
    except Exception:  # a policy's own property failing says nothing: it is not asked again
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
