"""Serving speed in one run, same images, same levels: skinserve int8 and fp32 beside the plain BentoML peer.

    python benchmarks/serving.py [--bento-home DIR --model-tag TAG | --checkpoint PT --calibration-data D
                                  | --backbone NAME --img-size N] [--configs int8,fp32,peer]
                                 [--users 1,8,32,128] [--seconds 20] [--images DIR | --sizes 256 --formats jpeg]
                                 [--peer DIR] [--peer-workers 2] [--peer-max-latency-ms 1000]
                                 [--placement inprocess|separate] [--api-workers N] [--model-copies 2]
                                 [--model-workers 2] [--ort-threads 1] [--max-batch-size 64]
                                 [--max-latency-ms 10000] [--locust-processes 1] [--out runs/bench-serving]

(a) the raw runtime at each batch size for each artifact (ONNX fp32 and int8; no HTTP, no decode), (d) decode +
preprocess alone on all cores, then every service of --configs at once, measured in turn at each level of concurrent
Locust users (closed loop, no wait, --seconds a level):
- int8, fp32: skinserve (`bentoml serve service:SkinService`) running the export's onnx-int8 or onnx artifact
  (SKINSERVE_MODEL_FORMAT), adaptive batching on; int8-unbatched, fp32-unbatched: the same with batching off.
- peer: the plain BentoML service as BentoML's docs teach it (`../shared/baselines/plain_bento` beside the repo, or
  --peer DIR / SKINSERVE_PLAIN_PEER): PIL decode, torch fp32 on the CPU, a batchable API. It builds its
  efficientnet_b0 with random weights (timm, no download), so it needs no model store, only the venv's torch, timm
  and bentoml, its PLAIN_* settings (PLAIN_DEVICE=cpu, --peer-workers, --peer-max-latency-ms, one torch thread per
  worker) and a BentoML home of its own. It is served from its folder, never copied into this repo.
Per level it records good answers/s (200s only) and errors for each, the skinserve ÷ peer and int8 ÷ fp32 ratios,
and where the time went: the service's answer `timings`, BentoML's /metrics (mean batch; CPU in decode and in model
calls), and the CPU seconds each process, Locust and everything else on the machine used (the box is shared: the
`foreign` column and the load average before and after say how busy it was). Without a model given it trains one
epoch of --backbone from scratch on synthetic faces (its quality is irrelevant to speed) and exports onnx and
onnx-int8 (calibrated on those faces). Prints a table and the ratios, saves serving.json and serving.png.

The defaults suit a CPU box, as measured on a 2-core one: the model inside each API worker (SKINSERVE_MODEL_PLACEMENT
inprocess), one worker per core, two model copies in each (the worker that gets most keep-alive connections can
still fill the cores), one ONNX Runtime thread per copy (two intra-op threads in one worker doubled the model's
CPU per image beside the API's threads). `--placement separate` measures the GPU layout: --api-workers (default 1)
API workers in front of --model-workers model workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.images import load_corpus, write_corpus
from loadtests.runner import LoadTestConfig, run_locust, service_timings, summarise
from skinserve.serve.process import running_service

REPO = Path(__file__).resolve().parents[1]
PEER_ENV = "SKINSERVE_PLAIN_PEER"
DEFAULT_PEER = REPO.parent / "shared" / "baselines" / "plain_bento"
PEER_TARGET = "service:Plain"


@dataclass(frozen=True)
class Config:
    """One service under test: skinserve on one artifact (batched or not), or the plain peer."""

    name: str
    model_format: str | None = None  # skinserve's SKINSERVE_MODEL_FORMAT; None: the peer
    batched: bool = True

    @property
    def peer(self) -> bool:
        return self.model_format is None


CONFIGS = {
    c.name: c
    for c in (
        Config("int8", "onnx-int8"),
        Config("fp32", "onnx"),
        Config("aoti", "aoti"),  # the GPU's runtime (benchmarks/gpu_serving.py)
        Config("peer"),
        Config("int8-unbatched", "onnx-int8", batched=False),
        Config("fp32-unbatched", "onnx", batched=False),
    )
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-serving")
    parser.add_argument("--bento-home", type=Path, help="A BentoML home whose store holds --model-tag.")
    parser.add_argument("--model-tag", default="skin-classifier:bench")
    parser.add_argument("--checkpoint", type=Path, help="Export this checkpoint instead of training one.")
    parser.add_argument("--calibration-data", type=Path, help="The checkpoint's dataset: int8 calibrates on it.")
    parser.add_argument("--configs", default="int8,fp32,peer", help=f"Services to measure: {', '.join(CONFIGS)}.")
    parser.add_argument(
        "--peer", type=Path, help=f"The plain peer's folder (default: ${PEER_ENV}, else {DEFAULT_PEER})."
    )
    parser.add_argument("--peer-workers", type=int, default=2, help="PLAIN_WORKERS of the peer.")
    parser.add_argument("--peer-max-latency-ms", type=int, default=1000, help="PLAIN_MAX_LAT_MS of the peer.")
    parser.add_argument("--peer-device", choices=("cpu", "cuda"), default="cpu", help="PLAIN_DEVICE of the peer.")
    parser.add_argument("--runtime", default="auto", help="SKINSERVE_RUNTIME of skinserve.")
    parser.add_argument("--gpus", type=int, default=0, help="SKINSERVE_GPUS (separate placement: the model's GPUs).")
    parser.add_argument("--gpu-decode", default="auto", help="SKINSERVE_GPU_DECODE: auto, on, off or cpu.")
    parser.add_argument("--backbone", default="efficientnet_b0", help="timm backbone to train when none is given.")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--users", default="1,8,32,128", help="Concurrency levels of the sweep.")
    parser.add_argument("--seconds", type=int, default=20, help="Seconds of load per level (after the ramp).")
    parser.add_argument("--images", type=Path, help="Folder of images (default: synthetic, --sizes x --formats).")
    parser.add_argument("--sizes", default="256", help="Synthetic image sides, comma-separated.")
    parser.add_argument("--formats", default="jpeg", help="Synthetic image formats: jpeg, png.")
    parser.add_argument("--placement", choices=("inprocess", "separate"), default="inprocess")
    parser.add_argument("--api-workers", type=int, help="SKINSERVE_API_WORKERS (default: cores inprocess, else 1).")
    parser.add_argument("--ort-threads", type=int, default=1, help="SKINSERVE_ORT_THREADS of the model service.")
    parser.add_argument("--model-copies", type=int, default=2, help="SKINSERVE_MODEL_COPIES, when inprocess.")
    parser.add_argument("--model-workers", type=int, default=2, help="SKINSERVE_MODEL_WORKERS, when separate.")
    parser.add_argument("--max-batch-size", type=int, default=64, help="SKINSERVE_MAX_BATCH_SIZE when batched.")
    parser.add_argument("--max-latency-ms", type=int, default=10000, help="SKINSERVE_MAX_LATENCY_MS.")
    parser.add_argument("--locust-processes", type=int, default=1, help="Locust processes generating load.")
    parser.add_argument("--batch-sizes", default="1,8,32,64", help="Batch sizes of the raw runtime rows.")
    parser.add_argument("--database-url", help="The prediction log's database (default: SQLite under --out).")
    args = parser.parse_args(argv)
    if args.api_workers is None:
        args.api_workers = (os.cpu_count() or 1) if args.placement == "inprocess" else 1
    unknown = sorted(set(args.configs.split(",")) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    args.configs = [CONFIGS[name] for name in args.configs.split(",")]
    args.peer = args.peer or Path(os.environ.get(PEER_ENV) or DEFAULT_PEER)
    if any(c.peer for c in args.configs) and not (args.peer / "service.py").is_file():
        parser.error(f"no plain peer at {args.peer} (its service.py): pass --peer DIR, or leave peer out of --configs")
    return args


def model_copies(args: argparse.Namespace) -> int:
    return args.api_workers * args.model_copies if args.placement == "inprocess" else args.model_workers


# --- the model and the images --------------------------------------------------------------------------------


def prepared_model(args: argparse.Namespace) -> tuple[Path, Path]:
    """(BentoML home, export directory) of the model under test, trained and exported here when none is given."""
    if args.bento_home:
        return args.bento_home, stored_model_path(args.bento_home, args.model_tag)
    work = args.out / "model"
    home = work / "bentoml"
    if not (home / "models").is_dir():
        from loadtests.models import build_model_store

        if args.checkpoint and not args.calibration_data:
            raise SystemExit("--checkpoint needs --calibration-data (its dataset) for the int8 artifact")
        build_model_store(
            work,
            args.model_tag,
            args.backbone,
            args.img_size,
            checkpoint=args.checkpoint,
            quiet=False,
            formats="onnx,onnx-int8",
            calibration_data=args.calibration_data,
        )
    return home, stored_model_path(home, args.model_tag)


def stored_model_path(home: Path, tag: str) -> Path:
    """The model's folder in the store (its manifest and artifacts), asked of BentoML in a process of its own."""
    probe = f"import bentoml; print(bentoml.models.get({tag!r}).path)"
    env = os.environ | {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def image_folder(args: argparse.Namespace) -> Path:
    if args.images:
        return args.images
    folder = args.out / "images"
    if not any(folder.glob("*")):
        sizes = [int(s) for s in args.sizes.split(",")]
        write_corpus(folder, sizes=sizes, formats=args.formats.split(","), faces=8)
    return folder


# --- (a) raw runtime and (d) decode --------------------------------------------------------------------------


def raw_runtime(
    export_dir: Path, batch_sizes: list[int], sessions: int, threads: int, fmt: str | None = None
) -> list[dict[str, Any]]:
    """ExportedModel.predict on random normalised input, `sessions` models called side by side (ONNX Runtime
    releases the GIL), `threads` intra-op threads each, ~2 s per batch size: wall-clock images/s, and this
    process's CPU ms per image (what the model costs, whatever else runs on the machine). `fmt`: the artifact."""
    from skinserve.runtime import load_exported_model

    models = [load_exported_model(export_dir, "auto", fmt=fmt, threads=threads) for _ in range(sessions)]
    side = models[0].manifest.preprocess.input_size
    rows = []
    for size in batch_sizes:
        batch = np.random.default_rng(0).standard_normal((size, 3, side, side)).astype(np.float32)
        for model in models:
            model.predict(batch)  # first call of a shape pays its setup
        cpu, start = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(sessions) as pool:
            runs = pool.map(_calls_for, models, [batch] * sessions, [2.0] * sessions)
            times = [t for calls in runs for t in calls]
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        row = {"runtime": models[0].runtime, "format": fmt or models[0].artifact, "sessions": sessions}
        row |= {"threads": threads, "batch": size}
        row |= {"median_ms": float(np.median(times)) * 1e3, "images_per_s": len(times) * size / wall}
        rows.append(row | {"cpu_ms_per_image": cpu * 1e3 / (len(times) * size)})
    return rows


def _calls_for(model, batch: np.ndarray, seconds: float) -> list[float]:
    times: list[float] = []
    while sum(times) < seconds or len(times) < 3:
        start = time.perf_counter()
        model.predict(batch)
        times.append(time.perf_counter() - start)
    return times


def decode_alone(export_dir: Path, images: Path, threads: int, seconds: float = 3.0) -> dict[str, Any]:
    """prepare_upload (validate, decode, resize, crop, normalise) over the images: CPU ms per image on one thread,
    then images/s on `threads` threads."""
    from skinserve.manifest import load_manifest
    from skinserve.serve.uploads import UploadLimits, prepare_upload

    pre = load_manifest(export_dir).preprocess
    blobs = [image.data for image in load_corpus(images)]
    cpu = time.thread_time()
    for i in range(3 * len(blobs)):
        prepare_upload(blobs[i % len(blobs)], pre, UploadLimits())
    cpu_ms = (time.thread_time() - cpu) * 1e3 / (3 * len(blobs))
    done, deadline = 0, time.perf_counter() + seconds
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            list(pool.map(lambda b: prepare_upload(b, pre, UploadLimits()), blobs))
            done += len(blobs)
        elapsed = time.perf_counter() - start
    return {"threads": threads, "cpu_ms_per_image": cpu_ms, "images_per_s": done / elapsed}


# --- (b), (c): the service under Locust ----------------------------------------------------------------------


def service_env(args: argparse.Namespace, home: Path, config: Config) -> dict[str, str]:
    return {
        "BENTOML_HOME": str(home),
        "SKINSERVE_MODEL_PLACEMENT": args.placement,
        "SKINSERVE_MODEL_TAG": args.model_tag,
        "SKINSERVE_MODEL_FORMAT": str(config.model_format),
        "SKINSERVE_RUNTIME": args.runtime,
        "SKINSERVE_GPUS": str(args.gpus),
        "SKINSERVE_GPU_DECODE": args.gpu_decode,
        "SKINSERVE_MAX_BATCH_SIZE": str(args.max_batch_size if config.batched else 1),
        "SKINSERVE_MAX_LATENCY_MS": str(args.max_latency_ms),
        "SKINSERVE_API_WORKERS": str(args.api_workers),
        "SKINSERVE_ORT_THREADS": str(args.ort_threads),
        "SKINSERVE_MODEL_WORKERS": str(args.model_workers),
        "SKINSERVE_MODEL_COPIES": str(args.model_copies),
        "SKINSERVE_DATABASE_URL": args.database_url,
        "SKINSERVE_DATA_DIR": str(args.out / "data"),
        "SKINSERVE_SPOOL_DIR": str(args.out / "data" / "spool"),
    }


def migrated_database(args: argparse.Namespace) -> str:
    """The prediction log's database at the current schema: without its table the writer spools every row and
    retries, which is an outage to measure separately, not the steady state."""
    from skinserve.db import migrate

    url = args.database_url or f"sqlite:///{args.out / 'data' / 'skinserve.db'}"
    migrate.upgrade(url)  # Alembic's engine creates the SQLite file's folder
    return url


def peer_env(args: argparse.Namespace, folder: Path) -> dict[str, str]:
    """The peer's own settings (PLAIN_*: its service.py reads them) and a BentoML home of its own."""
    home = folder / "bentoml"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "BENTOML_HOME": str(home),
        "PLAIN_DEVICE": args.peer_device,
        "PLAIN_WORKERS": str(args.peer_workers),
        "PLAIN_MAX_LAT_MS": str(args.peer_max_latency_ms),
        "PLAIN_THREADS": "1",  # one torch thread per worker, as skinserve's one ONNX Runtime thread per copy
    }


