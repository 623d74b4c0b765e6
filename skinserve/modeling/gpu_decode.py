"""JPEG uploads decoded in batches on the model worker's GPU (nvJPEG), resized, cropped and normalised there.

The model worker of the separate placement (service.py `ModelService`) receives the JPEG bytes the API workers
found plain enough (`skinserve.serve.offload`), so the host decodes nothing and copies compressed bytes, not
pixels, to the GPU. `torchvision.io.decode_jpeg(list, device="cuda")` decodes a whole batch in one nvJPEG call;
the resize is `torchvision.transforms.v2.functional.resize` with antialiasing (built to match PIL's filters), the
crop and the normalisation those of `skinserve.preprocess`, so a request gets the pixels the CPU path gives it,
within `PIXEL_TOLERANCE` (two decoders' IDCTs, and the CPU path's reduced-scale JPEG decode, differ by a few levels).

Anything nvJPEG refuses (a corrupt stream, a coding it lacks) comes back as not decoded and takes the CPU path in
the API worker, which answers 400 for data that is truly bad. On a machine without a GPU the same code runs with
`device="cpu"` (libjpeg-turbo inside torchvision): the tests and the GPU benchmark's dry run use that.
torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec; the device image has torchvision 0.26
and no TorchCodec, so this stays on torchvision until the image has it.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from skinserve.errors import SkinserveError
from skinserve.images import draft_scale
from skinserve.preprocess import Preprocessing
from skinserve.runtime import ExportedModel
from skinserve.serve.model import OutputLayout
from skinserve.serve.offload import NOT_DECODED

# The 99th percentile of |batched path - CPU path| over a request's pixels, in levels of 255, that the two may differ
# by; their mean difference stays under one level. Measured with torchvision on the CPU on real photos and drawn
# faces of 256 to 2000 px, for 224 px bilinear and 96 px bicubic preprocessing: means 0.0-0.74, 99th percentiles
# 0-6 (the largest single pixel 29 levels, at a sharp edge of a photo reduced by 1/2). nvJPEG's IDCT may add a level.
PIXEL_TOLERANCE = 8
_INTERPOLATION = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST", "lanczos": "BICUBIC"}


class GpuDecodeUnavailable(SkinserveError):
    """GPU decoding was asked for (SKINSERVE_GPU_DECODE=on) where no CUDA device or nvJPEG is usable."""


@dataclass(frozen=True)
class DecodedBatch:
    images: torch.Tensor  # normalised float32 [n, 3, S, S] on the decoder's device, for the decodable blobs
    decoded: list[int]  # the indices (into the blobs given) of those rows; the rest need the CPU path


class JpegBatchDecoder:
    """`decode(blobs)`: the model input for every JPEG it can decode, on `device`, as the CPU path prepares it."""

    def __init__(self, pre: Preprocessing, device: str = "cuda") -> None:
        from torchvision.transforms import InterpolationMode

        self.pre = pre
        self.device = torch.device(device)
        self.interpolation = InterpolationMode[_INTERPOLATION.get(pre.interpolation, "BILINEAR")]
        std = torch.tensor(pre.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std)  # (x / 255 - mean) / std as x * scale - offset, as preprocess does
        self.offset = torch.tensor(pre.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) / std

    @torch.inference_mode()
    def decode(self, blobs: Sequence[bytes]) -> DecodedBatch:
        images = self._decoded(blobs)
        decoded = [i for i, image in enumerate(images) if image is not None]
        side = self.pre.input_size
        batch = torch.empty((len(decoded), 3, side, side), dtype=torch.uint8, device=self.device)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)  # same-size images are resized in one call
        for row, index in enumerate(decoded):
            by_size[tuple(images[index].shape[1:])].append(row)
        for (height, width), rows in by_size.items():
            stacked = torch.stack([images[decoded[row]] for row in rows])
            batch[rows] = self._resized_and_cropped(stacked, height, width)
        normalised = batch.float().mul_(self.scale).sub_(self.offset)
        return DecodedBatch(normalised, decoded)

    def _decoded(self, blobs: Sequence[bytes]) -> list[torch.Tensor | None]:
        """Each blob as an RGB uint8 CHW tensor on the device; None for one the decoder refused."""
        data = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's notice (see the docstring)
            from torchvision.io import ImageReadMode, decode_jpeg

            try:
                return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError:
                pass  # one bad stream fails the whole batched call ("no partial results"): find it alone
            images: list[torch.Tensor | None] = []
            for one in data:
                try:
                    images.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    images.append(None)
            return images

    def _resized_and_cropped(self, images: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Reduced as libjpeg reduces on the CPU path, the shorter side to resize_size (aspect kept), then the centre
        square: `uploads.decode_upload` and `preprocess.resize_and_crop`, step by step."""
        from torchvision.transforms.v2 import functional as F

        short = self.pre.resize_size
        factor = draft_scale(width, height, short)
        if factor > 1:
            # The CPU path decodes a large JPEG at 1/2, 1/4 or 1/8 scale (DCT scaling); a box average of the full
            # decode comes closest to it (on a 512x600 photo: mean 0.5 levels apart, against 2.4 for resizing the
            # full decode straight to size), so the two paths stay within PIXEL_TOLERANCE.
            images = torch.nn.functional.avg_pool2d(images.float(), factor, factor, ceil_mode=True)
            images = images.round_().to(torch.uint8)
            height, width = images.shape[-2:]
        if width <= height:
            size = (max(short, round(height * short / width)), short)
        else:
            size = (short, max(short, round(width * short / height)))
        if size != (height, width):
            images = F.resize(images, list(size), interpolation=self.interpolation, antialias=True)
        top, left = (size[0] - self.pre.input_size) // 2, (size[1] - self.pre.input_size) // 2
        return images[:, :, top : top + self.pre.input_size, left : left + self.pre.input_size]


