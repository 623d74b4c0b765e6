"""Export: a tiny checkpoint through `python -m export` to ONNX and ONNX fp16, run on real ONNX Runtime; the
manifest, hash checks, runtime choice, BentoML store, storage upload, evaluation of the export; GPU formats skip."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.formats import BatchProfile, ExportError, ExportOptions, parse_formats
from export.parity import TOLERANCE, check_parity
from skinserve.data.synth import SynthConfig, write_synthetic_set
from skinserve.labels import CONDITIONS
from skinserve.manifest import file_sha256, load_manifest
from skinserve.modeling.checkpoint import load_checkpoint
from skinserve.modeling.evaluation import evaluate_checkpoint
from skinserve.modeling.export_evaluation import evaluate_export
from skinserve.modeling.model import model_from_checkpoint
from skinserve.runtime import ArtifactError, available_runtimes, load_exported_model, unavailable_reason
from train.config import load_config
from train.loop import fit

pytestmark = pytest.mark.slow  # trains, serves, soaks or injects faults

CUDA = torch.cuda.is_available()
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
ENV = {"BENTOML_DO_NOT_TRACK": "True"}


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, env=os.environ | ENV | (env or {})
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-data") / "shine"
    write_synthetic_set(root, SynthConfig(per_class=1, size=64, seed=1))
    return root


@pytest.fixture(scope="module")
def checkpoint(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export-run")
    tiny = {"model": "test_convnext", "img_size": 64, "epochs": 1, "workers": 0, "registry": False}
    fit(load_config(None, data=str(data), out=str(out), **tiny), progress=False)
    return out / "best.pt"


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The command the issue names, end to end: onnx + onnx-fp16, parity, BentoML store and a storage folder."""
    root = tmp_path_factory.mktemp("export")
    env = {"BENTOML_HOME": str(root / "bentoml")}
    out, storage = root / "out", root / "storage"
    args = ["-m", "export", str(checkpoint), "--formats", "onnx,onnx-fp16", "--out", str(out), "--bento"]
    result = _run([*args, "--storage", str(storage)], env)
    assert result.returncode == 0, result.stderr
    return {"out": out, "env": env, "storage": storage, "stdout": result.stdout}


@pytest.fixture
def export_copy(exported: dict, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(exported["out"], target)
    return target


def _dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_export_writes_artifacts_manifest_and_parity_table(exported):
    out = exported["out"]
    for name in ("model.onnx", "model-fp16.onnx", "manifest.json", "parity.json"):
        assert (out / name).is_file(), name
    assert "same conditions" in exported["stdout"] and "FAIL" not in exported["stdout"]


@pytest.mark.parametrize("name", ["model.onnx", "model-fp16.onnx"])
def test_onnx_graph_has_the_documented_names_shapes_and_float32_boundary(exported, name):
    graph = onnx.load(str(exported["out"] / name)).graph
    assert [i.name for i in graph.input] == ["image"]
    # test_convnext has a spatial feature map, so the class activation maps follow the two logits outputs.
    assert [o.name for o in graph.output] == ["condition_logits", "severity_logits", "condition_cam", "severity_cam"]
    batch, *rest = _dims(graph.input[0])
    assert isinstance(batch, str) and rest == [3, 64, 64]
    assert _dims(graph.output[0]) == [batch, 7] and _dims(graph.output[1]) == [batch, 7, 4]
    assert _dims(graph.output[2]) == [batch, 7, 2, 2] and _dims(graph.output[3]) == [batch, 7, 4, 2, 2]
    float32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == float32 for v in [*graph.input, *graph.output])


def test_fp16_graph_computes_in_half_precision(exported):
    graph = onnx.load(str(exported["out"] / "model-fp16.onnx")).graph
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)


@pytest.mark.parametrize("name", ["model.onnx", "model-fp16.onnx"])
def test_onnx_checker_passes_and_opset_is_17_or_newer(exported, name):
    model = onnx.load(str(exported["out"] / name))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17


@pytest.mark.parametrize("fmt", ["onnx", "onnx-fp16"])
def test_batch_axis_is_dynamic(exported, fmt):
    model = load_exported_model(exported["out"], fmt=fmt)
    rng = np.random.default_rng(0)
    for batch in (1, 3, 8):
        conditions, severity = model.predict(rng.standard_normal((batch, 3, 64, 64)).astype(np.float32))
        assert conditions.shape == (batch, 7) and severity.shape == (batch, 7, 4)
        assert conditions.dtype == np.float32 and severity.dtype == np.float32


def test_parity_holds_within_tolerance_and_conditions_match(exported, checkpoint):
    saved = json.loads((exported["out"] / "parity.json").read_text())
    assert saved["passed"]
    rows = check_parity(model_from_checkpoint(load_checkpoint(checkpoint)), exported["out"], ["onnx", "onnx-fp16"])
    assert {(r.format, r.inputs, r.batch) for r in rows} == {
        (f, k, b) for f in ("onnx", "onnx-fp16") for k in ("random", "synthetic") for b in (1, 8)
    }
    for row in rows:
        assert row.tolerance == TOLERANCE["fp32" if row.format == "onnx" else "fp16"]
        assert max(row.condition_diff, row.severity_diff) <= row.tolerance, row
        assert row.same_conditions is (True if row.inputs == "synthetic" else None), row