def sweep(args: argparse.Namespace, home: Path, images: Path, levels: list[int]) -> list[dict]:
    """Every service up at once, measured in turn at each level: slow drift in what else the machine runs then
    lands on all of them alike instead of on one whole sweep."""
    rows: list[dict] = []
    with ExitStack() as stack:
        services = {}
        for config in args.configs:
            folder = args.out / config.name
            if config.peer:
                started = running_service(
                    peer_env(args, folder), folder / "service.log", target=PEER_TARGET, folder=args.peer
                )
            else:
                started = running_service(
                    service_env(args, own_bentoml_home(home, folder), config), folder / "service.log"
                )
            services[config.name] = stack.enter_context(started)
            _warm_up(services[config.name].url, images, "images" if config.peer else "image")
        # What each skinserve service says it runs (runtime, artifact, placement, where JPEGs decode), once warm.
        infos = {c.name: _model_info(services[c.name].url) for c in args.configs if not c.peer}
        for users in levels:
            for config in args.configs:
                row = measured_level(args, config, services[config.name], images, users)
                rows.append(row | {"model_info": infos.get(config.name)})
                print(table(rows[-1:], header=len(rows) == 1), flush=True)
    order = [c.name for c in args.configs]
    return sorted(rows, key=lambda r: (order.index(r["config"]), r["users"]))


