"""User glossaries: a CSV or YAML file of terms and their definitions, looked up like a dictd
database (case-insensitive; exact, prefix, lev and fuzzy matching).

CSV: a header row with a `term` column and a `definition` column (`word`/`headword` and
`meaning`/`gloss` are accepted too); a term may have several rows, one per sense. YAML: a mapping
`term: definition` (a list of definitions for several senses), or a list of
`{term: ..., definition: ...}` items.
"""

from __future__ import annotations

import csv
import difflib
from pathlib import Path
from typing import Any

from agentkit.errors import ConfigError, SourceUnavailable
from agentkit.knowledge.dict_protocol import Definition

GLOSSARY_STRATEGIES = ("exact", "prefix", "lev", "fuzzy", "substring")
_TERM_COLUMNS = ("term", "word", "headword", "name")
_DEFINITION_COLUMNS = ("definition", "meaning", "gloss", "description")


def normalize_term(term: str) -> str:
    return " ".join(term.casefold().split()).strip("\"'“”‘’`")


def within_one_edit(a: str, b: str) -> bool:
    """True when `a` and `b` differ by at most one insertion, deletion, substitution or
    transposition of adjacent characters."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    i = 0
    while i < min(la, lb) and a[i] == b[i]:
        i += 1
    if la == lb:
        return a[i + 1:] == b[i + 1:] or (a[i:i + 2] == b[i:i + 2][::-1] and a[i + 2:] == b[i + 2:])
    longer, shorter = (a, b) if la > lb else (b, a)
    return longer[i + 1:] == shorter[i:]


class Glossary:
    """A user glossary file; `name` (the file's stem) plays the part of a database name."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise SourceUnavailable(f"glossary {self.path} does not exist; fix the path in the source's `glossaries`")
        self.name = name or self.path.stem
        self.description = f"Glossary {self.path.name}"
        #: normalized term -> (term as written, its definitions in file order)
        self._terms: dict[str, tuple[str, list[str]]] = {}
        suffix = self.path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            rows = self._read_csv("\t" if suffix == ".tsv" else ",")
        elif suffix in (".yaml", ".yml"):
            rows = self._read_yaml()
        else:
            raise ConfigError(f"glossary {self.path}: unknown format {suffix!r}; use .csv, .tsv, .yaml or .yml")
        for term, definition in rows:
            term, definition = str(term).strip(), str(definition).strip()
            if term and definition:
                self._terms.setdefault(normalize_term(term), (term, []))[1].append(definition)

    def __len__(self) -> int:
        return len(self._terms)

    def __repr__(self) -> str:
        return f"Glossary({str(self.path)!r}, {len(self)} terms)"

    def _read_csv(self, delimiter: str) -> list[tuple[str, str]]:
        with open(self.path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = [h.strip().lower() for h in next(reader, [])]
            term_col = next((header.index(c) for c in _TERM_COLUMNS if c in header), None)
            def_col = next((header.index(c) for c in _DEFINITION_COLUMNS if c in header), None)
            if term_col is None or def_col is None:
                raise ConfigError(
                    f"glossary {self.path}: the first row must name the columns, e.g. 'term,definition'; "
                    f"got {','.join(header) or 'nothing'}"
                )
            return [
                (row[term_col], row[def_col]) for row in reader if len(row) > max(term_col, def_col)
            ]

    def _read_yaml(self) -> list[tuple[str, str]]:
        import yaml

        try:
            data: Any = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"glossary {self.path}: not valid YAML: {exc}") from None
        rows: list[tuple[str, str]] = []

        def add(term: Any, definition: Any, where: str) -> None:
            if isinstance(definition, list):
                rows.extend((str(term), str(d)) for d in definition)
            elif isinstance(definition, (str, int, float)):
                rows.append((str(term), str(definition)))
            else:
                raise ConfigError(f"glossary {self.path}: {where}: a definition must be text or a list of texts")

        if isinstance(data, dict):
            for term, definition in data.items():
                add(term, definition, str(term))
        elif isinstance(data, list):
            for i, item in enumerate(data):
                if not isinstance(item, dict) or "term" not in item or "definition" not in item:
                    raise ConfigError(f"glossary {self.path}: item {i + 1}: expected {{term: ..., definition: ...}}")
                add(item["term"], item["definition"], f"item {i + 1}")
        elif data is not None:
            raise ConfigError(
                f"glossary {self.path}: expected a mapping of term to definition or a list of "
                "{term, definition} items"
            )
        return rows

    def define(self, word: str) -> list[Definition]:
        """One Definition per sense of `word` (case-insensitive); `text` is the definition alone."""
        found = self._terms.get(normalize_term(word))
        if not found:
            return []
        term, definitions = found
        return [Definition(term, self.name, self.description, d) for d in definitions]

    def match(self, word: str, strategy: str = "exact") -> list[tuple[str, str]]:
        """(glossary name, term) pairs: exact, prefix, lev (one edit), fuzzy (similar spelling,
        best first) or substring."""
        key = normalize_term(word)
        if not key:
            return []
        if strategy == "exact":
            keys = [key] if key in self._terms else []
        elif strategy == "prefix":
            keys = sorted(k for k in self._terms if k.startswith(key))
        elif strategy == "lev":
            keys = sorted(k for k in self._terms if k != key and within_one_edit(k, key))
        elif strategy == "fuzzy":
            keys = difflib.get_close_matches(key, list(self._terms), n=5, cutoff=0.75)
        elif strategy == "substring":
            keys = sorted(k for k in self._terms if key in k)
        else:
            raise ValueError(f"unknown strategy {strategy!r}; one of: {', '.join(GLOSSARY_STRATEGIES)}")
        return [(self.name, self._terms[k][0]) for k in keys]

    def close(self) -> None:
        pass
