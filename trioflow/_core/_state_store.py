"""`Store`: the state the steps of one run share, a `DictState` or the class they name.

A workflow whose steps annotate ``ctx: Context[MyState]`` has typed state: one ``MyState`` per
run (an attrs class, a dataclass, or a pydantic model if pydantic is installed), made with no
arguments. Without such an annotation the state is a `DictState`, addressed by key as before.
Paths are dotted (``"user.profile.name"``): attributes of objects, keys of mappings, indexes
of lists.

Why a lock: ``n = await get("n"); await set("n", n + 1)`` has a checkpoint between the read and
the write, so workers doing it at once lose updates. `Store.edit_state` holds the store's
`trio.Lock` for the whole read-modify-write, and every writer (`set`, `set_state`, `clear`)
waits for it, so no write lands in the middle of an edit. Reads take no lock: an edit works on
a copy that is installed as its block ends, so a read sees the state as the last write left
it, never half an edit.

Each write is one synchronous hook (`Store._set_now`, `_replace_now`, `_begin_edit` and
`_end_edit`), run with the lock free or held by the writer: a durable run's store
(`trioflow._durable`) overrides them to journal each write before it installs it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Generic, overload

import attrs
import trio

from .._errors import WorkflowRuntimeError
from .._typevar import TypeVar
from ._values import json_problem


class DictState(dict[str, Any]):
    """The state of a run whose steps name no state type: a dict whose keys read and write
    as attributes too (``state["n"]`` or ``state.n``), like LlamaIndex's ``DictState``.
    Mapping methods win over keys of the same name (``state.items`` is the method)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"DictState({dict.__repr__(self)})"


#: The state type of a store. A plain ``Context`` is ``Context[Any]`` to type checkers (its
#: state is a `DictState` at run time): code annotated ``ctx: Context`` before typed state
#: existed takes any context, typed or not, as it did.
StateT = TypeVar("StateT", default=Any)

_MISSING: Any = object()


