"""`skinserve catalog ...` as a user runs it, on SQLite and Postgres; the catalog imports no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from skinserve.catalog.commands import catalog_app
from tests.catalog_data import ANNEX_III, COSING, SEPHORA_PRODUCTS, SEPHORA_REVIEWS, SKINCARE_CLEAN


@pytest.fixture
def cli(registry_url, monkeypatch):
    monkeypatch.setenv("SKINSERVE_DATABASE_URL", registry_url)
    runner = CliRunner()

    def invoke(*args: str, expect: int = 0):
        result = runner.invoke(catalog_app, [str(a) for a in args])
        assert result.exit_code == expect, f"{args} exited {result.exit_code}\n{result.output}"
        return result

    return invoke


def test_ingest_reports_counts_rate_and_rejections_then_adds_nothing_the_second_time(cli, tmp_path):
    first = cli("ingest", SKINCARE_CLEAN)
    assert "skincare-clean (cp1252)" in first.output and "added 8" in first.output and "rows/s" in first.output
    again = cli("ingest", SKINCARE_CLEAN, "--json")
    summary = json.loads(again.output.strip().splitlines()[-1])
    assert (summary["added"], summary["unchanged"], summary["rejected_count"]) == (0, 8, 0)
    broken = tmp_path / "product_info.csv"
    broken.write_text(SEPHORA_PRODUCTS.read_text() + 'P9,"never closed\n')
    rejects = tmp_path / "rejects.csv"
    result = cli("ingest", broken, "--rejects", rejects)
    assert "rejected line 10:" in result.output
    assert rejects.read_text().splitlines()[1].startswith("10,")


def test_a_file_that_cannot_be_ingested_exits_2_with_the_reason(cli, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "is empty" in cli("ingest", empty, expect=2).output
    assert "unknown format" in cli("ingest", SKINCARE_CLEAN, "--format", "nope", expect=2).output


def test_analyze_prints_each_entry_with_its_match_and_targets(cli):
    cli("ingest", COSING)
    cli("ingest", ANNEX_III)
    result = cli("analyze", "Aqua (Water), Niacinamid, Salicylic Acid 2%, Parfum. *Organic")
    assert "fuzzy NIACINAMIDE (95)" in result.output
    assert "annex III III/98,V/3" in result.output
    assert "-> acne: BHA" in result.output
    assert "not for sensitive skin" in result.output
    assert "left out: '*Organic' (footnote)" in result.output
    as_json = json.loads(cli("analyze", "Retinal", "--json").output)
    assert as_json["ingredients"][0]["match"]["kind"] == "none"


def test_recommend_and_summary(cli):
    for path in (COSING, SEPHORA_PRODUCTS, SEPHORA_REVIEWS):
        cli("ingest", path)
    result = cli("recommend", "--conditions", "acne:severe,redness:mild", "--skin-type", "oily", "--limit", "2")
    assert result.output.splitlines()[0] == "for acne (severe, weight 3), redness (mild, weight 1)"
    assert "1. Peter Thomas Roth Clarifying Blemish Serum" in result.output
    assert "Salicylic Acid 2% -> acne:" in result.output
    summary = json.loads(cli("summary", "--json").output)
    assert (summary["products"], summary["reviews"], summary["reviews_linked"]) == (8, 6, 6)
    assert "conditions.0.name" in cli("recommend", "--conditions", "sunburn", expect=2).output


def test_an_unmigrated_registry_is_named_with_the_command_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINSERVE_DATABASE_URL", f"sqlite:///{tmp_path / 'new.db'}")
    result = CliRunner().invoke(catalog_app, ["summary"])
    assert result.exit_code == 2 and "skinserve db upgrade" in result.output


def test_the_catalog_is_a_sub_command_of_skinserve_and_imports_no_torch(sqlite_url):
    code = (
        "import sys; import skinserve.catalog.commands, skinserve.catalog.routes, skinserve.catalog.ingest; "
        "print(sorted(m for m in ('torch', 'timm', 'skinserve.model') if m in sys.modules))"
    )
    clean = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert clean.stdout.strip() == "[]"
    env = os.environ | {"SKINSERVE_DATABASE_URL": sqlite_url}
    result = subprocess.run(
        [sys.executable, "-m", "skinserve", "catalog", "summary"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "0 products" in result.stdout
