"""Daily partitions of `prediction_logs` on Postgres: create the coming days', retire those past retention.

The table is range-partitioned on `created_at` (UTC days, `prediction_logs_pYYYYMMDD`) with a DEFAULT partition,
`prediction_logs_default`, that catches a row whose day has no partition yet. Why a default partition and not
partitions made on demand by the writer: the writer would need DDL rights and would take locks on the parent from the
request path's log thread, and a row with no partition is otherwise refused by Postgres (23514), which the writer can
only count as rejected and drop. With the default partition no row is ever refused; `skinserve db partitions` (daily,
a CronJob on Kubernetes) makes the next days' partitions ahead of time so the default stays empty, and moves any rows
it did collect into their day's partition when it creates that day.

Locks: a new day is created as a plain table and ATTACHed (SHARE UPDATE EXCLUSIVE on the parent, so the writer's
inserts go on), rather than `CREATE TABLE ... PARTITION OF` (ACCESS EXCLUSIVE on the parent). DETACH and DROP need
ACCESS EXCLUSIVE for a moment; every statement runs under a transaction-local `lock_timeout`, so a long query on the
log never makes the writer queue behind this command: the command fails instead, and its next run retries. The DDL
itself runs in two plpgsql functions the migration installs (DAY_FUNCTIONS), which quote the table names with
format('%I'): no SQL is assembled from strings in Python. Everything is
transaction-scoped (no session state, no prepared statements), so it works through PgBouncer in transaction pooling.

Partitions are managed here by hand because Postgres has no built-in scheduler for them; pg_partman does the same
as an extension, which managed Postgres services do not all offer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from sqlalchemy import Connection, Engine, text

from skinserve.config import EnvSettings
from skinserve.errors import SkinserveError

TABLE = "prediction_logs"
DEFAULT_PARTITION = f"{TABLE}_default"
DAY_NAME = re.compile(rf"^{TABLE}_p(\d{{8}})$")


class PartitionError(SkinserveError):
    """The partitions could not be managed: wrong database, a bad setting, a lock not granted in time."""


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    match = DAY_NAME.match(name)
    return datetime.strptime(match[1], "%Y%m%d").date() if match else None


def alembic_include_name(name: str | None, type_: str, _parent_names: Mapping[str, str | None]) -> bool:
    """Alembic's `include_name` hook: the partitions are managed here, not by autogenerate (which would drop them)."""
    return not (type_ == "table" and name is not None and (name == DEFAULT_PARTITION or DAY_NAME.match(name)))


def day_bounds(day: date) -> tuple[str, str]:
    """The partition's range as timestamptz literals with an explicit UTC offset: the session's TimeZone is moot."""
    return f"{day.isoformat()} 00:00:00+00", f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"


class PartitionPolicy(EnvSettings):
    """How many days ahead exist, how long days are kept, and what happens to a day past retention
    (`SKINSERVE_LOG_PARTITION_DAYS_AHEAD`, `SKINSERVE_LOG_RETENTION_DAYS`, `SKINSERVE_LOG_RETENTION_ACTION`)."""

    model_config = SettingsConfigDict(env_prefix="SKINSERVE_LOG_", env_ignore_empty=True, extra="ignore", frozen=True)

    partition_days_ahead: Annotated[int, Field(ge=0)] = 7
    retention_days: Annotated[int, Field(ge=1)] | None = None  # None: keep every day
    # detach keeps the day as a table of its own, to archive and drop
    retention_action: Literal["detach", "drop"] = "detach"

    @classmethod
    def invalid(cls, message: str) -> PartitionError:
        return PartitionError(message)


@dataclass
class PartitionReport:
    created: list[str] = field(default_factory=list)
    moved_from_default: int = 0
    detached: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    purged_from_default: int = 0
    default_rows: int = 0  # rows still in the default partition afterwards
    partitions: int = 0  # day partitions attached afterwards


def attached_days(connection: Connection) -> dict[date, str]:
    """The day partitions attached to prediction_logs (by name), from pg_inherits."""
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": TABLE},
    ).scalars()
    return {day: name for name in rows if (day := day_of(name)) is not None}


def is_partitioned(connection: Connection) -> bool:
    kind = connection.execute(
        text("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(:t)"), {"t": TABLE}
    ).scalar()
    return kind == "p"


