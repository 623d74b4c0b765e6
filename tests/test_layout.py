"""The layout's rules, checked for real: imports run one way (import-linter), serving loads no torch, the stages'
commands arrive through entry points, and every error a client can see carries a documented status and code."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skinserve.errors import ERROR_CODES, ClientError, SkinserveError

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("skinserve", "train", "export", "loadtests", "benchmarks", "tests")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.is_file():
        pytest.fail("lint-imports is not installed (pip install -e '.[test]')")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The project's packages and its import-linter contracts, copied so a test can break them."""
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "fixtures"))
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_import_contracts_hold():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("skinserve/labels.py", "import train.config", "The library imports no stage and no test"),
        ("skinserve/serve/http.py", "import torch", "Serving is torch-free"),
        ("skinserve/serve/uploads.py", "import skinserve.modeling.metrics", "Serving is torch-free"),
        ("benchmarks/runtimes.py", "import tests.servers", "Shipped code and benchmarks import no test module"),
    ],
)
def test_a_wrong_import_breaks_its_contract(tree_copy: Path, module: str, line: str, contract: str):
    path = tree_copy / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    done = lint_imports(tree_copy)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{contract} BROKEN" in done.stdout


def test_the_serving_side_imports_no_torch():
    probe = (
        "import sys, skinserve.serve, skinserve.serve.http, skinserve.serve.model, skinserve.serve.predlog, "
        "skinserve.serve.process, skinserve.serve.schemas, skinserve.serve.settings, skinserve.serve.uploads, "
        "skinserve.serve.offload; "
        "assert not {'torch', 'timm', 'torchvision'} & set(sys.modules), sorted(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_stage_commands_arrive_through_entry_points():
    from importlib.metadata import entry_points

    from skinserve.cli import STAGE_COMMANDS, app

    declared = {entry.name: entry.value for entry in entry_points(group=STAGE_COMMANDS)}
    assert declared == {
        "train": "train.cli:train_command",
        "tune": "train.cli:tune_command",
        "export": "export.cli:export_command",
        "loadtest": "loadtests.runner:loadtest_command",
    }
    registered = {command.name for command in app.registered_commands}
    assert set(declared) <= registered


ERROR_MODULES = (
    "export.formats",
    "export.manifest",
    "loadtests.images",
    "loadtests.runner",
    "skinserve.config",
    "skinserve.data.download",
    "skinserve.data.sources",
    "skinserve.data.split",
    "skinserve.db.migrate",
    "skinserve.images",
    "skinserve.labels",
    "skinserve.manifest",
    "skinserve.modeling.checkpoint",
    "skinserve.modeling.model",
    "skinserve.serve.http",
    "skinserve.serve.process",
    "skinserve.serve.uploads",
    "skinserve.serve.queueing",
    "skinserve.serve.ratelimit",
    "skinserve.serve.quality",
    "skinserve.serve.analysis",
    "skinserve.faces",
    "skinserve.db.partitions",
    "skinserve.storage",
)


def test_every_error_class_has_the_one_root():
    modules = [importlib.import_module(name) for name in ERROR_MODULES]
    errors = [
        obj
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == module.__name__
    ]
    assert len(errors) >= 18
    assert all(issubclass(e, SkinserveError) for e in errors), [e for e in errors if not issubclass(e, SkinserveError)]
    client = [e for e in errors if issubclass(e, ClientError)]
    assert {e.code for e in client} <= set(ERROR_CODES)
    expected = {"too_large", "unsupported_type", "undecodable", "unauthorized", "overloaded", "rate_limited", "no_face"}
    assert expected <= {e.code for e in client}


def test_a_client_error_code_must_be_declared():
    assert ClientError("x", code="too_large").status == 413
    with pytest.raises(ValueError, match="unknown error code"):
        ClientError("x", code="no_such_code")
