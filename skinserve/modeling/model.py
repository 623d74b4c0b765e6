"""The multi-task model: any timm backbone with a condition head, a severity head and an optional skin-type head."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from skinserve.errors import SkinserveError
from skinserve.labels import CONDITIONS, SEVERITY_LABELS, SKIN_TYPES
from skinserve.modeling.checkpoint import Checkpoint
from skinserve.preprocess import RESAMPLING, Preprocessing

# Backbones whose position embeddings are built for one input size, which must therefore be given at creation.
_SIZED_FAMILIES = ("vit_", "deit", "beit", "eva", "swin", "test_vit")


class ModelError(SkinserveError):
    pass


class SkinModel(nn.Module):
    """`forward` returns raw logits, the tensors export freezes: conditions [N, 7], severity [N, 7, 4]
    and, with a skin-type head, skin types [N, 5]."""

    def __init__(self, backbone: nn.Module, skin_type_head: bool = False, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        features = backbone.num_features
        self.dropout = nn.Dropout(drop_rate)
        self.condition_head = nn.Linear(features, len(CONDITIONS))
        self.severity_head = nn.Linear(features, len(CONDITIONS) * len(SEVERITY_LABELS))
        self.skin_type_head = nn.Linear(features, len(SKIN_TYPES)) if skin_type_head else None

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.heads(self.dropout(self.backbone(image)))

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The heads on pooled features [M, F]; export also applies them to each cell of the feature map (CAM)."""
        conditions = self.condition_head(features)
        severity = self.severity_head(features).unflatten(1, (len(CONDITIONS), len(SEVERITY_LABELS)))
        if self.skin_type_head is None:
            return conditions, severity
        return conditions, severity, self.skin_type_head(features)


def create_backbone(name: str, img_size: int, pretrained: bool = False, weights: Path | None = None) -> nn.Module:
    """A timm backbone without its classifier; weights from the hub (`pretrained`) or a local file (`weights`)."""
    import timm

    kwargs: dict = {"num_classes": 0}
    if name.startswith(_SIZED_FAMILIES):
        kwargs["img_size"] = img_size
    if weights is not None:
        if not Path(weights).is_file():
            raise ModelError(f"weights file {weights} does not exist")
        # timm's own loader: it maps the file onto the model and drops the classifier it does not need.
        kwargs |= {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights)}}
    elif pretrained:
        if not _hub_reachable():
            raise ModelError(
                f"pretrained weights for {name} need the Hugging Face hub, which is not reachable from "
                "here: pass --weights FILE with a local timm/PyTorch weights file, or train from scratch"
            )
        kwargs["pretrained"] = True
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ModelError(f"timm has no model named {name!r}") from err
        raise
    except OSError as err:  # huggingface_hub raises OSError subclasses when the hub cannot be reached
        raise ModelError(
            f"pretrained weights for {name} could not be fetched ({type(err).__name__}); this machine may be "
            "offline: pass --weights FILE with a local timm/PyTorch weights file, or train from scratch"
        ) from err


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick look before timm asks the hub: offline, huggingface_hub would retry for most of a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def preprocessing_for(backbone, input_size: int, crop_pct: float | None = None) -> Preprocessing:
    """The backbone's timm data config, at our input size; `crop_pct` overrides timm's when given."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=backbone)
    interpolation = config.get("interpolation", "bicubic")
    return Preprocessing(
        input_size=input_size,
        crop_pct=float(crop_pct if crop_pct is not None else config.get("crop_pct", 1.0)),
        interpolation=interpolation if interpolation in RESAMPLING else "bicubic",
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
    )


def create_skin_model(
    name: str,
    img_size: int,
    skin_type_head: bool = False,
    drop_rate: float = 0.0,
    pretrained: bool = False,
    weights: Path | None = None,
) -> SkinModel:
    return SkinModel(create_backbone(name, img_size, pretrained, weights), skin_type_head, drop_rate)


def model_from_checkpoint(checkpoint: Checkpoint) -> SkinModel:
    """Rebuild the model a checkpoint describes and load its weights (no hub access: the weights are in it)."""
    spec = checkpoint.model
    model = create_skin_model(spec.name, spec.img_size, spec.skin_type_head, spec.drop_rate)
    model.load_state_dict(checkpoint.state_dict)
    return model.eval()