@attrs.frozen
class StateClass:
    """How a store makes, copies, checks and converts the states of one class."""

    cls: type[Any]
    #: "dict" (`DictState`), "attrs", "dataclass" or "pydantic".
    kind: str

    @property
    def typed(self) -> bool:
        return self.kind != "dict"

    @property
    def name(self) -> str:
        """The qualified name a saved context records."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"

    def new(self) -> Any:
        return self.cls()

    def fields(self) -> tuple[str, ...]:
        if self.kind == "attrs":
            return tuple(a.name for a in attrs.fields(self.cls))
        if self.kind == "dataclass":
            return tuple(f.name for f in dataclasses.fields(self.cls))
        if self.kind == "pydantic":
            return tuple(self.cls.model_fields)
        return ()

    def copy(self, state: Any) -> Any:
        """A deep copy of ``state``, sharing what cannot be copied (a client, a lock): a
        state may hold live objects in memory, and copying must not fail on them."""
        memo: dict[int, Any] = {}
        if self.kind == "dict":
            return DictState({k: _copy_or_share(v, memo) for k, v in state.items()})
        try:
            return copy.deepcopy(state, memo)
        except Exception:
            pass
        duplicate = copy.copy(state)
        memo = {}
        for name in self.fields():
            # (object.__setattr__: a field is copied into place, not assigned through hooks)
            object.__setattr__(duplicate, name, _copy_or_share(getattr(state, name), memo))
        return duplicate

    def check_settable(self, state: object) -> None:
        """Raises TypeError: `Store.set_state` takes no ``state``: it is not of this class,
        nor of a base class of it (a `DictState` takes any mapping with str keys)."""
        if self.kind == "dict":
            if not (isinstance(state, Mapping) and all(type(k) is str for k in state)):
                raise TypeError(
                    f"set_state() takes a DictState (or a dict with str keys), got {state!r}"
                )
        elif type(state) not in self.cls.__mro__ or type(state) is object:
            raise TypeError(
                f"set_state() takes a {self.cls.__qualname__}, the state type the workflow's "
                f"steps name (or one of its base classes), got {type(state).__qualname__}"
            )

    def accept(self, state: object, current: Any) -> Any:
        """What `Store.set_state` installs for ``state`` (checked by `check_settable`), the
        state being ``current``: a copy, so that the caller's object does not change the
        run's state behind the store's back; of a base class's state, ``current`` with the
        fields that one has replaced (as LlamaIndex merges)."""
        if self.kind == "dict" or type(state) is self.cls:
            return self.copy(state)
        part = state_class(type(state))
        given = part.copy(state)
        merged = self.copy(current)
        for name in part.fields():
            self.assign(merged, name, getattr(given, name))
        return merged

    def check_field(self, name: str) -> None:
        """Raises ValueError: a typed state has no field ``name`` (a `DictState` takes any)."""
        if self.kind != "dict" and name not in self.fields():
            raise ValueError(
                f"{self.cls.__qualname__} has no field {name!r} (its fields: "
                f"{', '.join(self.fields()) or 'none'})"
            )

    def assign(self, state: Any, name: str, value: Any) -> None:
        """Set ``state``'s top-level ``name`` (a field, or a key of a `DictState`).

        Raises:
            ValueError: a typed state has no field ``name``.
        """
        if self.kind == "dict":
            state[name] = value
            return
        self.check_field(name)
        setattr(state, name, value)

    def to_json(self, state: Any) -> dict[str, Any]:
        """``state`` as JSON values, a dict of its fields (of its keys, for a `DictState`).

        Raises:
            TypeError: it holds something that is no JSON value (the message says where).
        """
        if self.kind == "dict":
            tree = dict(state)
        elif self.kind == "pydantic":
            try:
                tree = state.model_dump(mode="json")
            except Exception as exc:
                raise TypeError(
                    f"{self.cls.__qualname__} cannot be written as JSON: {exc}"
                ) from None
        else:
            # A tuple field is written as a list: its annotation reads it back as a tuple.
            tree = _lists(_converter().unstructure(state, self.cls))
        noun = "store value" if self.kind == "dict" else "state field"
        for key, value in tree.items():
            problem = json_problem(value)
            if problem is not None:
                where, what = problem
                raise TypeError(f"{noun} {key!r}{where} holds {what}")
        return tree

    def from_json(self, tree: Mapping[str, Any]) -> Any:
        """The state `to_json` wrote as ``tree``.

        Raises:
            ValueError: ``tree`` does not fit the class (the message says why).
        """
        if self.kind == "dict":
            return DictState(tree)
        if not tree:
            return self.new()
        try:
            if self.kind == "pydantic":
                return self.cls.model_validate(dict(tree))
            return _converter().structure(dict(tree), self.cls)
        except Exception as exc:
            raise ValueError(f"{dict(tree)!r:.200} does not fit {self.name}: {_why(exc)}") from None


DICT_STATE = StateClass(DictState, "dict")


def state_class(cls: object) -> StateClass:
    """The `StateClass` of a state type.

    Raises:
        TypeError: ``cls`` is no attrs class, dataclass or pydantic model.
    """
    if cls is DictState or cls is dict:
        return DICT_STATE
    if isinstance(cls, type):
        if attrs.has(cls):
            return StateClass(cls, "attrs")
        if dataclasses.is_dataclass(cls):
            return StateClass(cls, "dataclass")
        if _is_pydantic_model(cls):
            return StateClass(cls, "pydantic")
    raise TypeError(f"a state type is an attrs class, a dataclass or a pydantic model, not {cls!r}")


def state_problem(cls: object) -> str | None:
    """Why ``cls`` cannot be a workflow's state type (None if it can): for `graph_of`."""
    try:
        found = state_class(cls)
    except TypeError as exc:
        return str(exc)
    name = found.cls.__qualname__
    try:
        state = found.new()
    except Exception as exc:
        return (
            f"state type {name} cannot be made with no arguments ({type(exc).__name__}: "
            f"{exc}): a run starts from {name}(), so give each field a default"
        )
    fields = found.fields()
    if fields:
        try:  # a state changes in place (set, edit_state): a frozen class cannot
            setattr(state, fields[0], getattr(state, fields[0]))
        except Exception:
            return f"state type {name} is frozen: a run's state changes in place"
    return None


def _is_pydantic_model(cls: type) -> bool:
    # pydantic is optional: if nothing imported it, no class can be a model of it.
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and issubclass(cls, pydantic.BaseModel)


@functools.cache
def _converter() -> Any:
    # cattrs is loaded only by what writes or reads a typed state as JSON: `import trioflow`
    # stays as light as it was.
    import cattrs.preconf.json

    return cattrs.preconf.json.make_converter()


def _why(exc: Exception) -> str:
    if isinstance(exc, ExceptionGroup):  # cattrs' detailed validation: one line per field
        import cattrs

        return "; ".join(cattrs.transform_error(exc))
    return f"{type(exc).__name__}: {exc}"


def _lists(value: Any) -> Any:
    kind = type(value)
    if kind is tuple or kind is list:
        return [_lists(item) for item in value]
    if kind is dict:
        return {k: _lists(v) for k, v in value.items()}
    return value


def _copy_or_share(value: Any, memo: dict[int, Any]) -> Any:
    try:
        return copy.deepcopy(value, memo)
    except Exception:
        memo[id(value)] = value
        return value


