"""KPIs, Web Vitals, funnels, feedback, experiments (issue 6)

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "kpi_values",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kpi_values")),
        sa.Column("kpi", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("period_start", TS, nullable=False),
        sa.Column("period_end", TS, nullable=False),
        sa.Column("bucket", TS, nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("target", sa.Double(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("expected", sa.Double(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("computed_at", TS, nullable=False),
        sa.UniqueConstraint("kpi", "period_start", "bucket", name="uq_kpi_values_key"),
    )
    op.create_index("ix_kpi_values_kpi_bucket", "kpi_values", ["kpi", "bucket"])

    op.create_table(
        "web_vitals",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_vitals")),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("rating", sa.Text(), nullable=True),
        sa.Column("delta", sa.Double(), nullable=True),
        sa.Column("metric_id", sa.Text(), nullable=False),
        sa.Column("navigation_type", sa.Text(), nullable=True),
        sa.Column("page", sa.Text(), nullable=False),
        sa.Column("device", sa.Text(), nullable=False),
        sa.UniqueConstraint("name", "metric_id", name="uq_web_vitals_name_metric_id"),
    )
    op.create_index("ix_web_vitals_received_at", "web_vitals", ["received_at"])

    op.create_table(
        "funnel_steps",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_funnel_steps")),
        sa.Column("funnel", sa.Text(), nullable=False),
        sa.Column("period_start", TS, nullable=False),
        sa.Column("period_end", TS, nullable=False),
        sa.Column("step", sa.SmallInteger(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.Column("conversion", sa.Double(), nullable=True),
        sa.Column("step_conversion", sa.Double(), nullable=True),
        sa.Column("drop_off", sa.Integer(), nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.UniqueConstraint("funnel", "period_end", "step", name="uq_funnel_steps_key"),
    )

    op.create_table(
        "feature_adoption",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_adoption")),
        sa.Column("feature", sa.Text(), nullable=False),
        sa.Column("period_start", TS, nullable=False),
        sa.Column("period_end", TS, nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.Column("active_users", sa.Integer(), nullable=False),
        sa.Column("share", sa.Double(), nullable=True),
        sa.Column("computed_at", TS, nullable=False),
        sa.UniqueConstraint("feature", "period_end", name="uq_feature_adoption_key"),
    )

    op.create_table(
        "feedback_summaries",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_summaries")),
        sa.Column("period_start", TS, nullable=False),
        sa.Column("period_end", TS, nullable=False),
        sa.Column("nps_responses", sa.Integer(), nullable=False),
        sa.Column("promoters", sa.Integer(), nullable=False),
        sa.Column("passives", sa.Integer(), nullable=False),
        sa.Column("detractors", sa.Integer(), nullable=False),
        sa.Column("nps", sa.Double(), nullable=True),
        sa.Column("ratings", sa.Integer(), nullable=False),
        sa.Column("average_rating", sa.Double(), nullable=True),
        sa.Column("themes", postgresql.JSONB(), nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.UniqueConstraint("period_end", name="uq_feedback_summaries_period_end"),
    )

    op.create_table(
        "experiment_results",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_results")),
        sa.Column("experiment", sa.Text(), nullable=False),
        sa.Column("computed_for", TS, nullable=False),
        sa.Column("variant", sa.Text(), nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.Column("conversions", sa.Integer(), nullable=False),
        sa.Column("rate", sa.Double(), nullable=True),
        sa.Column("expected_share", sa.Double(), nullable=False),
        sa.Column("z", sa.Double(), nullable=True),
        sa.Column("p_value", sa.Double(), nullable=True),
        sa.Column("significant", sa.Boolean(), nullable=True),
        sa.Column("srm_p_value", sa.Double(), nullable=True),
        sa.Column("computed_at", TS, nullable=False),
        sa.UniqueConstraint(
            "experiment", "computed_for", "variant", name="uq_experiment_results_key"
        ),
    )


def downgrade() -> None:
    op.drop_table("experiment_results")
    op.drop_table("feedback_summaries")
    op.drop_table("feature_adoption")
    op.drop_table("funnel_steps")
    op.drop_index("ix_web_vitals_received_at", table_name="web_vitals")
    op.drop_table("web_vitals")
    op.drop_index("ix_kpi_values_kpi_bucket", table_name="kpi_values")
    op.drop_table("kpi_values")
