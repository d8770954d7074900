"""scheduler: the scheduler lease and the marks of what sweeps already did

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 04:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db.types


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('scheduler_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=100), nullable=False),
    sa.Column('acquired_at', core.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', core.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_scheduler_leases'))
    )
    op.create_table('sweep_marks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('subject', sa.String(length=80), nullable=False),
    sa.Column('mark', sa.String(length=40), nullable=False),
    sa.Column('created_at', core.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sweep_marks')),
    sa.UniqueConstraint('kind', 'subject', 'mark', name='uq_sweep_marks_kind_subject_mark')
    )
    with op.batch_alter_table('sweep_marks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sweep_marks_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sweep_marks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sweep_marks_created_at'))
    op.drop_table('sweep_marks')
    op.drop_table('scheduler_leases')