def test_manifest_records_schema_preprocessing_hashes_and_source(exported, checkpoint):
    manifest = load_manifest(exported["out"])
    source = load_checkpoint(checkpoint)
    assert manifest.name == "skin-classifier" and manifest.model.backbone == "test_convnext"
    assert manifest.version.endswith(file_sha256(checkpoint)[:8])
    assert (manifest.model.name, manifest.model.version) == (manifest.name, manifest.version)
    assert manifest.labels.conditions == list(CONDITIONS)
    assert manifest.thresholds == source.thresholds
    assert manifest.temperatures == source.temperatures and set(source.temperatures) == set(CONDITIONS)
    assert manifest.preprocess == source.preprocessing
    assert {"mean", "std", "resize_size", "crop", "crop_pct", "interpolation"} <= set(manifest.preprocessing)
    assert manifest.input.shape == ["batch", 3, 64, 64]
    names = [o.name for o in manifest.outputs]
    assert names == ["condition_logits", "severity_logits", "condition_cam", "severity_cam"]
    assert manifest.skin_type.available is False and manifest.cam.available is True
    for fmt, precision in (("onnx", "fp32"), ("onnx-fp16", "fp16")):
        entry = manifest.artifacts[fmt]
        assert entry.format == fmt and entry.precision == precision
        assert entry.sha256 == file_sha256(exported["out"] / entry.file)
    assert manifest.source["sha256"] == file_sha256(checkpoint)
    assert manifest.source["metrics"] == source.metrics
    assert manifest.dataset_fingerprint == source.dataset_fingerprint
    assert {"torch", "onnx", "onnxruntime", "tensorrt"} <= set(manifest.versions)
    assert manifest.parity["passed"] is True


def test_a_changed_artifact_is_refused_at_load(export_copy):
    path = export_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    recorded = load_manifest(export_copy).artifacts["onnx"].sha256
    with pytest.raises(ArtifactError, match="model.onnx") as error:
        load_exported_model(export_copy, fmt="onnx")
    assert recorded in str(error.value) and file_sha256(path) in str(error.value)
    load_exported_model(export_copy, fmt="onnx-fp16")  # the untouched artifact still loads


def test_a_missing_artifact_is_refused_at_load(export_copy):
    (export_copy / "model-fp16.onnx").unlink()
    with pytest.raises(ArtifactError, match="model-fp16.onnx.*missing"):
        load_exported_model(export_copy, fmt="onnx-fp16")


@pytest.mark.skipif(CUDA, reason="on a CUDA machine auto rightly prefers a GPU runtime")
def test_auto_picks_onnx_runtime_on_the_cpu_here(exported):
    model = load_exported_model(exported["out"])
    assert (model.runtime, model.artifact, model.max_batch) == ("onnxruntime-cpu", "model.onnx", None)
    assert available_runtimes(model.manifest) == ["onnxruntime-cpu"]


@pytest.mark.parametrize(
    ("runtime", "why"),
    [
        ("tensorrt", "CUDA GPU and the tensorrt package"),
        ("aoti-cuda", "no CUDA GPU is visible here|no aoti artifact compiled for cuda"),
        ("onnxruntime-cuda", "CUDAExecutionProvider"),
    ],
)
def test_gpu_runtimes_that_cannot_run_here_are_refused_with_the_reason(exported, runtime, why):
    if unavailable_reason(runtime, load_manifest(exported["out"])) is None:
        pytest.skip(f"{runtime} can run here")
    with pytest.raises(ArtifactError, match=why):
        load_exported_model(exported["out"], runtime)


def test_bento_store_lists_the_model_with_labels_metadata_and_files(exported):
    manifest = load_manifest(exported["out"])
    tag = f"skin-classifier:{manifest.version}"
    listed = _run(["-m", "bentoml", "models", "list", "-o", "json"], exported["env"])
    assert listed.returncode == 0, listed.stderr
    assert tag in [m["tag"] for m in json.loads(listed.stdout)]
    script = (
        "import bentoml, json, sys; m = bentoml.models.get(sys.argv[1]); "
        "print(json.dumps({'path': m.path, 'labels': m.info.labels, 'metadata': m.info.metadata}))"
    )
    stored = _run(["-c", script, tag], exported["env"])
    assert stored.returncode == 0, stored.stderr
    info = json.loads(stored.stdout.strip().splitlines()[-1])
    assert info["labels"]["project"] == "skinserve" and info["labels"]["formats"] == "onnx+onnx-fp16"
    assert info["metadata"]["conditions"] == list(CONDITIONS)
    assert info["metadata"]["checkpoint_sha256"] == manifest.source["sha256"]
    path = Path(info["path"])
    assert load_manifest(path) == manifest
    for entry in manifest.artifacts.values():
        assert file_sha256(path / entry.file) == entry.sha256
    assert load_exported_model(path).predict(np.zeros((2, 3, 64, 64), np.float32))[0].shape == (2, 7)


