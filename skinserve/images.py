"""Image bytes: the table of image types, full validation for ingest, hashing, and upright 8-bit RGB."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from skinserve.errors import SkinserveError

DEFAULT_MAX_PIXELS = 50_000_000  # ~7000 x 7000; larger uploads are refused before decoding, as bombs
MIN_SIDE = 8


@dataclass(frozen=True)
class ImageType:
    pil_format: str  # PIL's name for it
    suffixes: tuple[str, ...]  # the first is the one written
    mime: str
    in_datasets: bool  # files with these suffixes are read from dataset folders


# The one table of image types: what the service accepts, which files the dataset readers pick up, what a stored
# file is called, and what content type a client sends it with.
IMAGE_TYPES: tuple[ImageType, ...] = (
    ImageType("PNG", (".png",), "image/png", True),
    ImageType("JPEG", (".jpg", ".jpeg"), "image/jpeg", True),
    ImageType("MPO", (".jpg",), "image/jpeg", False),  # phones' multi-picture JPEGs: decoded as their first frame
    ImageType("WEBP", (".webp",), "image/webp", True),
    ImageType("BMP", (".bmp",), "image/bmp", True),
    ImageType("GIF", (".gif",), "image/gif", False),
    ImageType("TIFF", (".tif", ".tiff"), "image/tiff", False),
)
FORMAT_SUFFIXES: dict[str, str] = {t.pil_format: t.suffixes[0] for t in IMAGE_TYPES}
ACCEPTED_FORMATS = frozenset(FORMAT_SUFFIXES)
DATASET_SUFFIXES: tuple[str, ...] = tuple(s for t in IMAGE_TYPES if t.in_datasets for s in t.suffixes)
CONTENT_TYPES: dict[str, str] = {s: t.mime for t in IMAGE_TYPES for s in t.suffixes}


def suffix_for(image_format: str) -> str:
    """The file suffix for a PIL format name, for content-addressed storage keys."""
    return FORMAT_SUFFIXES.get(image_format, ".img")


class InvalidImage(SkinserveError):
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
        return suffix_for(self.format)

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


def draft_size(width: int, height: int, min_side: int) -> tuple[int, int]:
    """The size to ask libjpeg for: the shorter side must stay at or above `min_side` after reduction."""
    scale = min_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draft_scale(width: int, height: int, min_side: int) -> int:
    """The factor (1, 2, 4 or 8) libjpeg reduces this JPEG by in `decode_for_model`: PIL's `JpegImageFile.draft`
    rule for the size asked, so a decoder elsewhere (skinserve.modeling.gpu_decode) can reduce alike."""
    wanted_w, wanted_h = draft_size(width, height, min_side)
    most = min(width // wanted_w, height // wanted_h)
    return next(factor for factor in (8, 4, 2, 1) if most >= factor)


def decode_for_model(image: Image.Image, min_side: int | None = None) -> Image.Image:
    """An opened image's pixels as the model sees them: upright 8-bit RGB (`upright_rgb`), a JPEG that will be
    resized to `min_side` anyway decoded by libjpeg at 1/2, 1/4 or 1/8 scale (PIL's draft mode).

    The one decode of the project: training, evaluation, export parity and the service all call it, so a model is
    trained on the pixels it is served (orientation, alpha, 16-bit, palette, CMYK and the reduced JPEG decode alike).
    """
    if image.format in ("JPEG", "MPO") and min_side:
        image.draft("RGB", draft_size(*image.size, min_side))
    image.load()
    return upright_rgb(image)


def read_for_model(path, min_side: int | None = None) -> Image.Image:
    """An image file through `decode_for_model`."""
    with Image.open(path) as image:
        return decode_for_model(image, min_side)


def upright_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied; 16-bit, palette, alpha, CMYK and grey images as 8-bit RGB (alpha over white)."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _eight_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    """High-bit-depth grey to 8-bit by its own range (16-bit PNGs use 0..65535, PIL's 'I' mode holds them)."""
    import numpy as np

    array = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
    return Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), mode="L")
