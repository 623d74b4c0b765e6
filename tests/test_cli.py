"""The `skinserve` command line end to end, as a user runs it: real processes, real databases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from skinserve.data.sources import SourceError, unpack_archive
from skinserve.db import migrate
from skinserve.db.engine import create_registry_engine
from skinserve.db.models import ConditionLabelRow, TrainingImage


def run(args: list[str], env: dict[str, str], expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "skinserve", *args], env=os.environ | env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == expect, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def counts(url: str) -> tuple[int, int]:
    engine = create_registry_engine(url)
    with Session(engine) as session:
        images = session.scalar(select(func.count()).select_from(TrainingImage))
        labels = session.scalar(select(func.count()).select_from(ConditionLabelRow))
    engine.dispose()
    return images, labels


@pytest.mark.postgres
def test_synth_then_ingest_into_postgres_registers_all_once_and_rejects_the_corrupt_file(clean_postgres, tmp_path):
    env = {"SKINSERVE_DATABASE_URL": clean_postgres, "SKINSERVE_DATA_DIR": str(tmp_path / "data")}
    shine = tmp_path / "D"
    run(["data", "synth", "--out", str(shine), "--per-class", "5", "--size", "64"], env)
    pngs = sorted(shine.rglob("*.png"))
    corrupt = pngs[len(pngs) // 2]
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    first = last_json(run(["data", "ingest", str(shine), "--source", "synthetic", "--json", "--no-progress"], env))
    rel = corrupt.relative_to(shine).as_posix()
    assert [(p["path"], "truncated" in p["reason"]) for p in first["rejected"]] == [(rel, True)]
    assert first["added"] + first["duplicates"] == len(pngs) - 1
    images, labels = counts(clean_postgres)
    assert images == first["added"] and labels == 7 * images
    second = last_json(run(["data", "ingest", str(shine), "--source", "synthetic", "--json"], env))
    assert second["added"] == 0 and second["rejected_count"] == 1
    assert counts(clean_postgres) == (images, labels)


@pytest.mark.parametrize("kind", ["zip", "gztar"])
def test_an_archive_is_unpacked_and_ingested_into_the_embedded_default(synth_set, tmp_path, kind):
    env = {"SKINSERVE_DATA_DIR": str(tmp_path / "data"), "SKINSERVE_DATABASE_URL": ""}
    archive = shutil.make_archive(str(tmp_path / "bundle"), kind, root_dir=synth_set.parent, base_dir=synth_set.name)
    run(["db", "upgrade"], env)
    summary = last_json(run(["data", "ingest", archive, "--source", "kaggle-like", "--json"], env))
    assert summary["added"] > 0 and summary["rejected"] == []
    assert (tmp_path / "data" / "skinserve.db").is_file()
    assert list((tmp_path / "data" / "images" / "kaggle-like").rglob("*.png"))
    registry = last_json(run(["data", "summary", "--json"], env))
    assert registry["images"] == summary["added"] and registry["per_source"] == {"kaggle-like": summary["added"]}


def test_ingest_into_an_unmigrated_registry_says_what_to_run(synth_set, tmp_path):
    env = {"SKINSERVE_DATA_DIR": str(tmp_path / "data"), "SKINSERVE_DATABASE_URL": ""}
    result = run(["data", "ingest", str(synth_set), "--source", "s"], env, expect=2)
    assert "skinserve db upgrade" in result.stderr


def test_db_commands_upgrade_report_and_downgrade(tmp_path):
    env = {"SKINSERVE_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    head = migrate.head_revision()
    assert head in run(["db", "upgrade"], env).stdout
    assert f"{head} (head {head})" in run(["db", "current"], env).stdout
    assert "at revision None" in run(["db", "downgrade"], env).stdout


@pytest.mark.postgres
def test_a_password_in_the_database_url_is_never_printed(postgres_url):
    with_password = postgres_url.replace("postgres@", "postgres:s3cr3t-pw@")
    result = run(["db", "current"], {"SKINSERVE_DATABASE_URL": with_password})
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert "***" in result.stdout


def test_split_command_saves_counts_and_fingerprint(synth_set, tmp_path):
    out = tmp_path / "split.json"
    run(["data", "split", str(synth_set), "--out", str(out), "--seed", "3"], {})
    saved = json.loads(out.read_text())
    assert saved["seed"] == 3 and len(saved["fingerprint"]) == 64
    assert sum(saved["counts"].values()) == len(list(synth_set.rglob("*.png")))


def test_download_without_kaggle_credentials_fails_clearly(tmp_path):
    env = {"KAGGLE_USERNAME": "", "KAGGLE_KEY": "", "KAGGLE_CONFIG_DIR": str(tmp_path / "none")}
    result = run(["data", "download", "owner/skin-types", "--out", str(tmp_path / "dl")], env, expect=2)
    assert "KAGGLE_USERNAME" in result.stderr


def test_an_archive_member_escaping_the_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../outside.png", b"x")
    with pytest.raises(SourceError, match="outside"):
        unpack_archive(archive, tmp_path / "dest")
    assert not (tmp_path / "outside.png").exists()


def test_a_tar_with_a_link_out_of_the_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as bundle:
        info = tarfile.TarInfo("set/link.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        bundle.addfile(info)
    with pytest.raises(Exception):  # noqa: B017 - tarfile's data filter raises its own error types
        unpack_archive(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "set" / "link.png").exists()
