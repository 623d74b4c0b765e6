"""A request's image, from HTTP to model input: parsing the body (raw image or multipart files) within the byte
limit, validating and decoding the bytes within the pixel limit, and preparing the model's array."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from skinserve.errors import ClientError
from skinserve.images import ACCEPTED_FORMATS, sha256_hex, suffix_for, upright_rgb
from skinserve.preprocess import Preprocessing, normalized_array, resize_and_crop


class UploadError(ClientError):
    """Bad input from a client: the message says why, `code` and `status` what kind of refusal it is."""

    code = "bad_request"


class UploadTooLarge(UploadError):
    code = "too_large"


class UnsupportedUpload(UploadError):
    code = "unsupported_type"


class UndecodableUpload(UploadError):
    code = "undecodable"


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000


@dataclass(frozen=True)
class DecodedUpload:
    image: Image.Image  # RGB, upright, possibly already reduced (JPEG draft) but never below `min_side`
    sha256: str
    width: int  # as uploaded, before any reduction
    height: int
    format: str
    nbytes: int


def decode_upload(data: bytes, limits: UploadLimits, min_side: int | None = None) -> DecodedUpload:
    """Validate and decode an upload to upright RGB; JPEGs decode at reduced scale when `min_side` allows.

    Decode is the cost per request (about 37 ms for a 1024 px PNG on one core, 10 ms for a JPEG), so a JPEG that
    will be resized to `min_side` anyway is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (PIL draft mode).
    """
    image = open_upload(data, limits)
    width, height = image.size
    try:
        if image.format in ("JPEG", "MPO") and min_side:
            image.draft("RGB", _draft_size(width, height, min_side))
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
        rgb = upright_rgb(image)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning) as err:
        raise UndecodableUpload(f"undecodable image: {err}") from err
    return DecodedUpload(rgb, sha256_hex(data), width, height, image.format, len(data))


def open_upload(data: bytes, limits: UploadLimits) -> Image.Image:
    """The upload opened and checked from its header alone (size in bytes, type, pixels), its pixels not decoded."""
    if not data:
        raise UploadError("empty upload: send an image file", code="empty_upload")
    if len(data) > limits.max_bytes:
        raise UploadTooLarge(f"upload of {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:  # PIL's own guard, past twice its MAX_IMAGE_PIXELS
        raise UploadTooLarge(f"decompression bomb refused: {err}") from err
    except UnidentifiedImageError as err:
        raise UnsupportedUpload("not a supported image (JPEG, PNG, WebP, BMP, GIF or TIFF expected)") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise UndecodableUpload(f"undecodable image header: {err}") from err
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedUpload(f"image format {image.format} is not accepted")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise UploadTooLarge(f"{width}x{height} pixels exceeds the limit of {limits.max_pixels} (decompression bomb?)")
    return image


def _draft_size(width: int, height: int, min_side: int) -> tuple[int, int]:
    """The size to ask libjpeg for: the shorter side must stay at or above `min_side` after reduction."""
    scale = min_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draft_scale(width: int, height: int, min_side: int) -> int:
    """The factor (1, 2, 4 or 8) libjpeg reduces this JPEG by in `decode_upload`: PIL's `JpegImageFile.draft`
    rule for the size asked, so a decoder elsewhere (skinserve.modeling.gpu_decode) can reduce alike."""
    wanted_w, wanted_h = _draft_size(width, height, min_side)
    most = min(width // wanted_w, height // wanted_h)
    return next(factor for factor in (8, 4, 2, 1) if most >= factor)


@dataclass(frozen=True)
class PreparedUpload:
    array: np.ndarray  # normalised CHW float32, ready for the model
    data: bytes
    sha256: str
    width: int
    height: int
    nbytes: int
    format: str

    @property
    def suffix(self) -> str:
        return suffix_for(self.format)


def prepare_upload(data: bytes, pre: Preprocessing, limits: UploadLimits) -> PreparedUpload:
    """Validate, decode (JPEG at reduced scale when it can), resize, crop and normalise one upload."""
    upload = decode_upload(data, limits, min_side=pre.resize_size)
    array = normalized_array(resize_and_crop(upload.image, pre), pre)
    return PreparedUpload(array, data, upload.sha256, upload.width, upload.height, upload.nbytes, upload.format)


FILE_FIELDS = ("image", "file", "images", "files")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused as soon as it passes `max_bytes` (a declared Content-Length is checked before reading)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UploadTooLarge(f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise UploadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def uploaded_images(request: Request, max_bytes: int, max_files: int) -> list[bytes]:
    """Image bytes from a raw `image/*` body or from multipart file fields (image, file, images or files)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type.startswith("image/") or media_type == "application/octet-stream":
        return [await read_body(request, max_bytes)]
    if media_type != "multipart/form-data":
        raise UnsupportedUpload(
            f"content type {media_type or 'none'!r} is not accepted: send multipart/form-data with a file in the "
            "'image' field, or the raw image with an image/* content type"
        )
    # The body was bounded above; the parser then holds at most max_files files.
    body = await read_body(request, max_bytes * max_files)
    form = await _replayed(request, body).form(max_files=max_files + 1, max_fields=50)
    try:
        files = [v for k, v in form.multi_items() if isinstance(v, UploadFile) and k in FILE_FIELDS]
        if not files:
            fields = sorted({k for k, _ in form.multi_items()})
            raise UploadError(f"no image file in the form (fields seen: {fields}); send it in the 'image' field")
        if len(files) > max_files:
            raise UploadError(f"{len(files)} files sent; at most {max_files} are accepted here")
        images = [await f.read() for f in files]
    finally:
        await form.close()
    for data in images:
        if len(data) > max_bytes:
            raise UploadTooLarge(f"a file of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    return images


def _replayed(request: Request, body: bytes) -> Request:
    """A copy of the request whose body is `body`, so starlette's multipart parser can read it again."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)
