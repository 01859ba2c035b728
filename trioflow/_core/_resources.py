"""Resources: finding them in step signatures, making them, and exiting them in order.

At class construction, `resource_parameters` finds a step's ``Annotated[T, Resource(...)]``
parameters and resolves each factory's own resource parameters into a tree of `ResourceNode`s
(cycles, and a workflow-scoped resource depending on a run-scoped one, are refused there).

At run time a value has one of three lifetimes (`trioflow.resource`):

- one call of a step: made in the worker's task before the call, on an exit stack that the
  worker exits after it (`call_values`, `exit_call`), as an ``async with`` in the step would;
- one run, or the workflow instance: made once by an `Owner` and shared. A context manager must
  be exited by the task that entered it (trio's cancel scopes and nurseries insist), so each
  shared value has a *keeper*: a task of the owner's nursery that makes it, enters it, waits
  until the owner closes, and exits it. The owner closes its keepers one after the other, the
  last made first, after every step using them has unwound.

Exits run shielded from the cancellation that ends a run, bounded by `TEARDOWN_TIMEOUT`: a run
cancelled or timed out still exits its resources, and a teardown that hangs cannot hang the run.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import attrs
import trio

from .._errors import WorkflowRuntimeError
from .._resource import Resource, ResourceConfig
from ._log import add_note, describe, log

TEARDOWN_TIMEOUT = 10.0
"""Seconds one resource's exit may take before it is cut off (a teardown failure)."""


# -- class construction: what a step takes --


@attrs.frozen(eq=False)
class ResourceNode:
    """A resource with its factory's own resource parameters resolved."""

    resource: Resource
    #: The factory's resource parameters: their names (it is called by keyword), and nodes.
    requires: tuple[tuple[str, ResourceNode], ...] = ()


@attrs.frozen(eq=False)
class ResourceParameter:
    """A resource parameter of a step."""

    #: Where it sits among the step's parameters (``self`` not counted).
    position: int
    name: str
    node: ResourceNode
    #: The ``T`` of its ``Annotated[T, Resource(...)]``: what the step says it gets.
    annotation: Any = None


def resource_marker(hint: Any) -> Resource | str | None:
    """The `Resource` of an ``Annotated[T, Resource(...)]`` hint, None for another hint, or a
    message saying what is wrong with it."""
    if typing.get_origin(hint) is not typing.Annotated:
        return None
    annotated, *metadata = typing.get_args(hint)
    markers = [m for m in metadata if isinstance(m, Resource | ResourceConfig)]
    if not markers:
        return None
    if len(markers) > 1:
        return "has more than one Resource marker"
    marker = markers[0]
    return marker.resource(annotated) if isinstance(marker, ResourceConfig) else marker


def resource_parameters(
    label: str,
    parameters: Sequence[inspect.Parameter],
    hints: Mapping[str, Any],
    local_names: Mapping[str, Any],
    problems: list[str],
    is_other: Callable[[Any], str | None],
) -> tuple[ResourceParameter, ...] | None:
    """The resource parameters among a step's ``parameters``, or None after a problem.
    ``is_other(T)`` says what else ``T`` is (an event, the context...), which a resource
    cannot be."""
    found: list[ResourceParameter] = []
    for position, p in enumerate(parameters):
        marker = resource_marker(hints.get(p.name))
        if marker is None:
            continue
        where = f"{label}: parameter {p.name!r}"
        if isinstance(marker, str):
            problems.append(f"{where} {marker}")
            return None
        other = is_other(typing.get_args(hints[p.name])[0])
        if other is not None:
            problems.append(
                f"{where} is annotated as {other} and as a Resource: a parameter is either "
                "what the step receives or a resource made for it"
            )
            return None
        node = _node(marker, local_names, f"{where} (resource {marker.name})", problems, ())
        if node is None:
            return None
        annotation = typing.get_args(hints[p.name])[0]
        found.append(
            ResourceParameter(position=position, name=p.name, node=node, annotation=annotation)
        )
    return tuple(found)


