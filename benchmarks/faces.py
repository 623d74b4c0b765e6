"""Face detectors compared: accuracy on photos that installed packages ship, and CPU ms per image.

    python benchmarks/faces.py [--repeat N] [--json OUT]

Candidates whose package is not installed are listed as such (MediaPipe's legacy face detector needs numpy<2 and
cannot share the project's environment: run this script from a scratch one to measure it). Photos: matplotlib's
grace_hopper (one face), scikit-learn's china and flower (none); with scikit-image installed also its astronaut and
camera (one face each), its other photos (none) and its LFW subset (100 face and 100 non-face patches of 25 px,
shown to the detectors at 96 px on a grey border); 20 synthetic faces (drawings) from skinserve.data.synth.
Cost: CPU ms per call on the decoded photo (grey copy included), median over photos and repeats.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from skinserve.data.synth import GENDERS, FaceSpec, draw_face
from skinserve.faces import DetectorSettings, FaceDetector, grey_copy
from skinserve.labels import CONDITIONS, Severity

Detect = Callable[[Image.Image], int]  # an RGB image -> number of faces found


@dataclass
class Photo:
    name: str
    image: Image.Image
    faces: int  # how many faces a person sees in it


def package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    return Path(spec.origin).parent.joinpath(*parts)


def photos() -> tuple[list[Photo], list[Photo], list[Photo]]:
    """(photos, LFW patches, synthetic faces)."""
    shipped = [
        Photo("grace_hopper", package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"), 1),
        Photo("china", package_file("sklearn", "datasets", "images", "china.jpg"), 0),
        Photo("flower", package_file("sklearn", "datasets", "images", "flower.jpg"), 0),
    ]
    lfw: list[Photo] = []
    if importlib.util.find_spec("skimage"):
        faces = {"astronaut.png": 1, "camera.png": 1}
        nonfaces = "brick chelsea coffee coins grass gravel horse hubble_deep_field moon page retina rocket text"
        names = list(faces) + [
            n + (".jpg" if n in ("hubble_deep_field", "retina", "rocket") else ".png") for n in nonfaces.split()
        ]
        shipped += [Photo(n.split(".")[0], package_file("skimage", "data", n), faces.get(n, 0)) for n in names]
        patches = np.load(package_file("skimage", "data", "lfw_subset.npy"))
        for i, patch in enumerate(patches):
            big = Image.fromarray((patch * 255).astype(np.uint8)).resize((96, 96), Image.Resampling.BICUBIC)
            canvas = Image.new("L", (128, 128), 128)
            canvas.paste(big, (16, 16))
            lfw.append(Photo(f"lfw{i}", canvas.convert("RGB"), 1 if i < 100 else 0))
    for photo in shipped:
        with Image.open(photo.image) as image:
            photo.image = image.convert("RGB")
    synthetic = []
    for i in range(20):
        conditions = {CONDITIONS[i % len(CONDITIONS)]: Severity(1 + i % 3)} if i % 4 else {}
        spec = FaceSpec(fitzpatrick=1 + i % 6, age=20 + 3 * i, gender=GENDERS[i % 2], conditions=conditions, seed=i)
        synthetic.append(Photo(f"synth{i}", draw_face(spec, 256), 1))
    return shipped, lfw, synthetic


def haar(
    side: int, cascade: str = "haarcascade_frontalface_default.xml", min_face: float = 0.2, scale_factor: float = 1.2
) -> Detect | None:
    detector = FaceDetector(DetectorSettings(cascade=cascade, side=side, min_face=min_face, scale_factor=scale_factor))
    return lambda image: len(detector.detect(image))


def mediapipe(model: int) -> Detect | None:
    try:
        from mediapipe.python.solutions import face_detection
    except ImportError:
        return None
    solution = face_detection.FaceDetection(model_selection=model, min_detection_confidence=0.5)

    def detect(image: Image.Image) -> int:
        # BlazeFace resizes to 128 (short range) or 192 (full range) px itself; a 320 px copy costs less to hand over.
        small = image.copy()
        small.thumbnail((320, 320))
        found = solution.process(np.asarray(small)).detections
        return len(found or [])

    return detect


def dlib_hog(side: int, upsample: int) -> Detect | None:
    try:
        import dlib
    except ImportError:
        return None
    detector = dlib.get_frontal_face_detector()

    def detect(image: Image.Image) -> int:
        return len(detector(grey_copy(image, side), upsample))

    return detect


CANDIDATES: dict[str, Callable[[], Detect | None]] = {
    "haar default, 96 px": lambda: haar(96, min_face=0.15),
    "haar default, 128 px": lambda: haar(128, min_face=0.15),
    "haar alt2, 112 px (used)": lambda: haar(112, "haarcascade_frontalface_alt2.xml", 0.15),
    "haar alt2, 128 px": lambda: haar(128, "haarcascade_frontalface_alt2.xml", 0.15),
    "haar alt2, 112 px, step 1.3": lambda: haar(112, "haarcascade_frontalface_alt2.xml", 0.15, 1.3),
    "haar alt2, 128 px, step 1.3": lambda: haar(128, "haarcascade_frontalface_alt2.xml", 0.15, 1.3),
    "haar alt2, 96 px, step 1.3": lambda: haar(96, "haarcascade_frontalface_alt2.xml", 0.15, 1.3),
    "mediapipe short-range": lambda: mediapipe(0),
    "mediapipe full-range": lambda: mediapipe(1),
    "dlib hog, 320 px": lambda: dlib_hog(320, 0),
    "dlib hog, 320 px x2": lambda: dlib_hog(320, 1),
}


def cpu_ms(detect: Detect, images: list[Image.Image], repeat: int) -> float:
    times = []
    for image in images:
        detect(image)
        for _ in range(repeat):
            started = time.process_time()
            detect(image)
            times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def evaluate(detect: Detect, shipped: list[Photo], lfw: list[Photo], synthetic: list[Photo], repeat: int) -> dict:
    found = {p.name: detect(p.image) for p in shipped}
    row = {
        "photos_right": sum(found[p.name] == p.faces for p in shipped),
        "photos": len(shipped),
        "wrong": [f"{p.name}:{found[p.name]}" for p in shipped if found[p.name] != p.faces],
        "synthetic_found": sum(detect(p.image) == 1 for p in synthetic),
        "synthetic": len(synthetic),
        "cpu_ms": cpu_ms(detect, [p.image for p in shipped[:3]], repeat),
    }
    if lfw:
        row["lfw_faces_found"] = sum(detect(p.image) > 0 for p in lfw if p.faces)
        row["lfw_nonfaces_flagged"] = sum(detect(p.image) > 0 for p in lfw if not p.faces)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/faces.json"))
    args = parser.parse_args(argv)
    shipped, lfw, synthetic = photos()
    results = {}
    header = (
        f"{'detector':<24} {'photos right':>12} {'LFW faces':>10} {'LFW non-faces':>14} {'synthetic':>10} "
        f"{'CPU ms':>7}  wrong"
    )
    print(header + "\n" + "-" * len(header))
    for name, make in CANDIDATES.items():
        detect = make()
        if detect is None:
            print(f"{name:<24} (not installed here)")
            continue
        row = results[name] = evaluate(detect, shipped, lfw, synthetic, args.repeat)
        lfw_cells = (
            f"{row['lfw_faces_found']:>6}/100 {row['lfw_nonfaces_flagged']:>10}/100" if lfw else f"{'-':>10} {'-':>14}"
        )
        print(
            f"{name:<24} {row['photos_right']:>9}/{row['photos']:<2} {lfw_cells} "
            f"{row['synthetic_found']:>7}/{row['synthetic']:<2} {row['cpu_ms']:>7.2f}  {' '.join(row['wrong'])}"
        )
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
