"""`TypeVar` with a default (PEP 696), without depending on typing_extensions at run time.

``class MyFlow(Workflow)`` must keep meaning what it meant before `Workflow` became generic:
a workflow whose result is `Any`, with no complaint from a strict type checker about a missing
type argument. That takes a type variable with a default, which `typing.TypeVar` accepts from
Python 3.13 on. Type checkers read `typing_extensions` from the stubs they ship, so importing
it under ``TYPE_CHECKING`` costs nothing; at run time before 3.13 the default is dropped, which
changes nothing but the type variable's ``__default__`` (nothing in trioflow looks at it).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import TypeVar as TypeVar
elif sys.version_info >= (3, 13):
    from typing import TypeVar as TypeVar
else:
    import typing

    def TypeVar(name, *constraints, default=None, **kwargs):
        var = typing.TypeVar(name, *constraints, **kwargs)
        var.__module__ = sys._getframe(1).f_globals["__name__"]  # the caller's, as typing does
        return var