# -- dotted paths --


def split_path(path: object) -> list[str]:
    """The names of a dotted path.

    Raises:
        TypeError: it is no str.
        ValueError: it is empty, or has an empty name (``"a..b"``).
    """
    if type(path) is not str:
        raise TypeError(f"a store path is a str (names joined by dots), got {path!r}")
    names = path.split(".")
    if not all(names):
        raise ValueError(f"a store path is names joined by dots, got {path!r}")
    return names


def _step_into(obj: Any, name: str) -> Any:
    """What ``name`` names in ``obj`` (a key, a list index, an attribute), or `_MISSING`."""
    if isinstance(obj, Mapping):
        return obj.get(name, _MISSING)
    if isinstance(obj, list | tuple):
        try:
            return obj[int(name)]
        except (ValueError, IndexError):
            return _MISSING
    if name.startswith("_"):  # private attributes are no part of a state's data
        return _MISSING
    return getattr(obj, name, _MISSING)


def get_path(state: Any, names: list[str], default: Any) -> Any:
    """The value at ``names`` in ``state``, or ``default`` where the path leads nowhere."""
    value = state
    for name in names:
        value = _step_into(value, name)
        if value is _MISSING:
            return default
    return value


def replaced(obj: Any, names: list[str], value: Any) -> Any:
    """``obj`` with the value at ``names`` replaced by ``value``: copies of the containers on
    the path (a new dict where the path leads nowhere), everything else shared. Copying
    rather than changing in place keeps a failed write from leaving half a change, and keeps
    what a reader was given as it was.

    Raises:
        ValueError: a container on the path cannot take the name (a list index out of
            range, an object without that field).
    """
    if not names:
        return value
    name, rest = names[0], names[1:]
    if obj is _MISSING:
        return {name: replaced(_MISSING, rest, value)}
    new = replaced(_step_into(obj, name), rest, value)
    if isinstance(obj, Mapping):
        duplicate: Any = dict(obj) if type(obj) is dict else copy.copy(obj)
        duplicate[name] = new
        return duplicate
    if isinstance(obj, list | tuple):
        items = list(obj)
        try:
            items[int(name)] = new
        except (ValueError, IndexError):
            raise ValueError(f"{name!r} is no index of a list of {len(items)}") from None
        return items if isinstance(obj, list) else type(obj)(items)
    try:
        found = state_class(type(obj))
    except TypeError:
        raise ValueError(f"cannot set {name!r} in a {type(obj).__qualname__}") from None
    duplicate = copy.copy(obj)
    try:
        found.assign(duplicate, name, new)
    except AttributeError:  # attrs' FrozenInstanceError, a frozen dataclass's, pydantic's
        raise ValueError(
            f"cannot set {name!r} in a frozen {type(obj).__qualname__}: set the whole of it "
            "to a new one"
        ) from None
    return duplicate


