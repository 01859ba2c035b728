"""Retry policies as objects, by LlamaIndex Workflows' names (``workflows.retry_policy``).

``@step(retry=...)`` (or ``retry_policy=``, LlamaIndex's keyword) takes `trioflow.RetryPolicy`,
the simple spelling, or any object with ``next(elapsed_time, attempts, error)`` returning the
seconds to wait before the next attempt or None to stop (`Policy`). `retry_policy` builds one
from a retry condition, a wait and a stop::

    from trioflow.retry_policy import (
        retry_if_exception_type, retry_policy, stop_after_attempt, stop_after_delay,
        wait_exponential,
    )

    @step(retry=retry_policy(
        retry=retry_if_exception_type((TimeoutError, ConnectionError)),
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_attempt(5) | stop_after_delay(60),
    ))
    async def fetch(self, ev: Query) -> Found: ...
"""

from __future__ import annotations

from ._retry import (
    ComposedRetryPolicy,
    ConstantDelayRetryPolicy,
    ExponentialBackoffRetryPolicy,
    Policy,
    RetryCondition,
    RetryInfo,
    Stop,
    Wait,
    retry_all,
    retry_always,
    retry_any,
    retry_if_exception,
    retry_if_exception_cause_type,
    retry_if_exception_message,
    retry_if_exception_type,
    retry_if_not_exception_message,
    retry_if_not_exception_type,
    retry_never,
    retry_policy,
    retry_unless_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_all,
    stop_any,
    stop_before_delay,
    stop_never,
    wait_chain,
    wait_combine,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_full_jitter,
    wait_incrementing,
    wait_none,
    wait_random,
    wait_random_exponential,
)
from ._step import RetryPolicy

__all__ = [
    "ComposedRetryPolicy",
    "ConstantDelayRetryPolicy",
    "ExponentialBackoffRetryPolicy",
    "Policy",
    "RetryCondition",
    "RetryInfo",
    "RetryPolicy",
    "Stop",
    "Wait",
    "retry_all",
    "retry_always",
    "retry_any",
    "retry_if_exception",
    "retry_if_exception_cause_type",
    "retry_if_exception_message",
    "retry_if_exception_type",
    "retry_if_not_exception_message",
    "retry_if_not_exception_type",
    "retry_never",
    "retry_policy",
    "retry_unless_exception_type",
    "stop_after_attempt",
    "stop_after_delay",
    "stop_all",
    "stop_any",
    "stop_before_delay",
    "stop_never",
    "wait_chain",
    "wait_combine",
    "wait_exponential",
    "wait_exponential_jitter",
    "wait_fixed",
    "wait_full_jitter",
    "wait_incrementing",
    "wait_none",
    "wait_random",
    "wait_random_exponential",
]
