"""The tuning database's schema (SQLAlchemy Core tables) and its migrations.

Version history: 1 -- trials, best configs, the schema version; 2 -- the
shape-free kernel ``family`` used by nearest-bucket lookups.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

SCHEMA_VERSION = 2

metadata = sa.MetaData()

schema_table = sa.Table(
    "braze_schema", metadata,
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("braze", sa.Text, nullable=False),
)

trials_table = sa.Table(
    "braze_trials", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uid", sa.String(40), nullable=False, unique=True),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("software", sa.Text, nullable=False),
    sa.Column("kernel_key", sa.Text, nullable=False),
    sa.Column("family", sa.Text, nullable=False, default=""),
    sa.Column("kernel_name", sa.Text, nullable=False),
    sa.Column("backend", sa.Text, nullable=False),
    sa.Column("problem", sa.Text, nullable=False),
    sa.Column("skeleton", sa.Text, nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("time_ms", sa.Float),
    sa.Column("stats", sa.Text, nullable=False, default="{}"),
    sa.Column("compile_ms", sa.Float),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("origin", sa.String(20), nullable=False),
    sa.Column("study", sa.Text, nullable=False, default=""),
    sa.Column("host", sa.Text, nullable=False, default=""),
    sa.Column("created", sa.Float, nullable=False),
    sa.Index("braze_trials_lookup", "device", "kernel_key", "problem"),
)

best_table = sa.Table(
    "braze_best", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("software", sa.Text, nullable=False),
    sa.Column("kernel_key", sa.Text, nullable=False),
    sa.Column("problem", sa.Text, nullable=False),
    sa.Column("skeleton", sa.Text, nullable=False),
    sa.Column("family", sa.Text, nullable=False, default=""),
    sa.Column("kernel_name", sa.Text, nullable=False),
    sa.Column("backend", sa.Text, nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("time_ms", sa.Float, nullable=False),
    sa.Column("trial_uid", sa.String(40), nullable=False),
    sa.Column("tuned", sa.Boolean, nullable=False, default=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.UniqueConstraint("device", "software", "kernel_key", "problem", name="braze_best_key"),
    sa.Index("braze_best_nearest", "device", "family", "skeleton"),
)

OPTUNA_TABLES = frozenset({
    "studies", "version_info", "study_directions", "study_user_attributes", "study_system_attributes", "trials",
    "trial_user_attributes", "trial_system_attributes", "trial_params", "trial_values",
    "trial_intermediate_values", "trial_heartbeats", "alembic_version"})



def _to_v2(conn) -> None:
    """Version 2: the shape-free kernel ``family`` (nearest-bucket lookups across static shapes)."""
    conn.exec_driver_sql("ALTER TABLE braze_trials ADD COLUMN family TEXT NOT NULL DEFAULT ''")
    conn.exec_driver_sql("ALTER TABLE braze_best ADD COLUMN family TEXT NOT NULL DEFAULT ''")
    conn.exec_driver_sql("UPDATE braze_best SET family = kernel_key")
    conn.exec_driver_sql("DROP INDEX IF EXISTS braze_best_lookup")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS braze_best_nearest ON braze_best (device, family, skeleton)")


# Schema migrations: version -> function(connection) bringing version-1 up to it,
# run in order inside one transaction when an older database is opened.
# NOTE: add one here when the schema changes and bump SCHEMA_VERSION; never edit
# an applied migration. A new database is created at SCHEMA_VERSION whole by
# ``metadata.create_all``.
MIGRATIONS: dict[int, Any] = {2: _to_v2}


