"""Face detection (OpenCV's Haar cascade, shipped inside the opencv-python-headless 4.x wheel) and the face crop
that training and serving share. Torch-free.

Why this detector (`python benchmarks/faces.py`, 2 shared CPU cores; the photos installed packages ship:
matplotlib's grace_hopper, scikit-learn's china and flower, scikit-image's astronaut and camera (one face each) and
13 of its photos without a face; its LFW subset, 100 face and 100 non-face patches; 20 synthetic faces (drawings)):

    detector                 photos right  LFW faces  LFW non-faces flagged  synthetic  CPU ms/image
    haar alt2, 112 px (used)        16/18     98/100                  0/100      14/20          2.1
    haar alt2, 128 px               17/18     98/100                  0/100      13/20          3.3
    haar default, 96 px             16/18     98/100                  0/100       5/20          1.3
    haar default, 128 px            17/18     94/100                  0/100       7/20          2.8
    mediapipe short-range           18/18    100/100                 23/100      20/20          5.7
    mediapipe full-range            18/18     13/100                  0/100      19/20          9.1
    dlib hog, 320 px                17/18     94/100                  0/100      15/20          9.3
    dlib hog, 320 px, upsampled     17/18     93/100                  0/100      13/20         27.2

The photos the Haar rows miss are camera (a small, half-turned face) and, at 112 px and below, astronaut (a face
at ~20% of the short side): both are below the size this service analyses (`face_too_small` at 25%), so missing
them costs little here; a larger `side` finds them at a cost that grows with its square.
The cascades are 3-5x cheaper than the alternatives and flag no non-face; alt2 finds twice as many of the drawn
synthetic faces as the default cascade. The measured cost still misses the stage's target (15% of a ~6 ms model
call, 0.9 ms): `benchmarks/quality.py` reports it per request.

The candidates, all with their model inside an installable package (nothing downloaded at run time):
- OpenCV Haar cascades: `cv2/data/haarcascade_frontalface_*.xml` ship in the 4.x wheels (5.0 dropped them, hence
  `opencv-python-headless>=4.8,<5`); the package is already here for pytorch-grad-cam. No landmarks, so no pose.
- MediaPipe's face detector (BlazeFace): only the legacy `mediapipe.solutions` API of mediapipe<=0.10.21 ships its
  model, and that wheel pins numpy<2 and protobuf<5 and brings jax and opencv-contrib-python (a second `cv2` over
  ours); mediapipe 1.x ships no face model (its Tasks API wants a downloaded .tflite). It cannot sit in this
  environment, so it was measured in a scratch one.
- dlib's HOG detector (`get_frontal_face_detector`, built in; the 68-point landmark model is a download): finds
  faces of 80 px and up only, so it needs the image upscaled, and costs the most.

The cascade runs on a small grey copy (`DetectorSettings.side`, the longest side) and is asked only for faces of at
least `min_face` of that copy's short side: both bound the per-request cost, and a face smaller than that is too
small to analyse anyway. Its score is the number of overlapping detections merged into the face (OpenCV's
`numDetections`; at least `min_neighbors`): higher is surer, not a probability (alt2's `levelWeights` sit near 57
for every face, so they say nothing).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from skinserve.errors import SkinserveError

DEFAULT_CASCADE = "haarcascade_frontalface_alt2.xml"
# The margin around the face box that the model's crop adds on each side, as a share of the box side: the Haar box
# runs from the brows to the mouth, and the forehead and chin the model scores lie outside it.
DEFAULT_FACE_MARGIN = 0.3
_WINDOW = 24  # the frontal-face cascades' base window: no face smaller than this is ever found


class FaceDetectorError(SkinserveError):
    """The detector cannot start (its cascade file is missing or unreadable); the message says how to fix it."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face: [x, y, w, h] in the pixels of the image it was reported for, and the detector's score."""

    x: int
    y: int
    w: int
    h: int
    score: float

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    def scaled(self, sx: float, sy: float) -> FaceBox:
        """The same box in an image `sx` times as wide and `sy` times as high (e.g. the upload before JPEG draft)."""
        return FaceBox(round(self.x * sx), round(self.y * sy), round(self.w * sx), round(self.h * sy), self.score)


@dataclass(frozen=True)
class DetectorSettings:
    cascade: str = DEFAULT_CASCADE  # a file in cv2.data.haarcascades
    side: int = 112  # longest side of the grey copy the cascade scans: the cost grows with its square
    min_face: float = 0.15  # smallest face searched, as a share of the grey copy's short side
    scale_factor: float = 1.2  # step between the scanned window sizes
    min_neighbors: int = 3  # overlapping windows that must agree on a face

    def __post_init__(self) -> None:
        if self.side < _WINDOW:
            raise ValueError(f"detector side {self.side} is below the cascade window of {_WINDOW} px")
        if not 0 < self.min_face <= 1:
            raise ValueError(f"min_face {self.min_face} must lie in (0, 1]")
        if self.scale_factor <= 1:
            raise ValueError(f"scale_factor {self.scale_factor} must be above 1")


