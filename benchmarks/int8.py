"""The model call in fp32 and int8 on this CPU, ONNX Runtime beside OpenVINO, interleaved in one process.

    python benchmarks/int8.py EXPORT_DIR [--batch-sizes 1,8] [--rounds 12] [--json OUT]

EXPORT_DIR holds model.onnx and model-int8.onnx (`skinserve export --formats onnx,onnx-int8 --calibration-data D`).
Each runtime runs one thread; the sessions take turns, a few calls each per round, so a change in what else the
shared machine runs lands on all of them alike; CPU ms per image is this process's CPU (all its threads: OpenVINO
runs its own), the median and the best round. OpenVINO's rows appear when it is installed (`pip install openvino`):
on the fp32 graph as it compiles it by default (bf16 where the CPU has it, as on AVX-512 BF16 machines) and forced to
f32, and on the int8 graph. No result is asserted: the project's choice and its reasons are in export/quantize.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from skinserve.manifest import load_manifest
from skinserve.runtime import INPUT_NAME, OUTPUT_NAMES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of 3 calls per session")
    parser.add_argument("--json", type=Path, help="where to save the rows [EXPORT_DIR/int8.json]")
    return parser.parse_args(argv)


def onnxruntime_call(path: Path) -> Callable[[np.ndarray], object]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})


def openvino_call(path: Path, precision: str | None) -> Callable[[np.ndarray], object]:
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    return lambda batch: request.infer({INPUT_NAME: batch})


def cases(export_dir: Path) -> dict[str, Callable[[np.ndarray], object]]:
    manifest = load_manifest(export_dir)
    fp32, int8 = (export_dir / manifest.artifact(fmt).file for fmt in ("onnx", "onnx-int8"))
    found = {"onnxruntime fp32": onnxruntime_call(fp32), "onnxruntime int8": onnxruntime_call(int8)}
    if importlib.util.find_spec("openvino") is not None:
        found |= {
            "openvino fp32 graph (default precision)": openvino_call(fp32, None),
            "openvino fp32 graph (f32)": openvino_call(fp32, "f32"),
            "openvino int8 graph": openvino_call(int8, None),
        }
    return found


def timed(calls: dict[str, Callable[[np.ndarray], object]], batch: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """CPU seconds per call of each case, the cases taking turns, 3 calls each per round."""
    for call in calls.values():
        call(batch)  # each shape's first call pays its setup
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(3):
                started = time.process_time()
                call(batch)
                times[name].append(time.process_time() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = load_manifest(args.export_dir)
    side = manifest.preprocess.input_size
    calls = cases(args.export_dir)
    rows = []
    print(f"{manifest.model.backbone} at {side} px, one thread each; load average before {os.getloadavg()[0]:.1f}")
    for size in (int(b) for b in args.batch_sizes.split(",")):
        batch = np.random.default_rng(0).standard_normal((size, 3, side, side)).astype(np.float32)
        for name, seconds in timed(calls, batch, args.rounds).items():
            per_image = np.asarray(seconds) * 1e3 / size
            row = {"case": name, "batch": size, "median_cpu_ms": float(np.median(per_image))}
            rows.append(row | {"best_cpu_ms": float(per_image.min())})
            print(f"  batch {size:>3} {name:<40} {row['median_cpu_ms']:6.2f} CPU ms/image (best {per_image.min():.2f})")
    print(f"load average after {os.getloadavg()[0]:.1f}")
    out = args.json or args.export_dir / "int8.json"
    out.write_text(json.dumps({"model": manifest.tag, "loadavg": os.getloadavg(), "rows": rows}, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
