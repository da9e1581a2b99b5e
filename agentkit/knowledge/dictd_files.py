"""A reader for dictd-format databases (`NAME.index` plus `NAME.dict.dz` or `NAME.dict`), so that
dictionaries work without a server: lookups, MATCH strategies and dictzip random access.

Index lines are `headword TAB offset TAB length`, the numbers in dictd's base64 (A-Z a-z 0-9 + /,
most significant digit first). dictfmt sorts the index with locale rules that differ between
databases, so the first lookup reads the index once and keeps the start of every line in the
order of a key made the way dictd compares headwords (case-folded, whitespace collapsed, and,
unless the database declares `00-database-allchars`, only letters, digits and spaces); lookups
binary-search that table, decoding the few lines they probe. That is 8 bytes a headword beside the
index's own bytes (about 5 MB for WordNet) instead of a dict of strings (about 80 MB). A `.dict.dz` is a dictzip file: gzip whose FEXTRA field holds an 'RA' subfield listing
the compressed size of every fixed-size chunk, each chunk flushed so it inflates on its own; a
lookup inflates only the chunks it covers (a few are cached).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import zlib
from array import array
from bisect import bisect_left
from collections import OrderedDict
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

from agentkit.errors import SourceUnavailable
from agentkit.knowledge.dict_protocol import Definition

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

#: The strategies DictdFiles.match understands (dictd's names).
FILE_STRATEGIES = ("exact", "prefix", "lev", "substring", "suffix")

#: Where Debian's dict-* packages install their databases.
SYSTEM_DIR = Path("/usr/share/dictd")


def b64_number(text: str) -> int:
    """Decode one of dictd's base64 numbers ('B' is 1, 'BA' is 64)."""
    n = 0
    for c in text:
        n = n * 64 + _B64[c]
    return n


def lev1_variants(word: str, alphabet: str) -> set[str]:
    """Every string one edit from `word`: deletion, transposition, substitution, insertion.

    The same neighbourhood dictd's `lev` strategy searches.
    """
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    out = {a + b[1:] for a, b in splits if b}
    out |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    out |= {a + c + b[1:] for a, b in splits if b for c in alphabet}
    out |= {a + c + b for a, b in splits for c in alphabet}
    out.discard(word)
    return out


