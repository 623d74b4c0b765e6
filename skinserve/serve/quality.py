"""The face and image-quality stage before the model: face count and box, exposure, sharpness, warnings; refusal
in enforce mode. Torch-free; runs per request on the decoded image, so every measure works on small grey copies."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field, model_validator
from pydantic_settings import SettingsConfigDict

from skinserve.config import EnvSettings
from skinserve.errors import ClientError, register_code
from skinserve.faces import DetectorSettings, FaceBox, FaceDetector, grey_copy

QualityWarning = Literal["no_face", "multiple_faces", "face_too_small", "too_dark", "too_bright", "blurry"]
WARNINGS: tuple[str, ...] = ("no_face", "multiple_faces", "face_too_small", "too_dark", "too_bright", "blurry")
BLOCKING: tuple[str, ...] = ("no_face", "multiple_faces", "face_too_small")  # what enforce mode refuses


class FaceCheckMode(enum.StrEnum):
    off = "off"  # no detection, no quality measures: the answer's face and quality are null
    warn = "warn"  # measure and answer the warnings (the default)
    enforce = "enforce"  # as warn, and refuse with 422 on the first of BLOCKING


class QualitySettings(EnvSettings):
    """Thresholds of the stage, each from `SKINSERVE_FACE_<NAME>` (`SKINSERVE_FACE_CHECK`: off, warn or enforce).
    Shares are of the upright image."""

    model_config = SettingsConfigDict(env_prefix="SKINSERVE_FACE_", env_ignore_empty=True, extra="ignore", frozen=True)

    check: FaceCheckMode = FaceCheckMode.warn
    # face_too_small below either: the face box's shorter side as a share of the image's shorter side (Face++ asks
    # 1/10 for any face; the model here sees the face, so it asks more), or in the upload's pixels.
    min_fraction: Annotated[float, Field(gt=0, le=1)] = 0.25
    min_px: Annotated[int, Field(ge=1)] = 80
    # A second face counts (multiple_faces) when its side is at least this share of the largest face's side: a
    # small face in the background does not change what the model is shown (the largest face, cropped).
    second_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    # Mean luma (0-1) of the face, or of the whole image without one; too_bright also when more than
    # `max_bright_share` of it is blown out (luma >= 240), where skin shows no detail at all.
    min_brightness: Annotated[float, Field(ge=0, le=1)] = 0.2
    max_brightness: Annotated[float, Field(ge=0, le=1)] = 0.85
    max_bright_share: Annotated[float, Field(ge=0, le=1)] = 0.3
    # Variance of the Laplacian of the face (or image) in grey at `sharpness_side` px; below it: blurry. Sharp
    # photos measure 700-2000 there (grace_hopper's face 1430, the synthetic faces 750-1060); a Gaussian blur of
    # radius 2 px brings grace_hopper's face to 300, of radius 4 px to 39.
    min_sharpness: Annotated[float, Field(ge=0)] = 100.0
    sharpness_side: Annotated[int, Field(ge=8)] = 96
    detect_side: Annotated[int, Field(ge=24)] = DetectorSettings.side  # the grey copy the cascade scans
    # The step between the window sizes the cascade scans: 1.3 costs 37% less than 1.2 and found 97 of 100 LFW
    # faces against 98, 11 of 20 synthetic faces against 14 (python benchmarks/faces.py).
    detect_step: Annotated[float, Field(gt=1, le=2)] = DetectorSettings.scale_factor

    @model_validator(mode="after")
    def _brightness_bounds_in_order(self) -> QualitySettings:
        if self.min_brightness >= self.max_brightness:
            raise ValueError("SKINSERVE_FACE_MIN_BRIGHTNESS must be below SKINSERVE_FACE_MAX_BRIGHTNESS")
        return self

    @property
    def detector(self) -> DetectorSettings:
        return DetectorSettings(side=self.detect_side, scale_factor=self.detect_step)


# --- Answer models ---------------------------------------------------------------------------------------------


class FaceAnswer(BaseModel):
    box: list[int] = Field(min_length=4, max_length=4, description="[x, y, w, h] in the uploaded image's pixels")
    score: float = Field(description="overlapping detections merged into this face; higher is surer, not a probability")


class Pose(BaseModel):
    roll: float = Field(description="degrees, clockwise tilt of the eye line")
    yaw: float = Field(description="degrees, face turned towards the image's right")


class QualityAnswer(BaseModel):
    face_count: int = Field(ge=0, description="faces the detector found")
    face_share: float | None = Field(description="the largest face box's area over the image's area; null: no face")
    brightness: float = Field(ge=0, le=1, description="mean luma of the face (the image without one), 0-1")
    dark_share: float = Field(ge=0, le=1, description="share of those pixels at luma 16/255 or below")
    bright_share: float = Field(ge=0, le=1, description="share of those pixels at luma 240/255 or above")
    sharpness: float | None = Field(description="variance of the Laplacian at 96 px; null: too small to measure")
    pose: Pose | None = Field(default=None, description="null: the Haar detector gives no landmarks")
    warnings: list[QualityWarning] = Field(description="in this order: " + ", ".join(WARNINGS))


@dataclass(frozen=True)
class QualityCheck:
    """The stage's result: the faces in the decoded image's pixels (for the crop) and the two answer parts."""

    faces: tuple[FaceBox, ...]  # decoded image's pixels, largest first
    face: FaceAnswer | None  # the largest face, in the uploaded image's pixels
    quality: QualityAnswer

    @property
    def crop_box(self) -> FaceBox | None:
        """The face the model should see (decoded pixels, for `skinserve.faces.face_crop`); None: the whole image."""
        return self.faces[0] if self.faces else None

    @property
    def blocking(self) -> str | None:
        return next((w for w in self.quality.warnings if w in BLOCKING), None)


# --- Errors ----------------------------------------------------------------------------------------------------


class FaceCheckError(ClientError):
    """Enforce mode refused the image; `code` says why."""


class NoFaceError(FaceCheckError):
    code = register_code("no_face", 422, "no face was found in the image (SKINSERVE_FACE_CHECK=enforce)")


class MultipleFacesError(FaceCheckError):
    code = register_code("multiple_faces", 422, "more than one face in the image (SKINSERVE_FACE_CHECK=enforce)")


class FaceTooSmallError(FaceCheckError):
    code = register_code("face_too_small", 422, "the face is too small to analyse (SKINSERVE_FACE_CHECK=enforce)")


_REFUSALS: dict[str, tuple[type[FaceCheckError], str]] = {
    "no_face": (NoFaceError, "no face found: send a front-facing photo with the whole face in view"),
    "multiple_faces": (MultipleFacesError, "{n} faces found: send a photo of one face"),
    "face_too_small": (
        FaceTooSmallError,
        "the face is {w}x{h} px; it needs to be at least {min_px} px and {pct:.0f}% of the image's shorter side",
    ),
}


# --- The stage -------------------------------------------------------------------------------------------------


def assess_quality(
    image: Image.Image, uploaded_size: tuple[int, int], settings: QualitySettings, detector: FaceDetector
) -> QualityCheck | None:
    """Measure `image` (the decoded, upright RGB upload, possibly JPEG-reduced) whose upload was `uploaded_size`
    (width, height as sent, before EXIF rotation); None when the mode is off."""
    if settings.check is FaceCheckMode.off:
        return None
    return measure_quality(image, uploaded_size, settings, detector)


def measure_quality(
    image: Image.Image, uploaded_size: tuple[int, int], settings: QualitySettings, detector: FaceDetector
) -> QualityCheck:
    """`assess_quality` whatever the mode: the faces are needed for the crop even when nothing is answered."""
    grey = grey_copy(image, detector.settings.side)
    gx, gy = image.width / grey.shape[1], image.height / grey.shape[0]
    faces = tuple(face.scaled(gx, gy) for face in detector.detect_grey(grey))
    width, height = _upright(uploaded_size, image.size)
    ux, uy = width / image.width, height / image.height
    largest = faces[0] if faces else None
    region = _grey_region(grey, largest.scaled(1 / gx, 1 / gy) if largest else None)
    brightness = float(region.mean()) / 255.0 if region.size else 0.0
    uploaded_face = largest.scaled(ux, uy) if largest else None
    quality = QualityAnswer(
        face_count=len(faces),
        face_share=round(uploaded_face.area / (width * height), 4) if uploaded_face else None,
        brightness=round(brightness, 4),
        dark_share=round(float((region <= 16).mean()) if region.size else 0.0, 4),
        bright_share=round(float((region >= 240).mean()) if region.size else 0.0, 4),
        sharpness=_sharpness(image, largest, settings.sharpness_side),
        warnings=[],
    )
    quality.warnings = _warnings(quality, faces, uploaded_face, (width, height), settings)
    face = FaceAnswer(box=uploaded_face.as_list(), score=uploaded_face.score) if uploaded_face else None
    return QualityCheck(faces, face, quality)


def enforce_face_check(check: QualityCheck | None, settings: QualitySettings) -> None:
    """In enforce mode, raise the error of the first blocking warning; otherwise do nothing."""
    if check is None or settings.check is not FaceCheckMode.enforce or check.blocking is None:
        return
    error, message = _REFUSALS[check.blocking]
    face = check.face.box if check.face else [0, 0, 0, 0]
    raise error(
        message.format(
            n=check.quality.face_count,
            w=face[2],
            h=face[3],
            min_px=settings.min_px,
            pct=settings.min_fraction * 100,
        )
    )


def _upright(uploaded: tuple[int, int], decoded: tuple[int, int]) -> tuple[int, int]:
    """The upload's size in the upright image's orientation (EXIF rotation by 90 degrees swaps the sides)."""
    width, height = uploaded
    if (width > height) != (decoded[0] > decoded[1]) and width != height:
        return height, width
    return width, height


def _grey_region(grey: np.ndarray, face: FaceBox | None) -> np.ndarray:
    if face is None:
        return grey
    return grey[max(face.y, 0) : face.y + face.h, max(face.x, 0) : face.x + face.w]


def _sharpness(image: Image.Image, face: FaceBox | None, side: int) -> float | None:
    """Variance of the Laplacian of the face (or the image) in grey with its longest side at `side` px: resampled
    to one size first, because the measure grows as an image shrinks."""
    import cv2

    region = image.crop((face.x, face.y, face.x + face.w, face.y + face.h)) if face else image
    scale = side / max(region.size)
    size = (max(1, round(region.width * scale)), max(1, round(region.height * scale)))
    grey = np.asarray(region.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0).convert("L"))
    if min(grey.shape) < 3:  # a strip or a dot: nothing to measure
        return None
    return round(float(cv2.Laplacian(grey, cv2.CV_64F).var()), 2)


def _warnings(
    quality: QualityAnswer,
    faces: tuple[FaceBox, ...],
    face: FaceBox | None,
    size: tuple[int, int],
    settings: QualitySettings,
) -> list[str]:
    found = []
    if face is None:
        found.append("no_face")
    else:
        if len(faces) > 1 and min(faces[1].w, faces[1].h) >= settings.second_ratio * min(faces[0].w, faces[0].h):
            found.append("multiple_faces")
        side = min(face.w, face.h)
        if side < settings.min_px or side < settings.min_fraction * min(size):
            found.append("face_too_small")
    if quality.brightness < settings.min_brightness:
        found.append("too_dark")
    if quality.brightness > settings.max_brightness or quality.bright_share > settings.max_bright_share:
        found.append("too_bright")
    if quality.sharpness is not None and quality.sharpness < settings.min_sharpness:
        found.append("blurry")
    return found


class FaceCrop(enum.StrEnum):
    auto = "auto"  # crop to the face when the model was trained on face crops (its manifest records the margin)
    on = "on"  # crop whenever a face is found, with SKINSERVE_FACE_CROP_MARGIN
    off = "off"  # the model sees the whole image


@dataclass(frozen=True)
class FaceStage:
    """The quality stage as a worker runs it: its settings, one detector (thread-safe), and the crop margin around
    the face the model is shown (None: the whole image)."""

    settings: QualitySettings
    detector: FaceDetector
    crop_margin: float | None = None

    @classmethod
    def create(cls, settings: QualitySettings, crop_margin: float | None) -> FaceStage | None:
        """None when the check is off and nothing is cropped: no detector is loaded at all."""
        if settings.check is FaceCheckMode.off and crop_margin is None:
            return None
        return cls(settings, FaceDetector(settings.detector), crop_margin)

    @classmethod
    def cropping_only(cls, crop_margin: float | None) -> FaceStage | None:
        """The stage as training and dataset evaluation run it: the face crop with `crop_margin` (thresholds from the
        environment, as the service reads them), the check itself off, so no image is ever refused."""
        return cls.create(QualitySettings(check=FaceCheckMode.off), crop_margin)

    @property
    def answers(self) -> bool:
        """Whether the answer carries `face` and `quality` (not with the check off, where only the crop needs faces)."""
        return self.settings.check is not FaceCheckMode.off

    def inspect(self, image: Image.Image, uploaded_size: tuple[int, int]) -> QualityCheck:
        """The faces, measures and warnings; in enforce mode, the refusal of the first blocking warning."""
        check = measure_quality(image, uploaded_size, self.settings, self.detector)
        enforce_face_check(check, self.settings)
        return check
