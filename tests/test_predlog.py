"""Prediction logs: every submitted row reaches prediction_logs exactly once, through outages, restarts and SIGKILL."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import prometheus_client
import pytest
from sqlalchemy import func, select

from skinserve.db import migrate
from skinserve.db.engine import create_registry_engine
from skinserve.db.models import PredictionLog
from skinserve.serve.predlog import PredictionLogWriter, PredictionRow, WriterMetrics

from .conftest import postgres_cluster

# Postgres on a port nothing listens on: refused at once, like a stopped server.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"
FAST = {"flush_interval_s": 0.02, "retry_interval_s": 0.05}


def make_row(request_id: str, client_id: str | None = None) -> PredictionRow:
    return PredictionRow(
        request_id=request_id,
        created_at=datetime.now(UTC),
        model_name="skinserve-convnext",
        model_version="3",
        runtime="onnxruntime",
        image_sha256="ab" * 32,
        width=640,
        height=480,
        bytes=51234,
        outputs={"primary_concern": "acne", "healthy": False, "conditions": {"acne": {"probability": 0.91}}},
        latency_ms=12.5,
        batch_size=4,
        client_id=client_id,
    )


def make_rows(count: int, prefix: str = "req") -> list[PredictionRow]:
    return [make_row(f"{prefix}-{i:06d}") for i in range(count)]


def stored(url: str) -> tuple[int, int]:
    """(rows, distinct request ids) in prediction_logs."""
    engine = create_registry_engine(url)
    try:
        with engine.connect() as connection:
            query = select(func.count(), func.count(PredictionLog.request_id.distinct()))
            return tuple(connection.execute(query).one())
    finally:
        engine.dispose()


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def spool_files(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("predictions-*")) if spool_dir.is_dir() else []


def spool_lines(spool_dir: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in spool_files(spool_dir))


def spool_while_unreachable(spool_dir: Path, rows: list[PredictionRow]) -> dict:
    """What a writer leaves behind when the database never answered: a spool file, here named after our pid."""
    writer = PredictionLogWriter(UNREACHABLE, spool_dir, retry_interval_s=60.0, flush_interval_s=0.02)
    writer.start()
    for row in rows:
        writer.submit(row)
    writer.stop(timeout_s=10)
    return writer.stats()


def replay(url: str, spool_dir: Path, expected: int, **options) -> dict:
    """A new writer on the same spool folder, run until it has replayed `expected` rows and removed the files."""
    writer = PredictionLogWriter(url, spool_dir, **{**FAST, **options})
    writer.start()
    wait_until(lambda: writer.stats()["replayed"] >= expected and not spool_files(spool_dir))
    writer.stop(timeout_s=10)
    return writer.stats()


def test_every_submitted_row_is_in_the_table_after_stop(registry_url, tmp_path):
    writer = PredictionLogWriter(registry_url, tmp_path / "spool", batch_size=500, **FAST)
    writer.start()
    for row in [*make_rows(1233), make_row("with-client", client_id="clinic-7")]:
        writer.submit(row)
    writer.stop(timeout_s=10)

    stats = writer.stats()
    assert (stats["written"], stats["spooled"], stats["lost"], stats["queued"]) == (1234, 0, 0, 0)
    assert stats["db_up"] is True
    assert stored(registry_url) == (1234, 1234)
    engine = create_registry_engine(registry_url)
    with engine.connect() as connection:
        row = connection.execute(select(PredictionLog).where(PredictionLog.request_id == "with-client")).one()
    engine.dispose()
    assert (row.client_id, row.width, row.height, row.bytes, row.batch_size) == ("clinic-7", 640, 480, 51234, 4)
    assert row.outputs["conditions"]["acne"]["probability"] == 0.91
    assert not spool_files(tmp_path / "spool")


def test_a_request_id_submitted_twice_is_stored_once(registry_url, tmp_path):
    rows = make_rows(300)
    writer = PredictionLogWriter(registry_url, tmp_path / "spool", batch_size=200, **FAST)
    writer.start()
    for row in rows + rows[:50]:  # the repeats land in the same batch as their first copy, and in a later one
        writer.submit(row)
    writer.stop(timeout_s=10)
    assert stored(registry_url) == (300, 300)
    assert writer.stats()["lost"] == 0


def test_rows_spool_while_the_database_is_unreachable_and_a_later_writer_replays_them(registry_url, tmp_path):
    spool_dir = tmp_path / "spool"
    stats = spool_while_unreachable(spool_dir, make_rows(700))
    assert (stats["written"], stats["spooled"], stats["spool_rows"], stats["lost"]) == (0, 700, 700, 0)
    assert stats["db_up"] is False and stats["errors"]["database"] >= 1
    assert [p.name for p in spool_files(spool_dir)] == [f"predictions-{os.getpid()}.jsonl"]
    assert spool_lines(spool_dir) == 700

    stats = replay(registry_url, spool_dir, expected=700, batch_size=300)
    assert (stats["replayed"], stats["spool_rows"], stats["corrupt"]) == (700, 0, 0)
    assert stored(registry_url) == (700, 700)


def test_replaying_rows_already_in_the_table_stores_none_twice(registry_url, tmp_path):
    rows = make_rows(120)
    writer = PredictionLogWriter(registry_url, tmp_path / "first", **FAST)
    writer.start()
    for row in rows[:80]:
        writer.submit(row)
    writer.stop(timeout_s=10)
    spool_dir = tmp_path / "spool"
    spool_while_unreachable(spool_dir, rows)  # 80 of them are already stored: as after a crash mid-replay

    assert replay(registry_url, spool_dir, expected=120)["replayed"] == 120
    assert stored(registry_url) == (120, 120)


def test_a_torn_last_line_is_skipped_and_counted(sqlite_url, tmp_path):
    spool_dir = tmp_path / "spool"
    spool_while_unreachable(spool_dir, make_rows(50))
    with spool_files(spool_dir)[0].open("ab") as spool:
        spool.write(b'{"request_id": "torn-by-sigkill", "created_at": "2026-')

    stats = replay(sqlite_url, spool_dir, expected=50)
    assert (stats["replayed"], stats["corrupt"], stats["errors"]["corrupt"]) == (50, 1, 1)
    assert stored(sqlite_url) == (50, 50)


def test_appending_after_a_torn_line_keeps_the_next_row_whole(sqlite_url, tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    # A dead process with our pid (pids are reused, in containers often) left a torn line in "our" file.
    (spool_dir / f"predictions-{os.getpid()}.jsonl").write_bytes(b'{"request_id": "torn')
    spool_while_unreachable(spool_dir, make_rows(10))

    stats = replay(sqlite_url, spool_dir, expected=10)
    assert (stats["replayed"], stats["corrupt"]) == (10, 1)
    assert stored(sqlite_url) == (10, 10)


def test_submit_never_blocks_while_the_database_is_unreachable(tmp_path):
    rows = make_rows(10_000)
    writer = PredictionLogWriter(UNREACHABLE, tmp_path / "spool", queue_size=1000, spill_size=9000, **FAST)
    writer.start()
    for row in rows:
        writer.submit(row)
    writer.stop(timeout_s=10)

    stats = writer.stats()
    assert (stats["spooled"], stats["lost"], stats["written"]) == (10_000, 0, 0)
    assert spool_lines(tmp_path / "spool") == 10_000


def test_a_full_queue_sends_rows_to_the_spool_from_the_writer_thread(sqlite_url, tmp_path):
    spool_dir = tmp_path / "spool"
    writer = PredictionLogWriter(sqlite_url, spool_dir, queue_size=10, **FAST)  # not started: nothing drains
    for row in make_rows(25):
        writer.submit(row)
    stats = writer.stats()
    assert (stats["queued"], stats["spilled"], stats["spooled"], stats["lost"]) == (10, 15, 0, 0)
    assert spool_lines(spool_dir) == 0  # the caller touched no disk
    writer.stop(timeout_s=10)  # flushes the queue into the database, the spill into the spool
    stats = writer.stats()
    assert (stats["written"], stats["spooled"], stats["spilled"], stored(sqlite_url)) == (10, 15, 0, (10, 10))
    assert spool_lines(spool_dir) == 15

    replay(sqlite_url, spool_dir, expected=15)
    assert stored(sqlite_url) == (25, 25)


def test_submit_never_waits_for_the_writer_that_holds_its_lock_through_an_fsync(sqlite_url, tmp_path):
    writer = PredictionLogWriter(sqlite_url, tmp_path / "spool", queue_size=10, **FAST)
    submitted = threading.Event()

    def submit_all() -> None:
        for row in make_rows(25):  # the queue fills after 10: the rest must not take the writer's lock
            writer.submit(row)
        submitted.set()

    with writer._lock:  # as the writer thread holds it while it appends to the spool and fsyncs
        caller = threading.Thread(target=submit_all)
        caller.start()
        finished = submitted.wait(timeout=30)
    caller.join()
    assert finished, "submit waited for the writer's lock"
    writer.start()
    writer.stop(timeout_s=10)
    assert (writer.stats()["written"], writer.stats()["spooled"], writer.stats()["lost"]) == (10, 15, 0)


def test_an_unwritable_spool_keeps_rows_in_memory_up_to_a_bound_then_counts_them_lost(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # mkdir and open fail under a regular file, even for root
    writer = PredictionLogWriter(UNREACHABLE, blocker / "spool", queue_size=10, spill_size=10, **FAST)
    for row in make_rows(30):  # not started: 10 queued, 10 spilled, 10 past both bounds
        writer.submit(row)
    stats = writer.stats()
    assert (stats["queued"], stats["spilled"], stats["lost_at_submit"], stats["spooled"]) == (10, 10, 10, 0)

    writer.stop(timeout_s=10)  # neither the database nor the spool: what is left in memory is lost, and counted
    stats = writer.stats()
    assert (stats["lost"], stats["overflow"], stats["lost_at_submit"]) == (30, 0, 0)
    assert stats["errors"]["spool"] >= 1 and stats["errors"]["lost"] == 30


def test_rows_kept_in_memory_reach_the_database_when_it_returns(tmp_path):
    url = f"sqlite:///{tmp_path / 'late.db'}"  # no tables yet: every insert fails, as with a database down
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    writer = PredictionLogWriter(url, blocker / "spool", queue_size=100, **FAST)
    writer.start()
    for row in make_rows(60):
        writer.submit(row)
    wait_until(lambda: writer.stats()["overflow"] == 60)
    assert writer.stats()["db_up"] is False

    migrate.upgrade(url)
    wait_until(lambda: writer.stats()["written"] == 60)
    writer.stop(timeout_s=10)
    stats = writer.stats()
    assert (stats["lost"], stats["overflow"], stats["db_up"]) == (0, 0, True)
    assert stats["errors"]["spool"] >= 1
    assert stored(url) == (60, 60)


def test_metrics_export_spool_size_rows_errors_and_lag(sqlite_url, tmp_path):
    spool_dir = tmp_path / "spool"
    registry = prometheus_client.CollectorRegistry()
    metrics = WriterMetrics.create(prometheus_client, registry=registry)
    writer = PredictionLogWriter(UNREACHABLE, spool_dir, metrics=metrics, retry_interval_s=60.0, flush_interval_s=0.02)
    writer.start()
    for row in make_rows(40):
        writer.submit(row)
    writer.stop(timeout_s=10)
    assert registry.get_sample_value("skinserve_prediction_spool_rows") == 40
    assert registry.get_sample_value("skinserve_prediction_rows_spooled_total") == 40
    assert registry.get_sample_value("skinserve_prediction_log_errors_total", {"kind": "database"}) >= 1
    assert 0 < registry.get_sample_value("skinserve_prediction_writer_lag_seconds") < 5

    registry = prometheus_client.CollectorRegistry()
    replay(sqlite_url, spool_dir, expected=40, metrics=WriterMetrics.create(registry=registry))
    assert registry.get_sample_value("skinserve_prediction_spool_rows") == 0
    assert registry.get_sample_value("skinserve_prediction_rows_written_total") == 40


@pytest.mark.postgres
def test_a_row_the_database_refuses_is_dropped_and_counted_and_its_batch_is_stored(clean_postgres, tmp_path):
    rows = make_rows(30)
    bad = dataclasses.replace(rows[10], model_name="m" * 101)  # longer than String(100): refused, not an outage
    writer = PredictionLogWriter(clean_postgres, tmp_path / "spool", **FAST)
    for row in [*rows[:10], bad, *rows[11:]]:
        writer.submit(row)
    writer.stop(timeout_s=10)  # not started: one batch, inserted from here
    stats = writer.stats()
    assert (stats["rejected"], stats["lost"], stats["spooled"], stats["db_up"]) == (1, 1, 0, True)
    assert stored(clean_postgres) == (29, 29)
    assert not spool_files(tmp_path / "spool")


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tests.test_predlog import UNREACHABLE, make_rows
    from skinserve.serve.predlog import PredictionLogWriter

    writer = PredictionLogWriter(UNREACHABLE, Path(sys.argv[1]), retry_interval_s=60.0, flush_interval_s=0.02)
    writer.start()
    for row in make_rows(int(sys.argv[2]), prefix="killed"):
        writer.submit(row)
    while writer.stats()["spooled"] < int(sys.argv[2]):
        time.sleep(0.01)
    print("spooled", flush=True)
    time.sleep(60)
    """
)


