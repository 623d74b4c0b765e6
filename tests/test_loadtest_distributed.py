"""Load from several machines: `skinserve loadtest --master` and two `--worker`s (Locust's distributed mode, each in
its own process) on loopback against the real BentoML server; the master's summary has a single run's shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from skinserve.serve.process import free_port, start_service

from .servers import REPO, tiny_server_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres_url):
    workdir = tmp_path_factory.mktemp("distributed")
    running = start_service(tiny_server_env(tmp_path_factory, workdir, postgres_url), workdir / "server.log")
    yield running
    running.stop()


def loadtest(*args: str) -> subprocess.Popen:
    """`python -m loadtests` (what `skinserve loadtest` runs), as its own process: Locust patches the stdlib."""
    command = [sys.executable, "-m", "loadtests", *args]
    return subprocess.Popen(command, cwd=REPO, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def finished(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"still running after {timeout} s:\n{output}")
    return process.returncode, output


def shape(value):
    """The keys of a summary, recursively, with endpoint names left out (a run's mix may differ)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k != "endpoints"} | (
            {"endpoints": {shape(v).__repr__() for v in value["endpoints"].values()}} if "endpoints" in value else {}
        )
    return type(value).__name__ if value is None else "value"


def test_a_master_and_two_workers_report_like_a_single_run(server, tmp_path):
    port = str(free_port())
    run = ["--host", server.url, "--users", "4", "--spawn-rate", "4", "--run-time", "6s", "--scenario", "analyze"]
    master = loadtest(*run, "--out", str(tmp_path / "master"), "--master", "--expect-workers", "2",
                      "--master-host", "127.0.0.1", "--master-port", port)  # fmt: skip
    workers = [
        loadtest("--worker", "--master-host", "127.0.0.1", "--master-port", port, "--out", str(tmp_path / f"w{i}"))
        for i in range(2)
    ]
    code, output = finished(master)
    logs = {i: finished(w) for i, w in enumerate(workers)}
    master_log = (tmp_path / "master" / "locust.log").read_text()
    assert code == 0, output + master_log
    for i, (worker_code, worker_output) in logs.items():
        assert worker_code == 0, worker_output + (tmp_path / f"w{i}" / "locust.log").read_text()
        assert f"worker of 127.0.0.1:{port} done" in worker_output
    assert "2 workers connected" in master_log  # the run waited for both before it started

    summary = json.loads((tmp_path / "master" / "summary.json").read_text())
    total = summary["total"]
    assert total["requests"] > 0 and total["failures"] == 0, (tmp_path / "master" / "locust_failures.csv").read_text()
    assert summary["service_timings"]["answers"] > 0  # sent by the workers to the master with their reports
    assert summary["config"]["role"] == "master" and summary["passed"] is True

    single = tmp_path / "single"
    done = subprocess.run(
        [sys.executable, "-m", "loadtests", *run, "--run-time", "3s", "--out", str(single)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    reference = json.loads((single / "summary.json").read_text())
    assert shape(summary) == shape(reference)
    for name in ("locust_stats.csv", "locust_stats_history.csv", "report.html", "latency.png"):
        assert (tmp_path / "master" / name).stat().st_size > 0, name


def test_a_worker_needs_the_masters_address(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "loadtests", "--worker", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "--worker needs --master-host" in done.stderr