class FaceDetector:
    """`detect(image)` -> faces, largest first, in the image's pixels. Safe to call from several threads."""

    def __init__(self, settings: DetectorSettings = DetectorSettings()) -> None:
        import cv2

        self.settings = settings
        self._cv2 = cv2
        self._path = _cascade_path(cv2, settings.cascade)
        # A CascadeClassifier keeps per-call buffers in itself: one per thread (loading one takes ~10 ms).
        self._local = threading.local()
        self._classifier()  # fail at start-up, not on the first request
        # The service runs one worker per core; OpenCV's own thread pool on a 128 px image only adds contention.
        cv2.setNumThreads(1)

    def _classifier(self):
        classifier = getattr(self._local, "classifier", None)
        if classifier is None:
            classifier = self._cv2.CascadeClassifier(str(self._path))
            if classifier.empty():
                raise FaceDetectorError(f"OpenCV could not read the cascade {self._path}")
            self._local.classifier = classifier
        return classifier

    def grey_copy(self, image: Image.Image) -> np.ndarray:
        """The image as 8-bit grey with its longest side at `settings.side` (never upscaled), as the cascade sees it."""
        return grey_copy(image, self.settings.side)

    def detect(self, image: Image.Image) -> list[FaceBox]:
        grey = self.grey_copy(image)
        sx, sy = image.width / grey.shape[1], image.height / grey.shape[0]
        return [face.scaled(sx, sy) for face in self.detect_grey(grey)]

    def detect_grey(self, grey: np.ndarray) -> list[FaceBox]:
        """Faces in a grey uint8 array, in its pixels, largest first."""
        height, width = grey.shape[:2]
        smallest = max(_WINDOW, round(self.settings.min_face * min(width, height)))
        if smallest > min(width, height):  # a strip or a tiny image: no window fits
            return []
        boxes, neighbours = self._classifier().detectMultiScale2(
            grey,
            scaleFactor=self.settings.scale_factor,
            minNeighbors=self.settings.min_neighbors,
            minSize=(smallest, smallest),
        )
        faces = [
            FaceBox(int(x), int(y), int(w), int(h), float(n))
            for (x, y, w, h), n in zip(boxes, np.ravel(neighbours), strict=True)
        ]
        return sorted(faces, key=lambda f: (-f.area, -f.score))


def _cascade_path(cv2, name: str) -> Path:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / name
    if not folder or not path.is_file():
        raise FaceDetectorError(
            f"OpenCV {cv2.__version__} has no {name} (opencv-python-headless 5 dropped the Haar cascades): "
            "install opencv-python-headless>=4.8,<5"
        )
    return path


def grey_copy(image: Image.Image, side: int) -> np.ndarray:
    """`image` as uint8 grey with its longest side at most `side`; the reduction first, on RGB, is the cheap order."""
    width, height = image.size
    scale = min(1.0, side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != image.size:
        # reducing_gap: PIL first shrinks by an integer factor with a box filter (fast), then resamples the rest.
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(image.convert("L"))


@dataclass(frozen=True)
class FaceCropSettings:
    """How the model's input is cut around a face: stored in the manifest, read by training and serving alike."""

    margin: float = DEFAULT_FACE_MARGIN

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 2:
            raise ValueError(f"face crop margin {self.margin} must lie in [0, 2] (a share of the face box side)")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FaceCropSettings:
        return cls(float(data["margin"]))


def crop_window(box: FaceBox | list[int] | tuple[int, ...], size: tuple[int, int], margin: float) -> tuple[int, ...]:
    """(left, top, right, bottom) of the square around `box` grown by `margin` of its side on each side, moved (not
    cut) to stay inside an image of `size`; only a square larger than the image is cut to it."""
    x, y, w, h = box.as_list() if isinstance(box, FaceBox) else box
    width, height = size
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    crop_w, crop_h = min(side, width), min(side, height)
    left = min(max(cx - crop_w / 2, 0), width - crop_w)
    top = min(max(cy - crop_h / 2, 0), height - crop_h)
    left, top = round(left), round(top)
    return left, top, max(left + 1, round(left + crop_w)), max(top + 1, round(top + crop_h))


def face_crop(image: Image.Image, box: FaceBox | list[int] | tuple[int, ...], margin: float) -> Image.Image:
    """The part of `image` the model should see for the face in `box` (the box in `image`'s own pixels)."""
    return image.crop(crop_window(box, image.size, margin))
