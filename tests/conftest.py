"""Shared test setup: no unit test may load a real model unless it is marked `real_model`.

The guard lives in the backends (see `agentkit.llm.llama_cpp.FORBID_ENV`); this turns it on.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _forbid_real_models(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("real_model"):
        monkeypatch.delenv("AGENTKIT_FORBID_REAL_MODELS", raising=False)
    else:
        monkeypatch.setenv("AGENTKIT_FORBID_REAL_MODELS", "1")


@pytest.fixture(scope="session")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where transformers keeps the bundled GGUF's dequantized copy for the whole run: the first
    load converts it (~20 s on 2 cores), every later one reads the copy (~0.3 s)."""
    return tmp_path_factory.mktemp("hf-cache")
