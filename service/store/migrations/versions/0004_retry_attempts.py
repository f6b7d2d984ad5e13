"""retry keeps counting attempts: searches.attempts_base, the attempts made before the current run

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("searches", sa.Column("attempts_base", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy of "searches" would cascade-delete its rows
    op.drop_column("searches", "attempts_base")
