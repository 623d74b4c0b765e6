"""JPEG decode in the model worker (separate placement): the batched decoder against the CPU path's pixels (on the
CPU here, through the same torchvision code the GPU runs; on CUDA where there is one), which uploads go to it and
which fall back to the CPU path, the packed rows it returns, and a real server with the model worker decoding."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from skinserve.modeling.gpu_decode import (
    PIXEL_TOLERANCE,
    GpuDecodeUnavailable,
    JpegBatchDecoder,
    jpeg_decoder,
    packed_jpeg_prediction,
)
from skinserve.preprocess import Preprocessing
from skinserve.runtime import load_exported_model
from skinserve.serve.model import OutputLayout, packed_prediction
from skinserve.serve.offload import NOT_DECODED, UploadHeader, inspect_upload, offloaded_prediction
from skinserve.serve.process import start_service
from skinserve.serve.uploads import (
    PreparedUpload,
    UndecodableUpload,
    UnsupportedUpload,
    UploadError,
    UploadLimits,
    prepare_upload,
)

from .photos import CHINA, FLOWER, GRACE_HOPPER, open_photo
from .servers import encoded, shared_tiny_export, tiny_server_env

IMAGENET = Preprocessing(224, 0.875, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
BICUBIC = Preprocessing(96, 0.95, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
LIMITS = UploadLimits()
CUDA = torch.cuda.is_available()


def _levels(got: np.ndarray, want: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """|difference| of two normalised CHW arrays in levels of 255 of the input."""
    return np.abs(got - want) * np.asarray(pre.std).reshape(3, 1, 1) * 255.0


def _rotated(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(image, quality=90, exif=exif.tobytes())


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Real photos as shipped (two JPEG encoders' files), and re-encoded at sizes the service sees, wide and tall."""
    face = open_photo(GRACE_HOPPER)
    return {
        "grace_hopper.jpg": GRACE_HOPPER.read_bytes(),
        "china.jpg": CHINA.read_bytes(),
        "flower.jpg": FLOWER.read_bytes(),
        "face_256.jpg": encoded(face.resize((256, 256)), quality=90),
        "face_wide.jpg": encoded(face.resize((1024, 400)), quality=85),
        "face_tall.jpg": encoded(face.resize((300, 700)), quality=95, subsampling=0),  # 4:4:4
    }


@pytest.mark.parametrize("pre", [IMAGENET, BICUBIC], ids=["bilinear-224", "bicubic-96"])
def test_batched_decode_gives_the_cpu_paths_pixels_within_the_stated_tolerance(photos, pre):
    decoded = JpegBatchDecoder(pre, "cpu").decode(list(photos.values()))
    assert decoded.decoded == list(range(len(photos)))
    assert decoded.images.shape == (len(photos), 3, pre.input_size, pre.input_size)
    for row, (name, blob) in enumerate(photos.items()):
        levels = _levels(decoded.images[row].numpy(), prepare_upload(blob, pre, LIMITS).array, pre)
        # The CPU path decodes large JPEGs at reduced scale (libjpeg's DCT scaling) before its resize, the batched
        # path in full and then box-averaged: the mean stays under one level and 99% of pixels within the stated
        # tolerance (measured on these: means 0.0-0.74, 99th percentiles 0-6 levels).
        assert levels.mean() <= 1.0, name
        assert np.quantile(levels, 0.99) <= PIXEL_TOLERANCE, name


@pytest.mark.skipif(not CUDA, reason="nvJPEG needs a CUDA GPU; none is visible here (the CPU rows run the same code)")
def test_nvjpeg_on_the_gpu_gives_the_cpu_paths_pixels(photos):
    gpu = JpegBatchDecoder(IMAGENET, "cuda").decode(list(photos.values()))
    assert gpu.images.is_cuda and gpu.decoded == list(range(len(photos)))
    for row, blob in enumerate(photos.values()):
        levels = _levels(gpu.images[row].cpu().numpy(), prepare_upload(blob, IMAGENET, LIMITS).array, IMAGENET)
        assert levels.mean() <= 1.0 and np.quantile(levels, 0.99) <= PIXEL_TOLERANCE


