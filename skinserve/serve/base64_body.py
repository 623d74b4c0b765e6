"""The `application/json` input form, `{"image_base64": "..."}`: the image bytes out of it, within the same byte limit
and with the same errors as a multipart or raw upload. No image URLs: the service never fetches what a client names.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from skinserve.serve.uploads import UnsupportedUpload, UploadError, UploadTooLarge

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
