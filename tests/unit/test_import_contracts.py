"""The import-linter contracts in pyproject.toml hold for the tree, and each one really
fails `lint-imports` (and so `make lint`) when a module breaks it: a copy of the packages
gets one forbidden import, and the contract it breaks must be named as broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contract(words: str) -> str:
    """The one contract whose name contains `words` (names are long; the test says which)."""
    (name,) = [c["name"] for c in CONFIG["contracts"] if words in c["name"]]
    return str(name)


def _lint(tree: Path) -> tuple[int, str]:
    """Run `lint-imports` on `tree` (its own packages first on the path); code and output
    with whitespace folded (long contract names wrap to the terminal's width)."""
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_the_tree_keeps_every_contract() -> None:
    code, output = _lint(ROOT)
    assert code == 0, output
    assert f"Contracts: {len(CONFIG['contracts'])} kept, 0 broken" in output


@pytest.mark.parametrize(
    ("package", "statement", "contract"),
    [
        ("domain", "import litestar", "Litestar only in api"),
        ("domain", "import prefect", "Prefect only in flows"),
        ("domain", "from flows import reprocessing", "Layers:"),
        ("media", "import domain", "Layers:"),
        ("api", "import flows.reprocessing", "Layers:"),
        ("flows", "from api import schemas", "Layers:"),
        ("media", "import transcription", "separate libraries"),
        ("transcription", "from db import models", "know nothing of the database"),
        ("db", "import media.probe", "runs no ffmpeg"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, package: str, statement: str, contract: str
) -> None:
    for name in CONFIG["root_packages"]:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / package / "forbidden_import.py").write_text(f"{statement}\n")

    code, output = _lint(tmp_path)

    assert code != 0, output
    assert f"{_contract(contract)} BROKEN" in output, output
