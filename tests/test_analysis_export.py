"""A real export of a model with a skin-type head: skin_type_logits and the class activation maps in every ONNX
format, their parity with PyTorch, region scores and the heatmap PNG from ONNX Runtime's maps, and the Shine
/infer contract built from the export's own outputs."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.formats import BatchProfile, ExportOptions
from skinserve.data.synth import SynthConfig, write_synthetic_set
from skinserve.faces import FaceDetector, crop_window, face_crop
from skinserve.labels import CONDITIONS, SKIN_TYPES
from skinserve.manifest import load_manifest
from skinserve.modeling.checkpoint import load_checkpoint, save_checkpoint
from skinserve.modeling.model import model_from_checkpoint
from skinserve.predictions import decode, softmax
from skinserve.preprocess import model_input
from skinserve.runtime import ArtifactError, load_exported_model
from skinserve.serve.quality import QualitySettings, assess_quality
from skinserve.serve.regions import (
    REGIONS,
    RegionMaps,
    heatmap_overlay,
    input_window,
    png_bytes,
    region_rects,
    region_scores,
)
from skinserve.serve.shine import ShineAnswer, shine_answer, skin_type_label
from tests.photos import CHINA, GRACE_HOPPER, open_photo
from train.config import load_config
from train.loop import fit

pytestmark = pytest.mark.slow  # trains and exports a model

ALL_OUTPUTS = ["condition_logits", "severity_logits", "skin_type_logits", "condition_cam", "severity_cam"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("analysis-data") / "shine"
    write_synthetic_set(data, SynthConfig(per_class=1, size=96, seed=3))
    out = tmp_path_factory.mktemp("analysis-run")
    # test_efficientnet pools by plain average, so its maps average exactly to its logits; 96 px gives 3x3 maps.
    tiny = {"model": "test_efficientnet", "img_size": 96, "epochs": 1, "workers": 0, "registry": False}
    fit(load_config(None, data=str(data), out=str(out), skin_type_head=True, **tiny), progress=False)
    return out / "best.pt"


@pytest.fixture(scope="module")
def export_dir(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.cli import run_export

    out = tmp_path_factory.mktemp("analysis-export")
    result = run_export(checkpoint, out, ExportOptions(("onnx", "onnx-fp16"), BatchProfile(1, 4, 8)), "skin")
    assert result.passed, [r for r in result.parity if not r.passed]
    return out


@pytest.mark.parametrize("name", ["model.onnx", "model-fp16.onnx"])
def test_every_onnx_format_has_skin_type_and_cam_outputs(export_dir, name):
    graph = onnx.load(str(export_dir / name)).graph
    assert [o.name for o in graph.output] == ALL_OUTPUTS


def test_manifest_says_skin_type_and_cam_are_there(export_dir):
    manifest = load_manifest(export_dir)
    assert [o.name for o in manifest.outputs] == ALL_OUTPUTS
    assert manifest.skin_type.model_dump() == {
        "available": True,
        "labels": list(SKIN_TYPES),
        "output": "skin_type_logits",
    }
    assert manifest.cam.available and manifest.cam.size == [3, 3] and manifest.cam.exact is True
    shapes = {o.name: o.shape for o in manifest.outputs}
    assert shapes["skin_type_logits"] == ["batch", 5] and shapes["severity_cam"] == ["batch", 7, 4, 3, 3]


def test_parity_covers_skin_type_and_cam_in_every_format(export_dir):
    rows = json.loads((export_dir / "parity.json").read_text())["rows"]
    assert {r["format"] for r in rows} == {"onnx", "onnx-fp16"}
    for row in rows:
        assert row["skin_type_diff"] is not None and row["cam_diff"] is not None
        assert max(row["skin_type_diff"], row["cam_diff"]) <= row["tolerance"], row


def test_onnx_runtime_maps_match_torch_and_average_to_the_logits(export_dir, checkpoint):
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    exported = load_exported_model(export_dir, fmt="onnx")
    pre = exported.manifest.preprocess
    batch = np.stack([model_input(open_photo(p), pre) for p in (GRACE_HOPPER, CHINA)])
    outputs = exported.predict_outputs(batch)
    from export.formats import Logits

    with torch.no_grad():
        reference = [t.numpy() for t in Logits(model, cam=True)(torch.from_numpy(batch))]
    for name, expected in zip(ALL_OUTPUTS, reference, strict=True):
        np.testing.assert_allclose(outputs[name], expected, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(outputs["condition_cam"].mean((2, 3)), outputs["condition_logits"], atol=1e-4)
    np.testing.assert_allclose(outputs["severity_cam"].mean((3, 4)), outputs["severity_logits"], atol=1e-4)
    assert [a.shape for a in exported.predict(batch)] == [(2, 7), (2, 7, 4)]  # the two-output contract holds
    with pytest.raises(ArtifactError, match="without nothing_here"):
        exported.predict_outputs(batch, ("nothing_here",))


def test_an_export_without_the_head_and_maps_says_so(checkpoint, tmp_path):
    from export.cli import run_export

    state = load_checkpoint(checkpoint)
    plain = save_checkpoint(
        tmp_path / "plain.pt",
        state.replace(
            model=dataclasses.replace(state.model, skin_type_head=False),
            state_dict={k: v for k, v in state.state_dict.items() if not k.startswith("skin_type_head")},
        ),
    )
    result = run_export(plain, tmp_path / "out", ExportOptions(("onnx",), cam=False), "skin")
    manifest = result.manifest
    assert [o.name for o in manifest.outputs] == ["condition_logits", "severity_logits"]
    assert manifest.skin_type.available is False and not manifest.cam.available
    assert set(load_exported_model(tmp_path / "out").predict_outputs(np.zeros((1, 3, 96, 96), np.float32))) == {
        "condition_logits",
        "severity_logits",
    }


@pytest.fixture(scope="module")
def analysed(export_dir):
    """grace_hopper end to end as the service will run it: quality, face crop, model call with maps, regions."""
    exported = load_exported_model(export_dir, fmt="onnx")
    pre = exported.manifest.preprocess
    image = open_photo(GRACE_HOPPER)
    check = assess_quality(image, image.size, QualitySettings(), FaceDetector())
    crop = crop_window(check.crop_box, image.size, 0.3)
    outputs = exported.predict_outputs(model_input(face_crop(image, check.crop_box, 0.3), pre)[None])
    maps = RegionMaps.from_outputs(outputs, 0, input_window(image.size, pre, crop))
    regions = region_scores(maps, check.crop_box, image.size, exported.manifest.thresholds)
    return {"image": image, "check": check, "outputs": outputs, "maps": maps, "regions": regions, "model": exported}


def test_regions_are_placed_on_the_face_and_scored_per_condition(analysed):
    regions = analysed["regions"]
    assert regions.placed_on == "face" and list(regions.regions) == list(REGIONS)
    x, y, w, h = analysed["check"].face.box
    for name, scores in regions.regions.items():
        assert scores is not None, name
        rx, ry, rw, rh = scores.box
        assert x <= rx and rx + rw <= x + w and y <= ry <= y + h, name  # inside the face box (chin may pass it)
        assert list(scores.conditions) == list(CONDITIONS) and 0 < scores.coverage <= 1
    left, right = regions.regions["left_cheek"].box, regions.regions["right_cheek"].box
    assert left[0] + left[2] <= right[0]  # the image's left cheek is on the image's left


def test_region_scores_weight_the_maps_by_area():
    condition = np.zeros((7, 2, 2))
    condition[0] = [[4.0, 0.0], [0.0, 0.0]]  # acne only in the top-left cell
    maps = RegionMaps(condition, np.zeros((7, 4, 2, 2)), window=(0, 0, 100, 100))
    scores = region_scores(maps, None, (100, 100), {c: 0.6 for c in CONDITIONS}).regions
    # forehead (25..75 x 6..26) lies half in the top-left cell: logit 2.0
    assert scores["forehead"].conditions["acne"].probability == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6)
    assert scores["chin"].conditions["acne"].probability == pytest.approx(0.5)
    assert scores["forehead"].conditions["acne"].present and not scores["chin"].conditions["acne"].present
    cut = region_scores(RegionMaps(condition, np.zeros((7, 4, 2, 2)), (0, 50, 100, 100)), None, (100, 100), None)
    assert cut.regions["forehead"] is None  # outside what the model saw


def test_without_a_face_regions_are_placed_on_the_whole_image(export_dir):
    exported = load_exported_model(export_dir, fmt="onnx")
    pre = exported.manifest.preprocess
    image = open_photo(CHINA)
    outputs = exported.predict_outputs(model_input(image, pre)[None])
    maps = RegionMaps.from_outputs(outputs, 0, input_window(image.size, pre))
    regions = region_scores(maps, None, image.size, exported.manifest.thresholds)
    assert regions.placed_on == "image"
    assert region_rects(None, image.size)["chin"][3] > 0.8 * image.height


def test_the_heatmap_overlay_is_a_png_of_the_image(analysed):
    from PIL import Image

    image, maps = analysed["image"], analysed["maps"]
    overlay = heatmap_overlay(image, maps.condition[CONDITIONS.index("acne")], maps.window, boxes=[maps.window])
    data = png_bytes(overlay)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "PNG" and decoded.size == (round(512 * 512 / 600), 512)
    pixels = np.asarray(decoded.convert("RGB"), dtype=np.int16)
    assert np.abs(pixels - np.asarray(image.resize(decoded.size), dtype=np.int16)).mean() > 5  # something drawn
    flat = heatmap_overlay(image, np.zeros((3, 3)), maps.window)  # a constant map: no division by zero
    assert flat.size == decoded.size


def _shape(value):
    """The JSON shape: dict keys with their shapes, list element shapes, type names for leaves."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted({json.dumps(_shape(v), sort_keys=True) for v in value})
    return type(value).__name__


