"""The service as a process: `bentoml serve service:SkinService` on a free port, waited on until ready, stopped whole.

One launcher for everything that starts the real server: `skinserve serve`, the load-test runner, the benchmarks
and the tests. `service.py` is found by its module path (installed beside the package, see pyproject.toml), so this
works from an installed copy as well as from a source checkout.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from skinserve.errors import SkinserveError

SERVICE_MODULE = "service"
SERVICE_TARGET = f"{SERVICE_MODULE}:SkinService"


class ServiceStartError(SkinserveError):
    """The server exited, or was not ready in time; the message points at its log."""


def service_directory() -> Path:
    """The folder holding skinserve's `service.py`: BentoML's working directory for `bentoml serve`."""
    spec = importlib.util.find_spec(SERVICE_MODULE)
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    if origin is None or "class SkinService" not in origin.read_text(errors="replace"):
        raise ServiceStartError(
            f"skinserve's service.py is not importable as {SERVICE_MODULE!r} (found {origin}): "
            "install the package (pip install -e .) or run from the source checkout"
        )
    return origin.parent


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int, host: str = "127.0.0.1", target: str = SERVICE_TARGET) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", target, "--port", str(port), "--host", host]


@dataclass
class ServiceProcess:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, timeout: float = 60):
        import httpx

        return httpx.Client(base_url=self.url, timeout=timeout)

    def ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """SIGTERM to the whole process group (BentoML's arbiter and its workers), SIGKILL after 30 s."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_service(
    env: Mapping[str, str],
    log: Path,
    port: int | None = None,
    ready_timeout_s: float = 180,
    target: str = SERVICE_TARGET,
    folder: Path | None = None,
) -> ServiceProcess:
    """The service in its own process group with `env` over this process's environment, once /readyz answers 200.
    `target` and `folder` serve another BentoML service the same way (the serving benchmark's plain peer)."""
    port = port or free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            serve_command(port, target=target),
            cwd=folder or service_directory(),
            env=os.environ | {"BENTOML_DO_NOT_TRACK": "true"} | dict(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServiceProcess(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + ready_timeout_s
    while not server.ready():
        if process.poll() is not None:
            raise ServiceStartError(f"server exited with {process.returncode}:\n{server.log_text()[-4000:]}")
        if time.monotonic() > deadline:
            server.stop()
            raise ServiceStartError(f"server not ready in {ready_timeout_s:.0f} s:\n{server.log_text()[-4000:]}")
        time.sleep(0.5)
    return server


@contextmanager
def running_service(
    env: Mapping[str, str],
    log: Path,
    ready_timeout_s: float = 300,
    target: str = SERVICE_TARGET,
    folder: Path | None = None,
) -> Iterator[ServiceProcess]:
    """`start_service` as a context: the whole process group is stopped on the way out."""
    server = start_service(env, log, ready_timeout_s=ready_timeout_s, target=target, folder=folder)
    try:
        yield server
    finally:
        server.stop()
