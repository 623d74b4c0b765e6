"""The torch Dataset over image records: the image as the service prepares it, plus the target arrays.

Every image goes through `skinserve.images.read_for_model` (the service's decode) and, without augmentation,
`skinserve.preprocess.model_input` (the service's resize, crop and normalisation): a model trains on the pixels it
is served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from skinserve.data.records import ImageRecord
from skinserve.images import decode_for_model
from skinserve.modeling.targets import record_targets
from skinserve.preprocess import Preprocessing, model_input, resize_and_crop

AUGMENTS = ("flip", "crop", "rotate", "light")


class SkinImageDataset(Dataset):
    """With `pre.face_crop_margin` set (`skinserve train --face-crop`), each image is cropped to its face as the
    service crops it (`skinserve.serve.uploads.face_window`); an image without a face is used whole, as served."""

    def __init__(
        self,
        records: list[ImageRecord],
        transform: Callable[[Image.Image], torch.Tensor],
        pre: Preprocessing,
    ) -> None:
        self.records = records
        self.transform = transform
        self.pre = pre
        self._faces = None  # the detector, made in each DataLoader worker on first use (it does not pickle)

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> Image.Image:
        """The record's image as the service shows it to the model, before resize and normalisation."""
        from skinserve.serve.uploads import decode_side, face_window

        faces = self._face_stage()
        with Image.open(self.records[index].path) as opened:
            uploaded = opened.size
            image = decode_for_model(opened, decode_side(self.pre, faces))
        _, window = face_window(image, uploaded, faces)
        return image.crop(window) if window else image

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_faces": None}  # each worker makes its own detector

    def _face_stage(self):
        if self.pre.face_crop_margin is None:
            return None
        if self._faces is None:
            from skinserve.serve.quality import FaceStage

            self._faces = FaceStage.cropping_only(self.pre.face_crop_margin)
        return self._faces

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        conditions, mask, severity, skin_type = record_targets(record)
        return {
            "image": self.transform(self.image(index)),
            "conditions": torch.from_numpy(conditions),
            "condition_mask": torch.from_numpy(mask),
            "severity": torch.from_numpy(severity),
            "skin_type": torch.tensor(skin_type),
            "index": torch.tensor(index),
        }


def eval_transform(pre: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The service's preparation: the same numpy resize, crop and normalisation as export parity and serving."""

    def transform(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(model_input(image, pre))

    return transform


def train_transform(
    pre: Preprocessing, strength: float = 0.5, kinds: Sequence[str] = ("flip",)
) -> Callable[[Image.Image], torch.Tensor]:
    """The service's resize and centre crop, then augmentation that keeps the labels true (torchvision v2).

    The default recipe flips only (train.config). Each kind, and why its label stays true:
    - flip (default): no condition is left- or right-sided; a mirrored face shows the same conditions at the same
      levels.
    - crop: a zoom of at most 30% x strength of the area, near-square, so the cheeks, forehead and chin stay in the
      frame (heavier crops can cut the condition out); but a zoom makes lesions look larger, and severity is partly
      how large they are: off by default.
    - rotate: at most 10 degrees x strength, as a head tilts in a selfie.
    - light: brightness and contrast within 20% x strength, as room light varies; contrast also scales how strong a
      redness or a pigment looks: off by default. Never hue or saturation (redness and hyperpigmentation are
      colours, and a hue shift changes what they mean), never blur (it erases pores and texture).
    """
    unknown = set(kinds) - set(AUGMENTS)
    if unknown:
        raise ValueError(f"unknown augmentation kind(s): {', '.join(sorted(unknown))} (known: {', '.join(AUGMENTS)})")
    if strength <= 0 or not kinds:
        return eval_transform(pre)
    from torchvision.transforms import v2

    steps: list = [v2.ToImage()]
    if "flip" in kinds:
        steps.append(v2.RandomHorizontalFlip())
    if "crop" in kinds:
        steps.append(
            v2.RandomResizedCrop(pre.input_size, scale=(1.0 - 0.3 * strength, 1.0), ratio=(0.9, 1.1), antialias=True)
        )
    if "rotate" in kinds:
        steps.append(v2.RandomRotation(10.0 * strength))
    if "light" in kinds:
        steps.append(v2.ColorJitter(brightness=0.2 * strength, contrast=0.2 * strength))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(pre.mean), std=list(pre.std))]
    augment = v2.Compose(steps)

    def transform(image: Image.Image) -> torch.Tensor:
        return augment(resize_and_crop(image, pre))

    return transform
