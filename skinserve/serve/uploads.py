"""A request's image, from HTTP to model input: parsing the body (raw image, multipart files or base64 in JSON) within
the byte limit, validating and decoding the bytes within the pixel limit, and preparing the model's array."""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from skinserve.errors import ClientError
from skinserve.faces import crop_window
from skinserve.images import ACCEPTED_FORMATS, decode_for_model, sha256_hex, suffix_for
from skinserve.preprocess import Preprocessing, normalized_array, resize_and_crop
from skinserve.serve.regions import input_window

if TYPE_CHECKING:
    from skinserve.serve.quality import FaceStage, QualityCheck

FACE_CROP_DECODE_SCALE = 3  # JPEG draft decode keeps the shorter side at 3x the resize size when a face is cropped
HEATMAP_MIN_SIDE = 512  # and at this many pixels for an image a heatmap is drawn on


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
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            rgb = decode_for_model(image, min_side)
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


@dataclass(frozen=True)
class PreparedUpload:
    array: np.ndarray  # normalised CHW float32, ready for the model
    data: bytes
    sha256: str
    width: int  # as uploaded
    height: int
    nbytes: int
    format: str
    check: QualityCheck | None = None  # the face and quality stage's result (None: the stage is off)
    window: tuple[float, float, float, float] | None = None  # the model input's square in the decoded image's pixels
    decoded_size: tuple[int, int] = (0, 0)  # the decoded, upright image's (possibly JPEG-reduced)
    image: Image.Image | None = None  # the decoded, upright image (kept only when asked: heatmaps need it)
    quality_cpu_s: float = 0.0  # this thread's CPU in the face and quality stage (the rest of the call: decode)

    @property
    def suffix(self) -> str:
        return suffix_for(self.format)


def decode_side(pre: Preprocessing, faces: FaceStage | None) -> int:
    """The shorter side a JPEG may be reduced to when decoded: the model's resize side, or three times it when a
    face is cropped (the face is a part of the image, and its crop must still fill the model input)."""
    cropping = faces is not None and faces.crop_margin is not None
    return pre.resize_size * (FACE_CROP_DECODE_SCALE if cropping else 1)


def face_window(
    image: Image.Image, uploaded_size: tuple[int, int], faces: FaceStage | None
) -> tuple[QualityCheck | None, tuple[int, ...] | None]:
    """The face and quality stage on a decoded image, and the window the model is shown when the stage crops (None:
    the whole image). Training on face crops (`skinserve train --face-crop`) calls it too, so both crop alike."""
    if faces is None:
        return None, None
    check = faces.inspect(image, uploaded_size)
    if faces.crop_margin is None or check.crop_box is None:
        return check, None
    return check, crop_window(check.crop_box, image.size, faces.crop_margin)


def prepare_upload(
    data: bytes, pre: Preprocessing, limits: UploadLimits, faces: FaceStage | None = None, keep_image: bool = False
) -> PreparedUpload:
    """Validate and decode (JPEG at reduced scale when it can); then the face and quality stage (which may refuse the
    image in enforce mode) and, when the stage crops, the face with its margin; resize, crop and normalise."""
    # A heatmap is drawn on the decoded image, so it gets a picture a person can look at.
    min_side = decode_side(pre, faces)
    upload = decode_upload(data, limits, min_side=max(min_side, HEATMAP_MIN_SIDE) if keep_image else min_side)
    image = upload.image
    started = time.thread_time()
    check, crop = face_window(image, (upload.width, upload.height), faces)
    quality_cpu_s = time.thread_time() - started
    shown = image.crop(crop) if crop else image
    array = normalized_array(resize_and_crop(shown, pre), pre)
    return PreparedUpload(
        array,
        data,
        upload.sha256,
        upload.width,
        upload.height,
        upload.nbytes,
        upload.format,
        check if faces is not None and faces.answers else None,
        input_window(image.size, pre, crop),
        image.size,
        image if keep_image else None,
        quality_cpu_s,
    )


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
    request.state.body_read = True
    return b"".join(chunks)


async def discard_body(request: Request, max_bytes: int, max_seconds: float) -> bool:
    """Read and drop what is left of a refused request's body, within both bounds; True when it was all read.

    An answer sent before the body is read, then the connection closed, reaches a client that writes its whole body
    before reading (Python's urllib, most simple clients) as "connection reset": its 413 or 401 is lost. nginx reads
    on for a while for the same reason (lingering_close); so does this, up to `max_bytes` and `max_seconds`.
    """
    if getattr(request.state, "body_read", False) or request.method in ("GET", "HEAD"):
        return True
    declared = request.headers.get("content-length")
    if declared == "0" or (declared is None and "transfer-encoding" not in request.headers):
        return True
    read = 0
    with anyio.move_on_after(max_seconds):
        while read <= max_bytes:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return True
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                request.state.body_read = True
                return True
    return False


