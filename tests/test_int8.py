"""The onnx-int8 format end to end: a real checkpoint through `python -m export`, ONNX Runtime's static quantization
calibrated on its training split, parity on its test split, every output kept, and the runtime's choice of int8 on
a CPU; the SE pooling rewrite checked on a real graph through ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.parity import INT8_AGREEMENT, INT8_METRIC_DIFF, ParityRow
from export.quantize import global_average_pools
from skinserve.data.synth import SynthConfig, write_synthetic_set
from skinserve.manifest import load_manifest
from skinserve.runtime import load_exported_model
from skinserve.serve.model import load_served_model
from skinserve.serve.settings import ServiceSettings
from train.config import load_config
from train.loop import fit

ALL_OUTPUTS = ["condition_logits", "severity_logits", "skin_type_logits", "condition_cam", "severity_cam"]


def _export(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"BENTOML_DO_NOT_TRACK": "true"}
    return subprocess.run([sys.executable, "-m", "export", *args], capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    data = tmp_path_factory.mktemp("int8-data") / "shine"
    write_synthetic_set(data, SynthConfig(per_class=2, size=96, seed=5))
    out = tmp_path_factory.mktemp("int8-run")
    # test_efficientnet: depthwise convolutions, SiLU and squeeze-and-excitation, as efficientnet_b0, in seconds.
    tiny = {"model": "test_efficientnet", "img_size": 96, "epochs": 2, "workers": 0, "registry": False}
    fit(load_config(None, data=str(data), out=str(out), skin_type_head=True, **tiny), progress=False)
    return {"data": data, "checkpoint": out / "best.pt"}


@pytest.fixture(scope="module")
def exported(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("int8-export") / "export"
    args = [str(trained["checkpoint"]), "--formats", "onnx,onnx-int8", "--out", str(out)]
    done = _export(*args, "--calibration-data", str(trained["data"]), "--calibration-images", "24")
    assert done.returncode == 0, done.stdout + done.stderr
    return {"out": out, "stdout": done.stdout}


@pytest.mark.slow
def test_int8_export_is_a_quantized_graph_with_every_output(exported):
    manifest = load_manifest(exported["out"])
    entry = manifest.artifacts["onnx-int8"]
    assert (entry.file, entry.format, entry.precision) == ("model-int8.onnx", "onnx-int8", "int8")
    graph = onnx.load(str(exported["out"] / entry.file)).graph
    assert [o.name for o in graph.output] == ALL_OUTPUTS
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    assert "ReduceMean" not in ops and "GlobalAveragePool" in ops  # the SE pooling rewritten, then quantized
    weights = {i.name: i for i in graph.initializer}
    # Per-channel weights: int8 tensors whose DequantizeLinear has one scale per output channel.
    conv_weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    int8 = [n for n in conv_weights if weights[n.input[0]].data_type == TensorProto.INT8]
    assert int8 and any(numpy_helper.to_array(weights[n.input[1]]).size > 1 for n in int8)


@pytest.mark.slow
def test_int8_parity_on_the_test_split_is_reported_and_holds(exported):
    report = json.loads((exported["out"] / "parity.json").read_text())
    (row,) = [r for r in report["rows"] if r["format"] == "onnx-int8"]
    assert row["inputs"] == "test split" and row["images"] > 0
    assert row["agreement"] >= INT8_AGREEMENT
    assert row["macro_f1_diff"] <= INT8_METRIC_DIFF and row["severity_accuracy_diff"] <= INT8_METRIC_DIFF
    assert row["skin_type_diff"] is not None and row["cam_diff"] is not None  # the optional outputs were compared
    assert row["passed"] and report["passed"]
    assert report["int8"]["agreement"] == INT8_AGREEMENT and report["int8"]["metric_diff"] == INT8_METRIC_DIFF
    assert report["int8"]["agreement_of"] == "condition decisions" and 0 < row["images_agreement"] <= 1
    assert "onnx-int8" in exported["stdout"] and "test split" in exported["stdout"]


def test_an_int8_row_fails_below_the_agreement_or_past_the_metric_difference():
    row = ParityRow("onnx-int8", "onnxruntime-cpu", "test split", 8, 0.02, 0.02, 0.1, None, 0.01, 0.01, 100)
    passing = {"agreement": 1.0, "macro_f1_diff": 0.0, "severity_accuracy_diff": 0.0}
    assert ParityRow(**(row.__dict__ | passing)).passed
    for change in ({"agreement": 0.98}, {"macro_f1_diff": 0.02}, {"severity_accuracy_diff": 0.011}, {"cam_diff": 0.3}):
        assert not ParityRow(**(row.__dict__ | passing | change)).passed, change


@pytest.mark.slow
def test_the_runtime_runs_int8_on_a_cpu_when_the_export_has_it(exported):
    model = load_exported_model(exported["out"])
    assert (model.runtime, model.artifact) == ("onnxruntime-cpu", "model-int8.onnx")
    fp32 = load_exported_model(exported["out"], fmt="onnx")
    assert fp32.artifact == "model.onnx"
    batch = np.random.default_rng(0).standard_normal((3, 3, 96, 96)).astype(np.float32)
    outputs = model.predict_outputs(batch)
    assert list(outputs) == ALL_OUTPUTS and all(v.dtype == np.float32 and len(v) == 3 for v in outputs.values())
    # The service asks for an artifact by SKINSERVE_MODEL_FORMAT; auto leaves the runtime its choice.
    for fmt, artifact in (("auto", "model-int8.onnx"), ("onnx", "model.onnx")):
        settings = ServiceSettings.from_env({"SKINSERVE_MODEL_FORMAT": fmt, "SKINSERVE_MAX_BATCH_SIZE": "2"})
        assert load_served_model(exported["out"], settings).model.artifact == artifact


@pytest.mark.slow
def test_int8_without_calibration_data_is_refused_before_any_work(trained, tmp_path):
    done = _export(str(trained["checkpoint"]), "--formats", "onnx-int8", "--out", str(tmp_path / "out"))
    assert done.returncode != 0
    assert "--calibration-data" in done.stderr and "training split" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_int8_calibration_on_another_dataset_is_refused(trained, tmp_path):
    other = tmp_path / "other"
    write_synthetic_set(other, SynthConfig(per_class=1, size=96, seed=9))
    args = [str(trained["checkpoint"]), "--formats", "onnx-int8", "--out", str(tmp_path / "out")]
    done = _export(*args, "--calibration-data", str(other))
    assert done.returncode != 0
    assert "not the dataset this model was trained on" in done.stderr


def _pooling_graph(axes: list[int], keepdims: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 5, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    axes_init = numpy_helper.from_array(np.asarray(axes, dtype=np.int64), "axes")
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)
    graph = helper.make_graph([node], "se", [x], [y], [axes_init])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize(
    ("axes", "keepdims", "rewritten"), [([2, 3], 1, 1), ([-1, -2], 1, 1), ([1], 1, 0), ([2, 3], 0, 0)]
)
def test_se_pooling_becomes_global_average_pool_only_where_it_computes_the_same(axes, keepdims, rewritten):
    graph = _pooling_graph(axes, keepdims)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 6)).astype(np.float32)

    def run(model: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    expected = run(graph)
    assert global_average_pools(graph) == rewritten
    assert [n.op_type for n in graph.graph.node] == ["GlobalAveragePool" if rewritten else "ReduceMean"]
    np.testing.assert_allclose(run(graph), expected, rtol=1e-6, atol=1e-6)