def test_storage_holds_the_same_files(exported):
    manifest = load_manifest(exported["out"])
    stored = exported["storage"] / "skin-classifier" / manifest.version
    assert load_manifest(stored) == manifest
    for entry in manifest.artifacts.values():
        assert file_sha256(stored / entry.file) == entry.sha256


@pytest.mark.skipif(CUDA and HAS_TENSORRT, reason="TensorRT and a GPU are here: the format is built, not refused")
def test_tensorrt_export_is_refused_here_with_a_clear_message(checkpoint, tmp_path):
    result = _run(["-m", "export", str(checkpoint), "--formats", "tensorrt", "--out", str(tmp_path / "trt")])
    assert result.returncode != 0
    assert "tensorrt needs a CUDA GPU and the tensorrt package" in result.stderr
    assert not (tmp_path / "trt").exists()


def test_unknown_formats_and_bad_batch_profiles_are_refused():
    with pytest.raises(ExportError, match="openvino"):
        parse_formats("onnx,openvino")
    assert parse_formats("tensorrt") == ("onnx", "tensorrt")  # the engine is built from the ONNX graph
    with pytest.raises(ExportError, match="min <= opt <= max"):
        BatchProfile(1, 64, 32)


def test_evaluating_the_export_matches_the_checkpoint(exported, checkpoint, data):
    from_export = evaluate_export(exported["out"], data, "all")
    from_checkpoint = evaluate_checkpoint(checkpoint, data, "all")
    assert from_export["runtime"] in available_runtimes(load_manifest(exported["out"]))
    assert from_export["n_images"] == from_checkpoint["n_images"] > 0
    assert from_export["macro_f1"] == pytest.approx(from_checkpoint["macro_f1"], abs=0.01)
    assert from_export["micro_f1"] == pytest.approx(from_checkpoint["micro_f1"], abs=0.01)
    assert from_export["temperatures"] == from_checkpoint["temperatures"]  # both apply the stored calibration
    assert from_export["baselines"] == from_checkpoint["baselines"]
    test_split = evaluate_export(exported["out"], data, "test")  # the manifest carries the split's fingerprint
    assert test_split["n_images"] == evaluate_checkpoint(checkpoint, data, "test")["n_images"]


def _export_in_process(checkpoint: Path, out: Path, formats: tuple[str, ...], device: str):
    from export.cli import run_export

    options = ExportOptions(formats, BatchProfile(1, 8, 32), aoti_device=device, timing_cache=out / "timing.cache")
    result = run_export(checkpoint, out, options, "skin-classifier")
    assert result.passed, [r for r in result.parity if not r.passed]
    return result


def test_aoti_cpu_package_matches_pytorch_and_is_chosen_only_when_alone(checkpoint, exported, tmp_path):
    # The CPU build of the AOTInductor path (about 40 s on 2 cores); the CUDA build is the same code, in fp16.
    result = _export_in_process(checkpoint, tmp_path, ("aoti",), "cpu")
    assert result.manifest.artifacts["aoti"].device == "cpu"
    assert {r.runtime for r in result.parity} == {"aoti-cpu"}
    model = load_exported_model(tmp_path)
    assert (model.runtime, model.max_batch) == ("aoti-cpu", 32)
    conditions, severity = model.predict(np.random.default_rng(0).standard_normal((40, 3, 64, 64), np.float32))
    assert conditions.shape == (40, 7) and severity.shape == (40, 7, 4)  # split into batches of at most 32
    # Beside an ONNX artifact, auto prefers ONNX Runtime; aoti-cpu runs only when named.
    shutil.copy(exported["out"] / "model.onnx", tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["artifacts"]["onnx"] = load_manifest(exported["out"]).to_dict()["artifacts"]["onnx"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert load_exported_model(tmp_path).runtime != "aoti-cpu"
    assert load_exported_model(tmp_path, "aoti-cpu").artifact == "model.pt2"


@pytest.mark.skipif(not (CUDA and HAS_TENSORRT), reason="needs a CUDA GPU and the tensorrt package")
def test_tensorrt_engine_builds_with_a_timing_cache_and_matches_pytorch(checkpoint, tmp_path):
    result = _export_in_process(checkpoint, tmp_path, ("onnx", "tensorrt"), "cuda")
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert result.manifest.artifacts["tensorrt"].batch.model_dump() == {"min": 1, "max": 32}
    model = load_exported_model(tmp_path, "tensorrt")
    assert model.predict(np.zeros((3, 3, 64, 64), np.float32))[1].shape == (3, 7, 4)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (AOTInductor compiles the fp16 package for it)")
def test_aoti_cuda_package_matches_pytorch(checkpoint, tmp_path):
    result = _export_in_process(checkpoint, tmp_path, ("aoti",), "cuda")
    assert result.manifest.artifacts["aoti"].precision == "fp16"
    model = load_exported_model(tmp_path, "aoti-cuda")
    assert model.predict(np.zeros((3, 3, 64, 64), np.float32))[0].shape == (3, 7)
