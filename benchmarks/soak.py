"""Soak: the service at a fixed fraction of its measured capacity for N minutes; error rate, p99 and memory per window.

    python benchmarks/soak.py [--url http://127.0.0.1:3000 --server-pid PID | --bento-home DIR --model-tag TAG]
                              [--minutes 10] [--fraction 0.7] [--window-s 60] [--out runs/soak]
    python benchmarks/soak.py --short        # CI: 2.5 minutes in 15 s windows, the first 4 warm-up

Capacity is measured first (closed loop, --users concurrent clients, --capacity-s seconds); the soak then sends an
open-loop constant rate of --fraction x capacity, one image a request. Per window: requests, errors, error rate, p50,
p99, and the resident memory of the server's whole process tree (arbiter + workers). The first --warmup-windows (1)
are warm-up.
Exits 1 when memory grows more than --max-memory-growth (10%) from the first window after warm-up to the last, when
p99 drifts more than --max-p99-drift (50%): the median p99 of the last third of the windows after warm-up against the
first third's, or when more than --max-error-rate (1%) of the requests fail. Without --url it starts
`bentoml serve` itself, on --bento-home/--model-tag or, when neither is given, on the tests' tiny exported model.
Prints a table and saves JSON.

    python benchmarks/soak.py --levels 0.5,0.85,1.3 [--level-s 30] [--interference] [--runs 3]

Levels mode (the overload check): capacity first (closed loop), then an open-loop rate of each fraction of it for
--level-s seconds; per level: answers 200, 429, 503 and others, p50/p99 of the answered requests, and the service's
queue (`skinserve_queue_images`, sampled each second: mean and max). --runs repeats the whole measurement.
--interference runs a CPU burner on one core throughout, busy --burn-duty of the time for --burn-s seconds in every
--burn-period-s (default 50% for 3 s in every 10 s), so a run sees the contention a shared CI box sees.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="A running service (else one is started here).")
    parser.add_argument("--server-pid", type=int, help="Root pid of --url's server, for its memory.")
    parser.add_argument("--bento-home", type=Path)
    parser.add_argument("--model-tag", default="skin-classifier:test")
    parser.add_argument("--database-url", default="", help="SKINSERVE_DATABASE_URL of a started server.")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fraction", type=float, default=0.7, help="Share of the measured capacity to send.")
    parser.add_argument("--window-s", type=float, default=60.0, help="Seconds per reported window.")
    parser.add_argument("--users", type=int, default=8, help="Concurrent clients when measuring capacity.")
    parser.add_argument("--capacity-s", type=float, default=20.0)
    parser.add_argument("--max-memory-growth", type=float, default=0.10)
    parser.add_argument("--max-p99-drift", type=float, default=0.50)
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--warmup-windows", type=int, default=1, help="Windows left out of the verdict.")
    parser.add_argument(
        "--short", action="store_true", help="CI mode: --minutes 2.5 --window-s 15 --warmup-windows 4 --capacity-s 10."
    )
    parser.add_argument("--levels", help="Levels mode: fractions of capacity, e.g. 0.5,0.85,1.3.")
    parser.add_argument("--level-s", type=float, default=30.0, help="Seconds per level.")
    parser.add_argument("--runs", type=int, default=1, help="Levels mode: measurements in a row.")
    parser.add_argument("--interference", action="store_true", help="A CPU burner on one core (see --burn-*).")
    parser.add_argument("--burn-duty", type=float, default=0.5)
    parser.add_argument("--burn-s", type=float, default=3.0)
    parser.add_argument("--burn-period-s", type=float, default=10.0)
    parser.add_argument("--service-env", action="append", default=[], help="KEY=VALUE for a server started here.")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "soak")
    args = parser.parse_args(argv)
    if args.short:
        # Resident memory settles over the first minute (allocator arenas of the decode threads, the dispatcher's
        # queue): a minute of warm-up, then 90 s judged.
        args.minutes, args.window_s, args.warmup_windows, args.capacity_s = 2.5, 15.0, 4, 10.0
    return args


def face_jpeg() -> bytes:
    import io

    from skinserve.data.synth import FaceSpec, draw_face

    buffer = io.BytesIO()
    draw_face(FaceSpec(), 256).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def one_request(client: httpx.Client, image: bytes) -> tuple[float, int, float | None]:
    """(latency seen by the client, status, the service's own total_ms for an answer: from its handler's start)."""
    started = time.perf_counter()
    try:
        response = client.post("/analyze", content=image, headers={"content-type": "image/jpeg"})
    except httpx.HTTPError:
        return time.perf_counter() - started, 0, None
    latency = time.perf_counter() - started
    server_ms = response.json()["timings"]["total_ms"] if response.status_code == 200 else None
    return latency, response.status_code, server_ms


def burn(duty: float, on_s: float, period_s: float) -> None:
    """Busy `duty` of the time (10 ms slices) for `on_s` seconds in every `period_s`, on one core, until killed."""
    slice_s = 0.01
    while True:
        period_start = time.monotonic()
        while time.monotonic() - period_start < on_s:
            busy_until = time.monotonic() + slice_s * duty
            while time.monotonic() < busy_until:
                pass
            time.sleep(slice_s * (1 - duty))
        time.sleep(max(0.0, period_s - (time.monotonic() - period_start)))


def start_interference(args: argparse.Namespace):
    """The burner in a process of its own (a thread would share this process's GIL, not a core)."""
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(
        target=burn, args=(args.burn_duty, args.burn_s, args.burn_period_s), daemon=True
    )
    process.start()
    return process


def queue_images(client: httpx.Client) -> float | None:
    """The service's `skinserve_queue_images` gauge (summed over workers), or None where it is not published."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = client.get("/metrics").text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "skinserve_queue_images":
            return sum(sample.value for sample in family.samples)
    return None


def send_open_loop(
    url: str, image: bytes, rate: float, seconds: float, sample: Callable[[float], None], every_s: float
) -> list[tuple[float, float, int, float | None]]:
    """`rate` requests/s for `seconds`, each answered in its own time (an open loop: a slow answer delays no later
    request); `sample(seconds from start)` every `every_s` meanwhile. (sent at, latency, status, the service's own
    milliseconds) per request."""
    records: list[tuple[float, float, int, float | None]] = []
    lock = threading.Lock()
    local = threading.local()
    start = time.monotonic()

    def send(at: float) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
        latency, status, server_ms = one_request(local.client, image)
        with lock:
            records.append((at, latency, status, server_ms))

    def sampler() -> None:
        while (elapsed := time.monotonic() - start) < seconds:
            sample(elapsed)
            time.sleep(every_s)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    with ThreadPoolExecutor(max_workers=256) as pool:
        n = 0
        while (at := n / rate) < seconds:
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send, at)
            n += 1
    thread.join()
    return records


def open_loop(url: str, image: bytes, rate: float, seconds: float) -> dict:
    """`rate` requests/s for `seconds`: status counts, latency of the answered, and the service's queue."""
    queue: list[float] = []

    with httpx.Client(base_url=url, timeout=10) as metrics:

        def sample_queue(_: float) -> None:
            value = queue_images(metrics)
            if value is not None:
                queue.append(value)

        records = send_open_loop(url, image, rate, seconds, sample_queue, 1.0)
    answered = np.array([r[1] for r in records if r[2] == 200]) * 1e3
    served = np.array([r[3] for r in records if r[2] == 200])
    statuses = [r[2] for r in records]
    return {
        "sent": len(records),
        "ok": statuses.count(200),
        "429": statuses.count(429),
        "503": statuses.count(503),
        "other": sum(1 for s in statuses if s not in (200, 429, 503)),
        "p50_ms": float(np.percentile(answered, 50)) if len(answered) else None,
        "p99_ms": float(np.percentile(answered, 99)) if len(answered) else None,
        # From the service's handler on (decode, queue, model, answer): the rest of p99 is HTTP, the event loop,
        # and the load generator's own queueing on a shared machine.
        "server_p99_ms": float(np.percentile(served, 99)) if len(served) else None,
        "queue_mean": float(np.mean(queue)) if queue else None,
        "queue_max": float(np.max(queue)) if queue else None,
    }


def run_levels(url: str, image: bytes, args: argparse.Namespace) -> list[dict]:
    fractions = [float(f) for f in args.levels.split(",")]
    runs = []
    for run in range(args.runs):
        capacity = measure_capacity(url, image, args.users, args.capacity_s)
        print(f"run {run + 1}: capacity {capacity:.1f} req/s with {args.users} users (closed loop)", flush=True)
        for fraction in fractions:
            level = open_loop(url, image, fraction * capacity, args.level_s)
            runs.append({"run": run + 1, "capacity_rps": capacity, "fraction": fraction, **level})
            print(f"  {fraction:.0%}: {level}", flush=True)
    return runs


def print_levels(rows: list[dict], interference: bool) -> None:
    print(f"\nlevels{' with interference' if interference else ''}:")
    head = f"{'run':>3} {'capacity':>8} {'level':>6} {'sent':>6} {'200':>6} {'429':>5} {'503':>5} {'other':>5}"
    print(f"{head} {'p50 ms':>7} {'p99 ms':>7} {'svc p99':>7} {'queue':>6} {'q max':>6}")
    for r in rows:
        p50, p99, svc = (
            f"{r[k]:7.0f}" if r[k] is not None else "      -" for k in ("p50_ms", "p99_ms", "server_p99_ms")
        )
        queue = (f"{r[k]:6.1f}" if r[k] is not None else "     -" for k in ("queue_mean", "queue_max"))
        print(
            f"{r['run']:>3} {r['capacity_rps']:>8.1f} {r['fraction']:>6.0%} {r['sent']:>6} {r['ok']:>6} "
            f"{r['429']:>5} {r['503']:>5} {r['other']:>5} {p50} {p99} {svc} {' '.join(queue)}"
        )


def measure_capacity(url: str, image: bytes, users: int, seconds: float) -> float:
    """Requests per second with `users` clients sending back to back (closed loop)."""
    done, stop = [0], time.monotonic() + seconds
    lock = threading.Lock()

    def user() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < stop:
                _, status, _ = one_request(client, image)
                if status == 200:
                    with lock:
                        done[0] += 1

    threads = [threading.Thread(target=user) for _ in range(users)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / (time.monotonic() - started)


def soak(url: str, pid: int, image: bytes, rate: float, seconds: float, window_s: float) -> list[dict]:
    """Open loop at `rate` req/s; per window: requests, errors, latencies, and the server tree's RSS (max)."""
    memory: list[tuple[float, int]] = []
    records = send_open_loop(url, image, rate, seconds, lambda at: memory.append((at, tree_rss(pid))), 2.0)
    windows = []
    for w in range(int(np.ceil(seconds / window_s))):
        lo, hi = w * window_s, (w + 1) * window_s
        inside = [r for r in records if lo <= r[0] < hi]
        latencies = np.array([r[1] for r in inside if r[2] == 200]) * 1e3
        errors = sum(1 for r in inside if r[2] != 200)
        rss = [m for t, m in memory if lo <= t < hi] or [memory[-1][1]]
        windows.append(
            {
                "window": w,
                "requests": len(inside),
                "errors": errors,
                "error_rate": errors / max(1, len(inside)),
                "error_statuses": {str(s): sum(1 for r in inside if r[2] == s) for s in {r[2] for r in inside} - {200}},
                "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
                "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else None,
                "rss_mb": max(rss) / 2**20,
            }
        )
    return windows


def verdict(windows: list[dict], max_growth: float, max_drift: float, max_error_rate: float, warmup: int = 1) -> dict:
    """The first `warmup` windows are warm-up. Memory: the last window against the first after warm-up. p99 drift:
    the median p99 of the last third of the windows after warm-up against that of the first third, so one noisy
    window on a shared machine reads as noise, and only a sustained rise reads as drift."""
    steady = windows[warmup:] if len(windows) > warmup else windows[-1:]
    third = max(1, len(steady) // 3)
    growth = steady[-1]["rss_mb"] / steady[0]["rss_mb"] - 1
    early, late = (_median_p99(part) for part in (steady[:third], steady[-third:]))
    drift = late / early - 1 if early and late else float("inf")
    errors = sum(w["errors"] for w in windows)
    error_rate = errors / max(1, sum(w["requests"] for w in windows))
    return {
        "memory_growth": growth,
        "p99_early_ms": early,
        "p99_late_ms": late,
        "p99_drift": drift,
        "errors": errors,
        "error_rate": error_rate,
        "passed": growth <= max_growth and drift <= max_drift and error_rate <= max_error_rate,
    }


def _median_p99(windows: list[dict]) -> float | None:
    values = [w["p99_ms"] for w in windows if w["p99_ms"] is not None]
    return float(np.median(values)) if values else None


def started_server(args: argparse.Namespace):
    """`bentoml serve` on the given model, or on a tiny export built here (about a minute)."""
    from loadtests.models import build_model_store
    from skinserve.db import migrate
    from skinserve.serve.process import start_service

    workdir = Path(tempfile.mkdtemp(prefix="skinserve-soak-"))
    if args.bento_home:
        env = {"BENTOML_HOME": str(args.bento_home), "SKINSERVE_MODEL_TAG": args.model_tag}
    else:
        print("building the tests' tiny export ...", flush=True)
        env = build_model_store(workdir)
    env |= {"SKINSERVE_DATA_DIR": str(workdir / "data"), "SKINSERVE_SPOOL_DIR": str(workdir / "spool")}
    env["SKINSERVE_DATABASE_URL"] = args.database_url or f"sqlite:///{workdir / 'data' / 'skinserve.db'}"
    env |= dict(item.split("=", 1) for item in args.service_env)
    # Without the prediction log's table every row is spooled and retried: an outage (tests/test_faults.py measures
    # that), not the steady state a soak is about. Alembic's engine creates the SQLite file's folder.
    migrate.upgrade(env["SKINSERVE_DATABASE_URL"])
    return start_service(env, workdir / "server.log")


def levels_report(url: str, image: bytes, args: argparse.Namespace) -> int:
    rows = run_levels(url, image, args)
    print_levels(rows, args.interference)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"interference": args.interference, "level_s": args.level_s, "users": args.users, "levels": rows}
    if args.interference:
        report["burn"] = {"duty": args.burn_duty, "on_s": args.burn_s, "period_s": args.burn_period_s}
    (args.out / "levels.json").write_text(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = None if args.url else started_server(args)
    url, pid = (args.url, args.server_pid) if args.url else (server.url, server.process.pid)
    if pid is None and not args.levels:
        raise SystemExit("--server-pid is needed with --url (the memory of the server's process tree is measured)")
    burner = start_interference(args) if args.interference else None
    try:
        if args.levels:
            return levels_report(url, face_jpeg(), args)
        image = face_jpeg()
        capacity = measure_capacity(url, image, args.users, args.capacity_s)
        rate = args.fraction * capacity
        print(
            f"capacity {capacity:.1f} req/s with {args.users} users; soaking at {rate:.1f} req/s "
            f"for {args.minutes:g} min",
            flush=True,
        )
        windows = soak(url, pid, image, rate, args.minutes * 60, args.window_s)
    finally:
        if burner is not None:
            burner.kill()
        if server is not None:
            server.stop()
    result = verdict(windows, args.max_memory_growth, args.max_p99_drift, args.max_error_rate, args.warmup_windows)
    print(f"\n{'window':>6} {'requests':>8} {'errors':>6} {'err %':>6} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>8}")
    for w in windows:
        p50, p99 = (f"{w[k]:8.1f}" if w[k] is not None else "       -" for k in ("p50_ms", "p99_ms"))
        print(
            f"{w['window']:>6} {w['requests']:>8} {w['errors']:>6} {w['error_rate'] * 100:>6.2f} {p50} {p99} "
            f"{w['rss_mb']:>8.1f}"
        )
    print(
        f"\nmemory growth {result['memory_growth'] * 100:+.1f}% (limit {args.max_memory_growth * 100:.0f}%), "
        f"p99 drift {result['p99_drift'] * 100:+.1f}% (limit {args.max_p99_drift * 100:.0f}%), "
        f"errors {result['errors']} ({result['error_rate'] * 100:.2f}%, limit {args.max_error_rate * 100:g}%): "
        f"{'PASS' if result['passed'] else 'FAIL'}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "capacity_rps": capacity,
        "rate_rps": rate,
        "fraction": args.fraction,
        "minutes": args.minutes,
        "window_s": args.window_s,
        "warmup_windows": args.warmup_windows,
        "windows": windows,
        **result,
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
