"""`Resource`, the marker of a step's resource parameter (see `trioflow.resource`)."""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Callable
from typing import Any, Literal

import attrs
import trio

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


def _check_json(_: object, __: attrs.Attribute[Any], config_file: object) -> None:
    if not isinstance(config_file, str | os.PathLike) or not os.fspath(config_file).endswith(
        ".json"
    ):
        raise ValueError(f"ResourceConfig reads a .json file, got {config_file!r}")


@attrs.frozen
class ResourceConfig:
    """The marker of a resource read from a JSON file into the parameter's annotated type
    (``Annotated[MyConfig, ResourceConfig("app.json", "llm")]``), as LlamaIndex's is.

    The type is an attrs class or a dataclass (structured by cattrs, so nested classes,
    lists and dicts of them work too), or a pydantic model (``model_validate``). The file is
    read on first use, and the value is shared like ``Resource(..., scope="workflow")``.

    Args:
        config_file: the JSON file (read when first used, relative to the working directory).
        path_selector: dotted keys leading to the object to read (``"llm.openai"``); None:
            the whole file.
        label: a short name for displays.
        description: what the configuration is for.
    """

    config_file: str = attrs.field(validator=_check_json)
    path_selector: str | None = None
    label: str | None = None
    description: str | None = None

    @property
    def name(self) -> str:
        """The file, and the path in it, which name the resource in messages."""
        selected = "" if self.path_selector is None else f".{self.path_selector}"
        return f"{self.config_file}{selected}"

    def resource(self, cls: Any) -> Resource:
        """The `Resource` that makes a ``cls`` of this configuration (one per pair, so that
        every parameter naming it shares one value)."""
        return _config_resource(self, cls)


@functools.cache
def _config_resource(config: ResourceConfig, cls: Any) -> Resource:
    factory = functools.partial(_read_config, config, cls)
    factory.__qualname__ = config.name  # type: ignore[attr-defined]  # (names it in messages)
    return Resource(factory, scope="workflow")


async def _read_config(config: ResourceConfig, cls: Any) -> Any:
    data = json.loads(await trio.Path(config.config_file).read_text())
    walked = ""
    for key in () if config.path_selector is None else config.path_selector.split("."):
        walked = f"{walked}.{key}" if walked else key
        data = data.get(key) if isinstance(data, dict) else None
        if not isinstance(data, dict):
            raise ValueError(
                f"{config.config_file} has no JSON object at {walked!r} (ResourceConfig's "
                f"path_selector {config.path_selector!r})"
            )
    validate = getattr(cls, "model_validate", None)  # a pydantic model
    if validate is not None:
        return validate(data)
    import cattrs  # (here: `import trioflow` stays light)

    return cattrs.structure(data, cls)
