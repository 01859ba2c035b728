"""The PostgreSQL the store tests run against: ``$TRIOFLOW_TEST_POSTGRES``, a cluster's URL
(`.ci/run` starts a throwaway one and sets it). Without it the tests are skipped, except under
``CI=true``, where they fail: CI must run them (the rule of the dashboard's Chromium)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

URL_VARIABLE = "TRIOFLOW_TEST_POSTGRES"


def require_postgres() -> str:
    """The cluster's URL; without one fail on CI and skip elsewhere."""
    url = os.environ.get(URL_VARIABLE)
    if url:
        return url
    reason = f"${URL_VARIABLE} is not set (.ci/run starts a throwaway PostgreSQL and sets it)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide PostgreSQL for the store tests: {reason}")
    pytest.skip(reason)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database on the test cluster for the block, dropped after it: its URL."""
    import psycopg

    admin = require_postgres()
    name = f"tf_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
