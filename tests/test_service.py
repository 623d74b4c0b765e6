"""The real BentoML server over a tiny exported model: schema, batching, prediction log, bad input, Postgres down."""

from __future__ import annotations

import concurrent.futures
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from skinserve.db.engine import create_registry_engine
from skinserve.db.models import PredictionLog
from skinserve.labels import CONDITIONS
from skinserve.serve.process import start_service

from .conftest import postgres_cluster
from .servers import REPO, encoded, shared_tiny_export, tiny_server_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def face_jpeg(tmp_path_factory) -> bytes:
    from skinserve.data.synth import FaceSpec, draw_face
    from skinserve.labels import Severity

    return encoded(draw_face(FaceSpec(conditions={"acne": Severity.severe}), 256), quality=90)


def server_env(tmp_path_factory, postgres_url: str, **overrides: str) -> tuple[dict[str, str], Path]:
    workdir = tmp_path_factory.mktemp("service")
    env = tiny_server_env(
        tmp_path_factory,
        workdir,
        postgres_url,
        SKINSERVE_MAX_BATCH_SIZE="32",
        SKINSERVE_MAX_LATENCY_MS="5000",
        SKINSERVE_MAX_UPLOAD_BYTES=str(2 * 1024 * 1024),
        SKINSERVE_MAX_PIXELS="25000000",
        **overrides,
    )
    return env, workdir


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres_url):
    env, workdir = server_env(tmp_path_factory, postgres_url)
    running = start_service(env, workdir / "server.log")
    yield running
    running.stop()


def concurrent_analyses(url: str, image: bytes, n: int = 64) -> list[dict]:
    def one(_: int) -> dict:
        with httpx.Client(base_url=url, timeout=120) as client:
            response = client.post("/analyze", files={"image": ("f.jpg", image, "image/jpeg")})
            assert response.status_code == 200, response.text
            return response.json()

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def logged(url: str, request_ids: list[str]) -> list[tuple[str, int]]:
    """(request_id, batch_size) of every prediction_logs row with one of these ids, duplicates included."""
    engine = create_registry_engine(url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(PredictionLog.request_id, PredictionLog.batch_size).where(
                    PredictionLog.request_id.in_(request_ids)
                )
            ).all()
    finally:
        engine.dispose()
    return [(r[0], r[1]) for r in rows]


def wait_until_logged(url: str, request_ids: list[str], timeout_s: float = 60) -> list[tuple[str, int]]:
    """The rows once all ids are there (the writer flushes in the background), or what is there at the deadline."""
    deadline = time.monotonic() + timeout_s
    rows: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        try:
            rows = logged(url, request_ids)
        except Exception:  # noqa: BLE001 - the database may still be coming back
            rows = []
        if {r[0] for r in rows} >= set(request_ids):
            return rows
        time.sleep(0.5)
    return rows


