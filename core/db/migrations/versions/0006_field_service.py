"""field service: the technician's departure and ETA, and a visit time proposed to the customer

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db.types


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('repair_orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('departed_at', core.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('eta_at', core.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('proposed_at', core.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('proposed_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_repair_orders_proposed_by_id_users'), 'users', ['proposed_by_id'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('repair_orders', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_repair_orders_proposed_by_id_users'), type_='foreignkey')
        batch_op.drop_column('proposed_by_id')
        batch_op.drop_column('proposed_at')
        batch_op.drop_column('eta_at')
        batch_op.drop_column('departed_at')
