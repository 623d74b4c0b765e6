"""The answer's parts beyond the conditions: skin type from the skin-type head, regions from the class activation
maps, a heatmap PNG, and the Shine app's `/infer` answer; each from one image's model outputs and upload."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

from skinserve.errors import ClientError, register_code
from skinserve.labels import CONDITIONS
from skinserve.predictions import softmax
from skinserve.runtime import CAM_OUTPUTS, SKIN_TYPE_OUTPUT
from skinserve.serve.regions import RegionMaps, RegionsAnswer, heatmap_overlay, png_bytes, region_rects, region_scores
from skinserve.serve.uploads import PreparedUpload


class NoMaps(ClientError):
    """The model in service was exported without class activation maps: no regions or heatmaps from it."""

    code = register_code("no_maps", 501, "the model in service has no class activation maps (regions, heatmaps)")


class UnknownCondition(ClientError):
    code = "invalid_input"


class SkinTypeAnswer(BaseModel):
    label: str = Field(description="the most likely skin type")
    probabilities: dict[str, float] = Field(description="softmax of the skin-type head over its labels")


def skin_type_answer(outputs: Mapping[str, np.ndarray], index: int, labels: Sequence[str]) -> SkinTypeAnswer | None:
    """None when the model has no skin-type head."""
    if SKIN_TYPE_OUTPUT not in outputs or not labels:
        return None
    probabilities = softmax(np.asarray(outputs[SKIN_TYPE_OUTPUT][index], np.float64))
    return SkinTypeAnswer(
        label=labels[int(probabilities.argmax())],
        probabilities={label: round(float(p), 6) for label, p in zip(labels, probabilities, strict=True)},
    )


def has_maps(outputs: Mapping[str, np.ndarray]) -> bool:
    return all(name in outputs for name in CAM_OUTPUTS)


def image_maps(outputs: Mapping[str, np.ndarray], index: int, upload: PreparedUpload) -> RegionMaps:
    if not has_maps(outputs):
        raise NoMaps("this model was exported without class activation maps; re-export it to answer regions")
    return RegionMaps.from_outputs(outputs, index, upload.window)


def regions_answer(
    outputs: Mapping[str, np.ndarray],
    index: int,
    upload: PreparedUpload,
    thresholds: Mapping[str, float],
    temperatures: Mapping[str, float] | None = None,
) -> RegionsAnswer:
    """Per-region scores, placed on the face the quality stage found (the whole image without one)."""
    maps = image_maps(outputs, index, upload)
    face = upload.check.crop_box if upload.check is not None else None
    return region_scores(maps, face, upload.decoded_size, thresholds, _upright_scale(upload), temperatures)


def heatmap_png(outputs: Mapping[str, np.ndarray], index: int, upload: PreparedUpload, condition: str) -> bytes:
    """The image with `condition`'s map over what the model saw, the face box and its regions outlined."""
    if condition not in CONDITIONS:
        raise UnknownCondition(f"unknown condition {condition!r}: one of {', '.join(CONDITIONS)}")
    maps = image_maps(outputs, index, upload)
    face = upload.check.crop_box if upload.check is not None else None
    boxes = list(region_rects(face, upload.decoded_size).values()) if face is not None else []
    if face is not None:
        boxes.append((face.x, face.y, face.x + face.w, face.y + face.h))
    assert upload.image is not None, "prepare_upload(..., keep_image=True) for heatmaps"
    return png_bytes(heatmap_overlay(upload.image, maps.condition[CONDITIONS.index(condition)], maps.window, boxes))


def _upright_scale(upload: PreparedUpload) -> tuple[float, float]:
    """From the decoded image's pixels to the upload's, upright: an EXIF rotation by 90 degrees swaps the sides as
    sent against the decoded ones, and a JPEG decoded at reduced scale is smaller."""
    width, height = upload.decoded_size
    sent_w, sent_h = upload.width, upload.height
    if (sent_w > sent_h) != (width > height) and sent_w != sent_h:
        sent_w, sent_h = sent_h, sent_w
    return sent_w / width, sent_h / height
