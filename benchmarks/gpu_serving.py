"""The GPU serving benchmark, end to end in one device call: skinserve (separate placement, nvJPEG) against the peer.

    python3 benchmarks/gpu_serving.py [--out DIR] [--wheels .whl] [--peer .peer/plain_bento] [--users 64,256,1024]
                                      [--seconds 10] [--api-workers 8] [--locust-processes 6] [--work DIR]
    python3 benchmarks/gpu_serving.py --dry-run --out DIR      # the same script on a CPU, tiny sizes (the tests)

In order: installs the carried wheels (what the device image lacks: bentoml, locust and the service's own
dependencies) into a folder of its own and re-runs itself with them on PYTHONPATH; trains one epoch of
efficientnet_b0 at 224 px from scratch on synthetic faces (speed does not depend on the weights) and exports it as
an AOTInductor package compiled on the device (fp16, channels_last: onnxruntime-gpu and TensorRT are not in the
image and too large to carry); times the raw model (benchmarks/runtimes.py, host and on-device rows); checks the
nvJPEG path's pixels against the CPU path's on the load's images; then benchmarks/serving.py's sweep with two
services up at once, measured in turn at each level (Locust closed loop, one 256 px JPEG per request):
- skinserve: SKINSERVE_MODEL_PLACEMENT=separate, --api-workers API workers for one model worker on the GPU
  (SKINSERVE_GPUS=1), SKINSERVE_GPU_DECODE=on (plain JPEGs travel as bytes and are decoded in batches by nvJPEG;
  the model worker refuses to start without it), runtime aoti-cuda;
- peer: the plain BentoML service (`../shared/baselines/plain_bento`; on the device the copy carried in
  `.peer/plain_bento`), PLAIN_DEVICE=cuda (fp16 channels_last), 4 workers, max latency 2000 ms: the configuration
  of its published figure (../shared/baselines/README.md).
Writes gpu_serving.json (everything) and gpu_serving.txt (the tables) under --out ($OUT on the device), and keeps
its scratch (model, logs, Locust reports) under --work. The issue's targets at 256 users are printed beside the
figures; nothing is asserted.

`--dry-run` runs every step on a CPU with a tiny model (test_convnext at 64 px, ONNX Runtime, torchvision decoding
on the model worker's CPU, SKINSERVE_GPU_DECODE=cpu), the peer on the CPU, 2 and 4 users for 3 s: the test suite
runs it, so the device call cannot fail on a typo.

The device command (from the repo root; README "GPU serving benchmark"):
    python3 benchmarks/gpu_serving.py --wheels .whl --peer .peer/plain_bento --out $OUT
with carry [".whl", ".peer"], after `bash benchmarks/gpu_wheels.sh` and `cp -r ../shared/baselines/plain_bento .peer/`
here. Only the standard library is imported before the wheels are installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAPPED = "SKINSERVE_GPU_BENCH_SITE"
TAG = "skin-classifier:gpu-bench"
TARGETS = {"users": 256, "good_per_s": 5000, "answers_503": 0, "p99_ms": 50, "over_peer": 12}


@dataclass(frozen=True)
class Plan:
    """Everything that differs between the device run and the dry run."""

    backbone: str
    img_size: int
    formats: str
    export_args: tuple[str, ...]
    runtime: str
    config: str  # benchmarks/serving.py's config of skinserve: the artifact it runs
    gpus: int
    gpu_decode: str
    decode_device: str
    api_workers: int
    max_batch_size: int
    max_latency_ms: int
    peer_device: str
    peer_workers: int
    peer_max_latency_ms: int
    batch_sizes: str
    users: str
    seconds: int
    locust_processes: int


DEVICE = Plan(
    backbone="efficientnet_b0",
    img_size=224,
    formats="aoti",
    export_args=("--aoti-device", "cuda", "--opt-batch", "64", "--max-batch", "128"),
    runtime="aoti-cuda",
    config="aoti",
    gpus=1,
    gpu_decode="on",
    decode_device="cuda",
    api_workers=8,
    max_batch_size=128,
    max_latency_ms=1000,
    peer_device="cuda",
    peer_workers=4,
    peer_max_latency_ms=2000,
    batch_sizes="1,32,128",
    users="64,256,1024",
    seconds=10,
    locust_processes=6,
)
DRY = Plan(
    backbone="test_convnext",
    img_size=64,
    formats="onnx",
    export_args=(),
    runtime="onnxruntime-cpu",
    config="fp32",
    gpus=0,
    gpu_decode="cpu",
    decode_device="cpu",
    api_workers=2,
    max_batch_size=8,
    max_latency_ms=5000,
    peer_device="cpu",
    peer_workers=1,
    peer_max_latency_ms=5000,
    batch_sizes="1,4",
    users="2,4",
    seconds=3,
    locust_processes=1,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "runs" / "gpu-serving"))
    parser.add_argument("--work", type=Path, help="Scratch: model, logs, Locust reports (default: a temp folder).")
    parser.add_argument("--wheels", type=Path, help="Folder of carried wheels to install first (the device's .whl).")
    parser.add_argument("--peer", type=Path, help="The plain peer's folder (default: as benchmarks/serving.py).")
    parser.add_argument("--dry-run", action="store_true", help="On a CPU with tiny sizes: checks the whole script.")
    parser.add_argument("--users", help="Levels of concurrent users (default: 64,256,1024; dry: 2,4).")
    parser.add_argument("--seconds", type=int, help="Seconds of load per level (default: 10; dry: 3).")
    parser.add_argument("--api-workers", type=int, help="skinserve API workers (default: 8; dry: 2).")
    parser.add_argument("--locust-processes", type=int, help="Locust processes (default: 6; dry: 1).")
    return parser.parse_args(argv)


# --- the carried wheels (standard library only) ----------------------------------------------------------------


def bootstrap(wheels: Path | None) -> None:
    """Install the carried wheels into a folder of their own, then run this script again with that folder and the
    repo on PYTHONPATH (every process it starts inherits them); without wheels, put the repo on the path only."""
    if os.environ.get(BOOTSTRAPPED) is not None:
        return
    paths = [str(REPO)]
    files = sorted(wheels.glob("*.whl")) if wheels else []
    if wheels and not files:
        raise SystemExit(f"--wheels {wheels}: no .whl files there (bash benchmarks/gpu_wheels.sh fetches them)")
    site = Path(tempfile.gettempdir()) / "skinserve-gpu-site"
    if files:
        install = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        install += ["--no-cache-dir", "--upgrade", "--target", str(site), *map(str, files)]
        subprocess.run(install, check=True)
        paths.append(str(site))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(site / "bin"), env.get("PATH", "")])
    env[BOOTSTRAPPED] = str(site) if files else ""
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env.setdefault("PYTHONUNBUFFERED", "1")
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)


# --- the steps -------------------------------------------------------------------------------------------------


def machine(plan: Plan) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": sys.version}
    info |= {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "loadavg": list(os.getloadavg())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        info["nvidia_smi"] = smi.stdout.strip()
    elif plan.gpus:
        raise SystemExit("no CUDA GPU is visible: run on the device, or pass --dry-run on a CPU")
    return info


def built_model(work: Path, plan: Plan) -> tuple[Path, Path]:
    """(BentoML home, export directory): one epoch from scratch on synthetic faces, exported per the plan."""
    from loadtests.models import build_model_store

    home = work / "model" / "bentoml"
    if not (home / "models").is_dir():
        build_model_store(
            work / "model",
            TAG,
            plan.backbone,
            plan.img_size,
            quiet=False,
            formats=plan.formats,
            export_args=plan.export_args,
        )
    return home, work / "model" / "export"


def raw_rows(export_dir: Path, plan: Plan, work: Path) -> list[dict[str, Any]]:
    """benchmarks/runtimes.py on the export: host rows (numpy in and out) and, on CUDA, on-device rows."""
    from benchmarks import runtimes

    out = work / "raw.json"
    runtimes.main([str(export_dir), "--batch-sizes", plan.batch_sizes, "--runtimes", plan.runtime, "--json", str(out)])
    return json.loads(out.read_text())["rows"]


def pixel_check(export_dir: Path, images: Path, plan: Plan) -> dict[str, Any]:
    """The model worker's decoder (nvJPEG on the device) against the CPU path on the load's own images."""
    import numpy as np

    from loadtests.images import load_corpus
    from skinserve.manifest import load_manifest
    from skinserve.modeling.gpu_decode import PIXEL_TOLERANCE, JpegBatchDecoder
    from skinserve.serve.uploads import UploadLimits, prepare_upload

    pre = load_manifest(export_dir).preprocess
    blobs = [image.data for image in load_corpus(images) if image.content_type == "image/jpeg"]
    decoded = JpegBatchDecoder(pre, plan.decode_device).decode(blobs)
    std = np.asarray(pre.std).reshape(3, 1, 1)
    means, p99s, largest = [], [], []
    for row, index in enumerate(decoded.decoded):
        levels = np.abs(decoded.images[row].cpu().numpy() - prepare_upload(blobs[index], pre, UploadLimits()).array)
        levels *= std * 255.0
        means.append(float(levels.mean()))
        p99s.append(float(np.quantile(levels, 0.99)))
        largest.append(float(levels.max()))
    return {
        "device": plan.decode_device,
        "images": len(blobs),
        "decoded": len(decoded.decoded),
        "mean_levels": max(means, default=None),
        "p99_levels": max(p99s, default=None),
        "max_levels": max(largest, default=None),
        "tolerance_p99_levels": PIXEL_TOLERANCE,
    }


def serving_args(args: argparse.Namespace, plan: Plan, home: Path, work: Path) -> argparse.Namespace:
    """benchmarks/serving.py's own arguments for the two services, so its sweep runs them as it runs the CPU's."""
    from benchmarks import serving

    argv = ["--bento-home", str(home), "--model-tag", TAG, "--configs", f"{plan.config},peer"]
    argv += ["--users", args.users or plan.users, "--seconds", str(args.seconds or plan.seconds)]
    argv += ["--sizes", "256", "--formats", "jpeg", "--placement", "separate"]
    argv += ["--api-workers", str(args.api_workers or plan.api_workers), "--model-workers", "1"]
    argv += ["--gpus", str(plan.gpus), "--gpu-decode", plan.gpu_decode, "--runtime", plan.runtime]
    argv += ["--max-batch-size", str(plan.max_batch_size), "--max-latency-ms", str(plan.max_latency_ms)]
    argv += ["--peer-device", plan.peer_device, "--peer-workers", str(plan.peer_workers)]
    argv += ["--peer-max-latency-ms", str(plan.peer_max_latency_ms)]
    argv += ["--locust-processes", str(args.locust_processes or plan.locust_processes)]
    argv += ["--out", str(work / "serving"), "--batch-sizes", plan.batch_sizes]
    if args.peer:
        argv += ["--peer", str(args.peer)]
    return serving.parse_args(argv)


def level_report(rows: list[dict[str, Any]], config: str) -> list[dict[str, Any]]:
    """Per level: skinserve's and the peer's good answers/s, 503s, other errors, p50/p99, and the ratio."""
    by = {(r["config"], r["users"]): r for r in rows}
    report = []
    for users in sorted({r["users"] for r in rows}):
        mine, peer = by.get((config, users)), by.get(("peer", users))
        entry: dict[str, Any] = {"users": users}
        for name, row in (("skinserve", mine), ("peer", peer)):
            if row is None:
                continue
            statuses = row["errors_by_status"]
            entry[name] = {
                "good_per_s": row["good_per_s"],
                "answers_503": statuses.get("503", 0),
                "other_errors": row["failures"] - statuses.get("503", 0),
                "p50_ms": row["p50_ms"],
                "p99_ms": row["p99_ms"],
            }
        if mine and peer and peer["good_per_s"] > 0:
            entry["skinserve_over_peer"] = mine["good_per_s"] / peer["good_per_s"]
        report.append(entry)
    return report


def summary_table(levels: list[dict[str, Any]]) -> str:
    header = (
        f"{'users':>5} {'service':<9} {'good/s':>8} {'503s':>6} {'other':>6} {'p50 ms':>7} {'p99 ms':>7} {'÷ peer':>7}"
    )
    lines = [header, "-" * len(header)]
    for level in levels:
        for name in ("skinserve", "peer"):
            if name not in level:
                continue
            s = level[name]
            ratio = level.get("skinserve_over_peer") if name == "skinserve" else None
            lines.append(
                f"{level['users']:>5} {name:<9} {s['good_per_s']:>8.1f} {s['answers_503']:>6} {s['other_errors']:>6} "
                f"{s['p50_ms'] or 0:>7.0f} {s['p99_ms'] or 0:>7.0f} {f'{ratio:.1f}x' if ratio else '':>7}"
            )
    return "\n".join(lines)


def targets_line(levels: list[dict[str, Any]]) -> str:
    at = next((lv for lv in levels if lv["users"] == TARGETS["users"] and "skinserve" in lv), None)
    if at is None:
        return f"targets are set at {TARGETS['users']} users, which this run did not measure"
    s, ratio = at["skinserve"], at.get("skinserve_over_peer") or 0.0
    return (
        f"targets at {TARGETS['users']} users: good/s {s['good_per_s']:.0f} (>= {TARGETS['good_per_s']}), 503s "
        f"{s['answers_503']} (= 0), p99 {s['p99_ms']} ms (<= {TARGETS['p99_ms']}), ÷ peer {ratio:.1f}x "
        f"(>= {TARGETS['over_peer']})"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bootstrap(args.wheels)
    plan = DRY if args.dry_run else DEVICE
    args.out.mkdir(parents=True, exist_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="skinserve-gpu-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {"dry_run": args.dry_run, "plan": asdict(plan), "machine": machine(plan), "steps": {}}
    print(f"machine: {report['machine']}", flush=True)

    def step_done(name: str) -> None:
        """Each step's time, and the report so far saved: a run stopped at the device's limit still brings back
        what it measured."""
        report["steps"][name] = round(time.monotonic() - started, 1)
        (args.out / "gpu_serving.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"[{report['steps'][name]:7.1f} s] {name} done", flush=True)

    from benchmarks import serving

    home, export_dir = built_model(work, plan)
    step_done("model")
    report["raw"] = raw_rows(export_dir, plan, work)
    step_done("raw")
    served = serving_args(args, plan, home, work)
    served.out.mkdir(parents=True, exist_ok=True)
    served.database_url = serving.migrated_database(served)
    images = serving.image_folder(served)
    report["pixels"] = pixel_check(export_dir, images, plan)
    print(f"decode on the model worker against the CPU path: {report['pixels']}", flush=True)
    step_done("pixels")
    rows = serving.sweep(served, home, images, [int(u) for u in served.users.split(",")])
    levels = level_report(rows, plan.config)
    report |= {"levels": levels, "sweep": rows, "targets": TARGETS, "seconds": time.monotonic() - started}
    report["machine"]["loadavg_after"] = list(os.getloadavg())
    step_done("sweep")
    text = "\n\n".join(
        [
            f"{plan.backbone} {plan.img_size} px, skinserve {plan.config} on {plan.runtime}, decode "
            f"{plan.gpu_decode}; peer on {plan.peer_device} ({report['machine'].get('gpu') or 'CPU'})",
            "raw model:\n" + "\n".join(json.dumps(r) for r in report["raw"]),
            "pixels (model worker vs CPU path): " + json.dumps(report["pixels"]),
            summary_table(levels),
            targets_line(levels),
            serving.table(rows),
        ]
    )
    print("\n" + text, flush=True)
    (args.out / "gpu_serving.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "gpu_serving.txt").write_text(text + "\n")
    print(f"saved {args.out / 'gpu_serving.json'} and {args.out / 'gpu_serving.txt'} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
