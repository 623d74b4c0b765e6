"""Test helpers around a real exported model: one tiny export per session, its server environment, encoded images.

The server itself is started by `skinserve.serve.process.start_service`, as the load tests and benchmarks start it."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from loadtests.models import build_model_store

REPO = Path(__file__).resolve().parents[1]


def shared_tiny_export(tmp_path_factory) -> dict[str, str]:
    """One tiny export per pytest session (about a minute to train and export), shared by the modules using it."""
    root = tmp_path_factory.getbasetemp() / "tiny-export"
    if not (root / "env.json").is_file():
        root.mkdir(exist_ok=True)
        (root / "env.json").write_text(json.dumps(build_model_store(root)))
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


def encoded(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
