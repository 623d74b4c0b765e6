"""The skin-type set as it ships (`<root>/{train,valid,test}/{dry,normal,oily}/*.jpg`) keeps its published split, the
registry summary shows skin types, and UniData's facial skin condition metadata reads through the manifest reader."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from skinserve.data.records import ImageRecord
from skinserve.data.sources import read_dataset
from skinserve.data.split import SPLITS, published_split, split_dataset
from skinserve.labels import Severity, Targets


def write_jpg(path: Path, shade: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 48), (shade, 120, 100)).save(path, "JPEG")
    return path


def skin_type_set(root: Path, splits=("train", "valid", "test"), per_class: int = 3) -> Path:
    """The Kaggle skin-type set's shipped layout: split folders above skin-type folders."""
    shade = 10
    for split in splits:
        for skin_type in ("dry", "normal", "oily"):
            for i in range(per_class if split == "train" else 1):
                shade += 3
                write_jpg(root / split / skin_type / f"{skin_type}_{split}_{i}.jpg", shade)
    return root


def test_split_folders_above_skin_type_folders_are_read_with_their_split(tmp_path):
    read = read_dataset(skin_type_set(tmp_path / "Oily-Dry-Skin-Types"))
    assert not read.problems and len(read.records) == 15
    record = next(r for r in read.records if r.relpath == "valid/dry/dry_valid_0.jpg")
    assert record.targets.skin_type == "dry"
    assert (record.metadata["split"], record.metadata["published_split"]) == ("val", "valid")


def test_the_published_split_is_the_split_training_uses(tmp_path):
    records = read_dataset(skin_type_set(tmp_path / "set")).records
    split = split_dataset(records, seed=123)
    assert split.counts() == {"train": 9, "val": 3, "test": 3}
    assert all(split.assignments[r.relpath] == r.metadata["split"] for r in records)
    assert split_dataset(records, seed=7).assignments == split.assignments  # the seed does not reshuffle it
    saved = split.save(tmp_path / "split.json")
    assert json.loads(saved.read_text())["counts"] == {"train": 9, "val": 3, "test": 3}


def test_a_set_published_without_a_validation_split_gets_one_carved_from_train(tmp_path):
    records = read_dataset(skin_type_set(tmp_path / "set", splits=("train", "test"), per_class=8)).records
    split = published_split(records, seed=0)
    counts = split.counts()
    assert counts["test"] == 3 and counts["val"] > 0 and counts["train"] + counts["val"] == 24
    tests = {r.relpath for r in records if r.metadata["split"] == "test"}
    assert {p for p, s in split.assignments.items() if s == "test"} == tests


def test_a_set_half_marked_with_a_split_is_refused(tmp_path):
    records = read_dataset(skin_type_set(tmp_path / "set")).records
    unmarked = ImageRecord(tmp_path / "x.jpg", "x.jpg", Targets(skin_type="oily"), "x", "folder")
    with pytest.raises(ValueError, match="1 of 16 records carry no published split"):
        split_dataset([*records, unmarked])
    assert set(SPLITS) == {"train", "val", "test"}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "skinserve", *args], env=os.environ | env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def test_ingested_skin_types_show_in_the_data_summary(tmp_path, sqlite_url):
    env = {"SKINSERVE_DATABASE_URL": sqlite_url, "SKINSERVE_STORAGE_URL": str(tmp_path / "store")}
    run(["data", "ingest", str(skin_type_set(tmp_path / "set")), "--source", "skin-types", "--no-progress"], env)
    summary = run(["data", "summary"], env).stdout
    assert "skin types           dry=5  normal=5  oily=5" in summary
    as_json = json.loads(run(["data", "summary", "--json"], env).stdout)
    assert as_json["skin_types"] == {"dry": 5, "normal": 5, "oily": 5}


# ---------------------------------------------------------------- UniData facial skin condition

UNIDATA_ROWS = [
    {"ID": "0001", "gender": "Female", "age": "34", "ethnicity": "Caucasian", "condition": "Acne"},
    {"ID": "0002", "gender": "Male", "age": "52", "ethnicity": "African", "condition": "Rosacea"},
    {"ID": "0003", "gender": "Female", "age": "27", "ethnicity": "Asian", "condition": "Eczema"},
    {"ID": "0004", "gender": "Male", "age": "41", "ethnicity": "Hispanic", "condition": "Healthy"},
    {"ID": "0005", "gender": "Female", "age": "63", "ethnicity": "Caucasian", "condition": "Wrinkles"},
]


def unidata_set(root: Path, rows=UNIDATA_ROWS, missing: str = "0005") -> Path:
    """A folder of UniData's shape: metadata (ID, gender, age, ethnicity, condition), and files/<ID>/<pose>.jpg."""
    shade = 20
    for row in rows:
        if row["ID"] == missing:
            continue
        for pose in ("front", "left", "right"):
            shade += 5
            write_jpg(root / "files" / row["ID"] / f"{pose}.jpg", shade)
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_unidata_metadata_maps_onto_records_one_per_photo(tmp_path):
    read = read_dataset(unidata_set(tmp_path / "unidata") / "metadata.csv")
    assert len(read.records) == 12  # four people with three poses each
    [problem] = read.problems
    assert problem.path == "metadata.csv:6" and "no image" in problem.reason
    acne = [r for r in read.records if r.group_id == "0001"]
    assert [Path(r.relpath).name for r in acne] == ["front.jpg", "left.jpg", "right.jpg"]
    first = acne[0]
    assert first.targets.conditions["acne"].present and first.targets.conditions["acne"].severity is None
    assert set(first.targets.conditions) == {"acne"}  # the other conditions stay unknown
    assert (first.targets.demographics.gender, first.targets.demographics.age_range) == ("female", "30-39")
    assert first.metadata["ethnicity"] == "Caucasian" and first.metadata["age"] == "34"
    assert first.metadata["column_mapping"] == "unidata-facial-skin-condition"


def test_unidata_conditions_outside_the_seven_stay_unknown_and_healthy_is_all_absent(tmp_path):
    records = {r.group_id: r for r in read_dataset(unidata_set(tmp_path / "u") / "metadata.csv").records}
    assert records["0002"].targets.conditions["redness"].present  # rosacea
    assert records["0003"].targets.conditions == {} and records["0003"].metadata["source_condition"] == "Eczema"
    healthy = records["0004"].targets
    assert healthy.healthy and all(label.severity is Severity.none for label in healthy.conditions.values())


def test_unidata_rows_naming_their_file_are_read_too(tmp_path):
    root = tmp_path / "u"
    write_jpg(root / "img" / "a.jpg", 40)
    with (root / "meta.csv").open("w", newline="") as handle:
        handle.write("ID,Gender,Age,Ethnicity,Condition,File\n7,male,19,Asian,Melasma,img/a.jpg\n")
    [record] = read_dataset(root / "meta.csv").records
    assert record.targets.conditions["hyperpigmentation"].present
    assert record.targets.demographics.age_range == "10-19" and record.group_id == "7"