def own_bentoml_home(store: Path, folder: Path) -> Path:
    """A BentoML home of its own around the shared model store: `bentoml serve` wipes its home's
    prometheus_multiproc_dir when it starts, which would erase the metrics of a service already running."""
    home = folder / "bentoml"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to((store / "models").resolve(), target_is_directory=True)
    return home


def measured_level(args: argparse.Namespace, service_config: Config, service, images: Path, users: int) -> dict:
    """One closed-loop Locust run at `users`, with what the service, Locust and the machine spent meanwhile."""
    name = service_config.name
    out = args.out / name / f"users{users:03d}"
    out.mkdir(parents=True, exist_ok=True)
    scenario = "plain" if service_config.peer else "analyze"
    config = LoadTestConfig(out, service.url, users, float(users), f"{args.seconds + 2}s", scenario=scenario)
    config = dataclasses.replace(config, images=images, reset_stats=True, workers=args.locust_processes)
    before = (_metrics(service.url), _cpu_seconds(service.process.pid), _children_cpu(), _machine_cpu())
    prefix = run_locust(config, service.url, images)
    summary = summarise(prefix)["total"]
    after = (_metrics(service.url), _cpu_seconds(service.process.pid), _children_cpu(), _machine_cpu())
    cpu = {k: after[1].get(k, 0.0) - before[1].get(k, 0.0) for k in after[1]} | {"locust": after[2] - before[2]}
    # Whatever else ran on the machine meanwhile (other users' jobs): the noise in these figures.
    cpu["foreign"] = max(0.0, after[3] - before[3] - sum(cpu.values()))
    row = {"config": name, "users": users, **summary, "answers": service_timings(out / "timings.json")}
    row["good_per_s"] = summary["requests_per_s"] * (1.0 - summary["error_rate"])  # answered 200
    row["errors_by_status"] = errors_by_status(prefix)
    return row | {"metrics": _metric_deltas(before[0], after[0]), "cpu_s": cpu, "loadavg": os.getloadavg()[0]}


