"""What the serving scenarios share on both sides of the wire: payloads, server processes, the
clock, and turning timestamps into the rate series that the plots draw.

Times cross the process boundary: each event carries ``time.perf_counter()`` taken in the
server just before the write, and the client subtracts it from its own ``perf_counter()`` at
receipt. That is only meaningful because on Linux ``perf_counter`` is ``CLOCK_MONOTONIC``, one
clock for every process on the machine (`check_shared_clock` refuses to run otherwise).
"""

from __future__ import annotations

import ctypes
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import attrs

from benchmarks._suite import ROOT

MIB = 1024 * 1024
#: Seconds a server may take to start (import, bind, lifespan) before the scenario gives up.
START_TIMEOUT = 30.0
#: Seconds a server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 5.0


def rss(pid: int) -> int:
    """The resident set size of process ``pid``, in bytes (Linux: ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def blob(size: int) -> str:
    """A fresh ``size``-byte string (hex), or "" for small events: every event gets its own
    object, as real payloads would."""
    return os.urandom((size + 1) // 2).hex()[:size] if size > 0 else ""


def check_shared_clock() -> None:
    """Refuse to compare timestamps across processes unless perf_counter is CLOCK_MONOTONIC."""
    implementation = time.get_clock_info("perf_counter").implementation
    if "CLOCK_MONOTONIC" not in implementation:
        raise RuntimeError(
            f"perf_counter is {implementation!r} here, not CLOCK_MONOTONIC: write times taken"
            " in the server cannot be compared with receipt times in the client"
        )


@attrs.frozen
class Server:
    """A server running in a child process."""

    process: subprocess.Popen[str]
    #: Its base URL, e.g. ``http://127.0.0.1:40123``.
    url: str


@contextmanager
def server_process(argv: Sequence[str], marker: str) -> Iterator[Server]:
    """Start ``argv`` in the repository root, wait for the stdout line containing ``marker``
    followed by its URL (``... marker http://127.0.0.1:PORT/ ...``), and yield it. The child is
    terminated (then killed) on every way out, and its stderr is shown if it failed to start.
    """
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            # Linux: the child gets SIGTERM if this process dies without cleaning up (the suite
            # kills a scenario that overruns its time limit), so no server is ever orphaned.
            preexec_fn=_die_with_parent,
        )
        try:
            assert process.stdout is not None
            lines: queue.Queue[str | None] = queue.Queue()
            # A thread reads every line the child prints, so a full pipe can never block it.
            reader = threading.Thread(target=_read, args=(process.stdout, lines), daemon=True)
            reader.start()
            url = _wait_for_url(lines, marker)
            if url is None:
                _stop(process)
                errors.seek(0)
                tail = errors.read()[-4000:]
                raise RuntimeError(f"{' '.join(argv)} did not start:\n{tail}")
            yield Server(process, url)
        finally:
            _stop(process)


#: While `servers_kept` is active: the servers started so far, by command line.
_kept: dict[tuple[str, ...], Server] | None = None
_kept_stack: ExitStack | None = None


@contextmanager
def servers_kept() -> Iterator[None]:
    """Within the block, `server` keeps each server it starts running for the next scenario
    with the same command line, and stops them all at the end. ``--quick`` runs its tiny
    measurements so (`benchmarks._scenario`'s batch), where a server start per scenario would
    cost more than the scenarios; a full run never does."""
    global _kept, _kept_stack
    with ExitStack() as stack:
        _kept, _kept_stack = {}, stack
        try:
            yield
        finally:
            _kept = _kept_stack = None


@contextmanager
def server(argv: Sequence[str], marker: str) -> Iterator[Server]:
    """`server_process`, or, within `servers_kept`, the one already running for ``argv``."""
    if _kept is None or _kept_stack is None:
        with server_process(argv, marker) as started:
            yield started
        return
    key = tuple(argv)
    kept = _kept.get(key)
    if kept is None or kept.process.poll() is not None:
        kept = _kept[key] = _kept_stack.enter_context(server_process(argv, marker))
    yield kept


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _read(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _wait_for_url(lines: queue.Queue[str | None], marker: str) -> str | None:
    deadline = time.monotonic() + START_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:  # the child exited
            return None
        if marker in line:
            return line.split(marker, 1)[1].split()[0].rstrip("/")
    return None


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def python(*args: str) -> list[str]:
    """``argv`` for a Python child with this interpreter (``-u``: its lines arrive at once)."""
    return [sys.executable, "-u", *args]


class RssSampler:
    """Samples another process's RSS in a thread (every ``every`` seconds) while in the block."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._every = every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.samples: list[tuple[float, int]] = []  # (perf_counter, bytes)

    def rss(self) -> int:
        return int(self._process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self.samples.append((time.perf_counter(), self.rss()))
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._done.wait(self._every) and self._sample():
            pass

    def _sample(self) -> bool:
        try:
            self.samples.append((time.perf_counter(), self.rss()))
        except Exception:  # the child has gone: the scenario will say why
            return False
        return True


def rate_series(times: Sequence[float], since: float, bin_seconds: float) -> list[list[float]]:
    """``[[t, events_per_s], ...]``: how many of ``times`` fall in each bin, as a rate, with
    ``t`` the bin's middle in seconds after ``since``."""
    if not times:
        return []
    counts: dict[int, int] = {}
    for t in times:
        k = math.floor((t - since) / bin_seconds)
        counts[k] = counts.get(k, 0) + 1
    last = max(counts)
    return [
        [round((k + 0.5) * bin_seconds, 4), round(counts.get(k, 0) / bin_seconds, 1)]
        for k in range(min(counts), last + 1)
    ]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]
