"""The service's FastAPI routes in process: how BentoML hands a class view its instance."""

from __future__ import annotations

import os
import subprocess
import sys

import bentoml
import fastapi.dependencies.utils
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from skinserve.serve.http import current_service

from .servers import REPO, shared_tiny_export


def probe_app() -> tuple[FastAPI, type]:
    app = FastAPI()

    @bentoml.asgi_app(app, path="/")
    class Probe:
        @app.get("/who")
        async def who(self) -> dict:
            return {"service": type(self).__name__}

    return app, Probe


def served(app: FastAPI, service_class: type, monkeypatch) -> tuple[dict, list[str]]:
    """GET /who on `app` with an instance of `service_class` current; the functions FastAPI ran in its thread pool."""
    from _bentoml_sdk.service import set_current_service  # what BentoML's worker does when it starts

    hops: list[str] = []
    in_thread_pool = fastapi.dependencies.utils.run_in_threadpool

    async def counted(func, *args, **kwargs):
        hops.append(func.__name__)
        return await in_thread_pool(func, *args, **kwargs)

    monkeypatch.setattr(fastapi.dependencies.utils, "run_in_threadpool", counted)
    set_current_service(service_class())
    try:
        with TestClient(app) as client:
            answer = client.get("/who")
    finally:
        set_current_service(None)
    assert answer.status_code == 200
    return answer.json(), hops


def test_bentoml_alone_hops_to_a_thread_for_the_service_instance(monkeypatch):
    app, service_class = probe_app()
    answer, hops = served(app, service_class, monkeypatch)
    assert answer == {"service": "Probe"}
    assert hops == ["get_current_service"]  # the cost the override removes; if BentoML stops it, drop the override


def test_with_the_override_the_route_gets_the_same_instance_on_the_event_loop(monkeypatch):
    app, service_class = probe_app()
    app.dependency_overrides[bentoml.get_current_service] = current_service
    answer, hops = served(app, service_class, monkeypatch)
    assert answer == {"service": "Probe"}
    assert hops == []


@pytest.mark.slow
def test_the_service_module_installs_the_override(tmp_path_factory):
    probe = (
        "import bentoml, service, skinserve.serve.http as s; "
        "print(service.app.dependency_overrides.get(bentoml.get_current_service) is s.current_service)"
    )
    env = shared_tiny_export(tmp_path_factory)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=os.environ | env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"
