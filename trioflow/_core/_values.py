"""What a durable run or a saved context can hold: JSON values, checked as they are."""

from __future__ import annotations

import math
from typing import Any


def json_problem(value: Any, where: str = "") -> tuple[str, str] | None:
    """Where in ``value`` something is that is no JSON value, and what it is (None if it is
    all JSON values: None, bool, int, finite float, str, list, dict with str keys); ``where``
    is a path like ``[0]['name']``."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return None
    if kind is float:
        return None if math.isfinite(value) else (where, repr(value))
    if kind is list:
        for index, item in enumerate(value):
            found = json_problem(item, f"{where}[{index}]")
            if found is not None:
                return found
        return None
    if kind is dict:
        for name, item in value.items():
            if type(name) is not str:
                return (where, f"the key {name!r}, which is no str")
            found = json_problem(item, f"{where}[{name!r}]")
            if found is not None:
                return found
        return None
    return (where, f"a {kind.__name__}")
