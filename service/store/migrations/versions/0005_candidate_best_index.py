"""an index that serves the list pages' per-search candidate aggregates (best feasible accuracy, count) and the
candidate filters: a seek per search instead of reading every candidate row

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_candidates_search_best", "candidates", ["search_id", "feasible", "accuracy"])


def downgrade() -> None:
    op.drop_index("ix_candidates_search_best", table_name="candidates")
