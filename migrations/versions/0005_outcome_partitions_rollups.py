"""outcomes partitioned by time, rollups (issue 7)

`outcomes` becomes a table range-partitioned by `slot` (one partition per UTC day, named
`outcomes_pYYYYMMDD`, and `outcomes_default` for any slot outside them). Existing rows are
kept: the old table is renamed, the partitioned one created with the same columns and
constraint names (the primary key becomes (id, slot): every unique key of a partitioned
table must contain the partition key), partitions are created for every day that holds
rows and for today and the next 7 days, the rows are copied, the old table dropped. The id
sequence carries over, so ids keep increasing.

Partition naming and bounds are repeated here rather than imported from core/partitions.py:
a migration must keep doing what it did when the code moves on.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AHEAD_DAYS = 7
COLUMNS = "id, check_id, slot, observed_at, status, latency_ms, http_status, reason, detail"
COLUMN_DEFINITIONS = """
    id bigint NOT NULL DEFAULT nextval('outcomes_id_seq'::regclass),
    check_id integer NOT NULL,
    slot timestamp with time zone NOT NULL,
    observed_at timestamp with time zone NOT NULL,
    status text NOT NULL,
    latency_ms double precision,
    http_status smallint,
    reason text,
    detail text,
    CONSTRAINT fk_outcomes_check_id_checks FOREIGN KEY (check_id)
        REFERENCES checks (id) ON DELETE CASCADE
"""


def _partition_sql(day: date) -> str:
    name = f"outcomes_p{day:%Y%m%d}"
    return (
        f"CREATE TABLE {name} PARTITION OF outcomes "
        f"FOR VALUES FROM ('{day:%Y-%m-%d} 00:00:00+00') "
        f"TO ('{day + timedelta(days=1):%Y-%m-%d} 00:00:00+00')"
    )


def _rollup_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("check_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("up", sa.Integer(), nullable=False),
        sa.Column("down", sa.Integer(), nullable=False),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("latency_count", sa.Integer(), nullable=False),
        sa.Column("latency_sum", sa.Float(), nullable=False),
        sa.Column("latency_min", sa.Float(), nullable=True),
        sa.Column("latency_max", sa.Float(), nullable=True),
        sa.Column("histogram", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["check_id"],
            ["checks.id"],
            name=op.f(f"fk_{name}_check_id_checks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("check_id", "bucket", name=op.f(f"pk_{name}")),
    )
    op.create_index(f"ix_{name}_bucket", name, ["bucket"])


def upgrade() -> None:
    # The old table steps aside; its index-backed constraints are renamed because index
    # names are unique per schema and the new table takes the old names.
    op.execute("ALTER TABLE outcomes RENAME TO outcomes_unpartitioned")
    op.execute(
        "ALTER TABLE outcomes_unpartitioned RENAME CONSTRAINT pk_outcomes "
        "TO pk_outcomes_unpartitioned"
    )
    op.execute(
        "ALTER TABLE outcomes_unpartitioned RENAME CONSTRAINT uq_outcomes_check_slot "
        "TO uq_outcomes_unpartitioned_check_slot"
    )
    op.execute(
        "ALTER TABLE outcomes_unpartitioned RENAME CONSTRAINT fk_outcomes_check_id_checks "
        "TO fk_outcomes_unpartitioned_check_id_checks"
    )
    op.execute(
        f"""
        CREATE TABLE outcomes (
            {COLUMN_DEFINITIONS},
            CONSTRAINT pk_outcomes PRIMARY KEY (id, slot),
            CONSTRAINT uq_outcomes_check_slot UNIQUE (check_id, slot)
        ) PARTITION BY RANGE (slot)
        """
    )
    op.execute("ALTER SEQUENCE outcomes_id_seq OWNED BY outcomes.id")
    # The rollup reads the newest minute across every check (every partition gets its own
    # copy). Not BRIN: ranges written since the last vacuum are unsummarized, so the newest
    # rows, the ones the rollup wants, would always be scanned.
    op.execute("CREATE INDEX ix_outcomes_slot ON outcomes (slot)")
    op.execute("CREATE TABLE outcomes_default PARTITION OF outcomes DEFAULT")

    bind = op.get_bind()
    days = set(
        bind.execute(
            sa.text("SELECT DISTINCT (slot AT TIME ZONE 'UTC')::date FROM outcomes_unpartitioned")
        ).scalars()
    )
    today = datetime.now(UTC).date()
    days.update(today + timedelta(days=n) for n in range(AHEAD_DAYS + 1))
    for day in sorted(days):
        op.execute(_partition_sql(day))
    op.execute(f"INSERT INTO outcomes ({COLUMNS}) SELECT {COLUMNS} FROM outcomes_unpartitioned")
    op.execute("DROP TABLE outcomes_unpartitioned")

    _rollup_table("outcome_rollups_minute")
    _rollup_table("outcome_rollups_hour")
    op.create_table(
        "rollup_progress",
        sa.Column("resolution", sa.Text(), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("resolution", name=op.f("pk_rollup_progress")),
    )
    op.create_table(
        "rollup_dirty",
        sa.Column("check_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("check_id", "bucket", name=op.f("pk_rollup_dirty")),
    )
    op.create_table(
        "performance_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("figures", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_performance_reviews")),
        sa.UniqueConstraint("period", "period_start", name="uq_performance_reviews_period"),
    )


def downgrade() -> None:
    op.drop_table("performance_reviews")
    op.drop_table("rollup_dirty")
    op.drop_table("rollup_progress")
    op.drop_index("ix_outcome_rollups_hour_bucket", table_name="outcome_rollups_hour")
    op.drop_table("outcome_rollups_hour")
    op.drop_index("ix_outcome_rollups_minute_bucket", table_name="outcome_rollups_minute")
    op.drop_table("outcome_rollups_minute")

    op.execute("ALTER TABLE outcomes RENAME TO outcomes_partitioned")
    op.execute("ALTER TABLE outcomes_partitioned RENAME CONSTRAINT pk_outcomes TO pk_outcomes_p")
    op.execute(
        "ALTER TABLE outcomes_partitioned RENAME CONSTRAINT uq_outcomes_check_slot "
        "TO uq_outcomes_p_check_slot"
    )
    op.execute(
        "ALTER TABLE outcomes_partitioned RENAME CONSTRAINT fk_outcomes_check_id_checks "
        "TO fk_outcomes_p_check_id_checks"
    )
    op.execute(
        f"""
        CREATE TABLE outcomes (
            {COLUMN_DEFINITIONS},
            CONSTRAINT pk_outcomes PRIMARY KEY (id),
            CONSTRAINT uq_outcomes_check_slot UNIQUE (check_id, slot)
        )
        """
    )
    op.execute("ALTER SEQUENCE outcomes_id_seq OWNED BY outcomes.id")
    op.execute(f"INSERT INTO outcomes ({COLUMNS}) SELECT {COLUMNS} FROM outcomes_partitioned")
    # Dropping the parent drops every partition with it.
    op.execute("DROP TABLE outcomes_partitioned")
