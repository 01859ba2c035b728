"""The buffers behind `Context.collect_events`: one `Collector` per run.

Why not the obvious way. Appending the event and then, for each entry of the expected list,
scanning the buffer for the first unused match costs O(n) `isinstance` calls per entry and
per call: a fan-in of n events costs O(n^3) or worse (400 events took close to a minute).
Worse, that first-fit can miss a complete assignment: with ``[Base, Sub]`` a ``Sub`` event that
arrives first takes the ``Base`` entry, and a ``Base`` event arriving next completes nothing.

What this module does instead. Events of one class are interchangeable, since they match the
same entries. So a buffer sorts its events into *groups*, one per set of distinct expected types
that an event's class matches (a bitmask, worked out once per class), each group a queue in
arrival order. Whether one event per entry has arrived is then a bipartite matching between
events and entries, which on groups becomes a tiny max-flow problem: groups on one side, the
distinct expected types on the other, each type with room for as many events as the list names
it. The buffer keeps a maximum flow. A new event adds one unit to its group, and one search
for an augmenting path from that group (a Ford-Fulkerson step) tells whether the flow grows;
a flow as large as the list is a complete assignment, found the moment one exists.

Cost, with G the groups of a buffer (at most the distinct classes buffered) and m the distinct
expected types: O(G * m) per event, plus O(len(__mro__)) the first time a class is seen,
whatever the number of buffered events. Returning a result takes O(n * G) for the n events it
removes, and the flow of what stays buffered is rebuilt with fewer than n augmenting paths
(what stays holds no complete assignment, or it would have been returned earlier). For the lists
people write (a few unrelated types, or one type k times) G and m are small constants, so
collecting is linear in the number of events. (Each call also reads its expected list to find
the buffer, in C: that is linear in the size of the call's own argument.)

Which events a result holds. Where first-fit succeeds its answer is kept: for each entry in
list order, the oldest unused event that matches it. Only where first-fit fails although a
complete assignment exists does the result follow the flow, taking each group's oldest events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs

from .._events import Event

EventTypes = tuple[type[Event], ...]
#: The events chosen for a result, in list order, and how many each group (by mask) gave.
_Choice = tuple[list[Event], dict[int, int]]


@attrs.define(eq=False)
class Collector:
    """The collect buffers of one run: one per step and per expected list."""

    _buffers: dict[tuple[str, EventTypes], _Buffer] = attrs.field(factory=dict, init=False)

    def collect(
        self, step_name: str, event: Event, expected: Sequence[type[Event]]
    ) -> list[Event] | None:
        """Buffer ``event`` for ``step_name`` and ``expected``; once one event per entry of
        ``expected`` has arrived, return them in the order of the list and forget them.

        Matching is by `isinstance`; a type listed k times needs k events. An event that
        matches no entry is ignored, not buffered.

        Args:
            step_name: the step collecting; every step has buffers of its own.
            event: the event that just arrived.
            expected: the event types to collect, one event per entry.

        Returns:
            One event per entry of ``expected``, in its order, or None while some are missing.
            An empty ``expected`` gives ``[]`` at once.

        Raises:
            TypeError: an entry of ``expected`` is not an `Event` subclass.
        """
        key = (step_name, tuple(expected))
        if not key[1]:
            return []
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = _Buffer.for_list(key[1])
        return buffer.add(event)


@attrs.define(eq=False)
class _Group:
    """The buffered events whose classes match the same set of expected types."""

    mask: int
    #: The distinct expected types (by index) that the mask names.
    types: tuple[int, ...]
    #: (arrival number, event), oldest first, from ``events[head]`` on. A list read from a
    #: moving head rather than a deque, because results read it by index, which a deque does
    #: in linear time.
    events: list[tuple[int, Event]]
    #: For each type in ``types``: how many of this group's events the flow gives it. (A
    #: dict, not a list over all types, so that a group costs what it matches.)
    flow: dict[int, int]
    #: sum(flow): the group's events that the flow uses.
    used: int = 0
    head: int = 0

    def __len__(self) -> int:
        return len(self.events) - self.head

    def peek(self, k: int) -> tuple[int, Event]:
        """The ``k``-th oldest event (from 0) with its arrival number."""
        return self.events[self.head + k]

    def drop(self, count: int) -> None:
        """Forget the ``count`` oldest events."""
        self.head += count
        if self.head * 2 > len(self.events):  # compact, in amortised O(1) per event
            del self.events[: self.head]
            self.head = 0


@attrs.define(eq=False)
class _Buffer:
    """One buffer: the events collected for one step and one expected list."""

    #: For each list entry, in order: the index of its type among the distinct types.
    slots: tuple[int, ...]
    #: For each distinct type: how many entries name it.
    capacity: tuple[int, ...]
    #: Distinct types whose metaclass is plain `type`, by class. For them `isinstance` is
    #: membership in the event class's MRO, which costs a few dict lookups rather than one
    #: call per listed type.
    by_class: dict[type, int]
    #: The other distinct types (custom metaclasses may define `__instancecheck__`).
    checked: tuple[tuple[type, int], ...]
    masks: dict[type, int] = attrs.field(factory=dict)
    groups: dict[int, _Group] = attrs.field(factory=dict)
    #: For each distinct type: the masks of the groups able to fill it.
    containing: list[list[int]] = attrs.field(init=False)
    #: For each distinct type: the masks of the groups the flow draws from for it.
    holders: list[dict[int, None]] = attrs.field(init=False)
    #: For each distinct type: the events the flow gives it.
    load: list[int] = attrs.field(init=False)
    matched: int = 0
    arrivals: int = 0

    def __attrs_post_init__(self) -> None:
        count = len(self.capacity)
        self.containing = [[] for _ in range(count)]
        self.holders = [{} for _ in range(count)]
        self.load = [0] * count

    @classmethod
    def for_list(cls, expected: EventTypes) -> _Buffer:
        """A buffer for ``expected``, a non-empty tuple of event types."""
        index: dict[type[Event], int] = {}
        for wanted in expected:
            if not (isinstance(wanted, type) and issubclass(wanted, Event)):
                raise TypeError(f"collect_events() collects Event subclasses, got {wanted!r}")
            index.setdefault(wanted, len(index))
        slots = tuple(index[wanted] for wanted in expected)
        capacity = [0] * len(index)
        for j in slots:
            capacity[j] += 1
        return cls(
            slots=slots,
            capacity=tuple(capacity),
            by_class={t: j for t, j in index.items() if type(t) is type},
            checked=tuple((t, j) for t, j in index.items() if type(t) is not type),
        )

    def add(self, event: Event) -> list[Event] | None:
        """Buffer ``event``; return a complete collection if there now is one."""
        mask = self._mask_of(event)
        if not mask:
            return None
        group = self.groups.get(mask)
        if group is None:
            group = self._new_group(mask)
        group.events.append((self.arrivals, event))
        self.arrivals += 1
        # The flow was maximal before this event, so it can grow by this one unit at most,
        # and only along a path that starts at the event's group.
        if not self._augment(group):
            return None
        self.matched += 1
        if self.matched < len(self.slots):
            return None
        return self._take()

    def _mask_of(self, event: Event) -> int:
        cls = type(event)
        mask = self.masks.get(cls)
        if mask is None:
            mask = 0
            for klass in cls.__mro__:
                j = self.by_class.get(klass)
                if j is not None:
                    mask |= 1 << j
            for wanted, j in self.checked:
                if isinstance(event, wanted):
                    mask |= 1 << j
            self.masks[cls] = mask
        return mask

    def _new_group(self, mask: int) -> _Group:
        types = tuple(_bits(mask))
        group = _Group(mask=mask, types=types, events=[], flow=dict.fromkeys(types, 0))
        self.groups[mask] = group
        for j in types:
            self.containing[j].append(mask)
        return group

    def _augment(self, start: _Group) -> bool:
        """Give one more of ``start``'s events to the flow, moving other groups' events
        between types as needed; False if the flow cannot grow from ``start``."""
        reached_from: dict[int, _Group] = {}  # distinct type -> the group that reached it
        entered_by: dict[int, int] = {}  # group mask -> the type whose event it gives up
        frontier = [start]
        while frontier:
            following = []
            for group in frontier:
                for j in group.types:
                    if j in reached_from:
                        continue
                    reached_from[j] = group
                    if self.load[j] < self.capacity[j]:
                        self._shift(j, reached_from, entered_by)
                        return True
                    for mask in self.holders[j]:
                        if mask != start.mask and mask not in entered_by:
                            entered_by[mask] = j
                            following.append(self.groups[mask])
            frontier = following
        return False

    def _shift(
        self, free: int, reached_from: dict[int, _Group], entered_by: dict[int, int]
    ) -> None:
        """Apply the path that ends at type ``free``, which has room: each group on it gives
        one event to the type after it and takes one back from the type before it."""
        self.load[free] += 1
        j = free
        while True:
            group = reached_from[j]
            self._change_flow(group, j, +1)
            before = entered_by.get(group.mask)
            if before is None:  # the path's first group: one more of its events is used
                group.used += 1
                return
            self._change_flow(group, before, -1)
            j = before

    def _change_flow(self, group: _Group, j: int, delta: int) -> None:
        group.flow[j] += delta
        if group.flow[j]:
            self.holders[j][group.mask] = None
        else:
            del self.holders[j][group.mask]

    def _take(self) -> list[Event]:
        """Remove and return one event per entry (the flow is complete)."""
        collected, used = self._first_fit() or self._by_flow()
        for mask, count in used.items():
            # Each group gave its oldest events: the chosen ones are a prefix of its queue.
            self.groups[mask].drop(count)
        self._rebuild()
        return collected

    def _first_fit(self) -> _Choice | None:
        """For each entry in list order, the oldest unused event that matches it (what
        collect_events always returned); None if that runs dry."""
        used = dict.fromkeys(self.groups, 0)
        collected = []
        for j in self.slots:
            event = self._next_oldest(self.containing[j], used)
            if event is None:
                return None
            collected.append(event)
        return collected, used

    def _by_flow(self) -> _Choice:
        """For each entry in list order, the oldest unused event of a group that the flow
        gives that entry's type."""
        quota = {mask: dict(group.flow) for mask, group in self.groups.items()}
        used = dict.fromkeys(self.groups, 0)
        collected = []
        for j in self.slots:
            masks = [mask for mask in self.holders[j] if quota[mask][j]]
            event = self._next_oldest(masks, used, quota, j)
            assert event is not None, "a complete flow has an event for every entry"
            collected.append(event)
        return collected, used

    def _next_oldest(
        self,
        masks: list[int],
        used: dict[int, int],
        quota: dict[int, dict[int, int]] | None = None,
        j: int = 0,
    ) -> Event | None:
        """Of the next unused events of the groups ``masks``, the one that arrived first; it
        counts as used (and against the group's ``quota`` for type ``j``, if given)."""
        best: int | None = None
        best_arrival = 0
        for mask in masks:
            group = self.groups[mask]
            if used[mask] < len(group):
                arrival = group.peek(used[mask])[0]
                if best is None or arrival < best_arrival:
                    best, best_arrival = mask, arrival
        if best is None:
            return None
        if quota is not None:
            quota[best][j] -= 1
        used[best] += 1
        return self.groups[best].peek(used[best] - 1)[1]

    def _rebuild(self) -> None:
        """Drop emptied groups and find a maximum flow for what stays buffered."""
        for mask in [mask for mask, group in self.groups.items() if len(group) == 0]:
            del self.groups[mask]
            for j in _bits(mask):
                self.containing[j].remove(mask)
        self.matched = 0
        self.load = [0] * len(self.capacity)
        self.holders = [{} for _ in self.capacity]
        for group in self.groups.values():
            group.flow = dict.fromkeys(group.types, 0)
            group.used = 0
        # A group that finds no augmenting path never finds one later (Kuhn), so one pass
        # suffices; every success takes one of fewer than len(slots) units.
        for group in self.groups.values():
            while group.used < len(group) and self._augment(group):
                self.matched += 1


def _bits(mask: int) -> Iterator[int]:
    """The indexes of the bits set in ``mask``, lowest first, in O(bits set) steps."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low