class Store(Generic[StateT]):
    """The state shared by the steps of one run (`Context.store`): a `DictState`, or one
    instance of the class the steps name (``ctx: Context[MyState]``).

    `get` and `set` address it by dotted path and keep values by reference. `get_state`
    returns a copy, and `edit_state` changes it atomically: writers wait for an edit under
    way, so no update is lost. Every async method is a checkpoint.
    """

    @overload
    def __init__(self: Store[DictState]) -> None: ...
    @overload
    def __init__(self, state_type: type[StateT]) -> None: ...
    def __init__(self, state_type: type[Any] = DictState) -> None:
        """A store of a new state of ``state_type`` (a run's is made by its context)."""
        self._start(state_class(state_type))

    def _start(self, found: StateClass) -> None:
        self._class = found
        self._state: Any = found.new()
        #: Made by the first `edit_state` (the only one that needs it): a run that never
        #: edits pays nothing for it.
        self._lock: trio.Lock | None = None

    @classmethod
    def _of(cls, found: StateClass) -> Store[Any]:
        store = cls.__new__(cls)
        store._start(found)
        return store

    @property
    def state_type(self) -> type[StateT]:
        """The class of the state: `DictState`, or the one the workflow's steps name."""
        cls: type[StateT] = self._class.cls
        return cls

    async def get(self, path: str, default: Any = None) -> Any:
        """The value at ``path`` (a key, or a dotted path: ``"user.name"``, ``"items.0"``),
        or ``default`` where there is none. The value itself, not a copy."""
        await trio.lowlevel.checkpoint()
        state = self._state
        if type(path) is str and path and "." not in path and type(state) is DictState:
            return state.get(path, default)  # the common case, as fast as it was
        return get_path(state, split_path(path), default)

    async def set(self, path: str, value: Any) -> None:
        """Put ``value`` at ``path``, making dicts where the path leads nowhere. A typed
        state's top-level name must be one of its fields.

        Raises:
            ValueError: the path does not fit the state.
            WorkflowRuntimeError: called inside this task's own `edit_state` block.
        """
        names = split_path(path)
        await trio.lowlevel.checkpoint()
        lock = self._lock
        if lock is not None and lock.locked():
            self._refuse_nested("set")
            async with lock:
                self._set_now(names, value)
        else:  # nobody edits: nothing can come between this check and the write
            self._set_now(names, value)

    async def get_state(self) -> StateT:
        """A copy of the state: changing it changes nothing in the run (use `edit_state`,
        `set_state` or `set` for that)."""
        await trio.lowlevel.checkpoint()
        state: StateT = self._class.copy(self._state)
        return state

    async def set_state(self, state: StateT) -> None:
        """Replace the state with (a copy of) ``state``; a state of a base class of the state
        type (a base workflow's steps name) replaces the fields it has, and keeps the others.

        Raises:
            TypeError: ``state`` is not of the state type, nor of a base class of it.
            WorkflowRuntimeError: called inside this task's own `edit_state` block.
        """
        await trio.lowlevel.checkpoint()
        self._class.check_settable(state)
        await self._replace(lambda: self._class.accept(state, self._state), "set_state")

    async def clear(self) -> None:
        """Reset the state to a new default one (``MyState()``, or an empty `DictState`)."""
        await trio.lowlevel.checkpoint()
        await self._replace(self._class.new, "clear")

    async def _replace(self, make: Callable[[], Any], what: str) -> None:
        """Replace the state with what ``make()`` returns, made once other edits are done."""
        lock = self._lock
        if lock is not None and lock.locked():
            self._refuse_nested(what)
            async with lock:
                self._replace_now(make())
        else:
            self._replace_now(make())

    @asynccontextmanager
    async def edit_state(self) -> AsyncIterator[StateT]:
        """``async with ctx.store.edit_state() as state:`` change ``state`` in place; it
        becomes the run's state as the block ends. The block has the state to itself: other
        edits and writes wait for it (reads do not: they see the state before the edit).
        An exception out of the block discards the edit.

        Raises:
            WorkflowRuntimeError: called inside this task's own `edit_state` block.
        """
        lock = self._lock
        if lock is None:
            lock = self._lock = trio.Lock()
        else:
            self._refuse_nested("edit_state")
        async with lock:
            draft, token = self._begin_edit()
            yield draft
            self._end_edit(draft, token)

    def _refuse_nested(self, what: str) -> None:
        lock = self._lock
        if lock is not None and lock.statistics().owner is trio.lowlevel.current_task():
            raise WorkflowRuntimeError(
                f"ctx.store.{what}() inside an edit_state() block of the same step would "
                "wait for that block to end: change the state the block gives instead"
            )

    # -- the writes, each synchronous: a durable store records them first --

    def _set_now(self, names: list[str], value: Any) -> None:
        name, new = self._new_value(names, value)
        self._class.assign(self._state, name, new)

    def _new_value(self, names: list[str], value: Any) -> tuple[str, Any]:
        """The top-level name ``names`` starts with, and the value it gets.

        Raises:
            ValueError: the path does not fit the state.
        """
        name = names[0]
        try:
            self._class.check_field(name)
            if len(names) == 1:
                return name, value
            return name, replaced(_step_into(self._state, name), names[1:], value)
        except ValueError as exc:
            raise ValueError(f"ctx.store.set({'.'.join(names)!r}, ...): {exc}") from None

    def _replace_now(self, state: Any) -> None:
        self._state = state

    def _begin_edit(self) -> tuple[Any, object]:
        """The draft an edit changes, and what `_end_edit` needs to install it."""
        return self._class.copy(self._state), None

    def _end_edit(self, draft: Any, token: object) -> None:
        self._state = draft

    # -- for `Context`: carrying the state between contexts, saving it --

    def _adopt(self, other: Store[Any]) -> None:
        """Take (a copy of) the state ``other`` holds: a durable run's, as it ends."""
        self._state = self._class.copy(other._state)

    def _load(self, tree: Mapping[str, Any], saved_type: object) -> None:
        """Take the state `StateClass.to_json` wrote as ``tree`` (saved with ``saved_type``,
        the name of its class, or None).

        Raises:
            ValueError: it was saved for another state type, or does not fit this one.
        """
        found = self._class
        if saved_type is not None and saved_type != found.name:
            here = found.name if found.typed else "untyped (a DictState)"
            raise ValueError(f"it holds a state of type {saved_type!r}; this workflow's is {here}")
        self._state = found.from_json(tree)
