"""A corpus of hostile and odd uploads, each with the status the service documents for it (README, Serving).

Every input is a whole HTTP request (route, headers, body bytes), so the corpus can be written to disk and replayed
by any client: `python -m tests.hostile.generate OUT_DIR [--max-bytes N]` writes `NN-name.body` files and a
`manifest.json` with route, headers and expected status. Odd but valid images expect 200; everything else a 4xx
with a JSON `error`. Generated from a seed: the same corpus every run.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

SINGLE = "/analyze"
PRODUCT = "/api/v1/ml/analyze-condition"
BATCH = "/analyze_batch"
INFER = "/infer"
EXPLAIN = "/api/v1/ml/explain"
BOUNDARY = "skinserve-hostile-boundary"


@dataclass(frozen=True)
class HostileInput:
    name: str
    route: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200  # the documented answer

    def manifest_entry(self, filename: str) -> dict:
        return {
            "name": self.name,
            "route": self.route,
            "headers": self.headers,
            "body": filename,
            "status": self.status,
        }


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def multipart(parts: list[tuple[str, bytes | str, bytes | None, str | None]]) -> tuple[dict[str, str], bytes]:
    """(field, filename or None, data, content type) parts as a multipart body.

    Written by hand, not with httpx's encoder, because the corpus needs what a client library refuses to send:
    a file name that is not UTF-8.
    """
    chunks = []
    for name, filename, data, content_type in parts:
        disposition = b'form-data; name="' + name.encode() + b'"'
        if filename is not None:
            raw = filename if isinstance(filename, bytes) else filename.encode()
            disposition += b'; filename="' + raw + b'"'
        head = b"Content-Disposition: " + disposition + b"\r\n"
        if content_type:
            head += b"Content-Type: " + content_type.encode() + b"\r\n"
        chunks.append(b"--" + BOUNDARY.encode() + b"\r\n" + head + b"\r\n" + (data or b"") + b"\r\n")
    body = b"".join(chunks) + b"--" + BOUNDARY.encode() + b"--\r\n"
    return {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}, body


def as_file(
    name: str,
    data: bytes,
    filename: str | bytes,
    content_type: str,
    status: int,
    route: str = SINGLE,
    field_name: str = "image",
) -> HostileInput:
    headers, body = multipart([(field_name, filename, data, content_type)])
    return HostileInput(name, route, body, headers, status)


def as_raw(name: str, data: bytes, content_type: str | None, status: int, route: str = PRODUCT) -> HostileInput:
    return HostileInput(name, route, data, {"content-type": content_type} if content_type else {}, status)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 30000) -> bytes:
    """A valid PNG header claiming side x side RGB with a tiny IDAT: refused from the header, never decoded."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def bomb_jpeg(small: bytes, side: int = 30000) -> bytes:
    """A real JPEG whose SOF0 frame header is patched to claim side x side."""
    at = small.index(b"\xff\xc0")
    return small[: at + 5] + struct.pack(">HH", side, side) + small[at + 9 :]


def bomb_gif(side: int = 30000) -> bytes:
    """A GIF whose logical screen and only frame claim side x side."""
    tiny = bytearray(encoded(Image.new("P", (8, 8)), "GIF"))
    tiny[6:10] = struct.pack("<HH", side, side)
    at = tiny.index(b"\x2c")  # image descriptor: separator, left, top, width, height
    tiny[at + 5 : at + 9] = struct.pack("<HH", side, side)
    return bytes(tiny)


def text_bomb_png(base: bytes) -> bytes:
    """A small PNG carrying a zTXt chunk that inflates to 64 MB (PIL's text limit refuses it)."""
    payload = b"Comment\0\0" + zlib.compress(b"\0" * (64 * 1024 * 1024), 9)
    return base[:33] + _png_chunk(b"zTXt", payload) + base[33:]


def exif_rotated_jpeg(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encoded(image, "JPEG", exif=exif.tobytes(), quality=85)


def animated_gif(frames: list[Image.Image]) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buffer.getvalue()


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("face.jpg", b"\xff\xd8\xff" + b"\0" * 4096)
    return buffer.getvalue()


PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="30000" height="30000">'
    b'<rect width="100%" height="100%" fill="red"/></svg>'
)
HTML = b"<!doctype html><html><body><script>alert(1)</script><img src=x onerror=alert(2)></body></html>"


