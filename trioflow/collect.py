"""How a step collects the events of a fan-out: the markers of a ``list[E]`` parameter.

A step that returns ``list[E]`` fans out: each event of the list is routed on its own, and the
work that follows from them, step after step, is one *stream*. A step that takes a ``list[R]``
parameter collects: it runs once per stream, with the ``R`` events made inside it::

    @step
    async def split(self, ev: StartEvent) -> list[Chunk]:
        return [Chunk(text=t) for t in ev.texts]

    @step
    async def summarize(self, ev: Chunk) -> Summary: ...

    @step
    async def join(self, summaries: list[Summary]) -> StopEvent: ...

When it runs is said with ``Annotated``: ``Annotated[list[R], Collect()]`` (the same as a bare
``list[R]``: once the stream is done, with every ``R`` in the order they came), or
``Annotated[list[R], Collect(Take(n))]`` (at the ``n``-th ``R``, with the first ``n``; the rest
of the stream runs on, but its ``R`` events go nowhere). ``Take(n)`` and ``Collect(n)`` alone
say the same. The names are LlamaIndex's (``workflows.collect``).
"""

from __future__ import annotations

import attrs

__all__ = ["All", "Cardinality", "Collect", "Take"]


@attrs.frozen
class Cardinality:
    """When a collecting step runs, and with which events: `All` or `Take`."""


@attrs.frozen
class All(Cardinality):
    """Once the stream is done, with every event collected (the default)."""


def _check_n(_: object, __: attrs.Attribute[int], n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Take(n) takes an int n >= 1, got {n!r}")


@attrs.frozen
class Take(Cardinality):
    """At the ``n``-th event collected, with the first ``n``; should the stream end before,
    once it ends, with those that came."""

    n: int = attrs.field(validator=_check_n)


def _cardinality(value: Cardinality | int) -> Cardinality:
    if isinstance(value, Cardinality) and type(value) is not Cardinality:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Take(value)
    raise TypeError(f"Collect() takes All(), Take(n) or an int n, got {value!r}")


@attrs.frozen
class Collect:
    """The marker of a collecting ``list[E]`` parameter (inside ``Annotated``).

    Args:
        cardinality: `All` (the default), `Take`, or an int ``n`` for ``Take(n)``.
    """

    cardinality: Cardinality = attrs.field(factory=All, converter=_cardinality)

    @property
    def take(self) -> int | None:
        """How many events release the step early (`Take`), or None (`All`)."""
        return self.cardinality.n if isinstance(self.cardinality, Take) else None