def test_the_spool_of_a_sigkilled_worker_is_replayed_by_another(sqlite_url, tmp_path):
    spool_dir = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(spool_dir), "500"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert worker.stdout.readline().strip() == "spooled"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    assert [p.name for p in spool_files(spool_dir)] == [f"predictions-{worker.pid}.jsonl"]

    stats = replay(sqlite_url, spool_dir, expected=500)
    assert (stats["replayed"], stats["corrupt"]) == (500, 0)
    assert stored(sqlite_url) == (500, 500)


def test_the_spool_of_a_live_process_is_left_to_it(sqlite_url, tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    other = subprocess.Popen(["sleep", "30"])
    (spool_dir / f"predictions-{other.pid}.jsonl").write_text(json.dumps(make_row("theirs").as_record()) + "\n")
    writer = PredictionLogWriter(sqlite_url, spool_dir, **FAST)
    writer.start()
    try:
        time.sleep(0.3)  # several scans
        assert writer.stats()["replayed"] == 0 and len(spool_files(spool_dir)) == 1
        other.kill()
        other.wait(timeout=10)
        wait_until(lambda: writer.stats()["replayed"] == 1 and not spool_files(spool_dir))
    finally:
        other.kill()
        writer.stop(timeout_s=10)
    assert stored(sqlite_url) == (1, 1)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_postgres_outage_mid_stream_loses_no_row_and_stores_none_twice(clean_postgres, tmp_path):
    writer = PredictionLogWriter(clean_postgres, tmp_path / "spool", batch_size=200, **FAST)
    writer.start()
    submitted = 0

    def submit_for(seconds: float) -> None:
        nonlocal submitted
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            writer.submit(make_row(f"outage-{submitted:06d}"))
            submitted += 1
            time.sleep(0.001)

    try:
        submit_for(0.5)
        postgres_cluster("stop")  # fast shutdown: the writer's open connection is cut mid-stream
        submit_for(1.0)
        postgres_cluster("start")  # waits for pg_isready
        submit_for(0.5)
        wait_until(lambda: writer.stats()["spool_rows"] == 0 and not spool_files(tmp_path / "spool"), 20)
    finally:
        writer.stop(timeout_s=20)
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode != 0:
            postgres_cluster("start")

    stats = writer.stats()
    assert stats["spooled"] > 0 and stats["replayed"] > 0, stats  # the outage really sent rows through the spool
    assert stats["lost"] == 0
    assert stored(clean_postgres) == (submitted, submitted)
