"""The options of an Elasticsearch source, stated once: `ElasticsearchSourceConfig`, which the YAML
config and `ElasticsearchSource(...)` keywords are both validated by."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agentkit.knowledge.options import EMBEDDER_GIVEN

Mode = Literal["bm25", "dense", "hybrid"]
Fusion = Literal["auto", "server", "client"]
MatchType = Literal["best_fields", "most_fields"]
Refresh = bool | Literal["wait_for"]

INDEX_NAME = re.compile(r'^[^-_+.A-Z\\/*?"<>|,# :][^A-Z\\/*?"<>|,# :]*$')


class Embedder(Protocol):
    """What the dense and hybrid modes need from an embedding model."""

    dimension: int

    def embed_query(self, text: str) -> Sequence[float]: ...

    def embed_documents(self, texts: list[str]) -> Sequence[Sequence[float]]: ...


class ElasticsearchSourceConfig(BaseModel):
    """An index in an Elasticsearch cluster, searched by BM25, kNN, or both fused (RRF)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["elasticsearch"] = "elasticsearch"
    description: str = "Documents you ingested, searched in Elasticsearch."
    #: One node's URL, or several (the client spreads requests and fails over between them).
    url: str | list[str] = "http://localhost:9200"
    index: str = "agentkit"
    #: The encoded key Elasticsearch returns (`encoded`), or "id:api_key".
    api_key: str | None = Field(None, repr=False)
    username: str | None = None
    password: str | None = Field(None, repr=False)
    #: A PEM file with the CA that signed the cluster's certificate (https only).
    ca_certs: str | None = None
    #: Leave on: turning it off accepts any server that claims to be the cluster.
    verify_certs: bool = True
    request_timeout: float = Field(10.0, gt=0, description="Seconds one request may take.")
    max_retries: int = Field(3, ge=0, description="Retries on another node after a connection error.")
    retry_on_timeout: bool = True
    mode: Mode = "bm25"
    #: "auto": the server's RRF retriever where it works, else fusion here; or force one.
    fusion: Fusion = "auto"
    title_boost: float = Field(2.0, ge=0)
    text_boost: float = Field(1.0, ge=0)
    #: most_fields adds the title's score to the text's; best_fields takes the better one.
    match_type: MatchType = "most_fields"
    analyzer: str = Field("english", description="The analyzer of title and text (a built-in one, or defined by you).")
    num_candidates: int = Field(100, ge=1, le=10_000, description="kNN candidates per shard.")
    rank_window_size: int = Field(50, ge=1, le=10_000, description="Hits per retriever that hybrid fusion ranks.")
    rank_constant: int = Field(60, ge=1)
    #: "module:attr" of an embedder object, or of a class/function called with embedder_options.
    embedder: str | None = None
    embedder_options: dict[str, Any] = Field(default_factory=dict)
    #: After each bulk: false (visible within the index's refresh interval), true, or wait_for.
    refresh: Refresh = False
    batch_size: int = Field(500, ge=1, description="Documents per bulk request.")
    number_of_shards: int | None = Field(None, ge=1)
    number_of_replicas: int | None = Field(None, ge=0)

    @field_validator("url")
    @classmethod
    def _urls(cls, value: str | list[str]) -> str | list[str]:
        for url in [value] if isinstance(value, str) else value:
            check_url(url)
        if isinstance(value, list) and not value:
            raise ValueError("give at least one URL")
        return value

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        if not INDEX_NAME.match(value) or value in (".", "..") or len(value.encode()) > 255:
            raise ValueError(
                f"{value!r} is not a usable index name; use lowercase letters, digits, '-', '_' and '.', "
                "not starting with '-', '_', '+' or '.'"
            )
        return value

    @field_validator("embedder")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[\w.]+:[\w.]+$", value):
            raise ValueError(f"{value!r} is not an import path; write it as 'package.module:name'")
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ElasticsearchSourceConfig:
        if self.api_key and (self.username or self.password):
            raise ValueError("give api_key or username/password, not both")
        if bool(self.username) != bool(self.password):
            raise ValueError("basic auth needs both username and password")
        urls = [self.url] if isinstance(self.url, str) else self.url
        if self.ca_certs and not all(u.startswith("https://") for u in urls):
            raise ValueError("ca_certs is for https:// URLs only; use https in url, or drop ca_certs")
        embedder_given = bool(info.context and info.context.get(EMBEDDER_GIVEN))
        if self.mode != "bm25" and not self.embedder and not embedder_given:
            raise ValueError(f"mode {self.mode!r} needs an embedder (embedder: 'package.module:name')")
        return self


def check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{redact(url)!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{redact(url)!r} is not a URL; write it as http://host:9200 or https://host:9200")
    if parts.scheme == "http" and port is None:
        raise ValueError(f"{redact(url)!r} has no port; write it as http://{parts.hostname}:9200")


def redact(url: str) -> str:
    """`url` without a user:password part, for messages."""
    return re.sub(r"//[^/@]*@", "//", url)
