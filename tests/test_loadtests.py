"""The load-test runner against the real BentoML server: Locust as a subprocess, its reports, and the p99 gate."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from loadtests.images import load_corpus, write_corpus
from loadtests.runner import broken_thresholds
from skinserve.serve.process import start_service

from .servers import REPO, tiny_server_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
REPORTS = ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv", "report.html", "latency.png")
PERCENTILE_KEYS = {"p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"}
SUMMARY_KEYS = {"requests", "failures", "error_rate", "requests_per_s"} | PERCENTILE_KEYS


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres_url):
    workdir = tmp_path_factory.mktemp("loadtest")
    env = tiny_server_env(tmp_path_factory, workdir, postgres_url)
    running = start_service(env, workdir / "server.log")
    yield running
    running.stop()


def loadtest(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m loadtests` (the command `skinserve loadtest` runs) in its own process, as a user would."""
    command = [sys.executable, "-m", "loadtests", *args]
    return subprocess.run(command, cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=timeout)


def test_a_short_mixed_run_writes_every_report_with_no_failures(server, tmp_path):
    out = tmp_path / "run"
    done = loadtest("--host", server.url, "--users", "4", "--spawn-rate", "4", "--run-time", "5s", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr + (out / "locust.log").read_text()
    for name in REPORTS:
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    total = summary["total"]
    assert set(total) >= SUMMARY_KEYS and total["requests"] > 0
    assert total["failures"] == 0, (out / "locust_failures.csv").read_text()
    assert "POST /analyze" in summary["endpoints"]
    for endpoint in summary["endpoints"].values():
        assert set(endpoint) >= SUMMARY_KEYS
    assert summary["service_timings"]["answers"] > 0
    assert {"decode_ms", "inference_ms", "total_ms", "batch_size"} <= set(summary["service_timings"])
    assert summary["passed"] is True and summary["broken"] == []
    with (out / "locust_stats.csv").open() as handle:
        aggregated = [r for r in csv.DictReader(handle) if r["Name"] == "Aggregated"]
    assert int(aggregated[0]["Request Count"]) == total["requests"]  # Locust's own numbers, not ours


def test_an_impossible_p99_limit_makes_the_run_exit_1(server, tmp_path):
    images = tmp_path / "images"
    write_corpus(images, sizes=(256,), formats=("jpeg",), faces=2)
    out = tmp_path / "gate"
    args = ["--host", server.url, "--users", "2", "--spawn-rate", "2", "--run-time", "3s", "--out", str(out)]
    done = loadtest(*args, "--scenario", "analyze", "--images", str(images), "--max-p99-ms", "0.001")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "p99" in done.stdout and "over the limit of 0.001 ms" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False and summary["total"]["failures"] == 0


def test_a_stepped_run_on_two_locust_processes_reports_each_step(server, tmp_path):
    images = tmp_path / "images"
    write_corpus(images, sizes=(256, 512), formats=("jpeg", "png"), faces=1)
    out = tmp_path / "step"
    args = ["--host", server.url, "--users", "4", "--spawn-rate", "4", "--run-time", "4s", "--out", str(out)]
    done = loadtest(*args, "--shape", "step", "--steps", "2", "--workers", "2", "--images", str(images))
    assert done.returncode == 0, done.stdout + done.stderr + (out / "locust.log").read_text()
    with (out / "locust_stats_history.csv").open() as handle:
        users = {int(r["User Count"]) for r in csv.DictReader(handle) if r["Name"] == "Aggregated"}
    assert {2, 4} <= users
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"]["failures"] == 0 and summary["total"]["requests"] > 0


def test_thresholds_are_judged_on_the_total_and_say_why():
    total = {"requests": 10, "failures": 1, "error_rate": 0.1, "p99_ms": 250.0}
    assert broken_thresholds(total, max_p99_ms=300, max_error_rate=0.2) == []
    reasons = broken_thresholds(total, max_p99_ms=200, max_error_rate=0.05)
    assert len(reasons) == 2 and "p99 250.0 ms" in reasons[0] and "error rate 0.1000" in reasons[1]
    assert broken_thresholds(total | {"requests": 0}, None, None) == ["no request was sent"]


def test_the_corpus_mixes_formats_and_sizes(tmp_path):
    paths = write_corpus(tmp_path, sizes=(256, 512), formats=("jpeg", "png"), faces=2)
    corpus = load_corpus(tmp_path)
    assert len(paths) == len(corpus) == 8
    assert {c.content_type for c in corpus} == {"image/jpeg", "image/png"}
    assert {p.name.split("_")[1].split(".")[0] for p in paths} == {"256", "512"}


def test_neither_the_runner_nor_the_cli_imports_locust():
    probe = "import sys, loadtests.runner, skinserve.cli; sys.exit('locust' in sys.modules or 'gevent' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, timeout=60).returncode == 0