def errors_by_status(prefix: Path) -> dict[str, int]:
    """Failed requests by HTTP status ("503": shed load), from Locust's failures CSV ("other": no status)."""
    import csv
    import re

    counts: dict[str, int] = {}
    path = Path(f"{prefix}_failures.csv")
    if not path.is_file():
        return counts
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            status = re.search(r"HTTP (\d{3})", row["Error"])
            key = status.group(1) if status else "other"
            counts[key] = counts.get(key, 0) + int(row["Occurrences"])
    return counts


def _model_info(url: str) -> dict[str, Any]:
    import httpx

    info = httpx.get(f"{url}/model", timeout=60).json()
    return {"runtime": info.get("runtime"), "batching": info.get("batching")}


def _warm_up(url: str, images: Path, field: str = "image") -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=60) as client:
        for image in load_corpus(images)[:8]:
            client.post("/analyze", files={field: (image.name, image.data, image.content_type)}).raise_for_status()


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    """BentoML's /metrics as {(sample name, labels): value}, parsed by prometheus_client."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _metric_deltas(before: dict, after: dict) -> dict[str, float | None]:
    def total(values: dict, name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in values.items() if n == name and set(labels.items()) <= set(ls))

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    calls = delta("skinserve_model_batch_size_count")
    analyses = delta("bentoml_service_request_duration_seconds_count", endpoint="/analyze", service_name="skinserve")
    predicts = delta("bentoml_service_request_duration_seconds_count", endpoint="/predict", service_name="skin_model")
    api_s = delta("bentoml_service_request_duration_seconds_sum", endpoint="/analyze", service_name="skinserve")
    model_s = delta("bentoml_service_request_duration_seconds_sum", endpoint="/predict", service_name="skin_model")

    def per_analysis_ms(stage: str) -> float | None:  # CPU spent in the stage, wherever it ran, per /analyze
        return delta("skinserve_stage_cpu_seconds_total", stage=stage) / analyses * 1e3 if analyses else None

    return {
        "model_calls": calls,
        "mean_batch": delta("skinserve_model_batch_size_sum") / calls if calls else None,
        "decode_cpu_ms": per_analysis_ms("decode"),
        "model_cpu_ms": per_analysis_ms("model"),
        "api_mean_ms": api_s / analyses * 1e3 if analyses else None,  # inside the API server, per /analyze
        "model_service_mean_ms": model_s / predicts * 1e3 if predicts else None,  # queue + model, per request
    }


def _children_cpu() -> float:
    """CPU seconds of this process's finished children: after run_locust returns, Locust's are among them."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (/proc/stat: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds used so far by the service's processes (its workers start sessions of their own, so they are
    found as descendants of `root`), by role, from /proc's utime + stime."""
    tick = os.sysconf("SC_CLK_TCK")
    processes: dict[int, tuple[int, str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        processes[int(stat.parent.name)] = (int(fields[1]), command, (int(fields[11]) + int(fields[12])) / tick)
    used = {"api": 0.0, "model": 0.0, "other": 0.0}
    for pid, (_parent, command, seconds) in processes.items():
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in processes:
            ancestor = processes[ancestor][0]
        if ancestor == root:
            role = "model" if "--service-name skin_model" in command else "api" if "--service-name" in command else ""
            used[role or "other"] += seconds
    return used


# --- report ----------------------------------------------------------------------------------------------------


def table(rows: list[dict], header: bool = True) -> str:
    columns = f"{'config':<14} {'users':>5} {'req/s':>7} {'good/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'fail':>5} "
    columns += f"{'batch':>5} {'decode':>7} {'infer':>7} {'svc':>7} {'api cpu':>7} {'mdl cpu':>7} {'lct cpu':>7} "
    columns += f"{'foreign':>7} {'in dec':>7} {'in mdl':>7}"
    lines = [columns, "-" * len(columns)] if header else []
    for r in rows:
        answers, metrics, cpu, n = r["answers"] or {}, r["metrics"], r["cpu_s"], max(1, r["requests"])

        def median(key: str, answers: dict = answers) -> float:
            return answers.get(key, {}).get("p50", float("nan"))

        lines.append(
            f"{r['config']:<14} {r['users']:>5} {r['requests_per_s']:>7.1f} {r['good_per_s']:>7.1f} "
            f"{r['p50_ms'] or 0:>7.0f} {r['p99_ms'] or 0:>7.0f} {r['failures']:>5} {metrics['mean_batch'] or 0:>5.1f} "
            f"{median('decode_ms'):>7.1f} {median('inference_ms'):>7.1f} {median('total_ms'):>7.1f} "
            f"{cpu['api'] / n * 1e3:>7.1f} {cpu['model'] / n * 1e3:>7.1f} {cpu['locust'] / n * 1e3:>7.1f} "
            f"{cpu['foreign'] / n * 1e3:>7.1f} {_or_nan(metrics['decode_cpu_ms']):>7.2f} "
            f"{_or_nan(metrics['model_cpu_ms']):>7.2f}"
        )
    return "\n".join(lines)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def ratios(rows: list[dict], raw: list[dict], decode: dict, cores: int) -> dict[str, Any]:
    """The targets' ratios, by wall clock and by CPU cost (the second holds when other jobs share the cores), for
    each skinserve config, and per level skinserve ÷ peer and int8 ÷ fp32 in good answers/s."""
    by = {(r["config"], r["users"]): r for r in rows}
    configs = list(dict.fromkeys(r["config"] for r in rows))
    found: dict[str, Any] = {"cores": cores, "decode_images_per_s": decode["images_per_s"], "served": {}}
    for name in configs:
        if CONFIGS[name].peer:
            continue
        fmt = CONFIGS[name].model_format
        own_raw = [r for r in raw if r["format"] == fmt] or raw
        found["served"][name] = served_against_raw([r for r in rows if r["config"] == name], own_raw, decode)
    per_level: dict[int, dict[str, Any]] = {}
    for users in sorted({r["users"] for r in rows}):
        level: dict[str, Any] = {}
        for name in configs:
            row = by.get((name, users))
            if row is not None:
                level[name] = {"good_per_s": row["good_per_s"], "errors": row["failures"], "p99_ms": row["p99_ms"]}
        for name in configs:
            if (name, users) in by and ("peer", users) in by and name != "peer":
                level[f"{name}_over_peer"] = _ratio(by[(name, users)]["good_per_s"], by[("peer", users)]["good_per_s"])
        for a, b in (("int8", "fp32"), ("int8-unbatched", "fp32-unbatched"), ("int8", "int8-unbatched")):
            if (a, users) in by and (b, users) in by:
                level[f"{a}_over_{b}"] = _ratio(by[(a, users)]["good_per_s"], by[(b, users)]["good_per_s"])
        per_level[users] = level
    found["per_level"] = per_level
    return found


def served_against_raw(rows: list[dict], raw: list[dict], decode: dict) -> dict[str, Any]:
    """One skinserve config's best clean level against decode + its own raw model (the same artifact)."""
    raw_best = max(r["images_per_s"] for r in raw)
    # Decode and model on the same cores one after the other: the time per image is the sum of both.
    decode_plus_raw = 1.0 / (1.0 / decode["images_per_s"] + 1.0 / raw_best)
    clean = [r for r in rows if r["error_rate"] < 0.001]
    best = max(clean or rows, key=lambda r: r["good_per_s"])
    served_cpu_ms = (best["cpu_s"]["api"] + best["cpu_s"]["model"]) * 1e3 / max(1, best["requests"])
    model_cpu_ms = min(r["cpu_ms_per_image"] for r in raw)
    return {
        "format": raw[0]["format"],
        "raw_best_images_per_s": raw_best,
        "decode_plus_raw_images_per_s": decode_plus_raw,
        "best": {"users": best["users"], "good_per_s": best["good_per_s"], "errors": best["failures"]},
        "served_over_raw": best["good_per_s"] / raw_best,
        "served_over_decode_plus_raw": best["good_per_s"] / decode_plus_raw,
        # CPU per image: decode + model alone, against the service's processes at its best level.
        "decode_plus_model_cpu_ms": decode["cpu_ms_per_image"] + model_cpu_ms,
        "served_cpu_ms": served_cpu_ms,
        "served_capacity_over_decode_plus_raw": (decode["cpu_ms_per_image"] + model_cpu_ms) / served_cpu_ms,
        # Where the service's CPU went at its best level: decode, model calls, and the rest (HTTP, framework, log).
        "served_cpu_by_stage_ms": _by_stage(best, served_cpu_ms),
    }


def _by_stage(row: dict, served_cpu_ms: float) -> dict[str, float] | None:
    decode_ms, model_ms = row["metrics"]["decode_cpu_ms"], row["metrics"]["model_cpu_ms"]
    if decode_ms is None or model_ms is None:
        return None
    return {"decode": decode_ms, "model": model_ms, "rest": served_cpu_ms - decode_ms - model_ms}


def print_ratios(found: dict[str, Any]) -> None:
    print(f"\ndecode alone {found['decode_images_per_s']:.1f} img/s on {found['cores']} cores")
    for name, served in found["served"].items():
        best = served["best"]
        print(
            f"{name}: raw model best {served['raw_best_images_per_s']:.1f} img/s, decode + model on the same cores "
            f"{served['decode_plus_raw_images_per_s']:.1f} img/s; served best {best['good_per_s']:.1f} good req/s "
            f"({best['users']} users, {best['errors']} errors) = {served['served_over_decode_plus_raw']:.0%} of "
            f"decode+raw (target 80%)"
        )
        print(
            f"  by CPU cost: decode + model {served['decode_plus_model_cpu_ms']:.1f} ms/image, the service's "
            f"processes {served['served_cpu_ms']:.1f} ms/request: {served['served_capacity_over_decode_plus_raw']:.0%}"
        )
        if stages := served["served_cpu_by_stage_ms"]:
            print(
                f"  of which decode {stages['decode']:.2f}, model calls {stages['model']:.2f}, the rest (HTTP, "
                f"framework, prediction log, thread hand-offs) {stages['rest']:.2f} CPU ms/request"
            )
    for users, level in found["per_level"].items():
        errors = ", ".join(f"{k} {v['errors']}" for k, v in level.items() if isinstance(v, dict))
        shares = ", ".join(f"{k.replace('_over_', ' ÷ ')} {v:.2f}x" for k, v in level.items() if "_over_" in k and v)
        print(f"  {users:>4} users: {shares}; errors: {errors}")


def plot(rows: list[dict], found: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 5))
    for name in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == name]
        axis.plot([r["good_per_s"] for r in mine], [r["p99_ms"] for r in mine], marker="o", label=name)
        for r in mine:
            axis.annotate(f"{r['users']}u", (r["good_per_s"], r["p99_ms"]), fontsize=8)
    for name, served in found["served"].items():
        axis.axvline(served["decode_plus_raw_images_per_s"], linestyle=":", color="grey")
        axis.annotate(f"decode + raw {name}", (served["decode_plus_raw_images_per_s"], 1), fontsize=7, rotation=90)
    axis.set(xlabel="good answers/s", ylabel="p99 latency, ms", yscale="log", title="Throughput against p99 latency")
    axis.legend()
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def machine_load() -> dict[str, Any]:
    """The load averages and `uptime`'s line: the box is shared, and this says how busy it was."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    return {"loadavg": list(os.getloadavg()), "uptime": uptime, "busy_cpu_s": _machine_cpu()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    home, export_dir = prepared_model(args)
    args.database_url = migrated_database(args)
    images = image_folder(args)
    cores = os.cpu_count() or 1
    from skinserve.manifest import load_manifest

    manifest = load_manifest(export_dir)
    load_before = machine_load()
    print(f"machine before: {load_before['uptime']}")
    print(
        f"{manifest.model.backbone} at {manifest.preprocess.input_size} px on {cores} cores; skinserve model "
        f"{args.placement}, {args.api_workers} API worker(s), {model_copies(args)} model copies; configs "
        f"{', '.join(c.name for c in args.configs)}"
    )
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    # One session on every core, one per core, and the service's own layout (model copies x ORT threads).
    layouts = sorted({(1, cores), (cores, 1), (model_copies(args), args.ort_threads)})
    # The raw rows: each artifact a measured skinserve config runs.
    formats = list(dict.fromkeys(c.model_format for c in args.configs if c.model_format in manifest.artifacts))
    raw = [
        row
        for fmt in formats
        for sessions, threads in layouts
        for row in raw_runtime(export_dir, sizes, sessions, threads, fmt)
    ]
    for r in raw:
        print(
            f"raw {r['format']:<9} {r['runtime']} {r['sessions']} x {r['threads']} threads, batch {r['batch']:>3}: "
            f"{r['median_ms']:8.1f} ms a call, {r['images_per_s']:7.1f} img/s, "
            f"{r['cpu_ms_per_image']:5.1f} CPU ms/image"
        )
    decode = decode_alone(export_dir, images, threads=cores)
    print(f"decode: {decode['cpu_ms_per_image']:.2f} CPU ms/image, {decode['images_per_s']:.0f}/s on {cores} threads")
    levels = [int(u) for u in args.users.split(",")]
    rows = sweep(args, home, images, levels)
    load_after = machine_load()
    print("\n" + table(rows))
    print(
        "req/s: all answers, good/s: 200s only; decode, infer, svc: the service's own answer timings, medians in ms "
        "(infer: queue + model call); api, mdl, lct, foreign cpu: CPU ms per request used by the service's API "
        "processes (all of the peer's), its model processes, Locust, and everything else on the machine; in dec, "
        "in mdl: CPU ms per request inside decode and inside model calls, wherever they ran (the service's "
        "skinserve_stage_cpu_seconds_total; the peer has none)"
    )
    found = ratios(rows, raw, decode, cores)
    print_ratios(found)
    print(f"machine after: {load_after['uptime']}")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings["configs"] = [c.name for c in args.configs]
    report = {
        "machine": {"cpu_count": cores, "platform": platform.platform(), "python": platform.python_version()},
        "load": {"before": load_before, "after": load_after},
        "model": {"backbone": manifest.model.backbone, "input_size": manifest.preprocess.input_size},
        "settings": settings,
        "raw": raw,
        "decode": decode,
        "sweep": rows,
        "ratios": found,
    }
    (args.out / "serving.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot(rows, found, args.out / "serving.png")
    print(f"saved {args.out / 'serving.json'} and {args.out / 'serving.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
