"""agentkit's imports go down the layers of agentkit/devtools/layers.py, in no cycle, and the check
finds what it claims to find: planted upward imports, cycles (lazy ones too) and long modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from agentkit.devtools import layers

LAYERS = (("low", ("pkg", "pkg.low")), ("high", ("pkg.high",)))


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def _problems(root: Path, layers_table: tuple = LAYERS, allowed: dict | None = None) -> list[str]:
    return [str(p) for p in layers.check(root, "pkg", layers_table, allowed or {})]


def test_agentkit_passes_its_own_check() -> None:
    # As a developer runs it: a non-zero exit names each import that breaks a rule.
    run = subprocess.run([sys.executable, "-m", "agentkit.devtools.layers"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "no cycles" in run.stdout


def test_every_module_is_in_a_layer_and_the_cli_is_the_top() -> None:
    root = Path(layers.__file__).resolve().parent.parent
    modules = layers.module_names(root, "agentkit")
    assert "agentkit.cli.context" in modules and "agentkit.cli.repl" in modules
    top = layers.layer_of("agentkit.cli")
    assert top is not None
    for name in modules:
        found = layers.layer_of(name)
        assert found is not None, name
        if not name.startswith(("agentkit.cli", "agentkit.devtools")):
            assert found[0] < top[0], name
    # Nothing below the CLI imports from it, type-only imports included.
    for imp in layers.imports(root, "agentkit"):
        if imp.imported == "agentkit.cli" or imp.imported.startswith("agentkit.cli."):
            assert imp.importer.startswith("agentkit.cli"), imp.where()


def test_a_planted_lazy_cycle_is_found_with_both_import_sites(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "low/__init__.py": "",
        "low/a.py": "from pkg.low import b\n",
        "low/b.py": """
            def later():
                from pkg.low.a import thing  # lazy: runs when later() runs
                return thing
        """,
    })
    problems = _problems(root)
    assert len(problems) == 1
    assert "import cycle pkg.low.a -> pkg.low.b -> pkg.low.a" in problems[0]
    assert f"{root / 'low' / 'a.py'}:1" in problems[0] and f"{root / 'low' / 'b.py'}:3" in problems[0]


def test_type_checking_imports_make_no_cycle_but_still_count_for_layers(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "low/__init__.py": "",
        "low/a.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.high.cmd import Context
        """,
        "high/__init__.py": "",
        "high/cmd.py": "import pkg.low.a\nContext = object\n",
    })
    problems = _problems(root)
    assert len(problems) == 1, problems
    assert "pkg.low.a (layer low) imports pkg.high.cmd (layer high, higher) for type checking" in problems[0]
    assert f"{root / 'low' / 'a.py'}:4" in problems[0]


def test_an_upward_import_inside_a_function_is_a_layer_violation(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "low.py": "def f():\n    from .high import g\n    return g\n",
        "high.py": "def g():\n    return 1\n",
    })
    problems = _problems(root)
    assert problems == [f"{root / 'low.py'}:2: pkg.low (layer low) imports pkg.high (layer high, higher); "
                        "move the code it needs down, or move pkg.low up"]


def test_allowed_imports_need_a_reason_and_a_stale_entry_is_reported(tmp_path: Path) -> None:
    root = _package(tmp_path, {"low.py": "import pkg.high\n", "high.py": "import pkg.low\n"})
    assert len(_problems(root)) == 2  # the upward import and the cycle it closes
    assert _problems(root, allowed={("pkg.low", "pkg.high"): "a reason"}) == []
    stale = _problems(root, allowed={("pkg.low", "pkg.high"): "a reason", ("pkg.high", "pkg.nowhere"): "gone"})
    assert len(stale) == 1 and "no such import exists any more" in stale[0]


def test_an_unlisted_module_is_reported(tmp_path: Path) -> None:
    root = _package(tmp_path, {"low.py": "", "stray.py": ""})
    assert _problems(root) == ["pkg.stray is in no layer; add it (or a package above it) to LAYERS in agentkit.devtools.layers"]


def test_a_long_module_must_say_why(tmp_path: Path) -> None:
    body = "x = 1\n" * 20
    root = _package(tmp_path, {"low.py": '"""Short."""\n' + body})
    assert any("has 21 lines, over 10" in p for p in map(str, layers.check(root, "pkg", LAYERS, {}, max_lines=10)))
    (root / "low.py").write_text('"""Long.\n\nOver 10 lines because this is a test (about 100 lines later)."""\n' + body)
    assert layers.check(root, "pkg", LAYERS, {}, max_lines=10) == []
