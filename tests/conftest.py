"""Shared fixtures: real Postgres and SQLite registries, a real GCS emulator, and a small synthetic Shine set.

Under CI=true a missing Postgres or emulator fails the run instead of skipping: CI must prove both were used.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from skinserve.config import redacted_url
from skinserve.data.synth import SynthConfig, write_synthetic_set
from skinserve.db import migrate
from skinserve.db.engine import create_registry_engine
from skinserve.db.models import Base
from skinserve.serve.process import free_port

POSTGRES_URL = os.environ.get("SKINSERVE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
FIXTURES = Path(__file__).parent / "fixtures"
SHINE_SAMPLE = FIXTURES / "shine_annotations"


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a green CI run must have used the real service."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true requires it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test database, reset once per session to a freshly migrated schema."""
    engine = create_registry_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as err:  # any driver error means the same thing here: no usable server
        unavailable(f"Postgres unreachable at {redacted_url(POSTGRES_URL)}: {type(err).__name__}")
    with engine.begin() as connection:
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    migrate.upgrade(POSTGRES_URL)
    return POSTGRES_URL


def postgres_cluster(action: str) -> None:
    """pg_ctlcluster stop/start/restart on the local cluster; after a start or restart, waits for pg_isready."""
    clusters = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") is None or not clusters.is_dir():
        unavailable("needs the local Debian Postgres cluster (pg_ctlcluster) to stop and start it")
    version = sorted(p.name for p in clusters.iterdir())[-1]
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    if action == "stop":
        return
    deadline = time.monotonic() + 60
    while subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Postgres not ready 60 s after pg_ctlcluster {action}")
        time.sleep(0.2)


@pytest.fixture
def clean_postgres(postgres_url: str) -> str:
    engine = create_registry_engine(postgres_url)
    with engine.begin() as connection:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return postgres_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty registry on each database the project supports."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "clean_postgres")


@pytest.fixture
def registry_engine(registry_url: str):
    engine = create_registry_engine(registry_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def gcs_emulator() -> str:
    """gcp-storage-emulator on a loopback port, as a real HTTP server in its own process."""
    executable = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent)) or shutil.which(
        "gcp-storage-emulator"
    )
    if executable is None:
        unavailable("gcp-storage-emulator is not installed (pip install -e '.[test]')")
    port = free_port()
    process = subprocess.Popen(
        [executable, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        unavailable("gcp-storage-emulator did not start within 20 s")
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = host
    yield host
    process.terminate()
    process.wait(timeout=10)
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def gcs_bucket(gcs_emulator: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the emulator, named after the test."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="skinserve-test", credentials=AnonymousCredentials())
    name = "skinserve-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    client.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic Shine set, written once per session; tests that change files copy it first."""
    root = tmp_path_factory.mktemp("synth") / "shine"
    write_synthetic_set(root, SynthConfig(per_class=2, size=64, seed=7))
    return root


@pytest.fixture
def synth_copy(synth_set: Path, tmp_path: Path) -> Path:
    target = tmp_path / "shine"
    shutil.copytree(synth_set, target)
    return target
