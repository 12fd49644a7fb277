"""dashboard: indexes for the check list's keyset pages and filters (issue 8)

The dashboard pages through checks in name order (byte order, "C" collation, so a name
prefix is an index range) and filters by state or group; each of these reads an index, so a
page costs its size whatever the number of checks. Sessions are signed cookies and the user
comes from the settings, so no table is needed.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_checks_name_c", "checks", [sa.text('name COLLATE "C"')])
    op.create_index("ix_checks_status_name", "checks", ["status", sa.text('name COLLATE "C"')])
    op.create_index("ix_checks_group_name", "checks", ["group_name", sa.text('name COLLATE "C"')])


def downgrade() -> None:
    op.drop_index("ix_checks_group_name", table_name="checks")
    op.drop_index("ix_checks_status_name", table_name="checks")
    op.drop_index("ix_checks_name_c", table_name="checks")