class DictZip:
    """Random access to the uncompressed bytes of a dictzip (`.dict.dz`) file.

    A gzip file without the 'RA' field (plain `gzip`, not `dictzip`) still works: it is
    inflated whole, once, on the first read.
    """

    def __init__(self, path: str | Path, cache_chunks: int = 32) -> None:
        self.path = Path(path)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_size = cache_chunks
        self._lock = threading.Lock()
        self._whole: bytes | None = None
        with open(self.path, "rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.chunk_length = 0
        self.chunk_offsets: list[int] = []  # start of each compressed chunk, plus the end
        self._parse_header()

    def _parse_header(self) -> None:
        m = self._map
        if len(m) < 18 or m[0:2] != b"\x1f\x8b" or m[2] != 8:
            raise SourceUnavailable(f"{self.path} is not a gzip/dictzip file; rebuild it with dictzip")
        flags = m[3]
        pos = 10
        if flags & 4:  # FEXTRA: subfields SI1 SI2 LEN data
            (xlen,) = struct.unpack_from("<H", m, pos)
            pos += 2
            end = pos + xlen
            while pos + 4 <= end:
                si, (sublen,) = m[pos:pos + 2], struct.unpack_from("<H", m, pos + 2)
                if si == b"RA":
                    _ver, chlen, chcnt = struct.unpack_from("<HHH", m, pos + 4)
                    sizes = struct.unpack_from(f"<{chcnt}H", m, pos + 10)
                    self.chunk_length = chlen
                    self.chunk_offsets = [0]
                    for size in sizes:
                        self.chunk_offsets.append(self.chunk_offsets[-1] + size)
                pos += 4 + sublen
            pos = end
        if flags & 8:  # FNAME
            pos = m.find(b"\0", pos) + 1
        if flags & 16:  # FCOMMENT
            pos = m.find(b"\0", pos) + 1
        if flags & 2:  # FHCRC
            pos += 2
        self.chunk_offsets = [pos + o for o in self.chunk_offsets]

    def _chunk(self, i: int) -> bytes:
        data = self._cache.get(i)
        if data is not None:
            self._cache.move_to_end(i)
            return data
        raw = self._map[self.chunk_offsets[i]:self.chunk_offsets[i + 1]]
        data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw)
        self._cache[i] = data
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return data

    def read(self, offset: int, length: int) -> bytes:
        """`length` uncompressed bytes from `offset`."""
        with self._lock:
            if not self.chunk_length:
                if self._whole is None:
                    self._whole = zlib.decompress(bytes(self._map), zlib.MAX_WBITS | 16)
                return self._whole[offset:offset + length]
            first = offset // self.chunk_length
            last = min((offset + length - 1) // self.chunk_length, len(self.chunk_offsets) - 2)
            data = b"".join(self._chunk(i) for i in range(first, last + 1))
            start = offset - first * self.chunk_length
            return data[start:start + length]

    def close(self) -> None:
        self._map.close()


class _PlainDict:
    """An uncompressed `.dict` file, read through mmap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if os.path.getsize(path) else b""

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self._map[offset:offset + length])

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()


def resolve_database(spec: str | Path, search: tuple[Path, ...] = ()) -> tuple[Path, Path]:
    """(index, data) paths for `spec`: a basename (`/usr/share/dictd/wn`), an `.index`, a
    `.dict`/`.dict.dz`, or a bare name (`wn`) looked for in `search` and /usr/share/dictd."""
    spec = Path(spec).expanduser()
    base = str(spec)
    for suffix in (".index", ".dict.dz", ".dict"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    candidates = [Path(base)]
    if not spec.is_absolute():
        candidates += [d / base for d in (*search, SYSTEM_DIR)]
    for cand in candidates:
        index = cand.with_name(cand.name + ".index")
        if not index.is_file():
            continue
        for ext in (".dict.dz", ".dict"):
            data = cand.with_name(cand.name + ext)
            if data.is_file():
                return index, data
        raise SourceUnavailable(f"{index} has no {cand.name}.dict.dz or {cand.name}.dict beside it")
    tried = ", ".join(str(c) + ".index" for c in candidates)
    raise SourceUnavailable(
        f"no dictd database {str(spec)!r} (tried {tried}); install one (Debian: apt-get install dict-wn) "
        "or point `files` at a NAME.index with its NAME.dict.dz"
    )


class DictdFiles:
    """One dictd database read from its files: `define`, `match`, name and description."""

    def __init__(self, path: str | Path, name: str | None = None, search: tuple[Path, ...] = ()) -> None:
        self.index_path, self.data_path = resolve_database(path, search)
        self.name = name or self.index_path.name[: -len(".index")]
        self._lock = threading.RLock()
        self._index = b""
        self._encoding = "utf-8"
        #: Start of every index line, in headword-key order: the whole in-memory index.
        self._lines: array[int] | None = None
        self._allchars = False
        self._alphabet = ""
        self._data: DictZip | _PlainDict | None = None
        self._description: str | None = None
        # The top levels of every binary search probe the same lines.
        self._key = lru_cache(maxsize=65536)(self._key_at)

    def __repr__(self) -> str:
        return f"DictdFiles({str(self.index_path)[:-6]!r})"

    # --- loading ---------------------------------------------------------------------------

    def _load(self) -> array[int]:
        lines = self._lines
        if lines is not None:
            return lines
        with self._lock:
            if self._lines is not None:
                return self._lines
            raw = self.index_path.read_bytes()
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                self._encoding = "latin-1"
            self._index = raw
            self._allchars = b"\n00-database-allchars\t" in raw or raw.startswith(b"00-database-allchars\t")
            starts: list[int] = []
            keys: list[str] = []
            chars: set[str] = set()
            norm, enc, pos = self.normalize, self._encoding, 0
            for line in raw.split(b"\n"):
                head, tab, _ = line.partition(b"\t")
                if tab:
                    key = norm(head.decode(enc, errors="replace"))
                    starts.append(pos)
                    keys.append(key)
                    chars.update(key)
                pos += len(line) + 1
            # dictfmt sorted the file with its locale's rules; where those disagree with the
            # key order here (a few GCIDE phrases), sort the line starts by key.
            if any(a > b for a, b in pairwise(keys)):
                order = sorted(range(len(keys)), key=keys.__getitem__)
                starts = [starts[i] for i in order]
            self._lines = array("Q", starts)
            alphabet = self._meta_text("00-database-alphabet")
            if alphabet:
                chars = set(alphabet.replace("\n", ""))
            self._alphabet = "".join(sorted(c for c in chars if not c.isspace() or c == " "))
            return self._lines

    def _entry(self, start: int) -> tuple[str, int, int]:
        """(headword, offset, length) of the index line starting at byte `start`."""
        end = self._index.find(b"\n", start)
        fields = self._index[start:end if end >= 0 else len(self._index)].split(b"\t")
        head = fields[0].decode(self._encoding, errors="replace")
        try:
            return head, b64_number(fields[1].decode("ascii")), b64_number(fields[2].decode("ascii"))
        except (IndexError, KeyError, UnicodeDecodeError):
            return head, 0, 0

    def _key_at(self, start: int) -> str:
        end = self._index.find(b"\t", start)
        return self.normalize(self._index[start:end].decode(self._encoding, errors="replace"))

    def _range(self, key: str, prefix: bool = False) -> range:
        """Positions in the sorted line table whose key equals (or starts with) `key`."""
        lines = self._load()
        lo = bisect_left(lines, key, key=self._key)
        hi = lo
        while hi < len(lines) and (self._key(lines[hi]).startswith(key) if prefix else self._key(lines[hi]) == key):
            hi += 1
        return range(lo, hi)

    def _meta_text(self, key: str) -> str:
        for k in (key, key.replace("-", "")):
            found = self._range(self.normalize(k))
            if found:
                _, off, length = self._entry(self._load()[found[0]])
                lines = self._read(off, length).splitlines()
                if lines and lines[0].strip().replace("-", "").lower() == key.replace("-", ""):
                    lines = lines[1:]
                return "\n".join(line.strip() for line in lines).strip()
        return ""

    def normalize(self, word: str) -> str:
        """How dictd compares headwords in this database."""
        w = word.casefold()
        if self._allchars:
            return w if w.isalnum() else " ".join(w.split())
        if w.isalnum():
            return w
        return " ".join("".join(c for c in w if c.isalnum() or c.isspace()).split())

    def _read(self, offset: int, length: int) -> str:
        if self._data is None:
            with self._lock:
                if self._data is None:
                    p = self.data_path
                    self._data = DictZip(p) if p.name.endswith(".dz") else _PlainDict(p)
        return self._data.read(offset, length).decode("utf-8", errors="replace")

    @property
    def description(self) -> str:
        """The database's `00-database-short` text ('WordNet (r) 3.0 (2006)')."""
        if self._description is None:
            self._description = self._meta_text("00-database-short") or self.name
        return self._description

    @property
    def info(self) -> str:
        """The database's `00-database-info` text (source, licence)."""
        return self._meta_text("00-database-info")

    def __len__(self) -> int:
        """Index lines, metadata entries included."""
        return len(self._load())

    # --- lookups ---------------------------------------------------------------------------

    def define(self, word: str) -> list[Definition]:
        """The entries for `word` (case-insensitive), in index order, as dictd would return them."""
        key = self.normalize(word)
        if not key or _hidden(key):
            return []
        lines = self._load()
        seen: set[tuple[int, int]] = set()
        out = []
        for i in self._range(key):
            head, off, length = self._entry(lines[i])
            if (off, length) in seen or not length:
                continue
            seen.add((off, length))
            text = self._read(off, length).rstrip("\n")
            out.append(Definition(head, self.name, self.description, text))
        return out

    def match(self, word: str, strategy: str = "exact", limit: int | None = None) -> list[tuple[str, str]]:
        """(db, headword) pairs for `word` under `strategy`: exact, prefix, lev (one edit,
        transpositions included, like dictd), substring or suffix; one pair per headword."""
        key = self.normalize(word)
        if not key:
            return []
        lines = self._load()
        if strategy in ("exact", "prefix"):
            positions: list[int] = list(self._range(key, prefix=strategy == "prefix"))
        elif strategy == "lev":
            found = {v: self._range(v) for v in lev1_variants(key, self._alphabet)}
            positions = [r[0] for v, r in sorted(found.items()) if r]
        elif strategy in ("substring", "suffix"):
            test = (lambda k: key in k) if strategy == "substring" else (lambda k: k.endswith(key))
            positions = [i for i, start in enumerate(lines) if test(self._key(start))]
        else:
            raise ValueError(f"unknown strategy {strategy!r}; one of: {', '.join(FILE_STRATEGIES)}")
        out: dict[str, str] = {}
        for i in positions:
            k = self._key(lines[i])
            if k not in out and not _hidden(k):
                out[k] = self._entry(lines[i])[0]
                if limit is not None and len(out) >= limit:
                    break
        return [(self.name, head) for head in out.values()]

    def close(self) -> None:
        if self._data is not None:
            self._data.close()
            self._data = None


def _hidden(key: str) -> bool:
    # dictd keeps its metadata entries out of DEFINE and MATCH answers.
    return key.startswith(("00-database", "00database"))
