"""The serving benchmarks run for real, tiny: benchmarks/serving.py with skinserve int8, fp32 and the plain BentoML
peer in one run, and benchmarks/gpu_serving.py's dry run (the same script as the device call, on a CPU). Both need
the peer's folder (`../shared/baselines/plain_bento` beside the repo, or SKINSERVE_PLAIN_PEER); no speed is
asserted, only that every service answered and the report holds what the tables print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PEER = Path(os.environ.get("SKINSERVE_PLAIN_PEER") or REPO.parent / "shared" / "baselines" / "plain_bento")

pytestmark = pytest.mark.slow  # trains a tiny model and serves it and the peer under Locust
needs_peer = pytest.mark.skipif(
    not (PEER / "service.py").is_file(),
    reason=f"the plain BentoML peer is not at {PEER} (set SKINSERVE_PLAIN_PEER to its folder)",
)


def _script(name: str, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO), "BENTOML_DO_NOT_TRACK": "true"}
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@needs_peer
def test_serving_benchmark_measures_int8_fp32_and_the_peer_in_one_run(tmp_path):
    out = tmp_path / "bench"
    args = ["--backbone", "test_convnext", "--img-size", "64", "--users", "2", "--seconds", "2"]
    done = _script("serving.py", *args, "--batch-sizes", "1,2", "--peer", str(PEER), "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "serving.json").read_text())
    assert {r["config"] for r in report["sweep"]} == {"int8", "fp32", "peer"}
    assert {r["format"] for r in report["raw"]} == {"onnx-int8", "onnx"}
    for row in report["sweep"]:
        assert row["good_per_s"] > 0 and row["failures"] == 0, row
    by = {r["config"]: r for r in report["sweep"]}
    assert by["int8"]["model_info"]["runtime"] == "onnxruntime-cpu" and by["peer"]["model_info"] is None
    level = report["ratios"]["per_level"]["2"]
    assert {"int8_over_peer", "fp32_over_peer", "int8_over_fp32"} <= set(level)
    assert level["int8"]["errors"] == level["peer"]["errors"] == 0
    assert set(report["ratios"]["served"]) == {"int8", "fp32"}
    assert report["ratios"]["served"]["int8"]["format"] == "onnx-int8"
    assert report["load"]["before"]["uptime"] and report["load"]["after"]["uptime"]
    assert "int8 ÷ peer" in done.stdout and "int8 ÷ fp32" in done.stdout


def test_serving_benchmark_says_where_the_peer_is_missing(tmp_path):
    done = _script("serving.py", "--peer", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), timeout=120)
    assert done.returncode == 2
    assert "no plain peer at" in done.stderr and "--peer DIR" in done.stderr


@needs_peer
def test_gpu_benchmark_dry_run_runs_the_device_script_end_to_end(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = _script("gpu_serving.py", "--dry-run", "--out", str(out), "--work", str(work), "--peer", str(PEER))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_serving.json", "gpu_serving.txt"]  # what $OUT brings back
    report = json.loads((out / "gpu_serving.json").read_text())
    assert report["dry_run"] and report["plan"]["runtime"] == "onnxruntime-cpu"
    assert [level["users"] for level in report["levels"]] == [2, 4]
    for level in report["levels"]:
        for name in ("skinserve", "peer"):
            assert level[name]["good_per_s"] > 0 and level[name]["answers_503"] == level[name]["other_errors"] == 0
        assert level["skinserve_over_peer"] > 0
    skinserve = [r for r in report["sweep"] if r["config"] == "fp32"]
    batching = skinserve[0]["model_info"]["batching"]
    assert batching["model_placement"] == "separate" and batching["jpeg_decode"] == "cpu"  # the offload path ran
    assert report["raw"] and {r["runtime"] for r in report["raw"]} == {"onnxruntime-cpu"}
    pixels = report["pixels"]
    assert pixels["decoded"] == pixels["images"] > 0 and pixels["p99_levels"] <= pixels["tolerance_p99_levels"]
    text = (out / "gpu_serving.txt").read_text()
    assert "skinserve" in text and "peer" in text and "targets are set at 256 users" in text
