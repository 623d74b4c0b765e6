"""The container: `bentoml build` of a tiny export (bentofile.yaml and bentofile.gpu.yaml), the Dockerfile BentoML
generates, the packages the image installs against what the service imports, the Kubernetes Job's commands run from
the Bento's source, and the Bento served on a read-only root with only the Deployment's volumes writable."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from .conftest import free_port
from .servers import REPO, encoded, shared_tiny_export
from .test_deploy import K8S, one, render

pytestmark = pytest.mark.slow


def build(env: dict[str, str], version: str, *args: str) -> Path:
    command = [sys.executable, "-m", "bentoml", "build", "--version", version, *args, str(REPO)]
    done = subprocess.run(command, cwd=REPO, env=os.environ | env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    name = yaml.safe_load((REPO / (args[1] if args else "bentofile.yaml")).read_text())["name"]
    return Path(env["BENTOML_HOME"]) / "bentos" / name / version


@pytest.fixture(scope="module")
def export_env(tmp_path_factory) -> dict[str, str]:
    return shared_tiny_export(tmp_path_factory) | {"BENTOML_DO_NOT_TRACK": "true"}


@pytest.fixture(scope="module")
def cpu_bento(export_env) -> Path:
    return build(export_env, "cpu-test")


@pytest.fixture(scope="module")
def gpu_bento(export_env) -> Path:
    # SKINSERVE_GPUS=1 at build time, as the GPU image runs: the Bento records the model service and its GPU.
    return build(export_env | {"SKINSERVE_GPUS": "1"}, "gpu-test", "-f", "bentofile.gpu.yaml")


def dockerfile(bento: Path) -> str:
    return (bento / "env" / "docker" / "Dockerfile").read_text()


def instructions(text: str, keyword: str) -> list[str]:
    return [line.split(None, 1)[1].strip() for line in text.splitlines() if line.startswith(f"{keyword} ")]


def deployment_container(overlay: str) -> dict:
    (container,) = one(render(K8S / "overlays" / overlay), "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_the_cpu_dockerfile_starts_from_python_runs_as_the_deployments_user_and_serves_its_port(cpu_bento):
    text = dockerfile(cpu_bento)
    assert instructions(text, "FROM")[0].split()[0] == "python:3.11-slim"
    assert instructions(text, "USER")[-1] == "bentoml"  # the last USER is who runs the entrypoint
    uid = int(re.search(r"^ARG BENTO_USER_UID=(\d+)$", text, re.M)[1])
    pod = one(render(K8S / "overlays" / "cpu"), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid != 0
    assert {"3000", "3001"} <= set(instructions(text, "EXPOSE"))  # HTTP (and /metrics on it); Prometheus
    (port,) = deployment_container("cpu")["ports"]
    assert port["containerPort"] == 3000
    bento_path = re.search(r"^ARG BENTO_PATH=(\S+)$", text, re.M)[1]
    assert instructions(text, "ENTRYPOINT") == [f'[ "{bento_path}/env/docker/entrypoint.sh" ]']
    job = one(render(K8S / "overlays" / "cpu"), "Job")["spec"]["template"]["spec"]
    assert job["initContainers"][0]["workingDir"] == f"{bento_path}/src"
    assert (cpu_bento / "src" / "skinserve" / "db" / "migrations" / "versions").is_dir()


def locked(bento: Path) -> dict[str, str]:
    """name -> version pinned in the Bento's requirements.txt (BentoML locks the bentofile's packages)."""
    pins = {}
    for line in (bento / "env" / "python" / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith(("#", "-")):
            name, version = line.split(";")[0].split("==")
            pins[canonicalize_name(name.split("[")[0])] = version.strip()
    return pins


IMPORTED = """
import importlib.metadata as md, json, sys
at_start = set(sys.modules)  # site's .pth hooks (setuptools' _distutils_hack): the interpreter's, not the service's
for stage in ("train", "export", "loadtests", "benchmarks", "tests"):
    sys.modules[stage] = None  # not in the Bento: imported here only through the editable install