# The day partitions' DDL, as functions the migration installs: a table name cannot be a bound parameter, so it is
# built inside Postgres with format('%I'), and Python passes only dates and the action, bound, through literal SQL.
DAY_FUNCTIONS = {
    "skinserve_create_log_day(date)": """
CREATE OR REPLACE FUNCTION skinserve_create_log_day(day date) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    name text := 'prediction_logs_p' || to_char(day, 'YYYYMMDD');
    low timestamptz := (day::text || ' 00:00:00+00')::timestamptz;
    high timestamptz := ((day + 1)::text || ' 00:00:00+00')::timestamptz;
    moved bigint;
BEGIN
    EXECUTE format('CREATE TABLE %I (LIKE prediction_logs INCLUDING DEFAULTS)', name);
    EXECUTE format('WITH moved AS (DELETE FROM prediction_logs_default WHERE created_at >= $1 AND created_at < $2 '
                   'RETURNING *) INSERT INTO %I SELECT * FROM moved', name) USING low, high;
    GET DIAGNOSTICS moved = ROW_COUNT;
    EXECUTE format('ALTER TABLE prediction_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', name, low, high);
    RETURN moved;
END $$""",
    "skinserve_retire_log_day(date, text)": """
CREATE OR REPLACE FUNCTION skinserve_retire_log_day(day date, action text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    name text := 'prediction_logs_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF action = 'drop' THEN
        EXECUTE format('DROP TABLE %I', name);
    ELSE
        EXECUTE format('ALTER TABLE prediction_logs DETACH PARTITION %I', name);
    END IF;
END $$""",
}


def create_day(connection: Connection, day: date) -> int:
    """Attach day's partition, first moving into it the rows the default partition holds for that day.

    Call inside a transaction: the move and the attach are one step, so no reader sees a row twice or not at all,
    and the primary key (request_id, created_at) stays unique across the move.
    """
    moved = connection.execute(text("SELECT skinserve_create_log_day(:day)"), {"day": day}).scalar_one()
    return max(int(moved), 0)


def default_days(connection: Connection) -> list[date]:
    """The UTC days of the rows waiting in the default partition."""
    rows = connection.execute(
        text("SELECT DISTINCT CAST(created_at AT TIME ZONE 'UTC' AS date) FROM prediction_logs_default ORDER BY 1")
    ).scalars()
    return list(rows)


def manage_partitions(
    engine: Engine, policy: PartitionPolicy, now: datetime | None = None, lock_timeout_s: float = 5.0
) -> PartitionReport:
    """Create today's and the next `days_ahead` days' partitions (plus any day rows in the default partition
    belong to, within retention), then detach or drop the days past retention. One transaction per step."""
    if engine.dialect.name != "postgresql":
        raise PartitionError(f"partitions are for Postgres; {engine.dialect.name} keeps one {TABLE} table")
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    oldest_kept = today - timedelta(days=policy.retention_days) if policy.retention_days else None
    report = PartitionReport()

    def step(connection: Connection) -> None:
        # set_config(..., true) is SET LOCAL: for this transaction only, so safe behind PgBouncer's transaction pooling.
        timeout = f"{int(lock_timeout_s * 1000)}ms"
        connection.execute(text("SELECT set_config('lock_timeout', :timeout, true)"), {"timeout": timeout})

    with engine.begin() as connection:
        if not is_partitioned(connection):
            raise PartitionError(f"{TABLE} is not partitioned here; run `skinserve db upgrade` first")
        existing = attached_days(connection)
        waiting = default_days(connection)
    wanted = {today + timedelta(days=i) for i in range(policy.partition_days_ahead + 1)}
    wanted |= {d for d in waiting if oldest_kept is None or d >= oldest_kept}
    for day in sorted(wanted - set(existing)):
        with engine.begin() as connection:
            step(connection)
            report.moved_from_default += create_day(connection, day)
        report.created.append(partition_name(day))
    if oldest_kept is not None:
        for day, name in sorted(existing.items()):
            if day >= oldest_kept:
                continue
            with engine.begin() as connection:
                step(connection)
                retire = text("SELECT skinserve_retire_log_day(:day, :action)")
                connection.execute(retire, {"day": day, "action": policy.retention_action})
                (report.dropped if policy.retention_action == "drop" else report.detached).append(name)
        if policy.retention_action == "drop":
            with engine.begin() as connection:
                step(connection)
                purged = connection.execute(
                    text("DELETE FROM prediction_logs_default WHERE created_at < :t"),
                    {"t": day_bounds(oldest_kept)[0]},
                ).rowcount
            report.purged_from_default = max(purged, 0)
    with engine.connect() as connection:
        report.default_rows = connection.execute(text("SELECT count(*) FROM prediction_logs_default")).scalar_one()
        report.partitions = len(attached_days(connection))
    return report
