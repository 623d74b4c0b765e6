"""Security: bearer tokens checked and never recorded, SQL only with bound parameters, no upload bytes kept on disk."""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from skinserve.db.engine import create_registry_engine
from skinserve.db.models import PredictionLog, TrainingImage
from skinserve.serve.predlog import PredictionLogWriter, PredictionRow
from skinserve.serve.process import start_service

from .hostile.generate import encoded, multipart
from .servers import REPO, tiny_server_env

pytestmark = pytest.mark.postgres

KEY = "sk-test-" + "0123456789abcdef" * 2
OTHER_KEY = "sk-other-" + "fedcba9876543210" * 2
SAME_LENGTH = KEY[:-1] + ("0" if KEY[-1] != "0" else "1")
HOSTILE = (
    "x'); DROP TABLE prediction_logs; --",
    "' OR '1'='1",
    'a"b\\c;--',
    "$$; SELECT pg_sleep(5); $$",
    "%s %(x)s {0} :name ?",
    "é\u202e\x7f",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres_url):
    workdir = tmp_path_factory.mktemp("security")
    (workdir / "tmp").mkdir()
    env = tiny_server_env(
        tmp_path_factory,
        workdir,
        postgres_url,
        SKINSERVE_API_KEYS=f"{KEY}, {OTHER_KEY}",
        SKINSERVE_MAX_BATCH_SIZE="8",
        TMPDIR=str(workdir / "tmp"),  # where starlette spools uploads over 1 MB: checked below
    )
    running = start_service(env, workdir / "server.log")
    running.workdir = workdir
    yield running
    running.stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def photo(seed: int, side: int = 128) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    return encoded(Image.fromarray(pixels), "PNG")