async def uploaded_images(request: Request, max_bytes: int, max_files: int) -> list[bytes]:
    """Image bytes from a raw `image/*` body or from multipart file fields (image, file, images or files)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type.startswith("image/") or media_type == "application/octet-stream":
        return [await read_body(request, max_bytes)]
    if media_type == "application/json":  # {"image_base64": "..."}: the same limits, on the decoded bytes too
        return [image_from_json_body(await read_body(request, json_body_limit(max_bytes)), max_bytes)]
    if media_type != "multipart/form-data":
        raise UnsupportedUpload(
            f"content type {media_type or 'none'!r} is not accepted: send multipart/form-data with a file in the "
            '\'image\' field, the raw image with an image/* content type, or JSON {"image_base64": "..."}'
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


# --- The application/json form, {"image_base64": "..."} ------------------------------------------------------
# The image bytes out of it, within the same byte limit and with the same errors as a multipart or raw upload. No
# image URLs: the service never fetches what a client names.

FIELD = "image_base64"
# A data URL's head, e.g. "data:image/png;base64,": what browsers' FileReader.readAsDataURL gives.
_DATA_URL = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*),", re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")
_JSON_OVERHEAD = 1024  # the braces, the field name and a data URL head


def encoded_limit(max_bytes: int) -> int:
    """The longest base64 text of at most `max_bytes` bytes (4 characters per 3 bytes, padded)."""
    return 4 * -(-max_bytes // 3)


def json_body_limit(max_bytes: int) -> int:
    """The largest JSON body to read for an image of at most `max_bytes` (pass to the body reader's limit); line
    breaks inside the base64 text (MIME style, every 76 characters) fit in it too."""
    encoded = encoded_limit(max_bytes)
    return encoded + encoded // 38 + _JSON_OVERHEAD


def image_from_json_body(body: bytes, max_bytes: int) -> bytes:
    """The image bytes in a JSON body `{"image_base64": "<base64 or data URL>"}`.

    Limits as the other forms: the encoded text's length is checked against `max_bytes` before it is decoded, the
    decoded bytes after; whether they are an image is `skinserve.images.decode_upload`'s call, as for any upload.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UploadError(f'the body is not valid JSON ({err}); send {{"{FIELD}": "<base64 image>"}}') from err
    if not isinstance(document, dict) or FIELD not in document:
        seen = sorted(document)[:10] if isinstance(document, dict) else type(document).__name__
        raise UploadError(f'the JSON body has no "{FIELD}" field (seen: {seen}); send {{"{FIELD}": "<base64 image>"}}')
    text = document[FIELD]
    if not isinstance(text, str):
        raise UploadError(f'"{FIELD}" must be a string of base64, not {type(text).__name__}')
    return decode_base64_image(text, max_bytes)


def decode_base64_image(text: str, max_bytes: int) -> bytes:
    """Base64 (standard or URL-safe alphabet, padding optional, line breaks allowed) or a data URL -> bytes."""
    match = _DATA_URL.match(text)
    if match:
        media_type = match["type"].strip().lower()
        if media_type and not media_type.startswith("image/"):
            raise UnsupportedUpload(f"a data URL of type {media_type!r} is not an image: send image/* data")
        if "base64" not in match["params"].lower():
            raise UploadError("a data URL must be base64-encoded (data:image/...;base64,...)")
        text = text[match.end() :]
    raw = text.encode("ascii", errors="replace")
    if len(raw) > encoded_limit(max_bytes) * 1.05 + 4:  # before stripping: a cheap bound on the work below
        raise UploadTooLarge(f'"{FIELD}" holds more than the {max_bytes}-byte limit once decoded')
    raw = _WHITESPACE.sub(b"", raw)
    if not raw:
        raise UploadError(f'"{FIELD}" is empty: send the image as base64')
    if len(raw) > encoded_limit(max_bytes):
        raise UploadTooLarge(
            f'"{FIELD}" is {len(raw)} characters of base64, over the {encoded_limit(max_bytes)} that hold the '
            f"{max_bytes}-byte limit"
        )
    alphabet = b"-_" if (b"-" in raw or b"_" in raw) else None
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=alphabet, validate=True)
    except (binascii.Error, ValueError) as err:
        raise UploadError(f'"{FIELD}" is not valid base64: {err}') from err
    if not data:
        raise UploadError(f'"{FIELD}" decodes to no bytes: send the image as base64')
    if len(data) > max_bytes:
        raise UploadTooLarge(f"upload of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    return data
