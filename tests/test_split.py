"""The split: seeded, stratified over condition x severity, grouped so a flip never lands beside its original."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from skinserve.data.shine import read_shine
from skinserve.data.split import SPLITS, DatasetSplit, SplitMismatch, _allocation, split_dataset
from skinserve.data.synth import SynthConfig, write_synthetic_set


@pytest.fixture(scope="module")
def larger_set(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("split") / "shine"
    write_synthetic_set(root, SynthConfig(per_class=8, size=32, seed=3, flip_fraction=0.5))
    return read_shine(root).records


def test_a_group_is_never_on_two_sides(larger_set):
    split = split_dataset(larger_set, seed=0)
    sides = defaultdict(set)
    for record in larger_set:
        sides[record.group_id].add(split.assignments[record.relpath])
    assert any(len([r for r in larger_set if r.group_id == g]) > 1 for g in sides)  # flips exist
    assert all(len(s) == 1 for s in sides.values())


def test_every_image_is_assigned_once(larger_set):
    split = split_dataset(larger_set, seed=0)
    assert set(split.assignments) == {r.relpath for r in larger_set}
    assert set(split.assignments.values()) == set(SPLITS)


def test_each_condition_severity_cell_is_spread_over_all_three_splits(larger_set):
    split = split_dataset(larger_set, seed=0)
    by_stratum = defaultdict(Counter)
    groups_by_stratum = defaultdict(set)
    for record in larger_set:
        by_stratum[record.targets.stratum()][split.assignments[record.relpath]] += 1
        groups_by_stratum[record.targets.stratum()].add(record.group_id)
    single_cells = [s for s in by_stratum if "+" not in s]  # multi-label cells are too small to spread
    assert len(single_cells) == 22  # 7 conditions x 3 levels + healthy
    for stratum in single_cells:
        if len(groups_by_stratum[stratum]) >= 3:
            assert set(by_stratum[stratum]) == set(SPLITS), stratum


def test_overall_proportions_are_near_70_15_15(larger_set):
    counts = split_dataset(larger_set, seed=0).counts()
    total = sum(counts.values())
    assert abs(counts["train"] / total - 0.80) < 0.08
    assert abs(counts["val"] / total - 0.10) < 0.06
    assert abs(counts["test"] / total - 0.10) < 0.06


def test_the_same_seed_gives_the_same_split_and_another_seed_another(larger_set):
    first = split_dataset(larger_set, seed=11)
    assert split_dataset(list(reversed(larger_set)), seed=11).assignments == first.assignments
    assert split_dataset(larger_set, seed=12).assignments != first.assignments


@pytest.mark.parametrize("n", range(0, 30))
def test_allocation_sums_to_n_and_gives_each_split_a_group_when_it_can(n):
    sizes = _allocation(n, (0.7, 0.15, 0.15))
    assert sum(sizes) == n
    if n >= 3:
        assert min(sizes) >= 1
        assert sizes[0] >= sizes[1]


def test_saved_split_reloads_and_refuses_a_changed_dataset(synth_copy: Path, tmp_path: Path):
    records = read_shine(synth_copy).records
    split = split_dataset(records, seed=5)
    path = split.save(tmp_path / "split.json")
    assert DatasetSplit.load(path, records) == split
    image = records[0].path
    image.write_bytes(image.read_bytes() + b"\0")  # one byte more changes the fingerprint
    with pytest.raises(SplitMismatch, match=split.fingerprint[:12]):
        DatasetSplit.load(path, read_shine(synth_copy).records)


def test_rare_condition_combinations_are_pooled_so_they_reach_val_and_test(larger_set):
    split = split_dataset(larger_set, seed=0)
    rare = [r for r in larger_set if "+" in r.targets.stratum()]  # multi-label cells of one or two images
    assert len(rare) >= 6
    assert {split.assignments[r.relpath] for r in rare} == set(SPLITS)