def _node(
    resource: Resource,
    local_names: Mapping[str, Any],
    where: str,
    problems: list[str],
    chain: tuple[Resource, ...],
) -> ResourceNode | None:
    if any(r.key == resource.key for r in chain):
        names = " -> ".join(r.name for r in (*chain, resource))
        problems.append(f"{where}: its factories depend on each other in a cycle: {names}")
        return None
    factory = resource.factory
    hints = _factory_hints(factory, local_names)
    requires: list[tuple[str, ResourceNode]] = []
    for p in _factory_parameters(factory):
        marker = resource_marker(hints.get(p.name))
        if isinstance(marker, str):
            problems.append(f"{where}: the factory's parameter {p.name!r} {marker}")
            return None
        if marker is None:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
                continue  # called without it
            problems.append(
                f"{where}: the factory {resource.name} takes {p.name!r}, which is no resource "
                "(`Annotated[T, Resource(...)]`) and has no default, so nothing can give it"
            )
            return None
        if p.kind is p.POSITIONAL_ONLY:
            problems.append(
                f"{where}: the factory's resource parameter {p.name!r} is positional-only; "
                "factories are given their resources by keyword"
            )
            return None
        if resource.lifetime == "workflow" and marker.lifetime == "run":
            problems.append(
                f"{where}: a workflow-scoped resource outlives every run, so it cannot depend "
                f"on {marker.name}, which is run-scoped"
            )
            return None
        inner = _node(marker, local_names, where, problems, (*chain, resource))
        if inner is None:
            return None
        requires.append((p.name, inner))
    return ResourceNode(resource=resource, requires=tuple(requires))


