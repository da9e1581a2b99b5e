"""`agentkit plugin new NAME --kind ...` writes a package whose own tests pass as generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentkit.cli import cli
from agentkit.plugin_cli import write_skeleton

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


@pytest.mark.parametrize("kind", ["knowledge", "tool", "llm"])
def test_each_skeleton_passes_its_own_tests(kind: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["plugin", "new", "agentkit-weather", "--kind", kind, "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "agentkit-weather"
    assert f"created {root}" in result.output
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md", "agentkit_weather/__init__.py", "pyproject.toml", f"tests/test_weather_{kind}.py",
    ]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == "agentkit-weather"
    assert project["project"]["entry-points"]["agentkit"] == {"weather": "agentkit_weather"}

    # Not installed: the skeleton is put on the path, and its tests register it directly.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert " passed" in run.stdout and "failed" not in run.stdout


def test_names_are_normalised_and_checked(tmp_path: Path) -> None:
    root = write_skeleton("unit_convert", "tool", tmp_path)
    assert root.name == "agentkit-unit-convert"
    assert (root / "agentkit_unit_convert" / "__init__.py").read_text().count("def unit_convert(") == 1
    with pytest.raises(ValueError, match="already exists"):
        write_skeleton("unit-convert", "tool", tmp_path)
    result = CliRunner().invoke(cli, ["plugin", "new", "Bad Name!", "--kind", "tool", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "plugin name 'Bad Name!': use lower-case letters" in result.output
    result = CliRunner().invoke(cli, ["plugin", "new", "x", "--kind", "router"])
    assert result.exit_code == 2 and "'router' is not one of" in result.output
