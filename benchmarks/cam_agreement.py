"""How well the exported class activation maps agree with `skinserve explain`'s Grad-CAM on the same images.

    python benchmarks/cam_agreement.py CHECKPOINT [--images N] [--json OUT]

For each image (synthetic faces drawn across skin tones and conditions, and grace_hopper) and each condition: the
CAM output (export.formats.Logits, the graph ONNX Runtime runs) and pytorch-grad-cam's Grad-CAM on the last
convolution (as skinserve.modeling.explain does), both upsampled to the model input; Pearson and Spearman correlation
of the two maps, and whether their hottest cells coincide. Prints the mean per condition and overall; saves JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.stats import pearsonr, spearmanr

from export.formats import Logits
from skinserve.data.synth import GENDERS, FaceSpec, draw_face
from skinserve.labels import CONDITIONS, Severity
from skinserve.modeling.checkpoint import load_checkpoint
from skinserve.modeling.explain import _ConditionLogits, _last_conv_layer
from skinserve.modeling.model import model_from_checkpoint
from skinserve.preprocess import model_input


def grace_hopper() -> Image.Image:
    """The one-face photo matplotlib ships."""
    import matplotlib

    with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg") as image:
        return image.convert("RGB")


def images(count: int, side: int) -> list[Image.Image]:
    drawn = []
    for i in range(count - 1):
        conditions = {CONDITIONS[i % len(CONDITIONS)]: Severity(1 + i % 3)}
        spec = FaceSpec(fitzpatrick=1 + i % 6, age=22 + 4 * i, gender=GENDERS[i % 2], conditions=conditions, seed=i)
        drawn.append(draw_face(spec, side))
    return [*drawn, grace_hopper()]


def upsampled(cam: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float64)


def main(argv: list[str] | None = None) -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--images", type=int, default=15)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/cam_agreement.json"))
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(checkpoint)
    pre = checkpoint.preprocessing
    size = pre.input_size
    rows = []
    with GradCAM(model=_ConditionLogits(model), target_layers=[_last_conv_layer(model.backbone)]) as gradcam:
        for index, image in enumerate(images(args.images, pre.resize_size + 16)):
            tensor = torch.from_numpy(model_input(image, pre))[None]
            with torch.no_grad():
                cam = Logits(model, cam=True)(tensor)[-2][0].numpy()  # condition_cam [7, h, w]
            for c, condition in enumerate(CONDITIONS):
                grad = gradcam(input_tensor=tensor, targets=[ClassifierOutputTarget(c)])[0].astype(np.float64)
                ours = upsampled(cam[c], size)
                if np.ptp(grad) == 0 or np.ptp(ours) == 0:
                    continue  # Grad-CAM all zero (every gradient-weighted activation negative): nothing to compare
                rows.append(
                    {
                        "image": index,
                        "condition": condition,
                        "pearson": float(pearsonr(ours.ravel(), grad.ravel())[0]),
                        "spearman": float(spearmanr(ours.ravel(), grad.ravel())[0]),
                        "same_peak": bool(
                            np.unravel_index(cam[c].argmax(), cam[c].shape)
                            == np.unravel_index(upsampled(grad, cam.shape[1]).argmax(), cam.shape[1:])
                        ),
                    }
                )
    header = f"{'condition':<22} {'pairs':>5} {'pearson':>8} {'spearman':>9} {'same peak':>10}"
    print(f"{args.checkpoint} ({checkpoint.model.name}, {size} px, maps {cam.shape[1]}x{cam.shape[2]})")
    print(header + "\n" + "-" * len(header))
    summary = {}
    for condition in [*CONDITIONS, "all"]:
        chosen = [r for r in rows if condition in ("all", r["condition"])]
        if not chosen:
            continue
        mean = {k: float(np.mean([r[k] for r in chosen])) for k in ("pearson", "spearman", "same_peak")}
        summary[condition] = mean | {"pairs": len(chosen)}
        print(
            f"{condition:<22} {len(chosen):>5} {mean['pearson']:>8.3f} {mean['spearman']:>9.3f} "
            f"{mean['same_peak']:>10.0%}"
        )
    args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
