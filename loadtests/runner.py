"""`skinserve loadtest`: run the Locust scenarios headless, write the reports, and gate on p99 and error rate.

Locust runs as a subprocess, always: it monkey-patches the standard library through gevent when imported, so
neither this module nor anything that imports it may import locust. Reports come from Locust's own CSV files.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from skinserve.errors import SkinserveError
from skinserve.serve.process import free_port

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SCENARIOS: dict[str, tuple[str, ...]] = {
    "mixed": ("AnalyzeUser", "BatchAnalyzeUser", "ModelInfoUser"),
    "analyze": ("AnalyzeUser",),
    "batch": ("BatchAnalyzeUser",),
    "model": ("ModelInfoUser",),
    "plain": ("PlainPeerUser",),  # the plain BentoML peer, not skinserve (benchmarks/serving.py)
}
PERCENTILES = {"p50": "50%", "p90": "90%", "p95": "95%", "p99": "99%"}


class LoadTestError(SkinserveError):
    """The load test could not run (service would not start, Locust failed): not a broken threshold."""


@dataclass(frozen=True)
class LoadTestConfig:
    out: Path
    host: str | None = None  # None: start the service here and stop it after
    users: int = 16
    spawn_rate: float = 16.0
    run_time: str = "30s"
    shape: str | None = None  # "step": a step ramp up to `users` over `run_time`
    steps: int = 4
    workers: int = 1  # Locust processes generating load (--processes), each its own core
    scenario: str = "mixed"
    images: Path | None = None  # None: the synthetic corpus (loadtests/images.py)
    think_time_s: float = 0.0
    reset_stats: bool = False  # leave the ramp out of the figures
    max_p99_ms: float | None = None
    max_error_rate: float | None = None
    token: str | None = field(default=None, repr=False)  # sent as a bearer token; never written to a report
    service_env: dict[str, str] = field(default_factory=dict)  # extra SKINSERVE_* for a service started here
    # Locust's distributed mode across machines: "master" (reports, gates) waits for `expect_workers` "worker"s.
    role: str = "local"  # local | master | worker
    expect_workers: int = 1
    master_host: str = "*"  # master: the interface to listen on; worker: the master's address
    master_port: int = 5557


# --- Locust --------------------------------------------------------------------------------------------------


def locust_command(config: LoadTestConfig, host: str, prefix: Path, images: Path) -> list[str]:
    """Headless Locust with CSV (full history: per-second windowed percentiles) and HTML reports."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host]
    command += ["--users", str(config.users), "--spawn-rate", str(config.spawn_rate), "--run-time", config.run_time]
    command += ["--csv", str(prefix), "--csv-full-history", "--html", str(prefix.with_name("report.html"))]
    command += ["--images", str(images), "--think-time", str(config.think_time_s), "--steps", str(config.steps)]
    command += ["--timings-out", str(prefix.with_name("timings.json")), "--only-summary", "--stop-timeout", "10"]
    command += ["--exit-code-on-error", "0"]  # failures are judged by the thresholds here, not by Locust
    if config.reset_stats:
        command.append("--reset-stats")
    if config.role == "master":
        # Workers on other machines connect here; the run starts once `expect_workers` have, or fails after 5 min.
        command += ["--master", "--expect-workers", str(config.expect_workers), "--expect-workers-max-wait", "300"]
        command += ["--master-bind-host", config.master_host, "--master-bind-port", str(config.master_port)]
    elif config.workers > 1:
        # --processes forks the workers after the locustfile is imported, on a master port of our own choosing
        # (the default 5557 would clash between runs side by side); one process tree to start and stop.
        port = str(free_port())
        command += ["--processes", str(config.workers), "--master-bind-port", port, "--master-port", port]
    return command + list(SCENARIOS[config.scenario])


