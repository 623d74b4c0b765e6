"""Raw model-call speed of an export on each runtime here: median latency and images/s per batch size.

    python benchmarks/runtimes.py EXPORT_DIR [--batch-sizes 1,8,32,128] [--runtimes all|a,b] [--repeat N]
                                  [--warmup N] [--threads N] [--json OUT]

No HTTP and no decoding: random normalised input goes straight into `ExportedModel.predict` (numpy in and out,
host copies included: "host" rows). For the CUDA runtimes it also times the model on a batch already on the GPU
("device" rows), the raw call that a GPU throughput figure means. Prints a table and saves JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from skinserve.manifest import ExportManifest, load_manifest
from skinserve.runtime import RUNTIMES, ExportedModel, available_runtimes, load_exported_model, unavailable_reason


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--batch-sizes", default="1,8,32,128", help="comma-separated batch sizes")
    parser.add_argument("--runtimes", default="all", help="all, or a comma-separated list of runtimes")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (allocators, autotuning)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="where to save the results [EXPORT_DIR/bench.json]")
    return parser.parse_args(argv)


def chosen_runtimes(manifest: ExportManifest, wanted: str) -> list[str]:
    """The runtimes to time; one asked for by name that cannot run here is reported and left out."""
    if wanted == "all":
        return available_runtimes(manifest)
    chosen = []
    for runtime in (r.strip() for r in wanted.split(",") if r.strip()):
        reason = unavailable_reason(runtime, manifest)
        if reason is None:
            chosen.append(runtime)
        else:
            print(f"skipping {reason}")
    return chosen


def call_seconds(call: Callable[[], Any], sync: Callable[[], None], repeat: int, warmup: int) -> list[float]:
    """Seconds per timed call, after `warmup` untimed ones; `sync` waits for work still running on a device."""
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return times


def host_case(model: ExportedModel, batch: np.ndarray) -> tuple[Callable[[], Any], Callable[[], None]]:
    return (lambda: model.predict(batch)), (lambda: None)


def device_case(model: ExportedModel, batch: np.ndarray) -> tuple[Callable[[], Any], Callable[[], None]]:
    import torch

    on_gpu = torch.from_numpy(batch).to("cuda")

    @torch.inference_mode()
    def call() -> Any:
        return model.device_call(on_gpu)

    return call, torch.cuda.synchronize  # kernels run asynchronously: time until they finish


def bench_runtime(model: ExportedModel, sizes: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    side = model.manifest.preprocess.input_size
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        batch = rng.standard_normal((size, 3, side, side)).astype(np.float32)  # normalised scale, not zeros
        cases = [("host", host_case)] + ([("device", device_case)] if model.device_call is not None else [])
        for io, make in cases:
            times = call_seconds(*make(model, batch), repeat=args.repeat, warmup=args.warmup)
            median = statistics.median(times)
            rows.append(
                {
                    "runtime": model.runtime,
                    "artifact": model.artifact,
                    "io": io,
                    "batch": size,
                    "median_ms": round(median * 1e3, 3),
                    "p90_ms": round(float(np.quantile(times, 0.9)) * 1e3, 3),
                    "images_per_s": round(size / median, 1),
                }
            )
    return rows


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "gpu": None}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return info


def table(rows: list[dict[str, Any]]) -> str:
    header = f"{'runtime':<17} {'artifact':<16} {'io':<6} {'batch':>5} {'median ms':>10} {'p90 ms':>9} {'images/s':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['runtime']:<17} {r['artifact']:<16} {r['io']:<6} {r['batch']:>5} {r['median_ms']:>10.3f} "
            f"{r['p90_ms']:>9.3f} {r['images_per_s']:>10.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = load_manifest(args.export_dir)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    runtimes = chosen_runtimes(manifest, args.runtimes)
    if not runtimes:
        reasons = "; ".join(str(unavailable_reason(r, manifest)) for r in RUNTIMES)
        print(f"no runtime can run {args.export_dir} here: {reasons}")
        return 1
    rows = []
    for runtime in runtimes:
        rows += bench_runtime(load_exported_model(args.export_dir, runtime, threads=args.threads), sizes, args)
    print(
        f"{manifest.tag} ({manifest.model.backbone}, "
        f"{manifest.preprocess.input_size} px) on {machine()['gpu'] or f'{os.cpu_count()} CPU cores'}"
    )
    print(table(rows))
    out = args.json or args.export_dir / "bench.json"
    report = {
        "model": manifest.tag,
        "backbone": manifest.model.backbone,
        "input_size": manifest.preprocess.input_size,
        "machine": machine(),
        "repeat": args.repeat,
        "warmup": args.warmup,
        "threads": args.threads,
        "rows": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
