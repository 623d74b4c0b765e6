"""prediction_logs for years: migration 0004 up and down with rows kept, daily partitions on Postgres, the writer and
the spool replay across midnight UTC, retention, `skinserve db partitions`, and all of it through PgBouncer."""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from skinserve.db import migrate
from skinserve.db.engine import create_registry_engine
from skinserve.db.partitions import (
    DEFAULT_PARTITION,
    PartitionError,
    PartitionPolicy,
    manage_partitions,
    partition_name,
)
from skinserve.serve.predlog import PredictionLogWriter, PredictionRow

from .conftest import free_port
from .test_predlog import FAST, make_row, spool_files, spool_while_unreachable, stored, wait_until

# Far from today, so the partitions the migration makes for the coming week never hold these rows.
MIDNIGHT = datetime(2031, 3, 15, tzinfo=UTC)
BEFORE, AFTER = MIDNIGHT.date() - timedelta(days=1), MIDNIGHT.date()


def rows_around(instant: datetime, count: int, step: timedelta, prefix: str) -> list[PredictionRow]:
    """`count` rows, half before `instant` and half from it on, `step` apart: a fixed clock around midnight."""
    start = instant - step * (count // 2)
    return [dataclasses.replace(make_row(f"{prefix}-{i:06d}"), created_at=start + step * i) for i in range(count)]


def per_partition(url: str) -> dict[str, int]:
    """Rows per partition, as Postgres routed them (tableoid)."""
    engine = create_registry_engine(url)
    try:
        with engine.connect() as connection:
            query = text("SELECT CAST(CAST(tableoid AS regclass) AS text), count(*) FROM prediction_logs GROUP BY 1")
            return dict(connection.execute(query).all())
    finally:
        engine.dispose()


def write_all(url: str, rows: list[PredictionRow], tmp_path: Path, **options) -> dict:
    writer = PredictionLogWriter(url, tmp_path / "spool", **{**FAST, **options})
    writer.start()
    for row in rows:
        writer.submit(row)
    writer.stop(timeout_s=20)
    return writer.stats()


@pytest.fixture
def partitioned(clean_postgres: str) -> Iterator[str]:
    """The migrated Postgres log with partitions for the two days around MIDNIGHT; later days have none."""
    engine = create_registry_engine(clean_postgres)
    manage_partitions(
        engine, PartitionPolicy(partition_days_ahead=1), now=datetime.combine(BEFORE, datetime.min.time(), UTC)
    )
    engine.dispose()
    yield clean_postgres
    engine = create_registry_engine(clean_postgres)
    with engine.begin() as connection:  # tables detached by a test are no longer the parent's: drop them here
        names = connection.execute(
            text(
                "SELECT c.relname FROM pg_class c WHERE c.relname LIKE 'prediction_logs_p%' AND c.relkind = 'r' "
                "AND NOT c.relispartition"
            )
        ).scalars()
        for name in list(names):
            connection.execute(text(f'DROP TABLE "{name}"'))
    engine.dispose()


# --- the migration ---------------------------------------------------------------------------------------------


def insert_0002_rows(url: str, days: list[date]) -> None:
    """Rows as 0002's table holds them (with its serial id), a few per day."""
    engine = create_registry_engine(url)
    with engine.begin() as connection:
        for d, day in enumerate(days):
            for i in range(3):
                row = make_row(f"old-{d}-{i}")
                params = row.as_params() | {
                    "created_at": datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=7 * i)
                }
                params["outputs"] = '{"healthy": true}'
                connection.execute(
                    text(
                        "INSERT INTO prediction_logs (request_id, created_at, model_name, model_version, runtime, "
                        "image_sha256, width, height, bytes, outputs, latency_ms, batch_size, client_id) VALUES "
                        "(:request_id, :created_at, :model_name, :model_version, :runtime, :image_sha256, :width, "
                        ":height, :bytes, :outputs, :latency_ms, :batch_size, :client_id)"
                    ),
                    params,
                )
    engine.dispose()


