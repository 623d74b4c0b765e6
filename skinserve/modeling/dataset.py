"""The torch Dataset over image records: decoded image tensor plus the target arrays of `skinserve.modeling.targets`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset

from skinserve.data.records import ImageRecord
from skinserve.images import open_rgb
from skinserve.modeling.targets import record_targets
from skinserve.preprocess import Preprocessing, model_input


class SkinImageDataset(Dataset):
    def __init__(self, records: list[ImageRecord], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        conditions, mask, severity, skin_type = record_targets(record)
        return {
            "image": self.transform(open_rgb(record.path)),
            "conditions": torch.from_numpy(conditions),
            "condition_mask": torch.from_numpy(mask),
            "severity": torch.from_numpy(severity),
            "skin_type": torch.tensor(skin_type),
            "index": torch.tensor(index),
        }


def eval_transform(pre: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """Evaluation uses the same numpy preprocessing as export parity and the service."""

    def transform(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(model_input(image, pre))

    return transform


def train_transform(pre: Preprocessing, strength: float = 1.0) -> Callable[[Image.Image], torch.Tensor]:
    """Random resized crop, horizontal flip, small rotation, brightness/contrast (torchvision transforms v2).

    No hue or saturation jitter: redness and pigmentation are colour cues the labels depend on.
    """
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(pre.input_size, scale=(1.0 - 0.3 * strength, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(10.0 * strength),
            v2.ColorJitter(brightness=0.2 * strength, contrast=0.2 * strength),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ]
    )
