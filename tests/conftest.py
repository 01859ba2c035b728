"""Hypothesis profiles for the property tests (test_properties, test_fault_injection).

Every profile checks the same properties on derandomized examples (the same ones on every run:
no flakiness, no example database); they differ only in how many examples each property gets.
``max_examples`` is the base figure; the tests that need more scale it (e.g. 5x for
test_run_invariants, 2.5x for the fault-injection properties).

- ``dev`` (the default here): 200, the thorough local run;
- ``ci`` (loaded under ``CI=true``, as CI runs; any value but "", 0, false or no counts): 50,
  to keep the suite within its budget (pytest in under 3 minutes on a 2-core machine);
- ``soak``: 1,000, for a long hunt after a change to the runtime.

``HYPOTHESIS_PROFILE=NAME`` (or pytest's ``--hypothesis-profile NAME``) picks one explicitly.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# On hypothesis's own defaults, whatever profile it loaded by itself (it loads "ci" under CI).
_SAME_EXAMPLES_EVERY_RUN = settings(
    settings.get_profile("default"),
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
)

settings.register_profile("dev", _SAME_EXAMPLES_EVERY_RUN, max_examples=200)
# too_slow: a loaded CI machine may generate examples slowly; that says nothing about the code.
settings.register_profile(
    "ci",
    _SAME_EXAMPLES_EVERY_RUN,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("soak", _SAME_EXAMPLES_EVERY_RUN, max_examples=1000)


def _profile() -> str:
    if chosen := os.environ.get("HYPOTHESIS_PROFILE"):
        return chosen
    in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return "ci" if in_ci else "dev"


settings.load_profile(_profile())


def pytest_report_header() -> str:
    chosen = settings.get_current_profile_name()
    base = settings.get_profile(chosen).max_examples
    return f"hypothesis profile {chosen!r}: max_examples={base} base"
