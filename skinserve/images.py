"""Decoding and validating image bytes: the one place that decides whether bytes are a usable image."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 50_000_000  # ~7000 x 7000; larger uploads are refused before decoding, as bombs
MIN_SIDE = 8


class InvalidImage(ValueError):
    """Bytes that are not a usable image; the message says why in words a user can act on."""


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    width: int
    height: int
    format: str  # PIL's name: PNG, JPEG, ...
    mode: str
    nbytes: int

    @property
    def suffix(self) -> str:
        return {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}.get(self.format, ".img")

    @property
    def content_type(self) -> str:
        return Image.MIME.get(self.format, "application/octet-stream")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Fully decode `data` (so truncation and corrupt streams are caught) and describe it."""
    if not data:
        raise InvalidImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InvalidImage(f"{width}x{height} pixels exceeds the limit of {max_pixels} (a bomb?)")
                image.load()
                info = ImageInfo(sha256_hex(data), width, height, image.format or "", image.mode, len(data))
    except InvalidImage:
        raise
    except UnidentifiedImageError as err:
        raise InvalidImage("not an image (unrecognised format)") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InvalidImage(f"decompression bomb refused: {err}") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InvalidImage(f"undecodable image: {err}") from err
    if min(width, height) < MIN_SIDE:
        raise InvalidImage(f"{width}x{height} is too small (each side must be at least {MIN_SIDE} px)")
    return info


def open_rgb(path) -> Image.Image:
    """An image file as RGB with its EXIF orientation applied (a phone's portrait photo stays upright)."""
    from PIL import ImageOps

    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")
