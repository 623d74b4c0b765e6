"""Schemathesis against the OpenAPI spec the server publishes: no 5xx, every answer as the spec documents it."""

from __future__ import annotations

import copy
import os

import httpx
import pytest

from skinserve.serve.process import start_service

from .servers import tiny_server_env

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402 - schemathesis brings hypothesis
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
# Bounded for CI; raise it locally (SKINSERVE_FUZZ_EXAMPLES=500) for a longer hunt.
EXAMPLES = int(os.environ.get("SKINSERVE_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
POST_ROUTES = ("/analyze", "/api/v1/ml/analyze-condition", "/analyze_batch")


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres_url):
    workdir = tmp_path_factory.mktemp("fuzz")
    env = tiny_server_env(
        tmp_path_factory,
        workdir,
        postgres_url,
        SKINSERVE_MAX_BATCH_SIZE="8",
        SKINSERVE_MAX_UPLOAD_BYTES=str(256 * 1024),
    )
    running = start_service(env, workdir / "server.log")
    yield running
    running.stop()


def with_upload_bodies(spec: dict) -> dict:
    """The served spec plus the request bodies the upload routes read by hand (they take a raw Request).

    The routes parse the body themselves, so FastAPI documents none and schemathesis would only ever send an empty
    one. Adding the documented forms (README, Serving) lets it send random files and raw bytes as well.
    """
    spec = copy.deepcopy(spec)
    binary = {"type": "string", "format": "binary"}
    for route in POST_ROUTES:
        field = "images" if route == "/analyze_batch" else "image"
        file_schema = {"type": "array", "items": binary, "maxItems": 3} if field == "images" else binary
        spec["paths"][route]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {field: file_schema}, "required": [field]}
                },
                "image/jpeg": {"schema": binary},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    return spec


def test_the_served_spec_passes_schemathesis_with_no_5xx(server):
    served = httpx.get(f"{server.url}/docs.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(with_upload_bodies(served))
    failures: list[str] = []
    operations = 0
    examples_sent = [0]
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        # A GET without parameters has nothing to negate: negative cases only where there is a body.
        negative = (GenerationMode.NEGATIVE,) if operation.path in POST_ROUTES else ()
        for mode in (GenerationMode.POSITIVE, *negative):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,  # the same examples every CI run
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case) -> None:
                examples_sent[0] += 1
                case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=60)

            try:
                call()
            except Exception as err:  # noqa: BLE001 - collected so one run reports every failing operation
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {err}"[:2000])
    assert operations >= 8
    assert examples_sent[0] >= 8 * min(EXAMPLES, 5)
    assert not failures, "\n\n".join(failures)
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
