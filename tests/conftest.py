"""Test fixtures: a throw-away database per run (SQLite or PostgreSQL), a clean schema per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import FrozenClock
from core.container import Core, build_core
from core.db.engine import create_engine
from core.db.migrate import upgrade
from core.db.models import Base
from core.settings import Settings
from tests.world import World, build_world

BACKEND = os.environ.get("CRMBOT_TEST_DATABASE", "sqlite").lower()
PG_ADMIN_URL = os.environ.get("CRMBOT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# A fixed "now" inside a normal working week: Monday 2026-06-15 10:00 in Shanghai.
TEST_NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)


def pytest_report_header() -> str:
    """Say which database this run uses, so two runs in CI are told apart."""
    return f"crmbot test database: {BACKEND}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database that exists only for this test run."""
    if BACKEND == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'crmbot-test.db'}"
        return
    if BACKEND not in ("postgresql", "postgres"):
        raise pytest.UsageError(f"CRMBOT_TEST_DATABASE must be sqlite or postgresql, not {BACKEND!r}")
    import asyncio

    name = f"crmbot_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """One engine for the run; the schema comes from the real migrations."""
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def wipe(engine: AsyncEngine) -> None:
    """Empty every table (fast, and ids start again at 1)."""
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            await connection.execute(text("PRAGMA defer_foreign_keys=ON"))
            for table in tables:
                await connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def clock() -> FrozenClock:
    """The injected clock, frozen at TEST_NOW; tests move it."""
    return FrozenClock(TEST_NOW)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings isolated in a temporary data directory."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "var",
        api_token="test-admin-token",
        timezone="Asia/Shanghai",
        _env_file=None,
    )


@pytest.fixture
async def core(engine: AsyncEngine, settings: Settings, clock: FrozenClock) -> AsyncIterator[Core]:
    """All core services over an empty schema."""
    await wipe(engine)
    yield build_core(settings, clock=clock, engine=engine)


@pytest.fixture
async def world(core: Core) -> World:
    """A small company: two branches, staff, two customers of different reps, products, stock."""
    return await build_world(core)