def test_shine_infer_contract(analysed):
    outputs = analysed["outputs"]
    prediction = decode(outputs["condition_logits"], outputs["severity_logits"], analysed["model"].manifest.thresholds)
    skin = skin_type_label(softmax(outputs["skin_type_logits"].astype(np.float64))[0])
    answer = shine_answer(prediction[0]["conditions"], analysed["check"].quality, skin, analysed["regions"])
    document = json.loads(answer.model_dump_json())
    assert list(document) == ["concerns", "region_concerns", "metadata", "recommendations"]
    concern = {"name": "str", "severity": "str", "percentage": "float", "description": "str"}
    region_concern = json.dumps({"name": "str", "percentage": "float", "severity": "str"}, sort_keys=True)
    assert _shape(document) == {
        "concerns": [json.dumps(concern, sort_keys=True)],
        "region_concerns": {
            name: [region_concern] for name in ("left_cheek", "right_cheek", "forehead", "t_zone", "chin")
        },
        "metadata": {"imageQuality": "str", "lightingCondition": "str", "skinType": "str"},
        "recommendations": [],
    }
    assert [c["name"] for c in document["concerns"]] == [c.replace("_", " ").title() for c in CONDITIONS]
    for concern_row, condition in zip(document["concerns"], CONDITIONS, strict=True):
        probability = prediction[0]["conditions"][condition]["probability"]
        assert concern_row["percentage"] == round(probability * 100, 1)
        assert concern_row["description"]
    assert document["metadata"] == {"imageQuality": "good", "lightingCondition": "good", "skinType": skin}
    assert skin in SKIN_TYPES
    ShineAnswer.model_validate(document)
    without = shine_answer(prediction[0]["conditions"], None, None, None).model_dump(mode="json")
    assert without["region_concerns"] is None and without["metadata"] == {
        "imageQuality": None,
        "lightingCondition": None,
        "skinType": None,
    }