def wait_for_rows(url: str, ids: list[str], timeout_s: float = 60) -> list[PredictionLog]:
    engine = create_registry_engine(url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with Session(engine) as session:
                rows = list(session.scalars(select(PredictionLog).where(PredictionLog.request_id.in_(ids))))
                session.expunge_all()
            if len(rows) >= len(ids) or time.monotonic() > deadline:
                return rows
            time.sleep(0.5)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_missing_wrong_and_same_length_tokens_get_401_and_a_valid_one_200(server):
    image = photo(1)
    attempts = {
        "no header": {},
        "bearer without token": {"authorization": "Bearer"},
        "wrong token": bearer("not-the-key"),
        "same length, wrong bytes": bearer(SAME_LENGTH),
        "key as basic auth": {"authorization": f"Basic {KEY}"},
        "key without scheme": {"authorization": KEY},
        "key prefix": bearer(KEY[:-4]),
        "key with suffix": bearer(KEY + "x"),
    }
    assert len(SAME_LENGTH) == len(KEY) and SAME_LENGTH != KEY
    with server.client() as client:
        for name, headers in attempts.items():
            for route in ("/analyze", "/api/v1/ml/analyze-condition"):
                response = client.post(route, files={"image": ("f.png", image, "image/png")}, headers=headers)
                assert response.status_code == 401, (name, route, response.text)
                assert response.json()["error"] and response.headers["www-authenticate"] == "Bearer"
            batch = client.post("/analyze_batch", files=[("images", ("f.png", image, "image/png"))], headers=headers)
            assert batch.status_code == 401, name
        for key in (KEY, OTHER_KEY):
            ok = client.post("/analyze", files={"image": ("f.png", image, "image/png")}, headers=bearer(key))
            assert ok.status_code == 200, ok.text


@pytest.mark.slow
def test_tokens_appear_in_no_log_and_no_prediction_row(server, postgres_url):
    sent = (KEY, OTHER_KEY, SAME_LENGTH, "leaked-wrong-token-123456")
    ids = []
    with server.client() as client:
        for i, token in enumerate(sent):
            response = client.post(
                "/api/v1/ml/analyze-condition", content=photo(100 + i), headers=bearer(token) | {"content-type": "x/y"}
            )
            assert response.status_code in (401, 415)
            response = client.post(
                "/analyze", files={"image": ("f.png", photo(200 + i), "image/png")}, headers=bearer(token)
            )
            if token in (KEY, OTHER_KEY):
                assert response.status_code == 200
                ids.append(response.json()["request_id"])
            else:
                assert response.status_code == 401
        metrics = client.get("/metrics").text
    rows = wait_for_rows(postgres_url, ids)
    assert len(rows) == len(ids)
    assert {r.client_id for r in rows} == {r.client_id for r in rows if r.client_id.startswith("key-")}
    assert len({r.client_id for r in rows}) == 2  # one fingerprint per key, not the key
    stored = json.dumps([{c.key: getattr(r, c.key) for c in inspect(PredictionLog).columns} for r in rows], default=str)
    text = server.log_text() + metrics
    for token in sent:
        assert token not in stored
        assert token not in text, "a bearer token reached the server log or /metrics"


@pytest.mark.slow
def test_hostile_file_names_and_headers_reach_the_log_as_data(server, postgres_url):
    ids = []
    with server.client() as client:
        for i, hostile in enumerate(HOSTILE):
            headers, body = multipart([("image", hostile, photo(300 + i), "image/png")])
            extra = {"x-request-id": hostile.encode("utf-8", "replace").decode("latin-1"), "user-agent": hostile[:20]}
            response = client.post(
                "/analyze",
                content=body,
                headers=headers | bearer(KEY) | {k: v for k, v in extra.items() if v.isascii()},
            )
            assert response.status_code == 200, (hostile, response.text)
            ids.append(response.json()["request_id"])
    rows = wait_for_rows(postgres_url, ids)
    assert sorted(r.request_id for r in rows) == sorted(ids)  # the table is still there, each row once


def test_hostile_strings_in_every_logged_column_are_stored_verbatim(postgres_url, tmp_path):
    writer = PredictionLogWriter(postgres_url, tmp_path / "spool", flush_interval_s=0.05)
    writer.start()
    rows = [
        PredictionRow(
            request_id=f"sqli-{i}-{os.urandom(6).hex()}",
            created_at=datetime.now(UTC),
            model_name=hostile[:100],
            model_version=hostile[:50],
            runtime=hostile[:50],
            image_sha256=hostile[:64],
            width=1,
            height=1,
            bytes=1,
            outputs={"conditions": {hostile: {"probability": 0.5}}, "primary_concern": hostile, "route": hostile},
            latency_ms=1.0,
            batch_size=1,
            client_id=hostile,
        )
        for i, hostile in enumerate(HOSTILE)
    ]
    for row in rows:
        writer.submit(row)
    writer.stop(timeout_s=30)
    stored = {r.request_id: r for r in wait_for_rows(postgres_url, [r.request_id for r in rows], timeout_s=10)}
    assert len(stored) == len(rows)
    for row in rows:
        got = stored[row.request_id]
        assert (got.model_name, got.runtime, got.client_id) == (row.model_name, row.runtime, row.client_id)
        assert got.outputs == row.outputs


def test_hostile_file_and_source_names_in_ingest_are_stored_verbatim(synth_set, clean_postgres, tmp_path):
    from skinserve.data.ingest import IngestOptions, ingest_dataset
    from skinserve.data.shine import read_shine
    from skinserve.storage import LocalStorage

    read = read_shine(synth_set)
    records = [
        dataclasses.replace(r, relpath=f"{HOSTILE[i % len(HOSTILE)]}/{i}.png", group_id=HOSTILE[i % len(HOSTILE)])
        for i, r in enumerate(read.records)
    ]
    source = "shine'); DROP TABLE training_images; --"
    engine = create_registry_engine(clean_postgres)
    try:
        summary = ingest_dataset(
            dataclasses.replace(read, records=records),
            engine,
            LocalStorage(tmp_path / "store"),
            IngestOptions(source=source[:50], progress=False),
        )
        with Session(engine) as session:
            sources = session.scalars(select(TrainingImage.dataset_source).distinct()).all()
            count = session.scalar(select(func.count()).select_from(TrainingImage))
    finally:
        engine.dispose()
    assert summary.added == count > 0
    assert sources == [source[:50]]


def _sql_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls to text() / exec_driver_sql() / cursor.execute() whose SQL is not a plain string literal."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        if name not in ("text", "exec_driver_sql", "execute"):
            continue
        sql = node.args[0]
        if name == "execute" and not isinstance(sql, (ast.Constant, ast.JoinedStr, ast.BinOp)):
            continue  # connection.execute(select(...)) or a prepared statement object: compiled with parameters
        if not isinstance(sql, ast.Constant):
            found.append((node.lineno, ast.unparse(sql)[:80]))
    return found


def test_all_sql_in_the_package_is_literal_text_or_sqlalchemy_constructs():
    offenders = {}
    for path in sorted((REPO / "skinserve").rglob("*.py")) + [REPO / "service.py"]:
        calls = _sql_calls(ast.parse(path.read_text()))
        if calls:
            offenders[str(path.relative_to(REPO))] = calls
    assert not offenders, f"SQL built from strings (use bound parameters): {offenders}"


@pytest.mark.slow
def test_no_uploaded_image_bytes_are_written_anywhere_by_default(server):
    uploads = [photo(1000 + i, side=640 if i % 5 == 0 else 160) for i in range(30)]  # 640 px PNGs: > 1 MB
    assert max(map(len, uploads)) > 1024 * 1024  # starlette spools those to TMPDIR while parsing

    def send(data: bytes) -> int:
        with server.client() as client:
            return client.post(
                "/analyze", files={"image": ("f.png", data, "image/png")}, headers=bearer(KEY)
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        assert set(pool.map(send, uploads)) == {200}
    time.sleep(1)  # let the writer flush
    probes = [data[len(data) // 2 : len(data) // 2 + 64] for data in uploads]  # compressed bytes: unique per image
    roots = [server.workdir, Path(tiny_export_home(server))]
    holders = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_size >= 64:
                content = path.read_bytes()
                if any(probe in content for probe in probes):
                    holders.append(str(path))
    assert not holders, f"upload bytes found on disk: {holders}"
    assert not any((server.workdir / "data").rglob("*.png"))


def tiny_export_home(server) -> str:
    return str(server.workdir.parent / "tiny-export" / "bentoml")
