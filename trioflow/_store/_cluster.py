"""What lets several processes share one PostgreSQL store (`PostgresStore`): the SQL of leases,
claims and control, and the notifications that wake other processes. The design, and the
measurements behind it, are ``DURABILITY.md``'s §3.4 to §3.7 and §11.

- **Ownership.** A run executes in one process at a time, its *owner* (``tf_runs.owner``, the
  node id). Ownership is a lease: ``lease_until``, on the database's clock (no two machines need
  to agree on the time), renewed by the owner every third of its length (`HEARTBEAT`). Every
  claim adds one to the run's ``epoch``.
- **Fencing.** Every commit of a run's writes checks, in the same transaction, that its row
  still has the owner and epoch the writer claimed it with (`FENCE`, an ``UPDATE``: it waits
  for a claim under way and reads the row it left). A process that lost a run (it was paused
  past its lease, cut off) has its late writes dropped, and stops the run.
- **Liveness.** Each process holds an advisory lock of its own (``owner_key``) for as long as
  its listening connection lives. A run whose owner's lock is free (its process died) is
  claimable at once, without waiting for its lease: the lock goes with the process's session.
  A paused process keeps its lock, so its runs wait for its lease to run out, which is right: it
  may wake up. The lease, not the lock, is what is safe; the lock only makes a crash quick.
- **Claims** (`CLAIM`): runs not owned, or owned by a dead process or an expired lease, of a
  workflow this process serves with the same graph (``fingerprint``), oldest first, ``FOR
  UPDATE SKIP LOCKED`` so that concurrent claimers never take the same run.
- **Control from anywhere.** An event sent to a run (a human's answer) is a row of
  ``tf_inbox``; a cancel sets ``cancel_requested``. Both are committed before the request is
  answered, and its owner is woken to act on them; an owner that died leaves them to the next.
- **Notifications** are hints, never the only way to learn anything: ``tf_queue`` (a run to
  claim), ``tf_control`` (an answer or a cancel), ``tf_events`` (a commit of these runs'
  events). Whoever waits for one also polls (`POLL`), so a lost notification costs latency,
  never events.
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("trioflow.store")

#: The first key of the advisory locks that say a process is alive (its second key is the
#: process's ``owner_key``): ``classid`` in ``pg_locks``.
LIVENESS = 0x7466
#: The key of the lock held while a process checks a database and creates its tables.
CREATING = 0x7467
#: Seconds between looks at the database for what a notification would have said.
POLL = 1.0
#: The notification channels.
QUEUE, CONTROL, EVENTS = "tf_queue", "tf_control", "tf_events"
#: The longest payload of a notification (PostgreSQL's limit is 8000 bytes); a longer list of
#: runs is sent as ``*``: every run (followers poll anyway).
_PAYLOAD_MAX = 7000

_CLAIM = """
WITH live AS (
    SELECT objid FROM pg_locks
    WHERE locktype = 'advisory' AND classid = {liveness} AND objsubid = 2 AND granted
), claimable AS (
    SELECT run_id FROM tf_runs
    WHERE status = 'running'
      AND (owner IS NULL OR lease_until < clock_timestamp()
           OR owner_key::oid NOT IN (SELECT objid FROM live))
      AND (workflow, fingerprint) {served} (
          SELECT * FROM unnest(%(workflows)s::text[], %(graphs)s::text[])){waited}
      AND (cancel_requested OR NOT %(cancelled_only)s)
      AND NOT run_id = ANY(%(held)s::text[])
    ORDER BY number
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE tf_runs r SET owner = %(node)s, owner_key = %(key)s, epoch = r.epoch + 1,
    lease_until = clock_timestamp() + %(lease)s * interval '1 second'
FROM claimable c WHERE r.run_id = c.run_id
RETURNING r.run_id, r.epoch
"""
#: Claim up to a number of runs for this process (see the module). A run waiting to be
#: claimed has the time it began to wait as its ``lease_until``.
CLAIM = _CLAIM.format(liveness=LIVENESS, served="IN", waited="")
#: Claim runs of workflows this process does not serve (or with another graph) that have
#: waited ``grace`` seconds for a process that does: to fail them, saying so.
CLAIM_UNSERVED = _CLAIM.format(
    liveness=LIVENESS,
    served="NOT IN",
    waited="\n      AND lease_until < clock_timestamp() - %(grace)s * interval '1 second'",
)

#: Renew the leases this process holds; returns the runs still its own. (Rows are locked in
#: the order of their ids, as `FENCE` locks them: the two never wait for each other in turn.)
HEARTBEAT = """
WITH mine AS (
    SELECT r.run_id FROM tf_runs r
    JOIN unnest(%(runs)s::text[], %(epochs)s::int[]) AS o(run_id, epoch)
      ON r.run_id = o.run_id AND r.epoch = o.epoch
    WHERE r.owner = %(node)s
    ORDER BY r.run_id
    FOR UPDATE OF r
)
UPDATE tf_runs r SET lease_until = clock_timestamp() + %(lease)s * interval '1 second'
FROM mine WHERE r.run_id = mine.run_id
RETURNING r.run_id
"""

#: In a commit, before its writes: which of its runs this process still owns (the others'
#: writes are dropped), and each run's last committed seq. Locking a row waits for a claim
#: under way and reads the row it left: a claim between the check and the commit is seen.
FENCE = """
WITH mine AS (
    SELECT r.run_id, o.seq FROM tf_runs r
    JOIN unnest(%(runs)s::text[], %(epochs)s::int[], %(seqs)s::bigint[]) AS o(run_id, epoch, seq)
      ON r.run_id = o.run_id AND r.epoch = o.epoch
    WHERE r.owner = %(node)s
    ORDER BY r.run_id
    FOR UPDATE OF r
)
UPDATE tf_runs r SET last_seq = greatest(r.last_seq, mine.seq)
FROM mine WHERE r.run_id = mine.run_id
RETURNING r.run_id
"""

#: Give up the runs this process holds (it is stopping): claimable at once by another.
RELEASE = """
UPDATE tf_runs r SET owner = NULL, owner_key = NULL, lease_until = clock_timestamp()
FROM unnest(%(runs)s::text[], %(epochs)s::int[]) AS o(run_id, epoch)
WHERE r.run_id = o.run_id AND r.epoch = o.epoch AND r.status = 'running'
"""

#: An event sent to a running run: its inbox row's seq (none: the run is not running).
SEND = """
INSERT INTO tf_inbox (run_id, body)
SELECT run_id, %(body)s FROM tf_runs WHERE run_id = %(run)s AND status = 'running'
RETURNING seq
"""

#: A cancel of a running run: its owner, if it has one (no row: it is not running).
CANCEL = """
UPDATE tf_runs SET cancel_requested = TRUE WHERE run_id = %(run)s AND status = 'running'
RETURNING owner
"""

#: The events sent to these runs and not yet taken, in the order they were sent.
INBOX = """
SELECT seq, run_id, body FROM tf_inbox WHERE run_id = ANY(%(runs)s::text[]) AND NOT taken
ORDER BY seq
"""

#: Which of these runs were asked to cancel.
CANCELS = """
SELECT run_id FROM tf_runs WHERE run_id = ANY(%(runs)s::text[]) AND cancel_requested
"""


def payload(run_ids: Iterable[str]) -> str:
    """The ``tf_events`` payload naming ``run_ids`` (``*``: too many to name)."""
    joined = ",".join(dict.fromkeys(run_ids))
    return joined if len(joined) <= _PAYLOAD_MAX else "*"


def new_owner_key() -> int:
    """A random key for this process's liveness lock (a signed 32-bit integer)."""
    return random.randint(-(2**31), 2**31 - 1)


class Signals:
    """What the notifications said, for the tasks waiting on them: a run to claim, control for
    this process's runs, commits of a run's events. Each wait also ends after ``timeout``
    seconds: a notification is a hint that may be lost."""

    def __init__(self) -> None:
        self._queue = trio.Event()
        self._control = trio.Event()
        self._commits: dict[str, trio.Event] = {}

    def heard(self, channel: str, payload: str) -> None:
        """A notification arrived on ``channel``."""
        if channel == QUEUE:
            self._queue.set()
        elif channel == CONTROL:
            self._control.set()
        elif channel == EVENTS:
            if payload == "*":
                self.everything()
                return
            commits = self._commits
            for run_id in payload.split(","):
                woken = commits.pop(run_id, None)
                if woken is not None:
                    woken.set()

    def everything(self) -> None:
        """Wake every waiter: notifications may have been missed (the listening connection
        was lost and is back)."""
        self._queue.set()
        self._control.set()
        for woken in self._commits.values():
            woken.set()
        self._commits.clear()

    def wake_claims(self) -> None:
        """This process has room for another run: look for one to claim now."""
        self._queue.set()

    def queued(self) -> trio.Event:
        """An event set once a run may be claimable (take it before looking)."""
        if self._queue.is_set():
            self._queue = trio.Event()
        return self._queue

    def controlled(self) -> trio.Event:
        """An event set once an answer or a cancel may be waiting (take it before looking)."""
        if self._control.is_set():
            self._control = trio.Event()
        return self._control

    def committed(self, run_id: str) -> trio.Event:
        """An event set once ``run_id`` may have new committed events (take it before
        looking; `forget` it after waiting)."""
        woken = self._commits.get(run_id)
        if woken is None:
            woken = self._commits[run_id] = trio.Event()
        return woken

    def forget(self, run_id: str, woken: trio.Event) -> None:
        """Nobody waits for ``woken`` (`committed`) any more: a run followed no more, or
        whose commits say nothing (a purge), leaves nothing behind."""
        if self._commits.get(run_id) is woken:
            del self._commits[run_id]


async def wait_for(event: trio.Event, timeout: float) -> None:  # noqa: ASYNC109
    """Wait for ``event``, at most ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        await event.wait()


async def listen(connection: psycopg.Connection[Any], signals: Signals) -> None:
    """Hand ``signals`` every notification ``connection`` (autocommit, used for nothing else,
    already listening) receives, until cancelled (at once: it waits on the socket in trio).

    Raises:
        psycopg.OperationalError: the connection was lost (the caller connects again).
    """
    import psycopg

    heard: collections.deque[Any] = collections.deque()
    # Notifications read with a query's answer reach the connection's handlers; those read
    # here are handed to them too, so that both arrive in one place.
    connection.add_notify_handler(heard.append)
    pgconn = connection.pgconn
    try:
        while True:
            while heard:
                notify = heard.popleft()
                signals.heard(notify.channel, notify.payload)
            await trio.lowlevel.wait_readable(pgconn.socket)
            pgconn.consume_input()
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError("the listening connection was lost")
            dispatch = pgconn.notify_handler  # to `heard`: what psycopg does with those it reads
            while (raw := pgconn.notifies()) is not None:
                if dispatch is not None:
                    dispatch(raw)
    finally:
        connection.remove_notify_handler(heard.append)
