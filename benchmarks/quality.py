"""CPU cost per request of the face and quality stage against the model call, and of the CAM outputs in that call.

    python benchmarks/quality.py [--export DIR] [--repeat N] [--json OUT]

The stage (skinserve.serve.quality.assess_quality, the Haar cascade on a grey copy included) runs on grace_hopper
sent as a 256 px and a 1024 px JPEG, decoded as the service decodes it (JPEG draft to the model's resize size).
The baseline in the same run: one model call at batch 1 on ONNX Runtime, one thread (the service's setting), with
the logits only, with every output (CAM included), and on a graph exported without CAM. Without --export an
efficientnet_b0 at 224 px (random weights: the cost does not depend on them) is exported to a temporary folder.
Thread CPU time, median of interleaved repeats (the CI box is shared). Prints a table and saves JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from skinserve.faces import FaceDetector
from skinserve.manifest import load_manifest
from skinserve.runtime import OUTPUT_NAMES, load_exported_model
from skinserve.serve.quality import QualitySettings, assess_quality
from skinserve.serve.uploads import UploadLimits, decode_upload


def grace_hopper() -> Image.Image:
    """The one-face photo matplotlib ships."""
    import matplotlib

    with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg") as image:
        return image.convert("RGB")


def jpeg_of(image: Image.Image, side: int) -> bytes:
    scale = side / max(image.size)
    resized = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def build_exports(root: Path) -> tuple[Path, Path]:
    """efficientnet_b0 at 224 px to ONNX twice: with the CAM outputs and without."""
    from export.formats import export_onnx
    from skinserve.modeling.model import create_skin_model

    model = create_skin_model("efficientnet_b0", 224).eval()
    paths = []
    for cam in (True, False):
        folder = root / ("cam" if cam else "plain")
        folder.mkdir(parents=True)
        export_onnx(model, folder / "model.onnx", 224, cam=cam)
        paths.append(folder / "model.onnx")
    return paths[0], paths[1]


def onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def interleaved_ms(cases: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median thread-CPU ms per case; the cases take turns so that a noisy neighbour hits them all alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for call in cases.values():
        call()
    for _ in range(repeat):
        for name, call in cases.items():
            started = time.thread_time()
            call()
            times[name].append((time.thread_time() - started) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=None, help="an export directory (default: build one)")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/quality.json"))
    args = parser.parse_args(argv)
    photo = grace_hopper()
    with tempfile.TemporaryDirectory() as scratch:
        if args.export is None:
            cam_path, plain_path = build_exports(Path(scratch))
            resize_size = 256
        else:
            exported = load_exported_model(args.export, "onnxruntime-cpu", threads=1)
            cam_path, plain_path = args.export / exported.artifact, None
            resize_size = load_manifest(args.export).preprocess.resize_size
        session = onnx_session(cam_path)
        size = session.get_inputs()[0].shape[-1]
        batch = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
        detector, settings = FaceDetector(), QualitySettings()
        uploads = {side: decode_upload(jpeg_of(photo, side), UploadLimits(), resize_size) for side in (256, 1024)}
        cases: dict[str, Callable[[], object]] = {
            f"quality stage, {side} px JPEG": (
                lambda u=u: assess_quality(u.image, (u.width, u.height), settings, detector)
            )
            for side, u in uploads.items()
        }
        cases["model call, logits only"] = lambda: session.run(list(OUTPUT_NAMES), {"image": batch})
        cases["model call, all outputs (CAM)"] = lambda: session.run(None, {"image": batch})
        if plain_path is not None:
            plain = onnx_session(plain_path)
            cases["model call, graph without CAM"] = lambda: plain.run(None, {"image": batch})
        results = interleaved_ms(cases, args.repeat)
    model_ms = results["model call, logits only"]
    header = f"{'case':<32} {'CPU ms':>8} {'of model call':>14}"
    print(header + "\n" + "-" * len(header))
    for name, ms in results.items():
        print(f"{name:<32} {ms:>8.2f} {ms / model_ms:>13.0%}")
    decoded = {side: list(u.image.size) for side, u in uploads.items()}
    print(f"decoded sizes (JPEG draft to {resize_size} px): {decoded}; target: stage <= 15% of the model call")
    args.json.write_text(json.dumps({"cpu_ms": results, "decoded": decoded, "input_size": size}, indent=2) + "\n")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
