"""The soak benchmark in its short CI mode, against the real server on the tiny export, and its verdict rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.soak import verdict

from .servers import REPO, shared_tiny_export


def window(p99: float, rss: float, errors: int = 0, requests: int = 100) -> dict:
    return {"p99_ms": p99, "rss_mb": rss, "errors": errors, "requests": requests}


@pytest.mark.slow
def test_the_short_soak_runs_and_reports_memory_p99_and_errors(tmp_path_factory, tmp_path):
    env = shared_tiny_export(tmp_path_factory)
    out = tmp_path / "soak"
    command = [sys.executable, "benchmarks/soak.py", "--short", "--out", str(out)]
    command += ["--bento-home", env["BENTOML_HOME"], "--model-tag", env["SKINSERVE_MODEL_TAG"]]
    done = subprocess.run(command, cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    # 0 passed, 1 a broken bound: how fast a shared box is decides which, so only "it ran and reported" is tested.
    assert done.returncode in (0, 1), done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((out / "soak.json").read_text())
    assert len(report["windows"]) == 10 and all(w["requests"] > 0 for w in report["windows"])
    assert {"memory_growth", "p99_drift", "errors", "error_rate", "passed"} <= set(report)
    assert ("PASS" if report["passed"] else "FAIL") in done.stdout


@pytest.mark.slow
def test_the_levels_mode_runs_with_interference_and_reports_each_level(tmp_path_factory, tmp_path):
    env = shared_tiny_export(tmp_path_factory)
    out = tmp_path / "levels"
    command = [sys.executable, "benchmarks/soak.py", "--levels", "0.5,1.3", "--level-s", "4", "--capacity-s", "4"]
    command += ["--interference", "--burn-s", "1", "--burn-period-s", "2", "--out", str(out)]
    command += ["--bento-home", env["BENTOML_HOME"], "--model-tag", env["SKINSERVE_MODEL_TAG"]]
    done = subprocess.run(command, cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((out / "levels.json").read_text())
    assert report["interference"] is True and [r["fraction"] for r in report["levels"]] == [0.5, 1.3]
    for row in report["levels"]:
        assert row["sent"] == row["ok"] + row["429"] + row["503"] + row["other"] > 0
        assert row["queue_max"] is not None  # the service publishes skinserve_queue_images
    assert "levels with interference" in done.stdout


def test_one_slow_window_is_noise_but_a_sustained_rise_is_drift():
    spike = [window(50, 100)] + [window(20, 100)] * 4 + [window(80, 100)] + [window(20, 100)] * 3
    assert verdict(spike, 0.10, 0.50, 0.01)["passed"] is True
    rising = [window(50, 100)] + [window(20, 100)] * 3 + [window(40, 100)] * 5
    found = verdict(rising, 0.10, 0.50, 0.01)
    assert found["passed"] is False and found["p99_drift"] == 1.0


def test_memory_growth_and_errors_fail_the_soak():
    growing = [window(20, 100)] + [window(20, 100 + 5 * i) for i in range(8)]
    assert verdict(growing, 0.10, 0.50, 0.01)["passed"] is False
    failing = [window(20, 100)] * 4 + [window(20, 100, errors=10)]
    assert verdict(failing, 0.10, 0.50, 0.01)["passed"] is False
