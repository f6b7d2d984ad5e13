"""indexes that serve the default listing order (newest first, id as tie-break) without sorting wide rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_searches_owner_created", table_name="searches")
    op.create_index("ix_searches_owner_created", "searches", ["owner_id", "created_at", "id"])
    op.create_index("ix_searches_created", "searches", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_searches_created", table_name="searches")
    op.drop_index("ix_searches_owner_created", table_name="searches")
    op.create_index("ix_searches_owner_created", "searches", ["owner_id", "created_at"])
