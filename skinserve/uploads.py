"""Getting image bytes out of an HTTP request: a raw image body or multipart files, within the byte limit."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request

from skinserve.images import UnsupportedUpload, UploadError, UploadTooLarge

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
