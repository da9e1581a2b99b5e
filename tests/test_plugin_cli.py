"""`agentkit plugin new NAME --kind ...` writes a package whose own tests pass as generated."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentkit.cli import cli
from agentkit.cli.plugin import write_skeleton

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


@pytest.mark.parametrize(("name", "why"), [
    ("import", r"'import' is a Python keyword; add a word, e\.g\. agentkit-import-plugin"),
    ("class", r"'class' is a Python keyword"),
    ("async", r"'async' is a Python keyword"),
    ("agentkit-9lives", r"'9lives' must start with a letter to be a Python name"),
    ("a" * 300, r"is 300 characters; use at most 60"),
    ("agentkit-tool", r"the generated tool plugin already uses the name 'tool'"),
])
def test_names_that_would_not_compile_are_refused_in_one_line(name: str, why: str, tmp_path: Path) -> None:
    # Before: each wrote a package that failed to import (or crashed writing a too-long file name).
    result = CliRunner().invoke(cli, ["plugin", "new", name, "--kind", "tool", "--dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: plugin name ") and result.output.count("\n") == 1
    assert re.search(why, result.output), result.output
    assert list(tmp_path.iterdir()) == []


def test_every_accepted_name_writes_modules_that_compile(tmp_path: Path) -> None:
    for name, kind in (("agentkit-match", "tool"), ("x", "llm"), ("agentkit-memory-plus", "knowledge"),
                       ("agentkit-" + "n" * 50, "knowledge")):
        root = write_skeleton(name, kind, tmp_path)
        for path in root.rglob("*.py"):
            compile(path.read_text(), str(path), "exec")
