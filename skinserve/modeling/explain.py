"""Grad-CAM heatmaps per predicted condition (pytorch-grad-cam), for a look at what the model attends to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from skinserve.images import read_for_model
from skinserve.labels import CONDITIONS
from skinserve.modeling.checkpoint import load_checkpoint
from skinserve.modeling.model import model_from_checkpoint
from skinserve.predictions import decode
from skinserve.preprocess import model_input, resize_and_crop


class _ConditionLogits(torch.nn.Module):
    """Grad-CAM wants one output tensor; the condition logits are the one to explain."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)[0]


def explain_image(checkpoint_path: Path, image_path: Path, out: Path) -> list[str]:
    """Write a PNG with the image and one heatmap per present condition (or the top one); return those present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint)
    pre = checkpoint.preprocessing
    image = read_for_model(image_path, pre.resize_size)
    tensor = torch.from_numpy(model_input(image, pre))[None]
    with torch.no_grad():
        condition_logits, severity_logits = (t.numpy() for t in model(tensor)[:2])
    prediction = decode(condition_logits, severity_logits, checkpoint.thresholds, checkpoint.temperatures)[0]
    present = [c for c in CONDITIONS if prediction["conditions"][c]["present"]]
    shown = present or [max(CONDITIONS, key=lambda c: prediction["conditions"][c]["probability"])]
    layer = _last_conv_layer(model.backbone)
    base = np.asarray(resize_and_crop(image, pre), dtype=np.float32) / 255.0
    with GradCAM(model=_ConditionLogits(model), target_layers=[layer]) as cam:
        maps = {c: cam(input_tensor=tensor, targets=[ClassifierOutputTarget(CONDITIONS.index(c))])[0] for c in shown}
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3 * (len(shown) + 1), 3.3))
    axes[0].imshow(base)
    axes[0].set_title("input")
    for axis, condition in zip(axes[1:], shown, strict=True):
        row = prediction["conditions"][condition]
        axis.imshow(show_cam_on_image(base, maps[condition], use_rgb=True))
        axis.set_title(f"{condition}\n p={row['probability']:.2f} {row['severity']['label']}", fontsize=9)
    for axis in axes:
        axis.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return present


def _last_conv_layer(backbone: torch.nn.Module) -> torch.nn.Module:
    """The deepest convolution: its activations still have spatial extent for the heatmap."""
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a convolutional backbone; this one has no Conv2d layer")
    return convs[-1]
