"""The flags of ``trioflow serve``, made from `ServerOptions`.

Every field of `ServerOptions` is a flag: ``--`` and its name in kebab case (or its ``flag``
metadata), parsed by its type, with its one-line ``help`` and its default as the README shows
it. A flag left out is left out of the options too, so `WorkflowApp` and `serve` apply their
own defaults (`serve` adds the name it binds to to ``allowed_hosts``).
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from collections.abc import Collection, Iterator
from typing import Any

import attrs

from .._server._options import ServerOptions, describe_default


def add_server_flags(
    parser: argparse.ArgumentParser, *, only: Collection[str] | None = None
) -> None:
    """Add a flag to ``parser`` for every field of `ServerOptions` (those named in ``only``,
    when given)."""
    for option in _options():
        if only is not None and option.name not in only:
            continue
        env = option.metadata.get("env")
        default = os.environ.get(env) if env else None
        flag = option.metadata.get("flag", "--" + option.name.replace("_", "-"))
        parser.add_argument(
            flag,
            dest=option.name,
            default=default or argparse.SUPPRESS,
            help=_help(option, env).replace("%", "%%"),
            **_parsing(option, flag),
        )


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `ServerOptions` fields given on the command line (or by the environment)."""
    return {option.name: getattr(args, option.name) for option in _options() if option.name in args}


def _options() -> Iterator[attrs.Attribute[Any]]:
    # The fields' types are strings under `from __future__ import annotations`.
    yield from attrs.fields(attrs.resolve_types(ServerOptions))


def _help(option: attrs.Attribute[Any], env: str | None) -> str:
    default = describe_default(option)
    if env:
        default = f"${env}, else {default}"
    repeat = "; repeat the flag for more" if typing.get_origin(option.type) is tuple else ""
    return f"{option.metadata['help']} (default: {default}{repeat})"


def _parsing(option: attrs.Attribute[Any], flag: str) -> dict[str, Any]:
    """How argparse reads the option: ``T | None`` as ``T``, a tuple as a flag given once per
    item."""
    annotation: Any = option.type  # a type, a union or a generic alias
    if annotation is bool:  # a switch: off unless given
        return {"action": "store_true"}
    if typing.get_origin(annotation) is tuple:
        (item, _) = typing.get_args(annotation)
        metavar = flag.rpartition("-")[2].upper()
        return {"type": item, "action": "append", "metavar": metavar}
    if isinstance(annotation, types.UnionType):
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    unit = option.metadata.get("unit", "")
    metavar = _METAVARS.get(unit) or ("TEXT" if annotation is str else "N")
    return {"type": annotation, "metavar": metavar}


_METAVARS = {"s": "SECONDS", "ms": "MS", "bytes": "BYTES"}
