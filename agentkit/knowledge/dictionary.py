"""Dictionaries as a knowledge source: a DICT server, local dictd databases and user glossaries,
answering definitional questions with one passage per sense.

The protocol client is in `dict_protocol.py`, the dictd file reader in `dictd_files.py`, the
glossary reader in `glossary.py`, the reading of definitional questions in
`agentkit/reasoning/definitions.py`; this module takes the headword from a question, looks it up
(with a fuzzy fallback for misspellings) and splits each definition into senses.

Sense rules, per entry:

- WordNet (`wn`): a sense starts at a line `n 1: ...`, `adj 2: ...` or `3: ...` (the part of
  speech carries over until the next one); its continuation lines belong to it. The text keeps
  the gloss, the examples and the `[syn: ...]`/`[ant: ...]` lists.
- Everything else (GCIDE, FOLDOC, most dictd databases): the header (the first line, longer
  while a `[` of the etymology is open) is dropped, so are source-tag lines (`[1913 Webster]`)
  and date lines (`(1995-04-16)`). A paragraph starting `1.`, `2.`, ... starts a sense and
  later plain paragraphs continue it; quotations (indented deeper than the body) are dropped;
  a paragraph starting `{Phrase}` or `-- {Derived}` (GCIDE's run-in phrases) ends the sense. An
  entry without numbered paragraphs is one sense (its header, if it has no body).
- Glossaries: each definition (CSV row, YAML list item) is one sense.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol
from urllib.parse import quote as urlquote

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentkit.errors import KnowledgeSourceError
from agentkit.knowledge.base import Filters, matches
from agentkit.knowledge.dict_protocol import DEFAULT_PORT, Definition, DictClient, DictProtocolError, parse_server
from agentkit.knowledge.dictd_files import DictdFiles
from agentkit.knowledge.glossary import Glossary
from agentkit.reasoning.definitions import asked_words
from agentkit.types import Passage

log = logging.getLogger(__name__)

# --- headword extraction ---------------------------------------------------------------------

def extract_headwords(question: str) -> list[str]:
    """Candidate headwords for a definitional question, most likely first.

    The question is read by `agentkit.reasoning.definitions` (the one reader of definitional
    phrasings, which the routing policy uses too): "What does 'serendipity' mean?" and "hi, could
    you tell me what serendipity means in plain English?" give ["serendipity"]; "What is a
    lambaste?" gives ["lambaste", "a lambaste"] (the article is tried last); a bare short term
    gives itself; a long question of another shape gives [].
    """
    return asked_words(question)


def extract_headword(question: str) -> str | None:
    """The most likely headword of `question`, or None."""
    found = extract_headwords(question)
    return found[0] if found else None


def inflection_variants(word: str) -> list[str]:
    """Base forms to try when a word is not in the dictionary: plurals and -s forms."""
    w = word
    out = []
    if w.endswith("ies") and len(w) > 4:
        out.append(w[:-3] + "y")
    if w.endswith(("ses", "xes", "zes", "ches", "shes")) and len(w) > 4:
        out.append(w[:-2])
    if w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        out.append(w[:-1])
    return [v for v in dict.fromkeys(out) if v != w]


# --- senses ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sense:
    text: str
    pos: str = ""


_WN_SENSE = re.compile(r"^\s+(?:(?P<pos>n|v|adj|adv|a|s|r)\s+)?(?P<num>\d+)?\s*:\s*(?P<rest>.*)$")
_WN_FIRST = re.compile(r"^\s+(?:n|v|adj|adv|a|s|r)\s+(?:\d+\s*)?:")
_TAG_LINE = re.compile(r"^\s*\[[^\]]*\]\s*$")
_DATE_LINE = re.compile(r"^\s*\(\d{4}-\d{2}-\d{2}\)\s*$")
_NUMBERED = re.compile(r"^\s*\d+\.\s+")
_RUN_IN = re.compile(r"^\s*(?:--\s*)?\{")


def _squash(text: str) -> str:
    return " ".join(text.split())


def split_senses(definition: Definition) -> list[Sense]:
    """The senses of one definition, in order (see the module docstring for the rules)."""
    text = definition.text.strip("\n")
    if not text.strip():
        return []
    lines = text.split("\n")
    if len(lines) > 1 and _WN_FIRST.match(lines[1]):
        return _wordnet_senses(lines[1:])
    return _generic_senses(lines)


def _wordnet_senses(lines: list[str]) -> list[Sense]:
    senses: list[tuple[str, list[str]]] = []
    pos = ""
    for line in lines:
        m = _WN_SENSE.match(line)
        if m and (m.group("pos") or m.group("num")):
            pos = m.group("pos") or pos
            senses.append((pos, [m.group("rest")]))
        elif senses:
            senses[-1][1].append(line)
    return [Sense(_squash(" ".join(parts)), pos) for pos, parts in senses if _squash(" ".join(parts))]


def _generic_senses(lines: list[str]) -> list[Sense]:
    depth, i = 0, 0
    while i < len(lines):
        depth += lines[i].count("[") - lines[i].count("]")
        i += 1
        if depth <= 0:
            break
    header, body = lines[:i], [ln for ln in lines[i:] if not _TAG_LINE.match(ln) and not _DATE_LINE.match(ln)]
    paragraphs: list[list[str]] = [[]]
    for line in body:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    paragraphs = [p for p in paragraphs if p]
    senses: list[list[str]] = []
    current: list[str] | None = None
    base = None
    for para in paragraphs:
        first = para[0]
        indent = len(first) - len(first.lstrip())
        if base is None:
            base = indent
        # A derived-forms line ("-- {Lu*gu"bri*ous*ly}, adv.") ends the paragraph it sits in.
        cut = next((j for j, ln in enumerate(para) if j and _RUN_IN.match(ln) and ln.lstrip().startswith("--")), None)
        if cut is not None:
            para = para[:cut]
        if _NUMBERED.match(first):
            current = [_NUMBERED.sub("", first, count=1), *para[1:]]
            senses.append(current)
        elif _RUN_IN.match(first):
            current = None
        elif indent > base + 4:
            continue  # a quotation
        elif current is not None:
            current.extend(para)
        elif not senses:
            current = list(para)
            senses.append(current)
    out = [Sense(_squash(" ".join(s))) for s in senses]
    out = [s for s in out if s.text]
    if not out:
        rest = _squash(" ".join(header[1:] if len(header) > 1 else header))
        if rest:
            out = [Sense(rest)]
    return out


# --- backends ----------------------------------------------------------------------------------


class _Backend(Protocol):
    def databases(self) -> list[str] | None: ...

    def define(self, word: str, dbs: set[str] | None) -> list[Definition]: ...

    def match(self, word: str, strategy: str, dbs: set[str] | None) -> list[tuple[str, str]]: ...

    def uri(self, db: str, word: str) -> str: ...

    def close(self) -> None: ...


class _ServerBackend:
    """A DICT server; `databases` are asked in order ("*" = all the server has)."""

    def __init__(self, client: DictClient, databases: Sequence[str]) -> None:
        self.client = client
        self.dbs = list(databases) or ["*"]

    def databases(self) -> list[str] | None:
        return None if "*" in self.dbs else self.dbs

    def _targets(self, dbs: set[str] | None) -> list[str]:
        if dbs is None:
            return self.dbs
        if "*" in self.dbs:
            return sorted(dbs)
        return [d for d in self.dbs if d in dbs]

    def define(self, word: str, dbs: set[str] | None) -> list[Definition]:
        return [d for db in self._targets(dbs) for d in self._ask(self.client.define, db, dbs, word)]

    def match(self, word: str, strategy: str, dbs: set[str] | None) -> list[tuple[str, str]]:
        return [m for db in self._targets(dbs) for m in self._ask(self.client.match, db, dbs, word, strategy)]

    def _ask(self, command: Any, db: str, dbs: set[str] | None, *args: str) -> list[Any]:
        try:
            return list(command(*args, db=db))
        except DictProtocolError as exc:
            # A `db` filter may name a database this server lacks: no passages, not an error.
            if exc.code == 550 and dbs is not None and db not in self.dbs:
                return []
            raise

    def uri(self, db: str, word: str) -> str:
        host = self.client.host if ":" not in self.client.host else f"[{self.client.host}]"
        port = "" if self.client.port == DEFAULT_PORT else f":{self.client.port}"
        return f"dict://{host}{port}/{urlquote(db, safe='')}/{urlquote(word, safe='')}"

    def close(self) -> None:
        self.client.close()


class _LocalBackend:
    """dictd databases read from files, and glossaries: anything with name/define/match."""

    def __init__(self, books: Sequence[DictdFiles | Glossary]) -> None:
        self.books = {b.name: b for b in books}

    def databases(self) -> list[str] | None:
        return list(self.books)

    def define(self, word: str, dbs: set[str] | None) -> list[Definition]:
        return [d for name, b in self.books.items() if dbs is None or name in dbs for d in b.define(word)]

    def match(self, word: str, strategy: str, dbs: set[str] | None) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for name, b in self.books.items():
            if dbs is not None and name not in dbs:
                continue
            if isinstance(b, Glossary) and strategy == "lev":
                out += b.match(word, "lev") or b.match(word, "fuzzy")
            elif strategy in ("exact", "prefix", "lev", "substring"):
                out += b.match(word, strategy)
        return out

    def uri(self, db: str, word: str) -> str:
        b = self.books[db]
        if isinstance(b, Glossary):
            return f"glossary://{urlquote(str(b.path.resolve()))}#{urlquote(word, safe='')}"
        return f"{b.data_path.resolve().as_uri()}#{urlquote(word, safe='')}"

    def close(self) -> None:
        for b in self.books.values():
            b.close()


# --- the source --------------------------------------------------------------------------------


class DictionarySourceConfig(BaseModel):
    """A dictionary: a DICT server, local dictd databases and/or user glossaries."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["dictionary"] = "dictionary"
    description: str = (
        "A dictionary: definitions, meanings and senses of words and terms, with synonyms and usage examples."
    )
    #: A DICT server: `dict://host:port` or `host:port` (port 2628 when left out).
    server: str | None = None
    #: Databases to search, in order: server database names ("wn", "gcide") and/or the names of
    #: `files`; "*" = all of them.
    databases: list[str] = Field(default_factory=lambda: ["*"])
    #: dictd databases read without a server: `/usr/share/dictd/wn` (or its .index), or a bare
    #: name looked for under data_dir and /usr/share/dictd.
    files: list[str] = Field(default_factory=list)
    #: User glossaries: CSV (term,definition header) or YAML (term: definition) files.
    glossaries: list[str] = Field(default_factory=list)
    timeout: float = Field(5.0, gt=0, description="Seconds a DICT server has for each command.")
    max_senses: int = Field(8, ge=1, description="Senses kept per database and word.")
    #: Look up the closest spelling (MATCH lev, then prefix) when a word is not found.
    fuzzy: bool = True

    @field_validator("server")
    @classmethod
    def _server_address(cls, value: str | None) -> str | None:
        if value:
            parse_server(value)  # raises ValueError with the fix
        return value or None

    @model_validator(mode="after")
    def _something_to_search(self) -> DictionarySourceConfig:
        if not (self.server or self.files or self.glossaries):
            raise ValueError(
                "a dictionary source needs `server` (dict://host:2628), `files` (e.g. /usr/share/dictd/wn) "
                "or `glossaries` (CSV/YAML files)"
            )
        return self