def test_a_stream_the_decoder_refuses_leaves_the_rest_of_its_batch_decoded(photos):
    good = photos["face_256.jpg"]
    truncated = good[: len(good) // 2]
    decoded = JpegBatchDecoder(IMAGENET, "cpu").decode([good, truncated, photos["china.jpg"]])
    assert decoded.decoded == [0, 2] and len(decoded.images) == 2
    with pytest.raises(UndecodableUpload):  # and the CPU path answers it with a 400, as before
        prepare_upload(truncated, IMAGENET, LIMITS)


def test_only_plain_jpegs_go_to_the_model_worker(photos):
    face = open_photo(GRACE_HOPPER).resize((320, 400))
    cmyk, grey = encoded(face.convert("CMYK"), quality=90), encoded(face.convert("L"), quality=90)
    cases = {
        "baseline": (photos["face_256.jpg"], True),
        "shipped photo": (photos["grace_hopper.jpg"], True),
        "upright EXIF": (_rotated(face, 1), True),
        "rotated EXIF": (_rotated(face, 6), False),
        "mirrored EXIF": (_rotated(face, 2), False),
        "progressive": (encoded(face, quality=90, progressive=True), False),
        "CMYK": (cmyk, False),
        "grey": (grey, False),
        "PNG": (encoded(face, "PNG"), False),
        "WebP": (encoded(face, "WEBP"), False),
    }
    for name, (blob, plain) in cases.items():
        header, decodable = inspect_upload(blob, LIMITS)
        assert decodable is plain, name
        assert (header.width, header.height, header.nbytes) == (*Image.open(io.BytesIO(blob)).size, len(blob))


def test_inspecting_a_header_refuses_what_the_cpu_path_refuses():
    with pytest.raises(UploadError, match="empty"):
        inspect_upload(b"", LIMITS)
    with pytest.raises(UnsupportedUpload):
        inspect_upload(b"not an image at all", LIMITS)
    big = encoded(Image.new("RGB", (600, 600)))
    with pytest.raises(UploadError) as refused:
        inspect_upload(big, UploadLimits(max_bytes=10_000_000, max_pixels=100_000))
    assert refused.value.code == "too_large"


def test_decoder_modes_without_a_gpu():
    assert isinstance(jpeg_decoder(IMAGENET, "cpu"), JpegBatchDecoder)
    assert jpeg_decoder(IMAGENET, "off") is None
    if CUDA:
        pytest.skip("a CUDA GPU is visible: auto and on decode on it")
    assert jpeg_decoder(IMAGENET, "auto") is None
    with pytest.raises(GpuDecodeUnavailable, match="SKINSERVE_GPU_DECODE=on"):
        jpeg_decoder(IMAGENET, "on")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    env = shared_tiny_export(tmp_path_factory)
    return load_exported_model(Path(env["BENTOML_HOME"]).parent / "export", "onnxruntime-cpu")


@pytest.mark.slow
def test_offloaded_rows_match_the_cpu_path_and_the_rest_falls_back(tiny_model, photos):
    pre = tiny_model.manifest.preprocess
    decoder = JpegBatchDecoder(pre, "cpu")
    face = open_photo(GRACE_HOPPER)
    truncated = photos["face_256.jpg"][:-2000]  # a plain header, a body the decoder refuses
    blobs = [photos["grace_hopper.jpg"], encoded(face, "PNG"), _rotated(face, 6), photos["face_wide.jpg"]]

    layout = OutputLayout.of(tiny_model.manifest)

    async def predict_jpeg(chunk: list[bytes]) -> np.ndarray:
        return packed_jpeg_prediction(tiny_model, decoder, chunk, layout)

    async def predict(images: np.ndarray) -> np.ndarray:
        return packed_prediction(tiny_model, images)

    def prepare(blob: bytes) -> PreparedUpload:
        return prepare_upload(blob, pre, LIMITS)

    result = asyncio.run(offloaded_prediction(blobs, LIMITS, prepare, predict_jpeg, predict))
    kinds = [type(u) for u in result.uploads]
    assert kinds == [UploadHeader, PreparedUpload, PreparedUpload, UploadHeader]
    reference = packed_prediction(tiny_model, np.stack([prepare(b).array for b in blobs]))
    np.testing.assert_allclose(result.packed[:, :-1], reference[:, :-1], atol=0.05)  # logits, a few levels apart
    assert [u.sha256 for u in result.uploads] == [prepare(b).sha256 for b in blobs]

    rows = packed_jpeg_prediction(tiny_model, decoder, [truncated, photos["china.jpg"]], layout)
    assert rows[0, -1] == NOT_DECODED and rows[1, -1] == 1
    with pytest.raises(UndecodableUpload):
        asyncio.run(offloaded_prediction([truncated], LIMITS, prepare, predict_jpeg, predict))
    assert (packed_jpeg_prediction(tiny_model, None, [photos["china.jpg"]], layout)[:, -1] == NOT_DECODED).all()


@pytest.mark.slow
def test_a_separate_model_service_that_decodes_jpegs_answers_as_the_cpu_path(tmp_path_factory, photos, tiny_model):
    """The separate placement with the model worker decoding (SKINSERVE_GPU_DECODE=cpu: the same path, torchvision
    on the CPU): JPEGs, a PNG and a rotated JPEG answered, a broken JPEG refused with 400, as the in-process server."""
    from skinserve.db import migrate

    workdir = tmp_path_factory.mktemp("offload")
    url = f"sqlite:///{workdir / 'log.db'}"
    migrate.upgrade(url)
    face = open_photo(GRACE_HOPPER)
    uploads = {
        "grace_hopper.jpg": photos["grace_hopper.jpg"],
        "face.png": encoded(face, "PNG"),
        "rotated.jpg": _rotated(face, 6),
    }
    answers = {}
    # The face stage needs the decoded pixels where the request arrives: with it off, JPEGs travel as bytes.
    for name, settings in (
        (
            "offload",
            {"SKINSERVE_MODEL_PLACEMENT": "separate", "SKINSERVE_GPU_DECODE": "cpu", "SKINSERVE_FACE_CHECK": "off"},
        ),
        ("inprocess", {"SKINSERVE_MODEL_PLACEMENT": "inprocess", "SKINSERVE_FACE_CHECK": "off"}),
    ):
        env = tiny_server_env(tmp_path_factory, workdir / name, url, **settings)
        server = start_service(env, workdir / name / "server.log")
        try:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                answers[name] = {
                    file: client.post("/analyze", files={"image": (file, blob, "image/jpeg")})
                    for file, blob in uploads.items()
                }
                broken = client.post(
                    "/analyze", files={"image": ("b.jpg", photos["face_256.jpg"][:-2000], "image/jpeg")}
                )
                batching = client.get("/model").json()["batching"]
            assert broken.status_code == 400 and broken.json()["code"] == "undecodable", broken.text
            assert batching["jpeg_decode"] == ("cpu" if name == "offload" else None)
        finally:
            server.stop()
    for file in uploads:
        offload, inprocess = answers["offload"][file].json(), answers["inprocess"][file].json()
        assert offload["image"] == inprocess["image"]
        for condition, want in inprocess["conditions"].items():
            assert offload["conditions"][condition]["probability"] == pytest.approx(want["probability"], abs=0.02)