import service  # noqa: F401 - what the service needs at import, and so at start
import skinserve.cli  # noqa: F401 - the Job's `python -m skinserve db upgrade`
distributions = md.packages_distributions()
top = {name.split(".")[0] for name in set(sys.modules) - at_start} - set(sys.stdlib_module_names)
print(json.dumps(sorted({d for name in top for d in distributions.get(name, [])})))
"""


# Imported when present, for speed only (urllib3, aiohttp and httpx try brotli for compressed answers).
OPTIONAL = {"brotli", "skinserve"}


def test_the_image_pins_every_package_the_service_and_the_job_import(cpu_bento, export_env):
    env = os.environ | export_env | {"PYTHONPATH": str(cpu_bento / "src")}
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED], cwd=cpu_bento / "src", env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    imported = {canonicalize_name(d) for d in json.loads(done.stdout.strip().splitlines()[-1])} - OPTIONAL
    pins = locked(cpu_bento)
    assert imported, "nothing imported?"
    assert imported - pins.keys() == set(), f"imported but not installed in the image: {imported - pins.keys()}"
    for name in ("onnxruntime", "bentoml", "psycopg", "sqlalchemy", "alembic", "typer", "pillow"):
        assert name in pins, name
    assert not {"torch", "timm", "locust", "onnxruntime-gpu"} & pins.keys()  # the service is torch-free


def test_the_gpu_build_asks_for_the_cuda_base_and_the_gpu_extra(gpu_bento, cpu_bento):
    text = dockerfile(gpu_bento)
    assert re.fullmatch(
        r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.\d\d", instructions(text, "FROM")[0].split()[0]
    )
    assert instructions(text, "USER")[-1] == "bentoml"
    assert {"3000", "3001"} <= set(instructions(text, "EXPOSE"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = {
        canonicalize_name(Requirement(r).name): str(Requirement(r).specifier)
        for r in project["optional-dependencies"]["gpu"]
    }

    def packages(bento: Path) -> dict[str, str]:
        folder = bento / "env" / "python"  # requirements.in beside the lock; requirements.txt alone when unlocked
        lines = next(p for p in (folder / "requirements.in", folder / "requirements.txt") if p.is_file()).read_text()
        lines = lines.splitlines()
        reqs = [Requirement(line.split("#")[0]) for line in lines if line.strip() and not line.startswith(("#", "-"))]
        return {canonicalize_name(r.name): str(r.specifier) for r in reqs}

    gpu, cpu = packages(gpu_bento), packages(cpu_bento)
    assert extra.items() <= gpu.items()  # the gpu extra, with pyproject's version ranges
    assert "onnxruntime" not in gpu  # the CPU wheel would clash with onnxruntime-gpu
    assert {k: v for k, v in cpu.items() if k != "onnxruntime"} == {k: v for k, v in gpu.items() if k not in extra}
    services = {s["name"]: s for s in yaml.safe_load((gpu_bento / "bento.yaml").read_text())["services"]}
    assert services["skin_model"]["config"]["resources"] == {"gpu": 1}
    assert services["skinserve"]["dependencies"] == [{"service": "skin_model"}]
    container = deployment_container("gpu")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == services["skin_model"]["config"]["resources"]["gpu"]


@pytest.mark.postgres
def test_the_jobs_commands_run_from_the_bentos_source(cpu_bento, clean_postgres):
    job = one(render(K8S / "overlays" / "cpu"), "Job")["spec"]["template"]["spec"]
    env = os.environ | {"SKINSERVE_DATABASE_URL": clean_postgres}
    for container in job["initContainers"] + job["containers"]:
        python, *args = container["args"]
        assert python == "python"
        done = subprocess.run(
            [sys.executable, *args], cwd=cpu_bento / "src", env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "day partitions" in done.stdout


# In a mount namespace of its own: the whole tree read-only, as readOnlyRootFilesystem makes it, then a fresh tmpfs
# on each of the Deployment's volume mounts (emptyDirs), then the server. Capabilities are dropped so that root
# cannot remount; the read-only mount refuses writes whoever writes.
READ_ONLY_ROOT = """
set -euo pipefail
mount --make-rprivate /
mount --bind / /
mount -o remount,bind,ro /
for dir in $WRITABLE; do mount -t tmpfs -o mode=1777,size=512m tmpfs "$dir"; done
exec setpriv --inh-caps=-all --bounding-set=-all "$@"
"""


def namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.postgres
def test_the_bento_serves_on_a_read_only_root_with_only_the_deployments_volumes_writable(
    cpu_bento, export_env, clean_postgres
):
    if not namespaces_work():
        pytest.skip("needs root and mount namespaces (unshare -m) to make the root filesystem read-only")
    objects = render(K8S / "overlays" / "cpu")
    settings = one(objects, "ConfigMap")["data"]
    mounts = [m["mountPath"] for m in deployment_container("cpu")["volumeMounts"]]
    hidden = [m for m in mounts if Path(sys.prefix).resolve().is_relative_to(m)]
    if hidden:  # a checkout made with `mktemp -d`: the interpreter would vanish under the deployment's /tmp volume
        pytest.skip(f"this Python lives under {hidden[0]}, which the deployment mounts an empty volume over")
    made = [Path(m) for m in mounts if not Path(m).exists()]
    for path in made:
        path.mkdir(parents=True)  # a mount point, as the container runtime makes one
    # The Bento as `bentoml containerize` lays it out: its models copied in, outside any tmpfs mount.
    stage = Path(tempfile.mkdtemp(prefix="skinserve-readonly-", dir="/var/tmp"))
    bento = stage / "bento"
    shutil.copytree(cpu_bento, bento)
    shutil.copytree(Path(export_env["BENTOML_HOME"]) / "models", bento / "models")
    port = free_port()
    env = (
        os.environ
        | settings
        | {
            "SKINSERVE_DATABASE_URL": clean_postgres,
            "SKINSERVE_MODEL_TAG": export_env["SKINSERVE_MODEL_TAG"],
            "WRITABLE": " ".join(mounts),
            "HOME": "/nonexistent",
        }
    )
    serve = [sys.executable, "-m", "bentoml", "serve", str(bento), "--port", str(port), "--host", "127.0.0.1"]
    log = stage / "serve.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            ["unshare", "-m", "bash", "-c", READ_ONLY_ROOT, "read-only-root", *serve],
            cwd=bento,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while not _ready(url):
            assert process.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        image = encoded(Image.new("RGB", (96, 96), (190, 140, 120)))
        answer = httpx.post(f"{url}/analyze", files={"image": ("face.jpg", image, "image/jpeg")}, timeout=60)
        assert answer.status_code == 200, answer.text
        # Over 1 MiB, Starlette spools the upload to a temporary file: /tmp must be writable for this one.
        big = os.urandom(1_200_000)
        refused = httpx.post(f"{url}/analyze", files={"image": ("noise.jpg", big, "image/jpeg")}, timeout=60)
        assert refused.status_code in (400, 415), refused.text
        assert 'skinserve_predictions_total{route="analyze"}' in httpx.get(f"{url}/metrics", timeout=10).text
        request_id = answer.json()["request_id"]
        deadline = time.monotonic() + 20
        while not _logged(clean_postgres, request_id):
            assert time.monotonic() < deadline, "the prediction was not logged: " + log.read_text()[-4000:]
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        written = log.read_text(errors="replace")
        for path in made:
            path.rmdir()
        shutil.rmtree(stage, ignore_errors=True)
    assert "Read-only file system" not in written, written[-4000:]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _logged(url: str, request_id: str) -> bool:
    from sqlalchemy import text

    from skinserve.db.engine import create_registry_engine

    engine = create_registry_engine(url)
    try:
        with engine.connect() as connection:
            query = text("SELECT count(*) FROM prediction_logs WHERE request_id = :r")
            return connection.execute(query, {"r": request_id}).scalar() == 1
    finally:
        engine.dispose()
