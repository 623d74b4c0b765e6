"""Test helpers that build a real exported model and run the real BentoML server around it."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def build_tiny_export(workdir: Path) -> dict[str, str]:
    """Synthesise, train one epoch of a tiny timm model, export ONNX into a private BentoML store."""
    from skinserve.data.synth import SynthConfig, write_synthetic_set

    data = workdir / "shine"
    write_synthetic_set(data, SynthConfig(per_class=1, size=64, seed=3))
    env = os.environ | {"BENTOML_HOME": str(workdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    run = [
        sys.executable,
        "-m",
        "train",
        "--data",
        str(data),
        "--out",
        str(workdir / "run"),
        "--model",
        "test_convnext",
        "--img-size",
        "64",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--no-registry",
        "--no-progress",
    ]
    subprocess.run(run, check=True, env=env, cwd=REPO, capture_output=True, timeout=600)
    export = [
        sys.executable,
        "-m",
        "export",
        str(workdir / "run" / "best.pt"),
        "--formats",
        "onnx",
        "--out",
        str(workdir / "export"),
        "--bento",
        "--version",
        "test",
    ]
    subprocess.run(export, check=True, env=env, cwd=REPO, capture_output=True, timeout=600)
    return {"BENTOML_HOME": str(workdir / "bentoml"), "SKINSERVE_MODEL_TAG": "skin-classifier:test"}


def shared_tiny_export(tmp_path_factory) -> dict[str, str]:
    """One tiny export per pytest session (about a minute to train and export), shared by the modules using it."""
    root = tmp_path_factory.getbasetemp() / "tiny-export"
    if not (root / "env.json").is_file():
        root.mkdir(exist_ok=True)
        (root / "env.json").write_text(json.dumps(build_tiny_export(root)))
    return json.loads((root / "env.json").read_text())


def tiny_server_env(tmp_path_factory, workdir: Path, database_url: str, **settings: str) -> dict[str, str]:
    """The tiny export served with its data and spool under `workdir`, one ONNX Runtime thread, then `settings`."""
    base = {
        "SKINSERVE_DATABASE_URL": database_url,
        "SKINSERVE_DATA_DIR": str(workdir / "data"),
        "SKINSERVE_SPOOL_DIR": str(workdir / "spool"),
        "SKINSERVE_ORT_THREADS": "1",
    }
    return shared_tiny_export(tmp_path_factory) | base | settings


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(env: dict[str, str], port: int, log: Path, ready_timeout_s: float = 180) -> RunningServer:
    """`bentoml serve service:SkinService` in its own process group, waited on until /readyz answers 200."""
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "service:SkinService",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    handle = log.open("wb")
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=os.environ | {"BENTOML_DO_NOT_TRACK": "true"} | env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_text()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"server not ready in {ready_timeout_s} s:\n{server.log_text()[-4000:]}")


def encoded(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