def test_migration_0004_keeps_every_row_up_and_down(registry_url):
    migrate.downgrade(registry_url, "0002_prediction_logs")
    days = [date(2024, 2, 29), date(2026, 11, 30), date(2026, 12, 1)]
    insert_0002_rows(registry_url, days)
    engine = create_registry_engine(registry_url)
    postgres = engine.dialect.name == "postgresql"

    migrate.upgrade(registry_url, "0004_prediction_log_partitions")
    assert stored(registry_url) == (9, 9)
    inspector = inspect(engine)
    assert "id" not in {c["name"] for c in inspector.get_columns("prediction_logs")}
    assert inspector.get_pk_constraint("prediction_logs")["constrained_columns"] == ["request_id", "created_at"]
    if postgres:
        counts = per_partition(registry_url)
        assert {partition_name(day): 3 for day in days}.items() <= counts.items()
        assert DEFAULT_PARTITION not in counts  # every existing row has its day
        with engine.connect() as connection:
            kind = connection.execute(text("SELECT relkind FROM pg_class WHERE relname = 'prediction_logs'")).scalar()
            today = connection.execute(text("SELECT CAST(now() AT TIME ZONE 'UTC' AS date)")).scalar()
        assert kind == "p"
        assert {partition_name(today + timedelta(days=i)) for i in range(8)} <= set(inspect(engine).get_table_names())

    migrate.downgrade(registry_url, "0002_prediction_logs")
    inspector = inspect(engine)
    assert inspector.get_pk_constraint("prediction_logs")["constrained_columns"] == ["id"]
    with engine.connect() as connection:
        ids = connection.execute(text("SELECT id, request_id FROM prediction_logs ORDER BY created_at")).all()
        if postgres:
            assert (
                connection.execute(text("SELECT relkind FROM pg_class WHERE relname = 'prediction_logs'")).scalar()
                == "r"
            )
    assert [i for i, _ in ids] == list(range(1, 10))  # numbered in created_at order
    assert [r for _, r in ids] == [f"old-{d}-{i}" for d in range(3) for i in range(3)]
    assert not [t for t in inspect(engine).get_table_names() if t.startswith("prediction_logs_")]
    migrate.upgrade(registry_url)
    assert stored(registry_url) == (9, 9)
    engine.dispose()


# --- the writer and the spool across midnight UTC --------------------------------------------------------------


@pytest.mark.postgres
def test_the_writer_loses_nothing_across_midnight_utc(partitioned, tmp_path):
    rows = rows_around(MIDNIGHT, 2000, timedelta(milliseconds=1), "midnight")  # 23:59:59.000 .. 00:00:00.999
    stats = write_all(partitioned, rows, tmp_path, batch_size=300)  # batches that straddle the boundary
    assert (stats["written"], stats["lost"], stats["rejected"], stats["spooled"]) == (2000, 0, 0, 0)
    assert stored(partitioned) == (2000, 2000)
    assert per_partition(partitioned) == {partition_name(BEFORE): 1000, partition_name(AFTER): 1000}


@pytest.mark.postgres
def test_spool_replay_across_midnight_stores_each_row_once(partitioned, tmp_path):
    rows = rows_around(MIDNIGHT, 600, timedelta(microseconds=1), "replay")  # one microsecond apart
    write_all(partitioned, rows[::3] + rows[299:301], tmp_path / "first")  # some stored already, both sides
    spool_dir = tmp_path / "spool"
    spool_while_unreachable(spool_dir, rows)  # created_at goes through the spool's JSON and back

    writer = PredictionLogWriter(partitioned, spool_dir, **FAST)
    writer.start()
    wait_until(lambda: writer.stats()["replayed"] >= 600 and not spool_files(spool_dir))
    writer.stop(timeout_s=10)
    assert (writer.stats()["lost"], writer.stats()["rejected"]) == (0, 0)
    assert stored(partitioned) == (600, 600)
    assert per_partition(partitioned) == {partition_name(BEFORE): 300, partition_name(AFTER): 300}