def run_locust(config: LoadTestConfig, host: str, images: Path) -> Path:
    """Run Locust to the end; returns the CSV prefix. Raises LoadTestError when it wrote no statistics."""
    prefix = config.out / "locust"
    # The token travels in the environment, not on Locust's command line where `ps` would show it.
    env = os.environ | {"SKINSERVE_LOADTEST_SHAPE": config.shape or ""}
    if config.token:
        env["SKINSERVE_LOADTEST_TOKEN"] = config.token
    seconds = _seconds(config.run_time) + (300 if config.role == "master" else 0)  # + the wait for workers
    with (config.out / "locust.log").open("wb") as log:
        process = subprocess.Popen(
            locust_command(config, host, prefix, images),
            cwd=LOCUSTFILE.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            code = process.wait(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise LoadTestError(f"Locust ran past {seconds + 120:.0f} s; see {config.out / 'locust.log'}") from None
    if code != 0 or not Path(f"{prefix}_stats.csv").is_file():
        raise LoadTestError(f"Locust exited with {code}; see {config.out / 'locust.log'}")
    return prefix


def run_worker(config: LoadTestConfig, images: Path) -> int:
    """A Locust worker of the master at master_host:master_port: it sends the requests the master assigns (users,
    rate, target host) and reports to it, until the master ends the run. Its log goes to config.out/locust.log."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker"]
    command += ["--master-host", config.master_host, "--master-port", str(config.master_port)]
    command += ["--images", str(images), "--think-time", str(config.think_time_s), "--steps", str(config.steps)]
    if config.workers > 1:
        command += ["--processes", str(config.workers)]  # several worker processes on this machine
    env = os.environ | {"SKINSERVE_LOADTEST_SHAPE": config.shape or ""}
    if config.token:
        env["SKINSERVE_LOADTEST_TOKEN"] = config.token
    with (config.out / "locust.log").open("wb") as log:
        code = subprocess.run(
            command + list(SCENARIOS[config.scenario]),
            cwd=LOCUSTFILE.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
    print(f"worker of {config.master_host}:{config.master_port} done (Locust exit {code}); log in {config.out}")
    return 0 if code == 0 else 2


def _seconds(run_time: str) -> float:
    """Locust's time strings (90, 90s, 2m, 1h30m) in seconds; by hand, as locust.util.timespan imports locust."""
    total, number = 0.0, ""
    for char in run_time.strip():
        if char.isdigit() or char == ".":
            number += char
        elif char in "smh":
            total += float(number or 0) * {"s": 1, "m": 60, "h": 3600}[char]
            number = ""
        else:
            raise LoadTestError(f"run time {run_time!r} is not like 30s, 2m or 1h30m")
    return total + float(number or 0)


# --- reports -------------------------------------------------------------------------------------------------


def summarise(prefix: Path) -> dict[str, Any]:
    """Per endpoint and in total: requests/s, p50/p90/p95/p99/max, error rate, from Locust's `_stats.csv`."""
    with open(f"{prefix}_stats.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    endpoints = {f"{r['Type']} {r['Name']}".strip(): _row_summary(r) for r in rows if r["Name"] != "Aggregated"}
    (total,) = [_row_summary(r) for r in rows if r["Name"] == "Aggregated"]
    return {"endpoints": endpoints, "total": total}


def _row_summary(row: Mapping[str, str]) -> dict[str, float | int | None]:
    requests, failures = int(row["Request Count"]), int(row["Failure Count"])
    summary: dict[str, float | int | None] = {
        "requests": requests,
        "failures": failures,
        "error_rate": failures / requests if requests else 0.0,
        "requests_per_s": float(row["Requests/s"]),
        "mean_ms": float(row["Average Response Time"]),
    }
    for key, column in PERCENTILES.items():
        summary[f"{key}_ms"] = float(row[column]) if row[column] not in ("", "N/A") else None
    summary["max_ms"] = float(row["Max Response Time"]) if requests else None
    return summary


def service_timings(path: Path) -> dict[str, Any] | None:
    """Medians and p99s of the `timings` the service put in its answers, as the locustfile collected them."""
    import numpy as np

    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    rows = np.asarray(saved["rows"], dtype=np.float64).reshape(-1, len(saved["keys"]))
    if not len(rows):
        return None
    result: dict[str, Any] = {"answers": len(rows)}
    for index, key in enumerate(saved["keys"]):
        column = rows[:, index]
        result[key] = {"p50": float(np.median(column)), "p99": float(np.quantile(column, 0.99))}
        result[key]["mean"] = float(column.mean())
    return result


def plot_latency(prefix: Path, out: Path) -> None:
    """Windowed p50/p95/p99 and requests/s against time (and against users, when the load stepped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(f"{prefix}_stats_history.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["Name"] == "Aggregated" and r["50%"] not in ("", "N/A")]
    rows = [r for r in rows if int(r["User Count"]) > 0]  # the samples after the users stopped say nothing
    stepped = len({r["User Count"] for r in rows}) > 1
    fig, axes = plt.subplots(3 if stepped else 2, 1, figsize=(9, 10 if stepped else 7), squeeze=False)
    start = int(rows[0]["Timestamp"]) if rows else 0
    seconds = [int(r["Timestamp"]) - start for r in rows]
    latency, throughput = axes[0][0], axes[1][0]
    for column in ("50%", "95%", "99%"):
        latency.plot(seconds, [float(r[column]) for r in rows], label=f"p{column[:-1]}")
    latency.set(ylabel="latency, ms (last ~10 s)", xlabel="seconds", title="Latency percentiles")
    throughput.plot(seconds, [float(r["Requests/s"]) for r in rows], label="requests/s")
    throughput.plot(seconds, [float(r["Failures/s"]) for r in rows], label="failures/s")
    throughput.set(ylabel="per second", xlabel="seconds", title="Throughput")
    users = throughput.twinx()
    users.step(seconds, [int(r["User Count"]) for r in rows], where="post", color="grey", linestyle=":")
    users.set_ylabel("users (dotted)")
    if stepped:
        _plot_against_users(axes[2][0], rows)
    for axis in (latency, throughput):
        axis.legend(loc="upper left")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _plot_against_users(axis, rows: Sequence[Mapping[str, str]]) -> None:
    """Per step: requests/s from its share of the request count, and p99 from its last sample (Locust's window
    is the last ~10 s, so the step's most settled one)."""
    last: dict[int, Mapping[str, str]] = {}
    for row in rows:
        last[int(row["User Count"])] = row
    levels, rates = sorted(last), []
    count, since = 0, int(rows[0]["Timestamp"])
    for users in levels:
        row = last[users]
        rates.append((int(row["Total Request Count"]) - count) / max(1, int(row["Timestamp"]) - since))
        count, since = int(row["Total Request Count"]), int(row["Timestamp"])
    axis.plot(levels, [float(last[u]["99%"]) for u in levels], marker="o", label="p99 ms")
    axis.set(xlabel="users (offered load)", ylabel="p99, ms", title="Against offered load")
    rate = axis.twinx()
    rate.plot(levels, rates, marker="s", color="tab:green")
    rate.set_ylabel("requests/s (squares)")
    axis.legend(loc="upper left")
    axis.grid(alpha=0.3)


def broken_thresholds(total: Mapping[str, Any], max_p99_ms: float | None, max_error_rate: float | None) -> list[str]:
    """Why the run fails its gate (on the Aggregated row), one reason a line; empty when it passes."""
    reasons = []
    if max_p99_ms is not None and (total["p99_ms"] is None or total["p99_ms"] > max_p99_ms):
        reasons.append(f"p99 {total['p99_ms']} ms is over the limit of {max_p99_ms} ms")
    if max_error_rate is not None and total["error_rate"] > max_error_rate:
        reasons.append(f"error rate {total['error_rate']:.4f} is over the limit of {max_error_rate}")
    if total["requests"] == 0:
        reasons.append("no request was sent")
    return reasons


# --- the run -------------------------------------------------------------------------------------------------


def run_loadtest(config: LoadTestConfig) -> int:
    """Run, report into config.out, and return the exit code: 0 passed, 1 a threshold broken, 2 could not run."""
    from loadtests.images import CorpusError, load_corpus
    from skinserve.serve.process import ServiceStartError, running_service

    if config.scenario not in SCENARIOS:
        print(f"error: unknown scenario {config.scenario!r}; expected one of {', '.join(SCENARIOS)}")
        return 2
    config.out.mkdir(parents=True, exist_ok=True)
    try:
        _seconds(config.run_time)
        if config.images is not None:
            load_corpus(config.images)  # a missing or empty folder is said here, not deep in Locust's log
        with tempfile.TemporaryDirectory(prefix="skinserve-images-") as scratch:
            images = config.images or _synthetic_images(Path(scratch))
            if config.role == "worker":
                return run_worker(config, images)
            if config.host:
                prefix = run_locust(config, config.host, images)
            else:
                with running_service(config.service_env, config.out / "service.log") as service:
                    prefix = run_locust(config, service.url, images)
    except (LoadTestError, CorpusError, ServiceStartError) as err:
        print(f"error: {err}")
        return 2
    summary = summarise(prefix) | {"service_timings": service_timings(config.out / "timings.json")}
    reasons = broken_thresholds(summary["total"], config.max_p99_ms, config.max_error_rate)
    summary |= {"config": _jsonable(config), "passed": not reasons, "broken": reasons}
    (config.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_latency(prefix, config.out / "latency.png")
    total = summary["total"]
    print(
        f"{total['requests']} requests, {total['requests_per_s']:.1f}/s, p50 {total['p50_ms']} ms, "
        f"p99 {total['p99_ms']} ms, error rate {total['error_rate']:.4f}; reports in {config.out}"
    )
    for reason in reasons:
        print(f"FAILED: {reason}")
    return 1 if reasons else 0


def _synthetic_images(folder: Path) -> Path:
    from loadtests.images import write_corpus

    write_corpus(folder)
    return folder


def _jsonable(config: LoadTestConfig) -> dict[str, Any]:
    data = asdict(config)
    data["out"], data["images"] = str(config.out), str(config.images) if config.images else None
    data.pop("token")
    data.pop("service_env")
    return data


Opt = typer.Option


def loadtest_command(
    out: Annotated[Path, Opt(help="Folder for the CSV/HTML reports, summary.json and latency.png.")],
    host: Annotated[str | None, Opt(help="Service URL; without it the service is started here and stopped.")] = None,
    users: Annotated[int, Opt(help="Concurrent users (the peak, with --shape step).")] = 16,
    spawn_rate: Annotated[float, Opt(help="Users started per second.")] = 16.0,
    run_time: Annotated[str, Opt(help="How long: 30s, 2m, 1h30m.")] = "30s",
    shape: Annotated[str | None, Opt(help="step: --steps equal steps up to --users over --run-time.")] = None,
    steps: Annotated[int, Opt(help="Steps of --shape step.")] = 4,
    workers: Annotated[int, Opt(help="Locust processes generating load (distributed when > 1).")] = 1,
    scenario: Annotated[str, Opt(help="mixed, analyze, batch or model.")] = "mixed",
    images: Annotated[Path | None, Opt(help="Folder of JPEG/PNG files (default: synthetic faces).")] = None,
    think_time: Annotated[float, Opt(help="Seconds each user waits between requests.")] = 0.0,
    token: Annotated[str | None, Opt(envvar="SKINSERVE_LOADTEST_TOKEN", help="Bearer token for the service.")] = None,
    reset_stats: Annotated[bool, Opt(help="Leave the ramp-up out of the figures.")] = False,
    max_p99_ms: Annotated[float | None, Opt(help="Exit 1 when the total p99 is over this.")] = None,
    max_error_rate: Annotated[float | None, Opt(help="Exit 1 when failures/requests is over this.")] = None,
    master: Annotated[bool, Opt(help="Distributed: drive --expect-workers workers; report here.")] = False,
    worker: Annotated[bool, Opt(help="Distributed: send load for the master at --master-host.")] = False,
    expect_workers: Annotated[int, Opt(help="Master: workers to wait for before starting.")] = 1,
    master_host: Annotated[str | None, Opt(help="Worker: the master's address; master: interface to bind [*].")] = None,
    master_port: Annotated[int, Opt(help="The master's port.")] = 5557,
) -> None:
    """Load-test the service with Locust: reports into --out; exits 1 when a given threshold is broken."""
    if shape not in (None, "step"):
        typer.echo(f"error: --shape must be step, not {shape!r}", err=True)
        raise typer.Exit(2)
    if master and worker:
        typer.echo("error: --master and --worker exclude each other", err=True)
        raise typer.Exit(2)
    if worker and not master_host:
        typer.echo("error: --worker needs --master-host", err=True)
        raise typer.Exit(2)
    config = LoadTestConfig(
        out, host, users, spawn_rate, run_time, shape, steps, workers, scenario, images, think_time, reset_stats,
        max_p99_ms, max_error_rate, token, role="master" if master else "worker" if worker else "local",
        expect_workers=expect_workers, master_host=master_host or "*", master_port=master_port,
    )  # fmt: skip
    raise typer.Exit(run_loadtest(config))


def main() -> None:
    typer.run(loadtest_command)
