"""Faults under load: Postgres restarted and stopped, the API worker SIGKILLed, the spool directory unwritable.

The Postgres outage lasts SKINSERVE_FAULT_OUTAGE_S seconds (10 in CI to keep the file short; the issue's 30 s with
SKINSERVE_FAULT_OUTAGE_S=30). Every test that stops the cluster starts it again in a `finally`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from skinserve.db.engine import create_registry_engine
from skinserve.db.models import PredictionLog
from skinserve.serve.process import start_service

from .conftest import free_port, postgres_cluster, unavailable
from .hostile.generate import encoded
from .servers import tiny_server_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
OUTAGE_S = float(os.environ.get("SKINSERVE_FAULT_OUTAGE_S", "10"))


@pytest.fixture(scope="module")
def can_stop_postgres():
    if not Path("/etc/postgresql").is_dir():
        unavailable("needs the local Postgres cluster (pg_ctlcluster) to stop and start it")


@dataclass
class Load:
    """Requests sent back to back from a few threads; each answer kept with when it was sent and answered."""

    url: str
    image: bytes
    threads: int = 2
    answers: list[tuple[float, float, int, str | None]] = field(default_factory=list)  # sent, done, status, id
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=90)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post("/analyze", content=self.image, headers={"content-type": "image/jpeg"})
                    status = response.status_code
                    request_id = response.json()["request_id"] if status == 200 else None
                except (httpx.HTTPError, ValueError):
                    status, request_id = 0, None  # connection reset: the worker died with the request in flight
                    time.sleep(0.2)
                self.answers.append((sent, time.monotonic(), status, request_id))

    @property
    def succeeded(self) -> list[str]:
        return [a[3] for a in self.answers if a[2] == 200]


def count_logged(url: str, ids: list[str]) -> tuple[int, int]:
    """(rows among `ids`, request_ids stored more than once in the whole table)."""
    engine = create_registry_engine(url)
    try:
        with Session(engine) as session:
            rows = session.scalar(
                select(func.count()).select_from(PredictionLog).where(PredictionLog.request_id.in_(ids))
            )
            duplicates = session.execute(
                text(
                    "SELECT count(*) FROM (SELECT request_id FROM prediction_logs GROUP BY request_id "
                    "HAVING count(*) > 1) d"
                )
            ).scalar()
    finally:
        engine.dispose()
    return rows, duplicates


def wait_logged(url: str, ids: list[str], timeout_s: float = 60) -> tuple[int, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            rows, duplicates = count_logged(url, ids)
        except Exception:  # noqa: BLE001 - the database may still be coming back
            rows, duplicates = -1, -1
        if rows == len(ids) or time.monotonic() > deadline:
            return rows, duplicates
        time.sleep(0.5)


def api_worker(server) -> psutil.Process:
    """The SkinService worker (the one with the prediction log writer), a child of the arbiter."""
    for process in psutil.Process(server.process.pid).children(recursive=True):
        if "skinserve" in process.cmdline() and "--service-name" in process.cmdline():
            return process
    raise LookupError("no skinserve API worker in the server's process tree")


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    from skinserve.data.synth import FaceSpec, draw_face

    return encoded(draw_face(FaceSpec(), 160), "JPEG", quality=90)


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres_url, can_stop_postgres):
    workdir = tmp_path_factory.mktemp("faults")
    env = tiny_server_env(tmp_path_factory, workdir, postgres_url, SKINSERVE_MAX_BATCH_SIZE="8")
    running = start_service(env, workdir / "server.log")
    running.spool = workdir / "spool"
    yield running
    running.stop()


def test_postgres_restarted_then_stopped_under_load_loses_and_duplicates_no_row(server, face_jpeg, postgres_url):
    load = Load(server.url, face_jpeg).start()
    try:
        time.sleep(2)
        postgres_cluster("restart")
        time.sleep(2)
        postgres_cluster("stop")
        time.sleep(OUTAGE_S)
    finally:
        postgres_cluster("start")
        time.sleep(2)
        load.stop()
    statuses = [a[2] for a in load.answers]
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    rows, duplicates = wait_logged(postgres_url, load.succeeded, timeout_s=90)
    print(
        f"\nfault postgres: sent {len(statuses)}, succeeded {len(load.succeeded)}, rows {rows}, duplicates "
        f"{duplicates}, outage {OUTAGE_S:.0f} s"
    )
    assert rows == len(load.succeeded)
    assert duplicates == 0


def test_a_sigkilled_api_worker_comes_back_and_its_spooled_rows_are_replayed(server, face_jpeg, postgres_url):
    victim = api_worker(server)
    load = Load(server.url, face_jpeg)
    postgres_cluster("stop")  # rows go to the worker's spool file, which must outlive the worker
    try:
        load.start()
        spool = server.spool / f"predictions-{victim.pid}.jsonl"
        deadline = time.monotonic() + 30
        while not (spool.is_file() and spool.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                back = api_worker(server).pid != victim.pid and httpx.get(f"{server.url}/readyz").status_code == 200
            except (LookupError, psutil.Error, httpx.HTTPError):
                back = False
            if back:
                break
            time.sleep(0.5)
        ready_at = time.monotonic()
        time.sleep(3)
    finally:
        postgres_cluster("start")
        load.stop()
    assert back, "BentoML did not bring the API worker back"
    spooled_before = [a[3] for a in load.answers if a[2] == 200 and a[1] < killed_at - 0.5]
    after = [a for a in load.answers if a[0] > ready_at]
    assert spooled_before and after
    assert all(a[2] == 200 for a in after), "a request sent after the worker came back failed"
    rows_before, _ = wait_logged(postgres_url, spooled_before, timeout_s=60)
    rows, duplicates = wait_logged(postgres_url, [a[3] for a in after])
    failed = sum(1 for a in load.answers if a[2] != 200)
    print(
        f"\nfault sigkill: sent {len(load.answers)}, succeeded {len(load.succeeded)}, failed in flight {failed}, "
        f"spooled before kill {len(spooled_before)} -> replayed {rows_before}, after restart {len(after)} -> "
        f"rows {rows}, duplicates {duplicates}"
    )
    assert rows_before == len(spooled_before)  # written to the dead worker's spool, replayed by its successor
    assert rows == len(after)
    assert duplicates == 0
    assert not list(server.spool.glob("predictions-*.jsonl.replaying-*"))


def test_an_unwritable_spool_is_logged_and_counted_and_requests_are_still_answered(tmp_path_factory, face_jpeg):
    workdir = tmp_path_factory.mktemp("unwritable")
    (workdir / "not-a-directory").write_text("a file where the spool directory should be")
    refused = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    env = tiny_server_env(
        tmp_path_factory,
        workdir,
        refused,
        SKINSERVE_SPOOL_DIR=str(workdir / "not-a-directory" / "spool"),
        SKINSERVE_MAX_BATCH_SIZE="8",
    )
    server = start_service(env, workdir / "server.log")
    try:
        with server.client() as client:
            statuses = [
                client.post("/analyze", content=face_jpeg, headers={"content-type": "image/jpeg"}).status_code
                for _ in range(10)
            ]
            time.sleep(1.5)  # the writer's first flush fails on both the database and the spool
            metrics = client.get("/metrics").text
    finally:
        server.stop()
    assert statuses == [200] * 10
    assert "cannot write the prediction spool" in server.log_text()
    spool_errors = [
        line
        for line in metrics.splitlines()
        if line.startswith("skinserve_prediction_log_errors_total") and 'kind="spool"' in line
    ]
    assert spool_errors and float(spool_errors[0].split()[-1]) >= 1, metrics[-2000:]
