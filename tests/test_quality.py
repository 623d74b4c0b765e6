"""The quality stage: each warning on a real photo, enforce mode's 422 codes, settings from the environment, and
hostile uploads (1x1, a 20,000 px strip) through the real decoder."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageEnhance, ImageFilter

from skinserve.errors import ERROR_CODES, ClientError
from skinserve.faces import FaceDetector
from skinserve.serve.quality import (
    FaceCheckMode,
    FaceTooSmallError,
    MultipleFacesError,
    NoFaceError,
    QualityAnswer,
    QualitySettings,
    assess_quality,
    enforce_face_check,
)
from skinserve.serve.uploads import UploadLimits, decode_upload
from tests.photos import CHINA, FLOWER, GRACE_HOPPER, open_photo

WARN = QualitySettings()
ENFORCE = QualitySettings(check=FaceCheckMode.enforce)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def grace() -> Image.Image:
    return open_photo(GRACE_HOPPER)


def check(image: Image.Image, detector: FaceDetector, settings: QualitySettings = WARN, size=None):
    return assess_quality(image, size or image.size, settings, detector)


def two_faces(grace: Image.Image) -> Image.Image:
    """Her face twice, side by side, each filling most of its half (the detector scans a 112 px copy)."""
    face = grace.crop((110, 60, 420, 390))
    canvas = Image.new("RGB", (620, 330), (90, 90, 90))
    canvas.paste(face, (0, 0))
    canvas.paste(face, (310, 0))
    return canvas


def test_grace_hopper_passes_with_her_face_box_in_upload_pixels(grace, detector):
    result = check(grace, detector)
    assert result.quality.warnings == [] and result.quality.face_count == 1
    x, y, w, h = result.face.box
    assert 100 < x < 200 and 50 < y < 150 and w > 150
    assert result.quality.face_share == pytest.approx(w * h / (512 * 600), abs=1e-3)
    assert 0.3 < result.quality.brightness < 0.7 and result.quality.sharpness > 300
    assert result.crop_box == result.faces[0]


def test_the_box_is_reported_in_the_uploaded_images_pixels_after_a_reduced_decode(grace, detector):
    reduced = grace.resize((256, 300))  # what JPEG draft decoding hands over for a 512x600 upload
    box = check(reduced, detector, size=(512, 600)).face.box
    full = check(grace, detector).face.box
    assert box == pytest.approx(full, abs=10)


def test_an_exif_rotated_upload_keeps_its_box_in_the_upright_image(grace, detector):
    upright = check(grace, detector, size=(600, 512))  # sent 600x512 with an EXIF rotation, decoded upright 512x600
    assert upright.face.box == check(grace, detector).face.box


@pytest.mark.parametrize("photo", [CHINA, FLOWER], ids=["china", "flower"])
def test_no_face_is_a_warning_in_warn_mode_and_a_422_in_enforce_mode(photo, detector):
    image = open_photo(photo)
    result = check(image, detector)
    assert result.face is None and result.quality.face_share is None
    assert result.quality.warnings[0] == "no_face" and result.crop_box is None
    enforce_face_check(result, WARN)  # warn mode answers
    with pytest.raises(NoFaceError) as refused:
        enforce_face_check(check(image, detector, ENFORCE), ENFORCE)
    assert (refused.value.code, refused.value.status) == ("no_face", 422)
    assert isinstance(refused.value, ClientError) and "front-facing" in str(refused.value)


def test_two_faces_warn_and_enforce_refuses_with_multiple_faces(grace, detector):
    image = two_faces(grace)
    result = check(image, detector)
    assert result.quality.face_count == 2 and "multiple_faces" in result.quality.warnings
    with pytest.raises(MultipleFacesError) as refused:
        enforce_face_check(result, ENFORCE)
    assert refused.value.code == "multiple_faces" and refused.value.status == 422


def test_a_small_face_warns_and_enforce_refuses_with_face_too_small(grace, detector):
    small = grace.resize((128, 150))  # the face is found but only ~64 px wide
    result = check(small, detector)
    assert "face_too_small" in result.quality.warnings
    with pytest.raises(FaceTooSmallError, match="at least 80 px"):
        enforce_face_check(result, ENFORCE)
    relaxed = QualitySettings(min_px=32, min_fraction=0.2)
    assert "face_too_small" not in check(small, detector, relaxed).quality.warnings


def test_dark_bright_and_blurry_photos_warn_but_never_refuse(grace, detector):
    cases = {
        "too_dark": ImageEnhance.Brightness(grace).enhance(0.3),
        "too_bright": ImageEnhance.Brightness(grace).enhance(2.2),
        "blurry": grace.filter(ImageFilter.GaussianBlur(4)),
    }
    for warning, image in cases.items():
        result = check(image, detector, ENFORCE)
        assert warning in result.quality.warnings, (warning, result.quality)
        assert result.face is not None
        enforce_face_check(result, ENFORCE)  # not a blocking warning


def test_off_mode_measures_nothing(grace, detector):
    settings = QualitySettings(check=FaceCheckMode.off)
    assert check(grace, detector, settings) is None
    enforce_face_check(None, settings)


@pytest.mark.parametrize("size", [(1, 1), (20_000, 8)], ids=["1x1", "strip"])
def test_hostile_uploads_through_the_decoder_have_no_face_and_no_crash(size, detector):
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 170, 150)).save(buffer, format="PNG")
    upload = decode_upload(buffer.getvalue(), UploadLimits(), min_side=256)
    result = assess_quality(upload.image, (upload.width, upload.height), WARN, detector)
    assert result.face is None and result.quality.warnings[0] == "no_face"
    QualityAnswer.model_validate(result.quality.model_dump())  # serialisable as an answer
    with pytest.raises(NoFaceError):
        enforce_face_check(result, ENFORCE)


def test_codes_are_registered_with_422():
    for code in ("no_face", "multiple_faces", "face_too_small"):
        assert ERROR_CODES[code].status == 422


def test_settings_come_from_the_environment_and_bad_values_name_the_variable():
    settings = QualitySettings.from_env(
        {"SKINSERVE_FACE_CHECK": "enforce", "SKINSERVE_FACE_MIN_PX": "120", "SKINSERVE_FACE_DETECT_SIDE": "160"}
    )
    assert settings.check is FaceCheckMode.enforce and settings.min_px == 120 and settings.detector.side == 160
    assert QualitySettings.from_env({}) == QualitySettings() and QualitySettings().check is FaceCheckMode.warn
    with pytest.raises(ValueError, match="SKINSERVE_FACE_CHECK='strict'.*'off', 'warn' or 'enforce'"):
        QualitySettings.from_env({"SKINSERVE_FACE_CHECK": "strict"})
    with pytest.raises(ValueError, match="SKINSERVE_FACE_MIN_SHARPNESS='sharp'"):
        QualitySettings.from_env({"SKINSERVE_FACE_MIN_SHARPNESS": "sharp"})
    with pytest.raises(ValueError, match="SKINSERVE_FACE_MIN_BRIGHTNESS"):
        QualitySettings.from_env({"SKINSERVE_FACE_MIN_BRIGHTNESS": "0.9"})