def assert_analysis(body: dict) -> None:
    assert set(body) >= {"request_id", "model", "conditions", "primary_concern", "healthy", "timings", "image"}
    assert list(body["conditions"]) == list(CONDITIONS)
    for score in body["conditions"].values():
        assert 0.0 <= score["probability"] <= 1.0 and isinstance(score["present"], bool)
        assert score["severity"]["label"] in ("none", "mild", "moderate", "severe")
        assert sum(score["severity"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["healthy"] == (not any(s["present"] for s in body["conditions"].values()))
    assert {"decode_ms", "inference_ms", "total_ms"} <= set(body["timings"])
    assert body["model"] == {"name": "skin-classifier", "version": "test"}


def test_multipart_and_raw_uploads_get_the_documented_answer(server, face_jpeg):
    with server.client() as client:
        multipart = client.post("/analyze", files={"image": ("face.jpg", face_jpeg, "image/jpeg")})
        raw = client.post("/api/v1/ml/analyze-condition", content=face_jpeg, headers={"content-type": "image/jpeg"})
    for response in (multipart, raw):
        assert response.status_code == 200, response.text
        assert_analysis(response.json())
    assert multipart.json()["conditions"] == raw.json()["conditions"]  # same bytes, same answer
    assert multipart.json()["request_id"] != raw.json()["request_id"]


def test_bentoml_client_reaches_the_routes(server, face_jpeg):
    with bentoml.SyncHTTPClient(server.url, server_ready_timeout=30) as client:
        assert client.is_ready()
        response = client.request("POST", "/analyze", files={"image": ("f.jpg", face_jpeg, "image/jpeg")})
        info = client.request("GET", "/model")
    assert response.status_code == 200
    assert_analysis(response.json())
    assert info.json()["runtime"] == "onnxruntime-cpu" and info.json()["conditions"] == list(CONDITIONS)
    assert set(info.json()["thresholds"]) == set(CONDITIONS)


def test_the_openapi_spec_documents_the_analysis_schema(server):
    spec = httpx.get(f"{server.url}/docs.json", timeout=30).json()
    assert {"/analyze", "/api/v1/ml/analyze-condition", "/analyze_batch", "/model"} <= set(spec["paths"])
    assert {"Analysis", "ConditionScore", "ErrorBody"} <= set(spec["components"]["schemas"])


def test_a_batch_request_answers_each_image(server, face_jpeg):
    files = [("images", (f"{i}.jpg", face_jpeg, "image/jpeg")) for i in range(3)]
    with server.client() as client:
        response = client.post("/analyze_batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 3 and all(r["batch_size"] >= 3 for r in results)
    for result in results:
        assert_analysis(result)


def test_concurrent_requests_are_merged_into_batches_and_each_is_logged_once(server, face_jpeg, postgres_url):
    answers = concurrent_analyses(server.url, face_jpeg)
    assert max(a["batch_size"] for a in answers) > 1
    ids = [a["request_id"] for a in answers]
    rows = wait_until_logged(postgres_url, ids)
    assert sorted(r[0] for r in rows) == sorted(ids)  # each request exactly once
    assert max(r[1] for r in rows) > 1
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert "skinserve_model_batch_size" in metrics or "adaptive_batch_size" in metrics
    stage_cpu = {
        sample.labels["stage"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "skinserve_stage_cpu_seconds_total"
    }
    assert stage_cpu["decode"] > 0 and stage_cpu["model"] > 0  # where the benchmark says the CPU went


def test_a_separate_model_service_batches_too_and_answers_the_same(server, tmp_path_factory, postgres_url, face_jpeg):
    """The GPU layout (one model service for all API workers) on the same export: batches form, answers match."""
    env, workdir = server_env(tmp_path_factory, postgres_url, SKINSERVE_MODEL_PLACEMENT="separate")
    separate = start_service(env, workdir / "server.log")
    try:
        answers = concurrent_analyses(separate.url, face_jpeg, n=32)
        info = httpx.get(f"{separate.url}/model", timeout=30).json()
    finally:
        separate.stop()
    assert info["batching"]["model_placement"] == "separate"
    batching = httpx.get(f"{server.url}/model", timeout=30).json()["batching"]
    assert (batching["model_placement"], batching["model_copies"]) == ("inprocess", 2)
    assert max(a["batch_size"] for a in answers) > 1
    (reference,) = concurrent_analyses(server.url, face_jpeg, n=1)
    for answer in answers:
        assert_analysis(answer)
        for name, want in reference["conditions"].items():
            assert answer["conditions"][name]["probability"] == pytest.approx(want["probability"], abs=1e-4)


def _bomb_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_bad_uploads_get_4xx_and_the_server_keeps_answering(server, face_jpeg):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8))
    cases = {
        "bomb": (_bomb_png(), "image/png", 413),
        "truncated": (face_jpeg[: len(face_jpeg) // 2], "image/jpeg", 400),
        "html": (b"<html><body>hello</body></html>", "image/jpeg", 415),
        "oversize": (encoded(noise, "PNG"), "image/png", 413),
        "empty": (b"", "image/jpeg", 400),
    }
    with server.client() as client:
        for name, (data, content_type, status) in cases.items():
            response = client.post("/analyze", files={"image": (f"{name}.img", data, content_type)})
            assert response.status_code == status, (name, response.text)
            assert response.json()["error"], name
        # JSON is an input form ({"image_base64": ...}); a content type that is none of the forms is a 415.
        wrong_type = client.post("/analyze", content=b"<image/>", headers={"content-type": "application/xml"})
        assert wrong_type.status_code == 415 and "multipart" in wrong_type.json()["error"]
        assert client.post("/analyze", files={"image": ("ok.jpg", face_jpeg, "image/jpeg")}).status_code == 200
    assert server.process.poll() is None


def test_requests_succeed_while_postgres_is_down_and_every_row_lands_after(server, face_jpeg, postgres_url):
    postgres_cluster("stop")
    try:
        with server.client() as client:
            answers = [
                client.post("/analyze", content=face_jpeg, headers={"content-type": "image/jpeg"}) for _ in range(20)
            ]
    finally:
        postgres_cluster("start")
    assert [a.status_code for a in answers] == [200] * 20
    ids = [a.json()["request_id"] for a in answers]
    rows = wait_until_logged(postgres_url, ids, timeout_s=90)
    assert sorted(r[0] for r in rows) == sorted(ids)
    engine = create_registry_engine(postgres_url)
    with engine.connect() as connection:
        duplicates = connection.execute(
            text(
                "SELECT count(*) FROM (SELECT request_id FROM prediction_logs GROUP BY request_id "
                "HAVING count(*) > 1) d"
            )
        ).scalar()
    engine.dispose()
    assert duplicates == 0


def test_the_service_module_imports_no_training_code_torch_or_locust(tmp_path_factory):
    probe = "import sys, service; print(sorted(m for m in ('torch', 'timm', 'train', 'locust') if m in sys.modules))"
    env = shared_tiny_export(tmp_path_factory)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=os.environ | env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
