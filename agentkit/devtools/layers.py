"""Checks agentkit's architecture: every import goes down the layers in LAYERS, and no modules import each other in a loop.

Run `python -m agentkit.devtools.layers` (tests/test_layers.py does): it parses every module under
agentkit/ with `ast`, so it sees imports at any depth (inside functions too, where agentkit puts
heavy or command-only imports) and under `if TYPE_CHECKING:`, and exits 1 naming each offending
import with its file and line.

- A layer violation is an import of a module in a higher layer than the importer's, type-only
  imports included: a store that merely names the CLI's `Context` in an annotation still knows
  about the layer above it.
- A cycle is a loop of imports that run (at module level or when a function runs), among agentkit
  modules. Imports under `if TYPE_CHECKING:` never run and are left out of cycles. An import of
  `a.b.c` counts as an edge to `a.b.c` only, not to its parent packages whose `__init__` Python
  also runs: a package that re-exports its submodules is not a cycle with them.
- Imports spelled as strings (`importlib.import_module("agentkit.x")`, the plugin registry's
  "module:attr" targets) are not seen. They are how the registry and the CLI's lazy commands stay
  cheap; what they name is checked where it is defined.

ALLOWED lists the few imports that break a rule on purpose, each with its reason; an entry that no
longer matches any import is itself reported, so the list cannot go stale.

It also holds modules to a size a reader can take in: one over MAX_LINES lines must say in its
docstring why it is one module, naming its length ("Over 600 lines because ...", "about 620 lines").
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The layers, lowest first; a module may import from its own layer and those below it. A module
#: belongs to the entry with the longest matching prefix (`agentkit.tune.settings` before `agentkit.tune`).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # What everything shares: data types, errors, text analysis, the config models and the registry
    # that resolves backends by name (it imports them from strings, so it depends on none of them).
    # `agentkit.tune.settings` is the `tune:` section of the config, read by config.py.
    ("base", ("agentkit", "agentkit.types", "agentkit.errors", "agentkit.text", "agentkit.config",
              "agentkit.tune.settings", "agentkit.plugins", "agentkit.tools")),
    # The parts an agent is built from, and the stores of chats and logs.
    ("components", ("agentkit.llm", "agentkit.knowledge", "agentkit.ingest", "agentkit.reasoning",
                    "agentkit.sessions", "agentkit.logs")),
    ("routing", ("agentkit.routing",)),
    ("agent", ("agentkit.agent",)),
    # What is built on an agent: measuring it, adapting its model, serving it, embedding it elsewhere.
    ("applications", ("agentkit.eval", "agentkit.tune", "agentkit.server", "agentkit.integrations",
                      "agentkit.mcp_server", "agentkit.display", "agentkit.contracts", "agentkit.testing")),
    # The `agentkit` command (and its chat REPL): nothing below may import from it.
    ("cli", ("agentkit.cli",)),
    ("devtools", ("agentkit.devtools",)),
)

_FACADE = ("the package re-exports its public names lazily (PEP 562 __getattr__, so `import agentkit` "
           "stays cheap); this import is there for type checkers only and never runs")

#: (importer, imported) -> why this import may break a rule.
ALLOWED: dict[tuple[str, str], str] = {
    ("agentkit", "agentkit.agent"): _FACADE,
    ("agentkit", "agentkit.knowledge.base"): _FACADE,
    ("agentkit", "agentkit.knowledge.memory"): _FACADE,
    ("agentkit", "agentkit.llm.base"): _FACADE,
}

#: A module longer than this must say why in its docstring (see _LENGTH_REASON).
MAX_LINES = 600
#: How such a docstring names its length: "600 lines", "about 980 lines".
_LENGTH_REASON = re.compile(r"\b\d{3,}\s+lines\b")

#: How this module is named in messages (run with -m, its __name__ is "__main__").
_ME = "agentkit.devtools.layers"


@dataclass(frozen=True)
class Import:
    """One import statement's edge between two modules of the package."""

    importer: str
    imported: str
    path: Path
    line: int
    kind: str  # "module" (runs on import), "lazy" (runs when a function runs), "typing" (never runs)

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Problem:
    message: str

    def __str__(self) -> str:
        return self.message


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module under the package directory `root`, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    """Collects (dotted name, line, kind) of every import; `kind` from the enclosing scope."""

    def __init__(self, importer: str, is_package: bool) -> None:
        self.importer = importer
        self.package = importer if is_package else importer.rpartition(".")[0]
        self.found: list[tuple[str, int, str]] = []
        self._function_depth = 0
        self._typing_depth = 0

    def _kind(self) -> str:
        if self._typing_depth:
            return "typing"
        return "lazy" if self._function_depth else "module"

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._function_depth += 1
        self.generic_visit(node)
        self._function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._typing_depth += 1
        for child in node.body:
            self.visit(child)
        self._typing_depth -= 1
        for child in node.orelse:  # the `else:` of TYPE_CHECKING runs
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self._kind()))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.package
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        for alias in node.names:
            # `from a import b`: the submodule a.b when there is one, else a itself (resolved later).
            self.found.append((f"{base}.{alias.name}" if alias.name != "*" else base, node.lineno, self._kind()))