class DictionarySource:
    """Answers "what does X mean" with one passage per sense of X, from every backend configured.

    Passages: id `db:word:n` (n = the sense's position in that database's entries), title
    `word (db)`, uri `dict://host/db/word` (server), `file:///…/wn.dict.dz#word` (files) or
    `glossary:///…/terms.csv#term`, metadata {db, headword, sense, pos, doc_id} plus
    `corrected_from` when the word was respelled. Glossaries come first, then the databases in
    configured order; scores fall with that order.
    """

    kind: ClassVar[str] = "dictionary"
    config_model: ClassVar[type[BaseModel]] = DictionarySourceConfig

    def __init__(
        self,
        name: str = "dictionary",
        description: str = "",
        *,
        server: str | DictClient | None = None,
        databases: Sequence[str] = ("*",),
        files: Sequence[str | Path | DictdFiles] = (),
        glossaries: Sequence[str | Path | Glossary] = (),
        timeout: float = 5.0,
        max_senses: int = 8,
        fuzzy: bool = True,
        data_dir: str | Path | None = None,
    ) -> None:
        self.name = name
        self.description = description or str(DictionarySourceConfig.model_fields["description"].default)
        self.max_senses = max_senses
        self.fuzzy = fuzzy
        self.databases = list(databases) or ["*"]
        search = (Path(data_dir).expanduser(),) if data_dir else ()
        backends: list[_Backend] = []
        if glossaries:
            books = [g if isinstance(g, Glossary) else Glossary(_resolve(g, search)) for g in glossaries]
            backends.append(_LocalBackend(books))
        if files:
            wanted = None if "*" in self.databases else set(self.databases)
            dbs = [f if isinstance(f, DictdFiles) else DictdFiles(f, search=search) for f in files]
            dbs.sort(key=lambda d: self.databases.index(d.name) if d.name in self.databases else len(self.databases))
            backends.append(_LocalBackend([d for d in dbs if wanted is None or d.name in wanted]))
        if server is not None:
            client = server if isinstance(server, DictClient) else DictClient(*parse_server(server), timeout=timeout)
            backends.append(_ServerBackend(client, self.databases))
        if not backends:
            raise ValueError("DictionarySource needs a server, files or glossaries")
        self._backends = backends

    @classmethod
    def from_config(cls, name: str, config: DictionarySourceConfig, data_dir: Any = None) -> DictionarySource:
        return cls(
            name, config.description, server=config.server, databases=config.databases, files=config.files,
            glossaries=config.glossaries, timeout=config.timeout, max_senses=config.max_senses,
            fuzzy=config.fuzzy, data_dir=data_dir,
        )

    # --- lookups -------------------------------------------------------------------------------

    def define(self, word: str, dbs: set[str] | None = None) -> list[Definition]:
        """Every definition of `word` (no respelling), glossaries first, then the databases."""
        return [d for _, d in self._lookup(word, dbs)]

    def _lookup(self, word: str, dbs: set[str] | None = None) -> list[tuple[_Backend, Definition]]:
        """Every definition of `word` in every backend, in search order, with its backend.

        A database served by two backends (files and a server) is answered by the first. A
        backend that fails is skipped (and logged) while another answers; when all fail the
        first error is raised.
        """
        out: list[tuple[_Backend, Definition]] = []
        errors: list[KnowledgeSourceError] = []
        for backend in self._backends:
            try:
                answered = {d.db for _, d in out}
                out += [(backend, d) for d in backend.define(word, dbs) if d.db not in answered]
            except KnowledgeSourceError as exc:
                errors.append(exc)
                log.warning("dictionary %s: %s", self.name, exc)
        if errors and len(errors) == len(self._backends):
            raise errors[0]
        return out

    def match(self, word: str, strategy: str = "exact", dbs: set[str] | None = None) -> list[tuple[str, str]]:
        """(db, headword) pairs from every backend for `word` under `strategy`."""
        out: list[tuple[str, str]] = []
        for backend in self._backends:
            try:
                out += backend.match(word, strategy, dbs)
            except KnowledgeSourceError as exc:
                log.warning("dictionary %s: MATCH %s %s: %s", self.name, strategy, word, exc)
        return list(dict.fromkeys(out))

    def suggest(self, word: str, dbs: set[str] | None = None) -> str | None:
        """The likeliest intended word for a misspelt `word`: a one-edit neighbour (MATCH lev)
        found in the most databases, else the shortest longer word it begins (MATCH prefix).

        Words shorter than 4 letters have too many neighbours to guess from, and phrases of more
        than 3 words are not misspelt headwords but questions; both get None.
        """
        if len(word) < 4 or len(word.split()) > 3:
            return None
        key = word.casefold()
        cands = [w for _, w in self.match(word, "lev", dbs) if w.casefold() != key]
        if cands:
            votes: dict[str, int] = {}
            for w in cands:
                votes[w.casefold()] = votes.get(w.casefold(), 0) + 1
            # Most databases agree, then the same first letter, then the same length.
            return min(votes, key=lambda w: (-votes[w], w[:1] != key[:1], abs(len(w) - len(key)), w))
        longer = [w for _, w in self.match(word, "prefix", dbs) if len(w) > len(word)]
        if longer:
            return min((w.casefold() for w in longer), key=lambda w: (len(w), w))
        return None

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Passage]:
        if k <= 0:
            return []
        candidates = extract_headwords(query)
        if not candidates:
            return []
        dbs = _wanted_dbs(filters)
        word, found, corrected_from = candidates[0], [], None
        for cand in candidates:
            found = self._lookup(cand, dbs)
            if found:
                word = cand
                break
        folded = _strip_accents(candidates[0])
        if not found and folded != candidates[0]:
            # "naïve" is "naive" in WordNet: dictd files find it by edit distance, but a DICT
            # server's lev counts bytes (ï is two), so without this a server never finds it.
            found = self._lookup(folded, dbs)
            if found:
                word, corrected_from = folded, candidates[0]
        if not found and len(candidates[0].split()) == 1:
            for variant in inflection_variants(candidates[0].casefold()):
                found = self._lookup(variant, dbs)
                if found:
                    word, corrected_from = variant, candidates[0]
                    break
        if not found and self.fuzzy:
            suggestion = self.suggest(candidates[0], dbs)
            if suggestion:
                found = self._lookup(suggestion, dbs)
                if found:
                    word, corrected_from = suggestion, candidates[0]
        return self._passages(word, found, corrected_from, k, filters)

    def _passages(
        self,
        word: str,
        found: list[tuple[_Backend, Definition]],
        corrected_from: str | None,
        k: int,
        filters: Filters | None,
    ) -> list[Passage]:
        key = "_".join(word.casefold().split())
        numbered: dict[str, int] = {}
        out: list[Passage] = []
        for backend, definition in found:
            db = definition.db
            glossary = isinstance(backend, _LocalBackend) and isinstance(backend.books.get(db), Glossary)
            senses = [Sense(_squash(definition.text))] if glossary else split_senses(definition)
            for sense in senses:
                n = numbered.get(db, 0) + 1
                if n > self.max_senses:
                    break
                numbered[db] = n
                metadata: dict[str, Any] = {
                    "db": db, "headword": word, "sense": n, "doc_id": f"{db}:{key}",
                    "db_description": definition.db_description,
                }
                if sense.pos:
                    metadata["pos"] = sense.pos
                if corrected_from:
                    metadata["corrected_from"] = corrected_from
                if not matches(metadata, filters):
                    continue
                out.append(Passage(
                    id=f"{db}:{key}:{n}", text=sense.text, title=f"{definition.word} ({db})",
                    source=self.name, metadata=metadata, uri=backend.uri(db, word.casefold()),
                ))
        out = out[:k]
        for i, p in enumerate(out):
            p.score = round(1.0 / (1 + i), 6)
        return out

    def health(self) -> str:
        """What answers, checked now: each DICT server is connected to and asked for its
        databases (SourceUnavailable if it cannot be); local files and glossaries are counted."""
        parts = []
        for backend in self._backends:
            if isinstance(backend, _ServerBackend):
                found = backend.client.health()
                parts.append(f"server {backend.client.address}: {len(found)} database(s)")
            elif isinstance(backend, _LocalBackend):
                parts.append(f"{len(backend.books)} local book(s)")
        return "; ".join(parts)

    def warm_up(self) -> None:
        """Load the local indexes now rather than on the first question."""
        for backend in self._backends:
            if isinstance(backend, _LocalBackend):
                for b in backend.books.values():
                    if isinstance(b, DictdFiles):
                        len(b)

    def close(self) -> None:
        for backend in self._backends:
            backend.close()

    def __enter__(self) -> DictionarySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wanted_dbs(filters: Filters | None) -> set[str] | None:
    want = (filters or {}).get("db")
    if want is None:
        return None
    return {str(w) for w in want} if isinstance(want, (list, tuple, set, frozenset)) else {str(want)}


def _resolve(path: str | Path, search: tuple[Path, ...]) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for d in search:
        if (d / p).exists():
            return d / p
    return p


def _strip_accents(word: str) -> str:
    """`word` without combining marks (naïve -> naive, café -> cafe)."""
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
