"""The model's input, as training, export checks and the service build it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from skinserve.preprocess import Preprocessing, normalized_array

PRE = Preprocessing(
    input_size=32, crop_pct=0.875, interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_normalized_array_is_torchvision_to_tensor_then_normalize(mode):
    pixels = np.random.default_rng(0).integers(0, 256, (PRE.input_size, PRE.input_size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    reference = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(PRE.mean, PRE.std)])

    array = normalized_array(image, PRE)

    expected = reference(image.convert("RGB")).numpy()
    assert array.dtype == np.float32 and array.shape == (3, PRE.input_size, PRE.input_size)
    assert array.flags["C_CONTIGUOUS"]  # ONNX Runtime and np.stack take it without another copy
    np.testing.assert_allclose(array, expected, rtol=0, atol=1e-5)