def imports(root: Path, package: str) -> list[Import]:
    """Every import between modules of `package` (whose directory is `root`), in file order."""
    modules = module_names(root, package)
    out: list[Import] = []
    for name, path in modules.items():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as exc:
            raise SystemExit(f"{path}:{exc.lineno}: cannot parse ({exc.msg}); fix the syntax error first") from exc
        collector = _Collector(name, path.name == "__init__.py")
        collector.visit(tree)
        for dotted, line, kind in dict.fromkeys(collector.found):  # `from a import b, c` is one edge
            target = dotted
            while target and target not in modules:  # `pkg.mod.attr` -> `pkg.mod`
                target = target.rpartition(".")[0]
            if target and target != name and (target == package or target.startswith(package + ".")):
                out.append(Import(name, target, path, line, kind))
    return list(dict.fromkeys(out))


def layer_of(module: str, layers: Sequence[tuple[str, Sequence[str]]] = LAYERS) -> tuple[int, str] | None:
    """(index, name) of the layer `module` belongs to, by its longest listed prefix; None if unlisted.

    The top-level package (a name without dots) stands for its own `__init__` only, not for everything in it."""
    best: tuple[int, int, str] | None = None
    for index, (layer, prefixes) in enumerate(layers):
        for prefix in prefixes:
            inside = module == prefix or ("." in prefix and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index, layer)
    return None if best is None else (best[1], best[2])


def layer_problems(found: Iterable[Import], modules: Iterable[str], layers: Sequence[tuple[str, Sequence[str]]],
                   allowed: Mapping[tuple[str, str], str]) -> Iterator[Problem]:
    for module in modules:
        if layer_of(module, layers) is None:
            yield Problem(f"{module} is in no layer; add it (or a package above it) to LAYERS in {_ME}")
    for imp in found:
        mine, theirs = layer_of(imp.importer, layers), layer_of(imp.imported, layers)
        if mine is None or theirs is None or theirs[0] <= mine[0] or (imp.importer, imp.imported) in allowed:
            continue
        yield Problem(f"{imp.where()}: {imp.importer} (layer {mine[1]}) imports {imp.imported} (layer {theirs[1]}, "
                      f"higher){' for type checking' if imp.kind == 'typing' else ''}; move the code it needs down, "
                      f"or move {imp.importer} up")


def cycles(found: Iterable[Import], allowed: Mapping[tuple[str, str], str]) -> list[list[Import]]:
    """One loop of run-time imports through each group of modules that import each other (Tarjan's SCC)."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in found:
        if imp.kind != "typing" and (imp.importer, imp.imported) not in allowed:
            graph.setdefault(imp.importer, {}).setdefault(imp.imported, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:  # recursion depth is bounded by the number of modules (a few hundred)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    loops = []
    for group in groups:
        # The shortest loop through the group's first module (breadth-first within the group).
        start = min(group)
        paths: dict[str, list[Import]] = {start: []}
        queue = [start]
        loop: list[Import] | None = None
        while queue and loop is None:
            v = queue.pop(0)
            for w, imp in sorted(graph.get(v, {}).items()):
                if w == start:
                    loop = [*paths[v], imp]
                    break
                if w in group and w not in paths:
                    paths[w] = [*paths[v], imp]
                    queue.append(w)
        assert loop is not None
        loops.append(loop)
    return loops


def length_problems(modules: Mapping[str, Path], max_lines: int = MAX_LINES) -> Iterator[Problem]:
    """Modules over `max_lines` lines whose docstring does not say why they are that long."""
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines <= max_lines:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not _LENGTH_REASON.search(doc):
            yield Problem(f"{path}: {name} has {lines} lines, over {max_lines}, and its docstring does not say why; "
                          f"split it, or add a sentence such as \"Over {max_lines} lines because ...\"")


def check(root: Path, package: str, layers: Sequence[tuple[str, Sequence[str]]] = LAYERS,
          allowed: Mapping[tuple[str, str], str] = ALLOWED, max_lines: int = MAX_LINES) -> list[Problem]:
    """Everything wrong with `package` (directory `root`): imports against the layers, cycles, stale
    ALLOWED entries, long modules that do not say why."""
    modules = module_names(root, package)
    found = imports(root, package)
    problems = list(layer_problems(found, modules, layers, allowed))
    problems += length_problems(modules, max_lines)
    for loop in cycles(found, allowed):
        chain = " -> ".join([loop[0].importer, *(imp.imported for imp in loop)])
        sites = "; ".join(f"{imp.importer} imports {imp.imported} at {imp.where()} ({imp.kind})" for imp in loop)
        problems.append(Problem(f"import cycle {chain}: {sites}; break one of these imports "
                                f"(move the shared code to the lower module)"))
    edges = {(imp.importer, imp.imported) for imp in found}
    for pair, reason in allowed.items():
        if pair not in edges:
            problems.append(Problem(f"ALLOWED in {_ME} lists {pair[0]} -> {pair[1]} ({reason}), "
                                    f"but no such import exists any more; remove the entry"))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentkit.devtools.layers", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the package directory to check (default: the installed agentkit)")
    parser.add_argument("--package", default="agentkit", help="its import name")
    args = parser.parse_args(argv)
    problems = check(args.root, args.package)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {args.package}; LAYERS in {_ME} says which way imports go",
              file=sys.stderr)
        return 1
    print(f"{args.package}: {len(module_names(args.root, args.package))} modules; every import goes down the layers, no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