def _factory_parameters(factory: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: called without arguments
        return []


def _factory_hints(factory: Callable[..., Any], local_names: Mapping[str, Any]) -> dict[str, Any]:
    """The factory's parameter annotations, resolved as a step's are (with the names visible
    where the workflow was defined, unless the factory's module has them); {} when they
    cannot be resolved: its parameters then count as unannotated."""
    target: Any = factory
    if isinstance(factory, type):
        target = next(vars(k)["__init__"] for k in factory.__mro__ if "__init__" in vars(k))
    elif not (inspect.isfunction(factory) or inspect.ismethod(factory)):
        target = type(factory).__call__  # an object with a __call__ method
    globalns = getattr(inspect.unwrap(target), "__globals__", {})
    localns = {k: v for k, v in local_names.items() if k not in globalns}
    try:
        return typing.get_type_hints(target, localns=localns, include_extras=True)
    except Exception:
        return {}


# -- run time: making values --


@attrs.define(eq=False)
class Owners:
    """Where the shared values of one run come from."""

    #: The run's own (None outside a run: nothing may be run-scoped there).
    run: Owner | None
    workflow: Owner


async def call_values(
    parameters: Sequence[ResourceParameter], owners: Owners, stack: contextlib.AsyncExitStack[Any]
) -> tuple[Any, ...]:
    """The values of a step call's resource ``parameters``, in order; those living as long as
    the call are entered on ``stack``, which the caller exits after the call (`exit_call`)."""
    made: dict[object, Any] = {}
    return tuple([await _value(p.node, owners, stack, made) for p in parameters])


async def exit_call(stack: contextlib.AsyncExitStack[Any], error: BaseException | None) -> None:
    """Exit a step call's resources, telling them the call's ``error`` as ``async with`` would
    (a context manager may roll back on it); what an exit raises propagates, as from ``async
    with``. Shielded and bounded (see the module docstring)."""
    with trio.move_on_after(TEARDOWN_TIMEOUT, shield=True) as bound:
        if error is None:
            await stack.aclose()
        else:
            await stack.__aexit__(type(error), error, error.__traceback__)
    if bound.cancelled_caught:
        raise trio.TooSlowError(_too_slow("a step call's resources"))


def _too_slow(what: str) -> str:
    return f"exiting {what} took longer than {TEARDOWN_TIMEOUT} s and was cut off"


async def _value(
    node: ResourceNode,
    owners: Owners,
    stack: contextlib.AsyncExitStack[Any] | None,
    made: dict[object, Any],
) -> Any:
    """The value of ``node`` for one user (a step call, or a shared value being made), whose
    own values go on ``stack`` (None: nothing can be entered there) and, once made, in
    ``made``, so that one user gets one value of each."""
    resource = node.resource
    lifetime = resource.lifetime
    if lifetime == "call":
        key = resource.key
        try:
            return made[key]
        except KeyError:
            pass
        value = made[key] = await _make(node, owners, stack, made)
        return value
    owner = owners.workflow if lifetime == "workflow" else owners.run
    if owner is None:  # (the graph's checks keep run-scoped resources out of workflow ones)
        raise WorkflowRuntimeError(f"resource {resource.name} is run-scoped: no run is here")
    return await owner.get(node, owners)


async def _make(
    node: ResourceNode,
    owners: Owners,
    stack: contextlib.AsyncExitStack[Any] | None,
    made: dict[object, Any],
) -> Any:
    """Call the factory (with its resources) and enter what it returns, if it should be."""
    resource = node.resource
    arguments = {name: await _value(inner, owners, stack, made) for name, inner in node.requires}
    value = resource.factory(**arguments)
    if inspect.isawaitable(value):
        value = await value
    if not resource.enter:
        return value
    kind = type(value)
    if hasattr(kind, "__aenter__") and hasattr(kind, "__aexit__"):
        return await _entered(resource, stack).enter_async_context(value)
    if hasattr(kind, "__enter__") and hasattr(kind, "__exit__"):
        return _entered(resource, stack).enter_context(value)
    return value


def _entered(
    resource: Resource, stack: contextlib.AsyncExitStack[Any] | None
) -> contextlib.AsyncExitStack[Any]:
    if stack is None:
        raise WorkflowRuntimeError(
            f"resource {resource.name} made a context manager for a workflow-scoped value, "
            "which needs an owner to exit it: run inside `async with workflow.open_resources():`"
            " (its end exits it), scope it per run, or pass enter=False"
        )
    return stack


@attrs.define(eq=False)
class _Shared:
    """One shared value: being made, made, or failed."""

    ready: trio.Event = attrs.field(factory=trio.Event)
    made: bool = False
    value: Any = None
    #: Why making it failed (the waiters raise it). Neither made nor failed once set: the maker
    #: was cancelled, so a waiter makes it anew.
    error: Exception | None = None
    #: The keeper's scope, cancelled to abandon the making when the owner closes.
    scope: trio.CancelScope | None = None
    #: Set by the owner: exit now. Set by the keeper: exited.
    close: trio.Event = attrs.field(factory=trio.Event)
    closed: trio.Event = attrs.field(factory=trio.Event)
    name: str = ""


@attrs.define(eq=False)
class Owner:
    """Makes each shared value once, hands it to every user, and exits them all, the last
    made first, when it closes. A value is made on its first use; users who come while it is
    being made wait for it, so its factory runs once however many ask at once.

    With a ``nursery``, each value has a keeper task there (see the module docstring); without
    one (a workflow instance with no `open_resources` block), values are made in the user's
    task and nothing that must be exited can be made."""

    nursery: trio.Nursery | None
    #: What the owner is, in messages: ``run <id> of <workflow>``, ``workflow <name>``.
    label: str
    _shared: dict[object, _Shared] = attrs.field(factory=dict)
    #: Values made and entered by keepers, in the order they were made.
    _kept: list[_Shared] = attrs.field(factory=list)
    #: What went wrong exiting them: the resource's name and the exception.
    errors: list[tuple[str, Exception]] = attrs.field(factory=list)

    async def get(self, node: ResourceNode, owners: Owners) -> Any:
        key = node.resource.key
        while True:
            shared = self._shared.get(key)
            if shared is None:
                shared = self._shared[key] = _Shared(name=node.resource.name)
                if self.nursery is None:
                    await self._make_here(key, shared, node, owners)
                else:
                    self.nursery.start_soon(
                        self._keep,
                        key,
                        shared,
                        node,
                        owners,
                        name=f"trioflow resource {shared.name}",
                    )
            await shared.ready.wait()
            if shared.made:
                return shared.value
            if shared.error is not None:
                raise shared.error

    async def _make_here(
        self, key: object, shared: _Shared, node: ResourceNode, owners: Owners
    ) -> None:
        try:
            shared.value = await _make(node, owners, None, {})
        except BaseException as exc:
            self._failed(key, shared, exc)
            raise
        shared.made = True
        shared.ready.set()

    def _failed(self, key: object, shared: _Shared, exc: BaseException) -> None:
        # Forgotten, so that the next use (a retry of the step) calls the factory again. (The
        # owner may have forgotten it already, closing while this was being abandoned.)
        if self._shared.get(key) is shared:
            del self._shared[key]
        shared.error = exc if isinstance(exc, Exception) else None
        shared.ready.set()

    async def _keep(self, key: object, shared: _Shared, node: ResourceNode, owners: Owners) -> None:
        stack = contextlib.AsyncExitStack()
        with trio.CancelScope() as scope:
            shared.scope = scope
            try:
                shared.value = await _make(node, owners, stack, {})
            except BaseException as exc:
                self._failed(key, shared, exc)
                # What was entered before it failed (its own resources) is exited now.
                await self._exit(shared, stack)
                if isinstance(exc, Exception):
                    return  # the users raise it: it is their step's failure
                raise
            shared.made = True
            self._kept.append(shared)
            shared.ready.set()
            # From here on only the owner ends it, once everything using it has unwound.
            scope.shield = True
            await shared.close.wait()
        await self._exit(shared, stack)
        shared.closed.set()

    async def _exit(self, shared: _Shared, stack: contextlib.AsyncExitStack[Any]) -> None:
        with trio.move_on_after(TEARDOWN_TIMEOUT, shield=True) as bound:
            try:
                await stack.aclose()
            except Exception as exc:
                self.errors.append((shared.name, exc))
        if bound.cancelled_caught:
            self.errors.append((shared.name, trio.TooSlowError(_too_slow(shared.name))))

    async def aclose(self) -> None:
        """Abandon the values being made, then exit those made, the last made first. Call it
        shielded, once nothing uses them any more."""
        # From now on values are made as without a nursery (a run has no users left by now; a
        # workflow's runs that outlive its block may still have some).
        self.nursery = None
        for shared in list(self._shared.values()):
            if not shared.made and shared.scope is not None:
                shared.scope.cancel()
        kept, self._kept = self._kept, []
        for shared in reversed(kept):
            shared.close.set()
            await shared.closed.wait()
        for key, shared in list(self._shared.items()):
            if shared in kept or not shared.made:
                del self._shared[key]  # exited (or never made): forgotten

    def report(self, errors: Sequence[tuple[str, Exception]] | None = None) -> None:
        """Log each teardown failure (ERROR, with its traceback)."""
        for name, exc in self.errors if errors is None else errors:
            log(
                logging.ERROR,
                "resource %s of %s failed as it was exited: %s",
                name,
                self.label,
                describe(exc),
                exc_info=exc,
            )


def workflow_owner(workflow: object) -> Owner:
    """The owner of ``workflow``'s workflow-scoped values (made on first use)."""
    owner: Owner | None = getattr(workflow, _WORKFLOW_OWNER, None)
    if owner is None:
        name = getattr(workflow, "workflow_name", type(workflow).__qualname__)
        owner = Owner(None, f"workflow {name}")
        setattr(workflow, _WORKFLOW_OWNER, owner)
    return owner


_WORKFLOW_OWNER = "_trioflow_resources"


def insert_values(
    method: Callable[..., Any], positions: tuple[int, ...], values: tuple[Any, ...], *args: Any
) -> Any:
    """``method`` called with ``args`` and, at ``positions`` (ascending), ``values``."""
    arguments = list(args)
    for position, value in zip(positions, values, strict=True):
        arguments.insert(position, value)
    return method(*arguments)


def with_values(
    method: Callable[..., Any], positions: tuple[int, ...], values: tuple[Any, ...]
) -> Callable[..., Any]:
    return functools.partial(insert_values, method, positions, values)


class ResourceBlock:
    """The ``async with`` of `Workflow.open_resources`: the owner of a workflow's shared
    values gets a nursery for their keepers until the block ends, which exits them.

    A class, not ``@asynccontextmanager`` around a nursery: the block's own exception must
    reach the caller as itself, never in the group a strict nursery would make of it, so the
    nursery only ever sees a body that ended cleanly (as `Workflow.start`'s block does).
    """

    def __init__(self, workflow: object) -> None:
        self._owner = workflow_owner(workflow)
        self._nursery: contextlib.AbstractAsyncContextManager[trio.Nursery] = trio.open_nursery()

    async def __aenter__(self) -> None:
        owner = self._owner
        if owner.nursery is not None:
            raise WorkflowRuntimeError(
                f"the resources of {owner.label} are open already: open them once, around "
                "every run that uses them"
            )
        owner.nursery = await self._nursery.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        body_error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        owner = self._owner
        nursery = owner.nursery
        assert nursery is not None
        # Shielded: the keepers' exits are bounded, and what they hold must be exited even
        # when the block is left by a cancellation. (The nursery's own scope is shielded, as
        # a scope opened here could not be left around the nursery's.)
        nursery.cancel_scope.shield = True
        try:
            await owner.aclose()
        finally:
            await self._nursery.__aexit__(None, None, None)
        errors, owner.errors = owner.errors, []
        if not errors:
            return
        if body_error is not None:
            owner.report(errors)
            for name, exc in errors:
                add_note(
                    body_error,
                    f"trioflow: resource {name} also failed as it was exited: {describe(exc)}",
                )
            return
        first_name, first = errors[0]
        add_note(first, f"trioflow: raised as resource {first_name} of {owner.label} was exited")
        for name, exc in errors[1:]:
            add_note(
                first, f"trioflow: resource {name} also failed as it was exited: {describe(exc)}"
            )
        raise first
