"""`Resource`, the marker of a step's resource parameter (see `trioflow.resource`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

import attrs

#: How widely a cached resource is shared: by the steps of one run, or by every run of one
#: workflow instance.
Scope = Literal["run", "workflow"]


def _check_factory(_: object, __: attrs.Attribute[Any], factory: object) -> None:
    if not callable(factory):
        raise TypeError(f"Resource() takes a callable factory, got {factory!r}")
    if inspect.isgeneratorfunction(factory) or inspect.isasyncgenfunction(factory):
        # Calling it makes a generator, which is no context manager: contextlib's decorator
        # makes one of it. Said now, where the mistake is, rather than as a step failure.
        decorator = (
            "asynccontextmanager" if inspect.isasyncgenfunction(factory) else "contextmanager"
        )
        raise TypeError(
            f"Resource() was given the generator function {factory.__qualname__}: decorate it "  # type: ignore[attr-defined]
            f"with @contextlib.{decorator} to make a context manager of it"
        )


def _check_scope(_: object, __: attrs.Attribute[Any], scope: object) -> None:
    if scope not in ("run", "workflow"):
        raise ValueError(f'Resource(scope=...) is "run" or "workflow", got {scope!r}')


@attrs.frozen
class Resource:
    """The marker of a resource parameter (inside ``Annotated``): what makes its value, and how
    long the value lives.

    Args:
        factory: called (with its own resource parameters) to make the value: a function, an
            async function, or anything returning a context manager or an async context
            manager (``@contextlib.asynccontextmanager`` functions, classes such as
            ``httpx.AsyncClient``), which is entered.
        cache: share one value (per ``scope``); False makes a fresh one for each call of the
            step, exited when the call ends.
        scope: with ``cache``, share the value among the steps of one run (``"run"``, exited
            when the run ends) or among every run of the workflow instance (``"workflow"``).
        enter: enter what the factory returns if it is a context manager; False passes it on
            as it is.

    Two markers with the same factory (and ``enter``) stand for the same value within its
    scope.
    """

    factory: Callable[..., Any] = attrs.field(validator=_check_factory)
    cache: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    scope: Scope = attrs.field(default="run", kw_only=True, validator=_check_scope)
    enter: bool = attrs.field(
        default=True, kw_only=True, validator=attrs.validators.instance_of(bool)
    )

    def __attrs_post_init__(self) -> None:
        if not self.cache and self.scope != "run":
            raise ValueError(
                "Resource(cache=False) makes a value per step call; it has no scope to share "
                f"it in (got scope={self.scope!r})"
            )

    @property
    def name(self) -> str:
        """The factory's qualified name, which names the resource in messages and graphs."""
        return str(getattr(self.factory, "__qualname__", None) or type(self.factory).__name__)

    @property
    def key(self) -> tuple[Callable[..., Any], bool]:
        """What identifies the value within its scope: the factory (and whether it is entered),
        by identity."""
        return (self.factory, self.enter)

    @property
    def lifetime(self) -> Literal["call", "run", "workflow"]:
        """How long a value lives: one call of a step, one run, or the workflow instance."""
        return "call" if not self.cache else self.scope