@pytest.mark.postgres
def test_a_row_whose_day_has_no_partition_lands_in_the_default_and_moves_out_later(partitioned, tmp_path):
    later = MIDNIGHT + timedelta(days=30, hours=5)
    rows = rows_around(later, 50, timedelta(seconds=1), "early")
    assert write_all(partitioned, rows, tmp_path)["lost"] == 0
    assert per_partition(partitioned)[DEFAULT_PARTITION] == 50

    engine = create_registry_engine(partitioned)
    report = manage_partitions(
        engine, PartitionPolicy(partition_days_ahead=0), now=MIDNIGHT
    )  # later's day is far ahead
    engine.dispose()
    assert partition_name(later.date()) in report.created
    assert (report.moved_from_default, report.default_rows) == (50, 0)
    assert per_partition(partitioned) == {partition_name(later.date()): 50}
    assert write_all(partitioned, rows, tmp_path / "again")["lost"] == 0  # the same rows again: still once each
    assert stored(partitioned) == (50, 50)


# --- retention --------------------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("action", ["detach", "drop"])
def test_days_past_retention_are_detached_or_dropped(partitioned, tmp_path, action):
    engine = create_registry_engine(partitioned)
    first = AFTER + timedelta(days=1)
    manage_partitions(
        engine, PartitionPolicy(partition_days_ahead=4), now=datetime.combine(first, datetime.min.time(), UTC)
    )
    rows = [
        dataclasses.replace(make_row(f"day-{i}"), created_at=MIDNIGHT + timedelta(days=i, hours=1)) for i in range(5)
    ]
    write_all(partitioned, rows, tmp_path)
    today = MIDNIGHT + timedelta(days=4, hours=12)  # days 0..4 after MIDNIGHT hold a row each; keep 2 days

    report = manage_partitions(
        engine, PartitionPolicy(partition_days_ahead=1, retention_days=2, retention_action=action), now=today
    )
    retired = [partition_name(BEFORE), partition_name(AFTER), partition_name(AFTER + timedelta(days=1))]
    done = getattr(report, "detached" if action == "detach" else "dropped")
    assert set(retired) <= set(done)  # with the days the migration made for the week it ran in
    assert all(name < partition_name(AFTER + timedelta(days=2)) for name in done)
    assert stored(partitioned) == (3, 3)  # today and the 2 days before it are kept
    tables = set(inspect(engine).get_table_names())
    if action == "detach":
        assert set(retired) <= tables  # kept as tables of their own, to archive
        with engine.connect() as connection:
            assert connection.execute(text(f'SELECT count(*) FROM "{retired[1]}"')).scalar() == 1
    else:
        assert not set(retired) & tables
    engine.dispose()


def test_a_bad_retention_setting_names_its_variable():
    with pytest.raises(PartitionError, match="SKINSERVE_LOG_RETENTION_DAYS='a week'"):
        PartitionPolicy.from_env({"SKINSERVE_LOG_RETENTION_DAYS": "a week"})
    with pytest.raises(PartitionError, match="SKINSERVE_LOG_RETENTION_ACTION='archive'"):
        PartitionPolicy.from_env({"SKINSERVE_LOG_RETENTION_ACTION": "archive"})
    assert PartitionPolicy.from_env({"SKINSERVE_LOG_RETENTION_DAYS": "400"}).retention_days == 400


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "skinserve", *args]
    return subprocess.run(command, env=os.environ | env, capture_output=True, text=True, timeout=120)


def test_the_partitions_command_on_each_database(registry_url):
    done = cli(["db", "partitions", "--ahead", "3"], {"SKINSERVE_DATABASE_URL": registry_url})
    assert done.returncode == 0, done.stdout + done.stderr
    if registry_url.startswith("sqlite"):
        assert "keeps one prediction_logs table; nothing to do" in done.stdout
    else:
        assert "day partitions" in done.stdout and "0 rows left there" in done.stdout
    refused = cli(["db", "partitions"], {"SKINSERVE_DATABASE_URL": registry_url, "SKINSERVE_LOG_RETENTION_DAYS": "0"})
    assert refused.returncode == 2 and "SKINSERVE_LOG_RETENTION_DAYS='0'" in refused.stderr