def build_corpus(max_bytes: int = 2 * 1024 * 1024, seed: int = 0) -> list[HostileInput]:
    """The corpus for a server whose SKINSERVE_MAX_UPLOAD_BYTES is `max_bytes`."""
    rng = np.random.default_rng(seed)
    photo = Image.fromarray(rng.integers(60, 200, (160, 160, 3), dtype=np.uint8))
    jpeg = encoded(photo, "JPEG", quality=85)
    png = encoded(photo, "PNG")
    grey16 = Image.fromarray((rng.integers(0, 65535, (96, 96))).astype(np.uint16))
    frames = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).convert("P") for _ in range(5)]
    text_chunk = PngImagePlugin.PngInfo()
    text_chunk.add_text("Comment", "' OR 1=1; DROP TABLE prediction_logs; --")
    oversize = rng.integers(0, 255, max_bytes + 4096, dtype=np.uint8).tobytes()
    noise_png = encoded(Image.fromarray(rng.integers(0, 255, (900, 900, 3), dtype=np.uint8)), "PNG")

    corpus = [
        # --- not an image, or nothing at all
        as_raw("empty body", b"", "image/jpeg", 400),
        as_raw("empty body, no content type", b"", None, 415),
        as_file("empty file", b"", "face.jpg", "image/jpeg", 400),
        as_raw("random bytes as image/jpeg", rng.integers(0, 255, 4096, dtype=np.uint8).tobytes(), "image/jpeg", 415),
        as_file(
            "random bytes as face.jpg",
            rng.integers(0, 255, 4096, dtype=np.uint8).tobytes(),
            "face.jpg",
            "image/jpeg",
            415,
        ),
        as_file("html as face.jpg", HTML, "face.jpg", "image/jpeg", 415),
        as_file("svg as face.png", SVG, "face.png", "image/png", 415),
        as_raw("svg as image/svg+xml", SVG, "image/svg+xml", 415),
        as_file("pdf as face.jpg", PDF, "face.jpg", "image/jpeg", 415),
        as_file("zip as face.png", zip_archive(), "face.png", "image/png", 415),
        as_file("ico as face.jpg", encoded(photo.resize((32, 32)), "ICO"), "face.jpg", "image/jpeg", 415),
        # --- broken images
        as_file("truncated jpeg", jpeg[: len(jpeg) // 2], "face.jpg", "image/jpeg", 400),
        as_file("truncated png", png[: len(png) // 2], "face.png", "image/png", 400),
        as_raw("jpeg header only", jpeg[:200], "image/jpeg", 400),
        as_raw("png signature only", png[:16], "image/png", 400),
        # --- bombs and sizes
        as_file("png claiming 30000x30000", bomb_png(), "bomb.png", "image/png", 413),
        as_raw("jpeg claiming 30000x30000", bomb_jpeg(jpeg), "image/jpeg", 413),
        as_raw("gif claiming 30000x30000", bomb_gif(), "image/gif", 413),
        as_raw("png with a 64 MB zTXt chunk", text_bomb_png(png), "image/png", 400),
        as_raw("raw body over the byte limit", oversize, "image/jpeg", 413),
        as_file("file over the byte limit", oversize, "big.jpg", "image/jpeg", 413),
        as_file("png over the byte limit", noise_png * (1 + max_bytes // len(noise_png)), "big.png", "image/png", 413),
        # --- odd but valid images
        as_file("animated gif", animated_gif(frames), "face.gif", "image/gif", 200),
        as_file("16-bit grey png", encoded(grey16, "PNG"), "face.png", "image/png", 200),
        as_file("cmyk jpeg", encoded(photo.convert("CMYK"), "JPEG"), "face.jpg", "image/jpeg", 200),
        as_file("grayscale jpeg", encoded(photo.convert("L"), "JPEG"), "face.jpg", "image/jpeg", 200),
        as_file("grey+alpha png", encoded(photo.convert("LA"), "PNG"), "face.png", "image/png", 200),
        as_file("rgba png", encoded(photo.convert("RGBA"), "PNG"), "face.png", "image/png", 200),
        as_file("palette png", encoded(photo.convert("P"), "PNG"), "face.png", "image/png", 200),
        as_file("1-bit png", encoded(photo.convert("1"), "PNG"), "face.png", "image/png", 200),
        as_file("float tiff", encoded(photo.convert("F"), "TIFF"), "face.tif", "image/tiff", 200),
        as_file("exif rotated jpeg", exif_rotated_jpeg(photo.resize((160, 90))), "face.jpg", "image/jpeg", 200),
        as_file("progressive jpeg", encoded(photo, "JPEG", progressive=True), "face.jpg", "image/jpeg", 200),
        as_file("1x1 png", encoded(Image.new("RGB", (1, 1), (200, 150, 120)), "PNG"), "dot.png", "image/png", 200),
        as_file(
            "10000x10 png",
            encoded(Image.new("RGB", (10000, 10), (200, 150, 120)), "PNG"),
            "strip.png",
            "image/png",
            200,
        ),
        as_raw("10x10000 jpeg", encoded(Image.new("RGB", (10, 10000), (200, 150, 120)), "JPEG"), "image/jpeg", 200),
        as_file("webp", encoded(photo, "WEBP"), "face.webp", "image/webp", 200),
        as_file("bmp", encoded(photo, "BMP"), "face.bmp", "image/bmp", 200),
        as_file("jpeg labelled image/png", jpeg, "face.png", "image/png", 200),
        as_file("png with an SQL text chunk", encoded(photo, "PNG", pnginfo=text_chunk), "face.png", "image/png", 200),
        as_raw("jpeg as application/octet-stream", jpeg, "application/octet-stream", 200),
        # --- malformed requests
        as_file("wrong field name", jpeg, "face.jpg", "image/jpeg", 400, field_name="photo"),
        as_file("field name 'file'", jpeg, "face.jpg", "image/jpeg", 200, field_name="file"),
        as_file("non-UTF-8 file name", jpeg, b"\xff\xfe\xc3(face\x80.jpg", "image/jpeg", 200),
        as_file("file name with quotes and SQL", jpeg, "x'); DROP TABLE prediction_logs;--.jpg", "image/jpeg", 200),
        HostileInput(
            "two files",
            SINGLE,
            *reversed(multipart([("image", "a.jpg", jpeg, "image/jpeg"), ("image", "b.jpg", jpeg, "image/jpeg")])),
            status=400,
        ),
        HostileInput(
            "three files",
            SINGLE,
            *reversed(multipart([("image", f"{i}.jpg", jpeg, "image/jpeg") for i in range(3)])),
            status=400,
        ),
        HostileInput(
            "no file, only a text field", SINGLE, *reversed(multipart([("image", None, b"hello", None)])), status=400
        ),
        HostileInput("empty multipart form", SINGLE, *reversed(multipart([])), status=400),
        HostileInput(
            "multipart without boundary", SINGLE, b"--x\r\n\r\n", {"content-type": "multipart/form-data"}, status=400
        ),
        HostileInput(
            "garbage multipart body",
            SINGLE,
            b"\0\xff" * 512,
            {"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
            status=400,
        ),
        as_raw("wrong content type text/plain", jpeg, "text/plain", 415),
        # JSON is an input form ({"image_base64": ...}); without that field it is a malformed request.
        as_raw("json body", json.dumps({"image": "aGVsbG8="}).encode(), "application/json", 400, route=SINGLE),
        as_raw("form-urlencoded body", b"image=aGVsbG8%3D", "application/x-www-form-urlencoded", 415),
        # --- the batch route
        HostileInput(
            "batch with one bad image",
            BATCH,
            *reversed(multipart([("images", "a.jpg", jpeg, "image/jpeg"), ("images", "b.jpg", HTML, "image/jpeg")])),
            status=415,
        ),
        HostileInput(
            "batch over the image count",
            BATCH,
            *reversed(multipart([("images", f"{i}.jpg", b"x", "image/jpeg") for i in range(40)])),
            status=400,
        ),
        HostileInput(
            "batch of odd images",
            BATCH,
            *reversed(
                multipart(
                    [
                        ("images", "a.gif", animated_gif(frames), "image/gif"),
                        ("images", "b.png", encoded(grey16, "PNG"), "image/png"),
                    ]
                )
            ),
            status=200,
        ),
        # --- the JSON base64 form and the analysis routes (/infer, /api/v1/ml/explain)
        as_json("base64 photo as JSON", {"image_base64": b64(jpeg)}, 200),
        as_json("base64 photo as a data URL", {"image_base64": "data:image/jpeg;base64," + b64(jpeg)}, 200, INFER),
        as_json("base64 photo, MIME line breaks", {"image_base64": mime_lines(b64(png))}, 200, PRODUCT),
        as_json("broken base64", {"image_base64": "@@@ not base64 @@@"}, 400),
        as_json("base64 of a non-image", {"image_base64": b64(HTML)}, 415, PRODUCT),
        as_json("base64 of html as a data URL", {"image_base64": "data:text/html;base64," + b64(HTML)}, 415, INFER),
        as_json("base64 past the byte limit once decoded", {"image_base64": b64(oversize)}, 413, INFER),
        as_json("JSON without the image_base64 field", {"image": b64(jpeg)}, 400, EXPLAIN),
        as_json("image_base64 that is a number", {"image_base64": 12345}, 400),
        HostileInput("JSON that is not JSON", SINGLE, b"{not json", {"content-type": "application/json"}, 400),
        HostileInput("a JSON list", INFER, b"[1, 2]", {"content-type": "application/json"}, 400),
        as_raw("1x1 png to infer", encoded(Image.new("RGB", (1, 1)), "PNG"), "image/png", 200, INFER),
        as_raw("1x1 png to explain", encoded(Image.new("RGB", (1, 1)), "PNG"), "image/png", 200, EXPLAIN),
        as_raw("20000 px wide strip to infer", strip_png(), "image/png", 200, INFER),
        as_raw("20000 px wide strip to explain", strip_png(), "image/png", 200, EXPLAIN),
        as_raw("photo to explain", jpeg, "image/jpeg", 200, EXPLAIN),
        as_raw("photo to explain an unknown condition", jpeg, "image/jpeg", 422, EXPLAIN + "?condition=wrinkles"),
        as_raw("photo to explain a condition", jpeg, "image/jpeg", 200, EXPLAIN + "?condition=redness"),
        as_file("multipart photo to infer", jpeg, "face.jpg", "image/jpeg", 200, INFER),
        as_raw("photo to infer without regions", jpeg, "image/jpeg", 200, INFER + "?regions=false"),
        as_raw("regions that are not a boolean", jpeg, "image/jpeg", 422, SINGLE + "?regions=maybe"),
    ]
    return corpus


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def mime_lines(text: str) -> str:
    return "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def strip_png() -> bytes:
    """20,000 x 2 px: within the pixel limit, absurd as a photo."""
    return encoded(Image.new("RGB", (20000, 2), (200, 150, 120)), "PNG")


def as_json(name: str, document: object, status: int, route: str = SINGLE) -> HostileInput:
    return HostileInput(name, route, json.dumps(document).encode(), {"content-type": "application/json"}, status)


def write_corpus(out: Path, corpus: list[HostileInput]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, item in enumerate(corpus):
        filename = f"{i:02d}-{''.join(c if c.isalnum() else '-' for c in item.name)}.body"
        (out / filename).write_bytes(item.body)
        entries.append(item.manifest_entry(filename))
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps(entries, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-bytes", type=int, default=2 * 1024 * 1024, help="the server's upload limit")
    args = parser.parse_args(argv)
    corpus = build_corpus(args.max_bytes)
    manifest = write_corpus(args.out, corpus)
    print(f"{len(corpus)} inputs written; manifest {manifest}")


if __name__ == "__main__":
    main()
