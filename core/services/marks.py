"""Rows with a natural key: insert-if-absent (sweep marks, leases, notifications) and insert-or-update."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Base, SweepMark


async def insert_ignoring_duplicates(
    session: AsyncSession, model: type[Base], rows: Sequence[dict[str, Any]], key: Sequence[str]
) -> int:
    """INSERT … ON CONFLICT (key) DO NOTHING on PostgreSQL and SQLite; how many rows were new."""
    if not rows:
        return 0
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement: Any = pg_insert(model).on_conflict_do_nothing(index_elements=list(key))
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(model).on_conflict_do_nothing(index_elements=list(key))
    if len(rows) == 1:
        result = await session.execute(statement.values(**rows[0]))
        return max(0, int(getattr(result, "rowcount", 0) or 0))
    result = await session.execute(statement, list(rows))
    return max(0, int(getattr(result, "rowcount", 0) or 0))


async def insert_or_update(
    session: AsyncSession, model: type[Base], row: dict[str, Any], key: Sequence[str]
) -> None:
    """INSERT … ON CONFLICT (key) DO UPDATE on PostgreSQL and SQLite: one statement, no read first."""
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement: Any = pg_insert(model).values(**row)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(model).values(**row)
    changed = {column: statement.excluded[column] for column in row if column not in key}
    await session.execute(statement.on_conflict_do_update(index_elements=list(key), set_=changed))


async def mark_once(session: AsyncSession, kind: str, subject: str, mark: str, now: datetime) -> bool:
    """Record that `kind` was done for `subject` at stage `mark`; False when it already was.

    Call it in the transaction that does the thing (raises the event): if that transaction fails, the
    mark goes with it; if another process did it first, this one sees False and does nothing.
    """
    created = await insert_ignoring_duplicates(
        session,
        SweepMark,
        [{"kind": kind, "subject": subject[:80], "mark": mark[:40], "created_at": now}],
        ["kind", "subject", "mark"],
    )
    return created == 1


# Subjects per IN (…) list: well under SQLite's and PostgreSQL's parameter limits.
_CHUNK = 500


async def marks_of(session: AsyncSession, kind: str, subjects: Iterable[str]) -> set[tuple[str, str]]:
    """The (subject, mark) pairs of `kind` already recorded for these subjects, read in chunks: a sweep
    checks thousands of units with a few queries, and only inserts for what is new."""
    wanted = sorted(set(subjects))
    found: set[tuple[str, str]] = set()
    for start in range(0, len(wanted), _CHUNK):
        rows = await session.execute(
            select(SweepMark.subject, SweepMark.mark).where(
                SweepMark.kind == kind, SweepMark.subject.in_(wanted[start : start + _CHUNK])
            )
        )
        found.update((subject, mark) for subject, mark in rows.tuples())
    return found
