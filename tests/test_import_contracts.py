"""The import contracts hold, and would catch an upward import or a cycle: each case
runs ``lint-imports`` on a copy of the package with one import added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter not installed")


def lint(
    tmp_path: Path, module: str | None = None, line: str = ""
) -> subprocess.CompletedProcess[str]:
    shutil.copytree(
        ROOT / "gatewayd", tmp_path / "gatewayd", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if module is not None:
        path = tmp_path / (module.replace(".", "/") + ".py")
        path.write_text(path.read_text() + "\n" + line + "\n")
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": str(LINT.parent)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_keeps_its_contracts(tmp_path: Path) -> None:
    run = lint(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 kept, 0 broken" in run.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    run = lint(tmp_path, "gatewayd.config.values", "import gatewayd.web.request  # noqa")
    assert run.returncode != 0
    assert "gatewayd.config is not allowed to import gatewayd.web" in run.stdout


def test_a_cycle_inside_a_package_breaks_the_acyclic_contract(tmp_path: Path) -> None:
    run = lint(tmp_path, "gatewayd.upstream.leanhttp", "import gatewayd.upstream.pool  # noqa")
    assert run.returncode != 0
    assert "No cycles are allowed in gatewayd.upstream" in run.stdout
