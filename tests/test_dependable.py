"""Dependable under load, against the real server: rate limits per key, the 413 that reaches a client still writing
its body, shedding counted and the queue published, and /readyz leaving the load balancer while overloaded (opt-in)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from skinserve.data.synth import FaceSpec, draw_face
from skinserve.serve.process import start_service

from .servers import encoded, tiny_server_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

KEYS = ("key-alpha-0123456789", "key-bravo-0123456789", "key-charlie-0123456789")


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    return encoded(draw_face(FaceSpec(), 128))


@pytest.fixture(scope="module")
def limited(tmp_path_factory, postgres_url):
    """Two API keys, 3 requests a minute each, and the upload limit at 1 MiB."""
    workdir = tmp_path_factory.mktemp("limited")
    env = tiny_server_env(
        tmp_path_factory,
        workdir,
        postgres_url,
        SKINSERVE_API_KEYS=",".join(KEYS),
        SKINSERVE_RATE_LIMIT="3/minute",
        SKINSERVE_MAX_UPLOAD_BYTES=str(2**20),
    )
    running = start_service(env, workdir / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def overloaded(tmp_path_factory, postgres_url):
    """A latency budget of 1 ms: any request that finds another ahead of it is past it. /readyz follows the queue."""
    workdir = tmp_path_factory.mktemp("overloaded")
    env = tiny_server_env(
        tmp_path_factory,
        workdir,
        postgres_url,
        SKINSERVE_MAX_LATENCY_MS="1",
        SKINSERVE_UNREADY_WHEN_OVERLOADED="true",
        SKINSERVE_UNREADY_AFTER_S="0.5",
    )
    running = start_service(env, workdir / "server.log")
    yield running
    running.stop()


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_a_key_over_its_rate_limit_gets_429_with_retry_after_and_another_key_is_served(limited, face_jpeg):
    def post(key: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", "content-type": "image/jpeg"}
        return httpx.post(f"{limited.url}/analyze", content=face_jpeg, headers=headers, timeout=60)

    first = [post(KEYS[0]) for _ in range(3)]
    assert [r.status_code for r in first] == [200, 200, 200]
    over = post(KEYS[0])
    assert over.status_code == 429, over.text
    assert over.json()["code"] == "rate_limited" and 1 <= int(over.headers["Retry-After"]) <= 60
    assert post(KEYS[1]).status_code == 200  # the other key has its own window
    assert metric(limited.url, "skinserve_rejected_requests_total", status="429", code="rate_limited") >= 1


@pytest.mark.parametrize("form", ["raw", "multipart"])
def test_a_client_that_writes_its_whole_body_first_receives_the_413(limited, form):
    """urllib sends the whole body before it reads: the answer must wait for it, not reset the connection."""
    body = b"\xff\xd8\xff" + bytes(60 * 2**20)  # 60 MB, over the 1 MiB limit
    headers = {"Authorization": f"Bearer {KEYS[2]}"}
    if form == "multipart":
        boundary = uuid.uuid4().hex
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n\r\n'.encode()
        body = head + body + f"\r\n--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    else:
        headers["Content-Type"] = "image/jpeg"
    request = urllib.request.Request(f"{limited.url}/analyze", data=body, headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=120)
    assert answer.value.code == 413
    assert b'"code":"too_large"' in answer.value.read().replace(b" ", b"")


def test_shedding_is_counted_and_the_queue_published(overloaded, face_jpeg):
    headers = {"content-type": "image/jpeg"}
    with httpx.Client(base_url=overloaded.url, timeout=60) as client:
        for _ in range(4):  # alone, each is admitted: the service rate becomes known
            assert client.post("/analyze", content=face_jpeg, headers=headers).status_code == 200

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{overloaded.url}/analyze", content=face_jpeg, headers=headers, timeout=60)

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(post, range(48)))
    statuses = {r.status_code for r in answers}
    assert statuses <= {200, 503} and 200 in statuses and 503 in statuses
    refused = next(r for r in answers if r.status_code == 503)
    assert refused.json()["code"] == "overloaded" and refused.headers["Retry-After"] == "1"
    assert metric(overloaded.url, "skinserve_shed_requests_total") == sum(r.status_code == 503 for r in answers)
    text = httpx.get(f"{overloaded.url}/metrics", timeout=30).text
    assert "skinserve_queue_images" in text


def test_readyz_fails_while_the_queue_stays_over_budget_and_recovers_after(overloaded, face_jpeg):
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=overloaded.url, timeout=60) as client:
            while not stop.is_set():
                client.post("/analyze", content=face_jpeg, headers={"content-type": "image/jpeg"})

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for_status(overloaded.url, "/readyz", 503), "readyz stayed 200 under sustained overload"
        assert httpx.get(f"{overloaded.url}/livez", timeout=30).status_code == 200  # alive all the while
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert wait_for_status(overloaded.url, "/readyz", 200), "readyz did not recover once the load stopped"


def wait_for_status(url: str, path: str, status: int, timeout_s: float = 90) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}{path}", timeout=10).status_code == status:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False