# --- through PgBouncer in transaction pooling ------------------------------------------------------------------


@pytest.fixture
def pgbouncer(clean_postgres: str) -> Iterator[str]:
    """PgBouncer (Debian's package) on a loopback port in transaction pooling, one server connection per pool so
    that every client shares it; yields the database URL through it."""
    executable = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if executable is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    url = make_url(clean_postgres)
    folder = Path(tempfile.mkdtemp(prefix="skinserve-pgbouncer-"))
    folder.chmod(0o755)  # PgBouncer refuses to run as root: it reads these as the postgres user
    port = free_port()
    (folder / "users.txt").write_text(f'"{url.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n{url.database} = host={url.host} port={url.port or 5432} dbname={url.database}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\npool_mode = transaction\ndefault_pool_size = 1\n"
    )
    for path in folder.iterdir():
        path.chmod(0o644)
    user = ["-u", "postgres"] if os.geteuid() == 0 and _has_user("postgres") else []
    log = (folder / "pgbouncer.log").open("wb")
    process = subprocess.Popen([executable, *user, str(folder / "pgbouncer.ini")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                psycopg.connect(f"host=127.0.0.1 port={port} dbname={url.database} user={url.username}").close()
                break
            except psycopg.OperationalError:
                assert process.poll() is None, (folder / "pgbouncer.log").read_text()
                assert time.monotonic() < deadline, "pgbouncer did not answer in 20 s"
                time.sleep(0.1)
        yield url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.postgres
def test_psycopg_prepared_statements_break_behind_pgbouncer_transaction_pooling(pgbouncer):
    """The control: psycopg's default (prepare after 5 runs) fails here, so the next test's success means something."""
    url = make_url(pgbouncer)
    dsn = f"host={url.host} port={url.port} dbname={url.database} user={url.username}"
    first, second = (psycopg.connect(dsn, autocommit=True) for _ in range(2))
    try:
        for _ in range(8):
            first.execute("SELECT %s::int", (1,)).fetchone()  # prepared as _pg3_0 on the one server connection
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            for _ in range(8):
                second.execute("SELECT %s::int", (1,)).fetchone()
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
def test_writers_migrations_and_partitions_work_behind_pgbouncer_transaction_pooling(pgbouncer, tmp_path):
    migrate.downgrade(pgbouncer, "0002_prediction_logs")
    migrate.upgrade(pgbouncer)  # `skinserve db upgrade` through the pooler
    assert migrate.current_revision(pgbouncer) == migrate.head_revision()
    engine = create_registry_engine(pgbouncer)
    manage_partitions(
        engine, PartitionPolicy(partition_days_ahead=1), now=datetime.combine(BEFORE, datetime.min.time(), UTC)
    )
    engine.dispose()

    # Two writers at once, many small batches each (far past psycopg's 5 runs before preparing), across midnight.
    rows = rows_around(MIDNIGHT, 4000, timedelta(milliseconds=1), "pooled")
    writers = [PredictionLogWriter(pgbouncer, tmp_path / f"spool{i}", batch_size=50, **FAST) for i in range(2)]
    for writer in writers:
        writer.start()
    for i, row in enumerate(rows):
        writers[i % 2].submit(row)
    for writer in writers:
        writer.stop(timeout_s=30)
    for writer in writers:
        stats = writer.stats()
        assert (stats["written"], stats["spooled"], stats["lost"], stats["errors"]) == (2000, 0, 0, {})
    assert stored(pgbouncer) == (4000, 4000)
    assert per_partition(pgbouncer) == {partition_name(BEFORE): 2000, partition_name(AFTER): 2000}
