"""The three readers (Shine layout, image folder, CSV manifest) map onto one record type and report bad records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from skinserve.data.folder import read_image_folder
from skinserve.data.manifest import read_csv_manifest
from skinserve.data.shine import read_shine
from skinserve.data.sources import SourceError, detect_format, read_dataset
from skinserve.labels import CONDITIONS, LabelError, Severity


def write_png(path: Path, colour=(180, 140, 120), size=(40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_synthetic_set_reads_without_problems_and_groups_flips(synth_set: Path):
    result = read_shine(synth_set)
    assert result.problems == []
    assert len(result.records) == len(list(synth_set.rglob("*.png")))
    flipped = [r for r in result.records if r.path.stem.endswith("_flipped")]
    assert flipped
    by_name = {r.path.stem: r for r in result.records}
    for twin in flipped:
        original = by_name[twin.path.stem.removesuffix("_flipped")]
        assert twin.group_id == original.group_id
        assert twin.targets.conditions == original.targets.conditions


def test_folder_severity_words_become_the_ordinal_scale(synth_set: Path):
    records = read_shine(synth_set).records
    aging_early = [r for r in records if r.relpath.startswith("aging/early_signs/")]
    assert aging_early
    assert all(r.targets.conditions["aging"].severity is Severity.mild for r in aging_early)
    healthy = [r for r in records if r.relpath.startswith("healthy/")]
    assert healthy and all(r.targets.healthy for r in healthy)


def test_sidecar_that_disagrees_with_its_folder_is_reported(synth_copy: Path):
    sidecar = sorted((synth_copy / "redness" / "severe").glob("*.json"))[0]
    data = json.loads(sidecar.read_text())
    data["severity_targets"]["redness"] = "mild"
    sidecar.write_text(json.dumps(data))
    result = read_shine(synth_copy)
    reported = {p.path: p.reason for p in result.problems}
    rel = sidecar.relative_to(synth_copy).as_posix()
    assert rel in reported
    assert "redness" in reported[rel] and "severe" in reported[rel]
    assert all(r.relpath != rel.replace(".json", ".png") for r in result.records)


def test_missing_image_is_reported_by_name(synth_copy: Path):
    image = sorted((synth_copy / "acne" / "mild").glob("*.png"))[0]
    image.unlink()
    result = read_shine(synth_copy)
    reasons = {p.path: p.reason for p in result.problems}
    assert reasons[image.relative_to(synth_copy).as_posix()].startswith("image missing")


def test_image_without_sidecar_takes_its_targets_from_the_folders(synth_copy: Path):
    image = sorted((synth_copy / "pore_size" / "severe").glob("*.png"))[0]
    image.with_suffix(".json").unlink()
    record = next(r for r in read_shine(synth_copy).records if r.path == image)
    assert record.targets.present_conditions() == ["pore_size"]
    assert record.targets.conditions["pore_size"].severity is Severity.severe


def test_unknown_severity_folder_is_reported(tmp_path: Path):
    write_png(tmp_path / "aging" / "ancient" / "a.png")
    result = read_shine(tmp_path)
    assert [(p.path, "'ancient'" in p.reason) for p in result.problems] == [("aging/ancient/a.png", True)]


def test_skin_type_folders_map_onto_skin_type(tmp_path: Path):
    for label in ("oily", "dry", "normal"):
        for i in range(2):
            write_png(tmp_path / label / f"{label}_{i}.jpg")
    result = read_image_folder(tmp_path)
    assert result.problems == []
    assert sorted({r.targets.skin_type for r in result.records}) == ["dry", "normal", "oily"]
    assert all(r.targets.conditions == {} for r in result.records)
    assert all(r.source_format == "folder" for r in result.records)


def test_condition_folders_mark_one_condition_present_with_unknown_severity(tmp_path: Path):
    write_png(tmp_path / "acne" / "a.png")
    write_png(tmp_path / "healthy" / "h.png")
    records = {r.relpath: r for r in read_image_folder(tmp_path).records}
    acne = records["acne/a.png"].targets
    assert acne.present_conditions() == ["acne"] and acne.conditions["acne"].severity is None
    assert records["healthy/h.png"].targets.healthy is True


def test_unrecognised_label_folders_are_an_error(tmp_path: Path):
    write_png(tmp_path / "oily" / "a.png")
    write_png(tmp_path / "acne" / "b.png")
    with pytest.raises(LabelError, match="cannot tell"):
        read_image_folder(tmp_path)


def test_csv_manifest_rows_map_onto_records(tmp_path: Path):
    write_png(tmp_path / "img" / "a.png")
    write_png(tmp_path / "img" / "b.png", colour=(90, 60, 50))
    write_png(tmp_path / "img" / "c.png", colour=(10, 60, 50))
    (tmp_path / "labels.csv").write_text(
        "path,acne,aging,redness,skin_type,fitzpatrick,gender,notes\n"
        "img/a.png,moderate,early_signs,false,oily,III,female,scan 1\n"
        "img/b.png,true,,,dry,,male,\n"
        "img/c.png,0,0,0,,,,\n"
    )
    result = read_csv_manifest(tmp_path / "labels.csv")
    assert result.problems == []
    a, b, c = result.records
    assert a.targets.conditions["acne"].severity is Severity.moderate
    assert a.targets.conditions["aging"].severity is Severity.mild
    assert a.targets.conditions["redness"].present is False
    assert (a.targets.skin_type, a.targets.fitzpatrick, a.targets.demographics.gender) == ("oily", 3, "female")
    assert a.metadata["notes"] == "scan 1"
    assert b.targets.conditions["acne"].present and b.targets.conditions["acne"].severity is None
    assert set(b.targets.conditions) == {"acne"}  # empty cells stay unknown
    assert c.targets.present_conditions() == [] and c.targets.healthy is None


def test_csv_manifest_reports_bad_rows_by_line(tmp_path: Path):
    write_png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text(
        "path,textured_skin,skin_type,fitzpatrick\n"
        "a.png,slight,oily,2\n"
        "gone.png,,oily,\n"
        "a.png,awful,,\n"
        "a.png,,greasy,\n"
        "a.png,,,9\n"
    )
    result = read_csv_manifest(tmp_path / "m.csv")
    assert len(result.records) == 1
    reasons = {p.path: p.reason for p in result.problems}
    assert set(reasons) == {"m.csv:3", "m.csv:4", "m.csv:5", "m.csv:6"}
    assert "gone.png" in reasons["m.csv:3"]
    assert "'awful'" in reasons["m.csv:4"]
    assert "'greasy'" in reasons["m.csv:5"]
    assert "outside 1-6" in reasons["m.csv:6"]


def test_formats_are_detected(tmp_path: Path, synth_set: Path):
    write_png(tmp_path / "folder_set" / "oily" / "a.png")
    (tmp_path / "m.csv").write_text("path\n")
    assert detect_format(synth_set) == "shine"
    assert detect_format(tmp_path / "folder_set") == "folder"
    assert detect_format(tmp_path / "m.csv") == "csv"
    with pytest.raises(SourceError):
        read_dataset(tmp_path / "missing")


def test_every_reader_yields_the_same_record_type(tmp_path: Path, synth_set: Path):
    shutil.copytree(synth_set / "acne", tmp_path / "shine" / "acne")
    write_png(tmp_path / "folder" / "dry" / "a.png")
    write_png(tmp_path / "csv" / "a.png")
    (tmp_path / "csv" / "m.csv").write_text("path,redness\na.png,severe\n")
    kinds = [read_dataset(tmp_path / name).records[0] for name in ("shine", "folder", "csv")]
    assert [type(r).__name__ for r in kinds] == ["ImageRecord"] * 3
    assert [r.source_format for r in kinds] == ["shine", "folder", "csv"]
    assert all(set(r.targets.conditions) <= set(CONDITIONS) for r in kinds)
