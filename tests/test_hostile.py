"""The hostile corpus against the real server: documented statuses, no 5xx, no worker restart, bounded memory."""

from __future__ import annotations

import contextlib
import json

import httpx
import psutil
import pytest

from skinserve.serve.process import start_service

from .hostile.generate import build_corpus, encoded, write_corpus
from .servers import tiny_server_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
MAX_BYTES = 2 * 1024 * 1024


def tree_of(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_rss(pid: int) -> int:
    total = 0
    for process in tree_of(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres_url):
    workdir = tmp_path_factory.mktemp("hostile")
    env = tiny_server_env(
        tmp_path_factory, workdir, postgres_url, SKINSERVE_MAX_BATCH_SIZE="8", SKINSERVE_MAX_UPLOAD_BYTES=str(MAX_BYTES)
    )
    running = start_service(env, workdir / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def valid_jpeg() -> bytes:
    from skinserve.data.synth import FaceSpec, draw_face

    return encoded(draw_face(FaceSpec(), 192), "JPEG", quality=90)


def test_the_corpus_holds_every_input_the_issue_names():
    corpus = build_corpus(MAX_BYTES)
    assert len(corpus) >= 40
    assert len({c.name for c in corpus}) == len(corpus)


def test_every_hostile_input_gets_its_documented_status_and_the_server_survives(server, valid_jpeg):
    with server.client(timeout=120) as client:
        for _ in range(3):  # warm-up: the first requests pay imports and the model's first batches
            assert client.post("/analyze", files={"image": ("f.jpg", valid_jpeg, "image/jpeg")}).status_code == 200
        pids_before = {p.pid for p in tree_of(server.process.pid)}
        rss_warm = tree_rss(server.process.pid)

        answers = {}
        for item in build_corpus(MAX_BYTES):
            response = client.post(item.route, content=item.body, headers=item.headers)
            answers[item.name] = (response.status_code, item.status, response.text[:200])
            if response.status_code != 200:
                assert response.json()["error"], item.name  # a JSON error a client can show
        after = client.post("/analyze", files={"image": ("f.jpg", valid_jpeg, "image/jpeg")})

    server_errors = {name: got for name, got in answers.items() if got[0] >= 500}
    assert not server_errors
    wrong = {name: got for name, got in answers.items() if got[0] != got[1]}
    assert not wrong
    assert {p.pid for p in tree_of(server.process.pid)} == pids_before  # no worker died and came back
    rss_after = tree_rss(server.process.pid)
    assert rss_after < 1.5 * rss_warm + 200 * 2**20, (rss_warm, rss_after)
    assert after.status_code == 200
    assert set(after.json()["conditions"]) and after.json()["image"]["width"] == 192


def test_the_corpus_is_written_to_disk_with_a_manifest(tmp_path):

    manifest = write_corpus(tmp_path, build_corpus(MAX_BYTES))
    entries = json.loads(manifest.read_text())
    assert len(entries) >= 40
    assert all((tmp_path / e["body"]).is_file() and 200 <= e["status"] < 500 for e in entries)
    assert httpx.Headers(entries[0]["headers"])  # replayable as given
