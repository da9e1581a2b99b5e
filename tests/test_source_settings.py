"""The Qdrant and Elasticsearch sources state their options once, in their settings models:
keywords and a ready model make the same source, and the source reads only its `settings`."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from agentkit.agent import Agent
from agentkit.config import AgentSettings
from agentkit.errors import ConfigError
from agentkit.knowledge.elasticsearch import ElasticsearchSource, ElasticsearchSourceConfig
from agentkit.knowledge.qdrant import QdrantSource, QdrantSourceConfig
from agentkit.testing import FakeLLM
from agentkit.types import Passage

BACKENDS = [(QdrantSource, QdrantSourceConfig), (ElasticsearchSource, ElasticsearchSourceConfig)]


@pytest.mark.parametrize(("cls", "model"), BACKENDS)
def test_the_constructor_does_not_restate_the_settings(cls: type, model: type) -> None:
    # Only objects no config file can hold (an embedder given as an object) may share a name.
    restated = set(inspect.signature(cls.__init__).parameters) & set(model.model_fields) - {"description", "embedder"}
    assert restated == set()


def test_keywords_and_a_settings_model_make_the_same_qdrant_source(tmp_path: Path) -> None:
    by_keywords = QdrantSource("docs", "notes", path=tmp_path, collection="c", k1=0.9, timeout=3)
    settings = QdrantSourceConfig(description="notes", path=str(tmp_path), collection="c", k1=0.9, timeout=3)
    by_model = QdrantSource("docs", settings=settings)
    assert by_keywords.settings == by_model.settings
    assert (by_model.collection, by_model.path, by_model.description) == ("c", tmp_path, "notes")
    by_model.add([Passage("tea", "Green tea is brewed cooler than black tea.")])
    assert [p.id for p in by_model.search("green tea")] == ["tea"]
    by_model.close()


def test_keywords_and_a_settings_model_make_the_same_elasticsearch_source() -> None:
    by_keywords = ElasticsearchSource("docs", url="https://es:9200", index="kb", request_timeout=5, ca_certs=Path("/ca"))
    settings = ElasticsearchSourceConfig(description="", url=["https://es:9200"], index="kb", request_timeout=5, ca_certs="/ca")
    by_model = ElasticsearchSource("docs", settings=settings)
    assert by_keywords.settings == by_model.settings
    assert (by_model.index, by_model.urls, by_model.ca_certs) == ("kb", ["https://es:9200"], Path("/ca"))


@pytest.mark.parametrize(("cls", "model"), BACKENDS)
def test_misuse_names_the_source(cls: type, model: type) -> None:
    with pytest.raises(TypeError, match=r"'docs': unexpected keyword argument\(s\) 'colour'"):
        cls("docs", colour="blue")
    with pytest.raises(TypeError, match="give settings= or keyword options"):
        cls("docs", settings=model(), batch_size=3)
    with pytest.raises(ConfigError, match=r"source 'docs': batch_size: .*greater than or equal to 1"):
        cls("docs", batch_size=0)


@pytest.mark.parametrize(("cls", "model"), BACKENDS)
def test_a_setting_cannot_be_changed_beside_the_settings(cls: type, model: type) -> None:
    source = cls("docs")
    with pytest.raises(AttributeError, match="batch_size is a setting"):
        source.batch_size = 3
    assert source.settings.batch_size == model().batch_size


def test_capping_the_timeout_leaves_the_callers_settings_alone() -> None:
    es_settings = ElasticsearchSourceConfig(url="http://127.0.0.1:9", request_timeout=10, max_retries=3)
    qd_settings = QdrantSourceConfig(url="http://127.0.0.1:9", timeout=10)
    es = ElasticsearchSource("es", settings=es_settings)
    qd = QdrantSource("qd", settings=qd_settings)
    Agent(FakeLLM(), [es, qd], settings=AgentSettings(source_timeout=4))
    assert (es.request_timeout, es.max_retries, qd.timeout) == (4, 0, 4)
    assert (es_settings.request_timeout, es_settings.max_retries, qd_settings.timeout) == (10, 3, 10)
