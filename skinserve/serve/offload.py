"""Uploads for a model worker that decodes JPEGs itself (separate placement, SKINSERVE_GPU_DECODE): the API worker
checks each upload from its header alone and sends plain JPEG bytes on; every other upload, and any JPEG the model
worker could not decode, takes the CPU path (`uploads.prepare_upload`) as before, so a bad one still gets its 4xx.

"Plain" is what nvJPEG decodes to the CPU path's pixels: a sequential (not progressive) three-channel YCbCr JPEG
with no EXIF rotation. CMYK, grey, progressive, Adobe-RGB-coded, multi-picture (MPO) and rotated JPEGs, and every
other image type, decode on the CPU, where PIL applies the orientation and converts the colours.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import numpy as np
from PIL import ExifTags, Image

from skinserve.images import sha256_hex, suffix_for
from skinserve.serve.uploads import PreparedUpload, UploadLimits, open_upload

NOT_DECODED = -1.0  # the batch-size column of a row the model worker could not decode: take the CPU path
_ROTATIONS = range(2, 9)  # EXIF orientations that PIL's exif_transpose turns


@dataclass(frozen=True)
class UploadHeader:
    """What an answer and the prediction log need of an upload whose pixels the API worker did not decode."""

    data: bytes
    sha256: str
    width: int
    height: int
    nbytes: int
    format: str

    @property
    def suffix(self) -> str:
        return suffix_for(self.format)


def plain_jpeg(image: Image.Image) -> bool:
    """Whether nvJPEG decodes this opened (not yet decoded) image to the pixels the CPU path gives."""
    if image.format != "JPEG" or image.mode != "RGB":  # MPO, CMYK, grey, and every other type
        return False
    info = image.info
    if info.get("progressive") or info.get("progression"):
        return False
    if "adobe" in info and info.get("adobe_transform") == 0:  # three channels stored as RGB, not YCbCr
        return False
    return image.getexif().get(ExifTags.Base.Orientation, 1) not in _ROTATIONS


def inspect_upload(data: bytes, limits: UploadLimits) -> tuple[UploadHeader, bool]:
    """The upload checked from its header (byte and pixel limits, type: the same 4xx as a full decode gives) and
    whether the model worker can decode it."""
    image = open_upload(data, limits)
    header = UploadHeader(data, sha256_hex(data), image.width, image.height, len(data), image.format or "")
    return header, plain_jpeg(image)


@dataclass(frozen=True)
class OffloadedPrediction:
    uploads: list[UploadHeader | PreparedUpload]  # in request order; PreparedUpload where the CPU decoded it
    packed: np.ndarray  # [N, 7 + 28 + 1] rows as `serve.model.packed_prediction` gives them, in request order
    checked_s: float  # wall seconds the API worker spent on headers and CPU decodes


async def offloaded_prediction(
    blobs: Sequence[bytes],
    limits: UploadLimits,
    prepare: Callable[[bytes], PreparedUpload],
    predict_jpeg: Callable[[list[bytes]], Awaitable[np.ndarray]],
    predict: Callable[[np.ndarray], Awaitable[np.ndarray]],
) -> OffloadedPrediction:
    """Plain JPEGs to `predict_jpeg` as bytes; the rest, and the rows it returns NOT_DECODED, through `prepare`
    (the CPU path, in a thread) and `predict`."""
    started = time.perf_counter()
    inspected = [await anyio.to_thread.run_sync(inspect_upload, blob, limits) for blob in blobs]
    checked_s = time.perf_counter() - started
    uploads: list[UploadHeader | PreparedUpload] = [header for header, _ in inspected]
    rows: list[np.ndarray | None] = [None] * len(blobs)
    plain = [i for i, (_, decodable) in enumerate(inspected) if decodable]
    if plain:
        for i, row in zip(plain, np.asarray(await predict_jpeg([blobs[i] for i in plain])), strict=True):
            if row[-1] != NOT_DECODED:
                rows[i] = row
    rest = [i for i, row in enumerate(rows) if row is None]
    if rest:
        started = time.perf_counter()
        prepared = [await anyio.to_thread.run_sync(prepare, blobs[i]) for i in rest]  # a bad one raises its 4xx
        checked_s += time.perf_counter() - started
        packed = np.asarray(await predict(np.stack([p.array for p in prepared])))
        for i, upload, row in zip(rest, prepared, packed, strict=True):
            uploads[i], rows[i] = upload, row
    return OffloadedPrediction(uploads, np.stack(rows), checked_s)
