"""The `skinserve` command line: one entry point whose sub-commands run each stage."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from skinserve.catalog.commands import catalog_app
from skinserve.config import Settings, redacted_url
from skinserve.console import fail
from skinserve.errors import SkinserveError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Skin-condition analysis: data, training, serving.")
data_app = typer.Typer(no_args_is_help=True, help="Synthesise, read, split, download and ingest datasets.")
db_app = typer.Typer(no_args_is_help=True, help="Manage the registry schema (Alembic).")
app.add_typer(data_app, name="data")
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write the Shine layout into.")],
    per_class: Annotated[int, typer.Option(help="Images per condition x severity cell (and per healthy word).")] = 5,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same bytes.")] = 0,
    flip_fraction: Annotated[float, typer.Option(help="Share of images that get a mirrored twin.")] = 0.25,
    multi_label_fraction: Annotated[float, typer.Option(help="Share of images with a second condition.")] = 0.2,
) -> None:
    """Write a procedurally drawn face set in the Shine layout, with sidecars."""
    from skinserve.data.synth import SynthConfig, write_synthetic_set

    try:
        config = SynthConfig(per_class, size, seed, flip_fraction, multi_label_fraction)
        summary = write_synthetic_set(out, config)
    except ValueError as err:
        raise fail(str(err)) from err
    typer.echo(
        f"wrote {summary.images} images ({summary.originals} originals, {summary.flipped} flipped, "
        f"{summary.multi_label} multi-label) in {len(summary.per_folder)} folders under {summary.root}"
    )


@data_app.command("ingest")
def data_ingest(
    src: Annotated[Path, typer.Argument(help="Dataset folder, CSV manifest, or a zip/tar archive of either.")],
    source: Annotated[str, typer.Option(help="Name recorded as dataset_source.")],
    format: Annotated[str, typer.Option("--format", help="auto, shine, folder or csv.")] = "auto",
    storage: Annotated[str | None, typer.Option(help="Where files go: a folder or gs://bucket/prefix.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per database transaction.")] = 64,
    workers: Annotated[int, typer.Option(help="Decode threads.")] = 2,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on the last line.")] = False,
) -> None:
    """Validate, hash, dedupe, store and register a dataset; a second run adds nothing."""
    from skinserve.data.ingest import IngestOptions, ingest_dataset
    from skinserve.data.sources import is_archive, read_dataset, unpack_archive
    from skinserve.db.engine import create_registry_engine
    from skinserve.storage import open_storage

    settings = Settings.from_env()
    engine = create_registry_engine(settings.database_url)
    _require_current_schema(settings.database_url)
    try:
        with tempfile.TemporaryDirectory(prefix="skinserve-unpack-") as scratch:
            root = unpack_archive(src, Path(scratch)) if is_archive(src) else src
            read = read_dataset(root, format)  # type: ignore[arg-type]
            options = IngestOptions(source=source, batch_size=batch_size, workers=workers, progress=progress)
            summary = ingest_dataset(read, engine, open_storage(storage or settings.storage_url), options)
    except (SkinserveError, ValueError) as err:
        raise fail(str(err)) from err
    finally:
        engine.dispose()
    typer.echo(
        f"source {summary.source}: scanned {summary.scanned}, added {summary.added}, "
        f"duplicates {summary.duplicates}, rejected {len(summary.rejected)}"
    )
    for problem in summary.rejected:
        typer.echo(f"  rejected {problem.path}: {problem.reason}")
    typer.echo(f"registry: {redacted_url(settings.database_url)}")
    if as_json:
        typer.echo(summary.as_json())


@data_app.command("split")
def data_split(
    src: Annotated[Path, typer.Argument(help="Dataset folder or CSV manifest.")],
    out: Annotated[Path | None, typer.Option(help="Where to save the split JSON.")] = None,
    format: Annotated[str, typer.Option("--format", help="auto, shine, folder or csv.")] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Make the seeded, stratified, grouped 80/10/10 split and save it with the dataset fingerprint."""
    from skinserve.data.sources import read_dataset
    from skinserve.data.split import split_dataset

    try:
        read = read_dataset(src, format)  # type: ignore[arg-type]
    except SkinserveError as err:
        raise fail(str(err)) from err
    split = split_dataset(read.records, seed=seed)
    target = out or Settings.from_env().data_dir / "splits" / f"{split.fingerprint[:12]}-seed{seed}.json"
    split.save(target)
    typer.echo(f"split {split.counts()} of {len(read.records)} images ({len(read.problems)} reported) -> {target}")