def jpeg_decoder(pre: Preprocessing, mode: str) -> JpegBatchDecoder | None:
    """The decoder SKINSERVE_GPU_DECODE asks for: auto (on a CUDA GPU, else None), on (a CUDA GPU or an error),
    cpu (torchvision on the CPU: the dry run and tests), off (None)."""
    if mode == "off":
        return None
    if mode == "cpu":
        return JpegBatchDecoder(pre, "cpu")
    reason = _cuda_decode_missing()
    if reason is None:
        return JpegBatchDecoder(pre, "cuda")
    if mode == "on":
        raise GpuDecodeUnavailable(f"SKINSERVE_GPU_DECODE=on, but {reason}")
    return None


def _cuda_decode_missing() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to the model worker"
    try:
        import torchvision.io  # noqa: F401
    except ImportError as err:
        return f"torchvision is not importable ({err})"
    return None


def packed_jpeg_prediction(
    model: ExportedModel,
    decoder: JpegBatchDecoder | None,
    blobs: Sequence[bytes],
    layout: OutputLayout,
    observe_call: Callable[[int, float], None] = lambda size, cpu_s: None,
) -> np.ndarray:
    """`skinserve.serve.model.packed_prediction`'s rows for JPEG bytes (every output, packed by `layout`, the batch
    size last), decoded and preprocessed on the decoder's device; a row nvJPEG refused has NOT_DECODED as its batch
    size and zeros elsewhere (every row, without a decoder). The model runs on the device tensor when the runtime
    can (TensorRT, AOTInductor on CUDA)."""
    packed = np.zeros((len(blobs), layout.width), dtype=np.float32)
    packed[:, -1] = NOT_DECODED
    if decoder is None or not blobs:
        return packed
    batch = decoder.decode(blobs)
    if not batch.decoded:
        return packed
    started = time.thread_time()
    outputs = _outputs(model, batch.images)
    observe_call(len(batch.decoded), time.thread_time() - started)
    packed[batch.decoded] = layout.pack(outputs)
    return packed


def _outputs(model: ExportedModel, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Every output by name; on the device tensor itself when the runtime has a device call."""
    if model.device_call is None or not images.is_cuda:
        return model.predict_outputs(images.cpu().numpy())
    step = model.max_batch or len(images)
    parts = []
    for start in range(0, len(images), step):
        outputs = model.device_call(images[start : start + step].contiguous())
        parts.append([output.float().cpu().numpy() for output in outputs])
    return {name: np.concatenate([part[k] for part in parts]) for k, name in enumerate(model.outputs)}
