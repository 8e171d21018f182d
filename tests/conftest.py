"""Shared fixtures: databases on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from storage.database import make_engine
from tests.support.peers import required

POSTGRES_URL = os.environ.get("MYONODE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    engine = make_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        if required("postgres"):
            pytest.fail(f"PostgreSQL required but not reachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_URL} ({exc.__class__.__name__})")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """A URL whose connections live in a fresh schema of the `test` database, dropped afterwards."""
    schema = f"myonode_test_{uuid.uuid4().hex[:12]}"
    with postgres_admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with postgres_admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database on each backend the store supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'myonode.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


REDIS_URL = os.environ.get("MYONODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    """The real Redis server (skipped only if unreachable outside `make test`)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if required("redis"):
            pytest.fail(f"Redis required but not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"no Redis reachable at {REDIS_URL} ({exc.__class__.__name__})")
    return REDIS_URL