@data_app.command("summary")
def data_summary(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What the registry holds: images per source, labels per condition and severity."""
    from skinserve.db.engine import create_registry_engine
    from skinserve.db.registry import registry_summary

    settings = Settings.from_env()
    _require_current_schema(settings.database_url)
    engine = create_registry_engine(settings.database_url)
    try:
        summary = registry_summary(engine)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    typer.echo(f"registry {redacted_url(settings.database_url)}: {summary['images']} images")
    for source, count in sorted(summary["per_source"].items()):
        typer.echo(f"  source {source}: {count}")
    for condition, levels in sorted(summary["labels"].items()):
        typer.echo(f"  {condition:20s} " + "  ".join(f"{k}={v}" for k, v in sorted(levels.items())))
    if summary["skin_types"]:
        typer.echo(f"  {'skin types':20s} " + "  ".join(f"{k}={v}" for k, v in sorted(summary["skin_types"].items())))


@data_app.command("download")
def data_download(
    slug: Annotated[str, typer.Argument(help="Kaggle dataset, owner/name.")],
    out: Annotated[Path, typer.Option(help="Folder to download and unpack into.")],
) -> None:
    """Fetch a Kaggle dataset (needs the kaggle package, credentials and network), then unpack it."""
    from skinserve.data.download import DownloadError, download_kaggle_dataset

    try:
        root = download_kaggle_dataset(slug, out)
    except DownloadError as err:
        raise fail(str(err)) from err
    name = slug.split("/")[-1]
    typer.echo(f"downloaded {slug} to {root}; ingest it with: skinserve data ingest {root} --source {name}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations to SKINSERVE_DATABASE_URL (default: SQLite in the data folder)."""
    from skinserve.db import migrate

    url = Settings.from_env().database_url
    migrate.upgrade(url, revision)
    typer.echo(f"{redacted_url(url)} at revision {migrate.current_revision(url)}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()] = "base") -> None:
    """Revert migrations down to REVISION (default: drop everything)."""
    from skinserve.db import migrate

    url = Settings.from_env().database_url
    migrate.downgrade(url, revision)
    typer.echo(f"{redacted_url(url)} at revision {migrate.current_revision(url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the registry."""
    from skinserve.db import migrate

    url = Settings.from_env().database_url
    typer.echo(f"{redacted_url(url)}: {migrate.current_revision(url)} (head {migrate.head_revision()})")


@db_app.command("partitions")
def db_partitions(
    ahead: Annotated[int | None, typer.Option(help="Days after today [SKINSERVE_LOG_PARTITION_DAYS_AHEAD: 7].")] = None,
    retention_days: Annotated[int | None, typer.Option(help="Days kept [SKINSERVE_LOG_RETENTION_DAYS: all].")] = None,
    action: Annotated[str | None, typer.Option(help="detach or drop [SKINSERVE_LOG_RETENTION_ACTION: detach].")] = None,
) -> None:
    """Create the coming days' prediction_logs partitions (Postgres); detach or drop days past retention."""
    import os

    from sqlalchemy.exc import OperationalError

    from skinserve.db.engine import create_registry_engine
    from skinserve.db.partitions import PartitionError, PartitionPolicy, manage_partitions

    url = Settings.from_env().database_url
    engine = create_registry_engine(url)
    try:
        given = {"partition_days_ahead": ahead, "retention_days": retention_days, "retention_action": action}
        # The options go through the same validation as the variables they stand for, and are named as those.
        overrides = {f"SKINSERVE_LOG_{k.upper()}": str(v) for k, v in given.items() if v is not None}
        policy = PartitionPolicy.from_env(dict(os.environ) | overrides)
        if engine.dialect.name != "postgresql":
            typer.echo(f"{redacted_url(url)}: {engine.dialect.name} keeps one prediction_logs table; nothing to do")
            return
        report = manage_partitions(engine, policy)
    except PartitionError as err:
        raise fail(str(err)) from err
    except OperationalError as err:  # a lock not granted within lock_timeout, or the server away: the next run retries
        raise fail(f"prediction_logs partitions on {redacted_url(url)}: {err.orig}", code=1) from err
    finally:
        engine.dispose()
    typer.echo(
        f"{redacted_url(url)}: {report.partitions} day partitions; created {len(report.created)}, "
        f"detached {len(report.detached)}, dropped {len(report.dropped)}; moved {report.moved_from_default} rows "
        f"out of the default partition, purged {report.purged_from_default}; {report.default_rows} rows left there"
    )
    for name in report.created + report.detached + report.dropped:
        verb = "created" if name in report.created else "detached" if name in report.detached else "dropped"
        typer.echo(f"  {verb} {name}")


@app.command("evaluate")
def evaluate(
    model_path: Annotated[Path, typer.Argument(help="A checkpoint (.pt) or an export directory (manifest.json).")],
    data: Annotated[Path, typer.Option(help="Dataset folder or CSV manifest.")],
    split: Annotated[str, typer.Option(help="test (the checkpoint's own split), val, train or all.")] = "test",
    format: Annotated[str, typer.Option("--format", help="auto, shine, folder or csv.")] = "auto",
    runtime: Annotated[
        str,
        typer.Option(
            help="Export directories only: auto, tensorrt, aoti-cuda, onnxruntime-cuda, onnxruntime-cpu or aoti-cpu."
        ),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON object.")] = False,
) -> None:
    """Per-condition precision/recall/F1/AUC, macro/micro F1, severity accuracy/F1/MAE, fairness slices."""

    if split not in ("train", "val", "test", "all"):
        raise fail(f"--split must be train, val, test or all, not {split!r}")
    try:
        if model_path.is_dir():  # an export: its artifact through skinserve.runtime, its manifest's preprocessing
            from skinserve.modeling.export_evaluation import evaluate_export

            metrics = evaluate_export(model_path, data, split, runtime, format)
        else:
            from skinserve.modeling.evaluation import evaluate_checkpoint

            metrics = evaluate_checkpoint(model_path, data, split, format)
    except SkinserveError as err:
        raise fail(str(err)) from err
    if as_json:
        typer.echo(json.dumps(metrics, sort_keys=True))
        return
    intervals = metrics.get("intervals") or {}

    def scored(key: str) -> str:
        interval = intervals.get(key)
        return f"{metrics[key]:.4f}" + (f" [95% CI {interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")

    typer.echo(
        f"{metrics['n_images']} images ({split}): macro-F1 {scored('macro_f1')}, micro-F1 "
        f"{metrics['micro_f1']:.4f}, exact match {metrics['exact_match']:.4f}, severity accuracy "
        f"{scored('severity_accuracy')}, MAE {metrics['severity_mae']:.4f}"
    )
    for name, row in (metrics.get("baselines") or {}).items():
        typer.echo(
            f"  baseline {name}: macro-F1 {row['macro_f1']:.4f}, severity accuracy {row['severity_accuracy']:.4f}"
        )
    for name, row in metrics["per_condition"].items():
        auc = f"{row['auc']:.3f}" if row["auc"] is not None else "n/a"
        typer.echo(
            f"  {name:20s} P {row['precision']:.3f}  R {row['recall']:.3f}  F1 {row['f1']:.3f}  AUC {auc}"
            f"  (n={row['support']})"
        )
    for field, groups in metrics["slices"].items():
        for value, row in groups.items():
            typer.echo(
                f"  {field}={value}: n={row['n_images']} macro-F1 {row['macro_f1']:.3f} "
                f"severity accuracy {row['severity_accuracy']:.3f}"
            )
    for field, gap in (metrics.get("slice_gaps") or {}).items():
        typer.echo(
            f"  {field}: best-worst gap macro-F1 {gap['macro_f1']:.3f}, "
            f"severity accuracy {gap['severity_accuracy']:.3f}"
        )
    for warning in metrics.get("warnings") or []:
        typer.echo(f"  warning: {warning}")


@app.command("explain")
def explain(
    model_path: Annotated[Path, typer.Argument(help="A checkpoint (.pt).")],
    image: Annotated[Path, typer.Argument(help="An image file.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")],
) -> None:
    """Grad-CAM heatmaps, one per predicted condition, beside the input image."""
    from skinserve.modeling.explain import explain_image

    try:
        conditions = explain_image(model_path, image, out)
    except (OSError, SkinserveError) as err:
        raise fail(str(err)) from err
    typer.echo(f"wrote {out}: {', '.join(conditions) if conditions else 'no condition present (healthy)'}")


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    model: Annotated[str | None, typer.Option(help="Model tag in the BentoML store.")] = None,
    runtime: Annotated[str | None, typer.Option(help="auto, onnxruntime-cpu, onnxruntime-cuda, ...")] = None,
) -> None:
    """Start the BentoML service (service.py) with the embedded defaults: `bentoml serve` underneath."""
    import os

    from skinserve.serve.process import ServiceStartError, serve_command, service_directory

    try:
        where = service_directory()
    except ServiceStartError as err:
        raise fail(str(err)) from err
    env = dict(os.environ)
    if model:
        env["SKINSERVE_MODEL_TAG"] = model
    if runtime:
        env["SKINSERVE_RUNTIME"] = runtime
    os.chdir(where)
    # Become the server (no parent left behind), so a signal to this process reaches BentoML directly.
    os.execve(sys.executable, serve_command(port, host), env)


@app.command("analyze")
def analyze(
    images: Annotated[list[Path], typer.Argument(help="Image files to send.")],
    url: Annotated[str, typer.Option(help="The service's base URL.")] = "http://127.0.0.1:3000",
    wait: Annotated[float, typer.Option(help="Seconds to wait for /readyz first.")] = 0.0,
    token: Annotated[str | None, typer.Option(envvar="SKINSERVE_API_TOKEN", help="Bearer token.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print each answer as JSON.")] = False,
) -> None:
    """Send images to a running service and print its answers (the client side of `skinserve serve`)."""
    import time

    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        deadline = time.monotonic() + wait
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise fail(f"no ready service at {url}")
            time.sleep(1)
        failed = 0
        for image in images:
            response = client.post("/analyze", files={"image": (image.name, image.read_bytes())})
            body = response.json()
            if response.status_code != 200:
                failed += 1
                typer.echo(f"{image}: HTTP {response.status_code}: {body.get('error')}")
                continue
            if as_json:
                typer.echo(json.dumps(body))
                continue
            found = [
                f"{c} ({s['severity']['label']}, p={s['probability']:.2f})"
                for c, s in body["conditions"].items()
                if s["present"]
            ]
            typer.echo(
                f"{image}: {'healthy' if body['healthy'] else ', '.join(found)}; "
                f"primary {body['primary_concern']}; {body['timings']['total_ms']:.1f} ms"
            )
    if failed:
        raise typer.Exit(1)


STAGE_COMMANDS = "skinserve.commands"


def _register_stage_commands() -> None:
    """The stages' commands (train, tune, export, loadtest), from the entry points their packages declare in
    pyproject.toml: the library never imports a stage, and a stage installed alone still adds its command."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=STAGE_COMMANDS):
        try:
            command = entry.load()  # each stage's cli module imports its heavy parts inside the command
        except ImportError:
            continue  # declared by an installed distribution, but not importable here (a Bento ships the library)
        app.command(entry.name)(command)


_register_stage_commands()


def _require_current_schema(url: str) -> None:
    from skinserve.db.migrate import SchemaNotCurrent, require_head

    try:
        require_head(url)
    except SchemaNotCurrent as err:
        raise fail(str(err)) from err


def main() -> None:
    app(prog_name="skinserve")


if __name__ == "__main__":
    sys.exit(main())
