"""Face detection on real photos and drawn faces, hostile sizes, and the face crop training and serving share."""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from skinserve.data.synth import GENDERS, FaceSpec, draw_face
from skinserve.faces import (
    DetectorSettings,
    FaceBox,
    FaceCropSettings,
    FaceDetector,
    FaceDetectorError,
    crop_window,
    face_crop,
)
from tests.photos import CHINA, FLOWER, GRACE_HOPPER, open_photo


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def test_grace_hopper_has_one_face_around_her_eyes(detector):
    image = open_photo(GRACE_HOPPER)
    faces = detector.detect(image)
    assert len(faces) == 1
    face = faces[0]
    # Her face (glasses, nose, mouth) lies in the middle of the upper half of the 512x600 photo.
    assert 100 < face.x < 200 and 50 < face.y < 150 and 180 < face.w < 320 and face.h == pytest.approx(face.w, rel=0.1)
    assert face.score >= DetectorSettings().min_neighbors


@pytest.mark.parametrize("photo", [CHINA, FLOWER], ids=["china", "flower"])
def test_photos_without_a_face_have_none(detector, photo):
    assert detector.detect(open_photo(photo)) == []


def test_most_synthetic_faces_are_found_where_they_are_drawn(detector):
    found = 0
    for i in range(8):
        spec = FaceSpec(fitzpatrick=1 + i % 6, age=25 + 5 * i, gender=GENDERS[i % 2], conditions={}, seed=i)
        faces = detector.detect(draw_face(spec, 256))
        if len(faces) == 1:
            found += 1
            x, y, w, h = faces[0].as_list()
            assert 60 < x + w / 2 < 196 and 60 < y + h / 2 < 196  # centred, as drawn
    assert found >= 4  # drawings, not photos: the benchmark measures 14 of 20


@pytest.mark.parametrize("size", [(1, 1), (20_000, 3), (3, 20_000), (24, 24)])
def test_tiny_and_strip_images_have_no_face_and_no_crash(detector, size):
    assert detector.detect(Image.new("RGB", size, (128, 100, 90))) == []


def test_boxes_are_in_the_given_images_pixels(detector):
    image = open_photo(GRACE_HOPPER)
    small = detector.detect(image.resize((256, 300)))[0]
    full = detector.detect(image)[0]
    assert full.x == pytest.approx(small.x * 2, abs=8) and full.w == pytest.approx(small.w * 2, abs=8)


def test_one_detector_serves_threads_at_once(detector):
    image = open_photo(GRACE_HOPPER)
    results: list[list[FaceBox]] = []
    threads = [threading.Thread(target=lambda: results.append(detector.detect(image))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r == results[0] and len(r) == 1 for r in results)


def test_a_missing_cascade_names_the_fix():
    with pytest.raises(FaceDetectorError, match="opencv-python-headless>=4.8,<5"):
        FaceDetector(DetectorSettings(cascade="haarcascade_nothing.xml"))


def test_bad_detector_settings_are_refused():
    with pytest.raises(ValueError, match="side"):
        DetectorSettings(side=10)
    with pytest.raises(ValueError, match="scale_factor"):
        DetectorSettings(scale_factor=1.0)


def test_face_crop_is_a_square_around_the_face_with_the_margin():
    image = Image.new("RGB", (400, 300))
    box = FaceBox(150, 100, 100, 100, 5.0)
    assert crop_window(box, image.size, 0.25) == (125, 75, 275, 225)
    assert face_crop(image, box, 0.25).size == (150, 150)
    assert face_crop(image, [150, 100, 100, 100], 0.0).size == (100, 100)


def test_face_crop_moves_inside_the_image_and_only_cuts_when_larger():
    size = (400, 300)
    assert crop_window(FaceBox(0, 0, 100, 100, 1.0), size, 0.5) == (0, 0, 200, 200)  # moved, not cut
    assert crop_window(FaceBox(320, 220, 80, 80, 1.0), size, 0.5) == (240, 140, 400, 300)
    left, top, right, bottom = crop_window(FaceBox(100, 50, 200, 200, 1.0), size, 0.5)  # 400 px square > 300 high
    assert (top, bottom) == (0, 300) and right - left == 400


def test_face_crop_settings_travel_through_a_manifest_dict():
    settings = FaceCropSettings(margin=0.2)
    assert FaceCropSettings.from_dict(settings.as_dict()) == settings
    with pytest.raises(ValueError, match="margin"):
        FaceCropSettings(margin=-0.1)
