"""How an Elasticsearch source reads what the cluster and its client say: errors turned into
agentkit's (naming the source and the fix), refused bulk items, versions, and the embedder named in
the settings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agentkit.errors import AgentkitError, ConfigError, IngestError, KnowledgeSourceError, SourceUnavailable
from agentkit.knowledge.elasticsearch.settings import ElasticsearchSourceConfig, Embedder

#: Retrievers, and with them the `rrf` retriever, came in 8.14.
RRF_SINCE = (8, 14)


class BulkIngestError(IngestError):
    """Some documents of an `add` were refused; the others were written and stay.

    `failures` maps each refused passage id to the reason Elasticsearch gave.
    """

    def __init__(self, message: str, failures: dict[str, str], written: int) -> None:
        super().__init__(message)
        self.failures = failures
        self.written = written


def translate(
    exc: Exception, action: str, *, name: str, where: str, settings: ElasticsearchSourceConfig
) -> KnowledgeSourceError | None:
    """`exc`, raised by the client while `action`, as agentkit's error naming the source and what to do;
    None for exceptions that are not the client's."""
    try:
        from elastic_transport import ConnectionError, ConnectionTimeout, TlsError, TransportError
        from elasticsearch import ApiError, UnsupportedProductError
    except ImportError:
        return None
    prefix = f"elasticsearch source '{name}'"
    if isinstance(exc, TlsError):
        return SourceUnavailable(
            f"{prefix}: the TLS handshake with {where} failed: {transport_reason(exc)}; set "
            f"sources.{name}.ca_certs to the CA file that signed the cluster's certificate"
        )
    if isinstance(exc, ConnectionTimeout):
        s = settings
        tries = 1 + s.max_retries if s.retry_on_timeout else 1
        spent = f"{s.request_timeout * tries:g} s ({tries} tries of {s.request_timeout:g} s)" if tries > 1 \
            else f"{s.request_timeout:g} s"
        return SourceUnavailable(
            f"{prefix}: {where} did not answer within {spent}; check the cluster's "
            f"health, or raise sources.{name}.request_timeout (and agent.source_timeout, which bounds it)"
        )
    if isinstance(exc, ConnectionError):
        return SourceUnavailable(
            f"{prefix}: cannot reach {where}: {transport_reason(exc)}; "
            f"start the cluster or fix sources.{name}.url"
        )
    if isinstance(exc, UnsupportedProductError):
        return SourceUnavailable(
            f"{prefix}: {where} answered, but is not Elasticsearch; fix sources.{name}.url"
        )
    if isinstance(exc, ApiError):
        status = exc.status_code
        kind, reason = error_type(exc.body), error_reason(exc.body)
        if status == 401:
            if settings.api_key or settings.username:
                fix = "api_key" if settings.api_key else "username and password"
                return SourceUnavailable(
                    f"{prefix}: {where} refused the credentials (401 {kind}); fix sources.{name}.{fix}"
                )
            return SourceUnavailable(
                f"{prefix}: {where} needs credentials (401); set sources.{name}.api_key "
                f"(or username and password)"
            )
        if status == 403 and "licen" in reason.lower():
            return KnowledgeSourceError(
                f"{prefix}: the cluster's licence does not cover this {action} ({reason}); "
                f"set sources.{name}.fusion to auto or client to fuse hybrid results in agentkit"
            )
        if status == 403 and kind == "security_exception":
            return SourceUnavailable(
                f"{prefix}: the credentials may not {action} on index '{settings.index}' (403: {reason}); "
                f"grant them read and write privileges on it"
            )
        if kind == "media_type_header_exception":
            from elasticsearch import __versionstr__

            return KnowledgeSourceError(
                f"{prefix}: the elasticsearch client {__versionstr__} does not speak this server's version "
                f"({reason}); install the client of the cluster's major version, e.g. "
                f'pip install "elasticsearch>=8.12,<9" for an 8.x cluster'
            )
        return KnowledgeSourceError(
            f"{prefix} (index '{settings.index}' at {where}): {action} failed: {status} {kind}: {reason}"
        )
    if isinstance(exc, TransportError):
        return KnowledgeSourceError(f"{prefix} ({where}): {action} failed: {transport_reason(exc)}")
    return None


def client_urls(client: Any) -> list[str] | None:
    """The nodes of a ready client, for messages (best effort: None where they cannot be read)."""
    try:
        return [str(node.base_url) for node in client.transport.node_pool.all()] or None
    except (AttributeError, TypeError):
        return None


def version_tuple(number: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", number)[:2]
    return tuple(int(p) for p in parts) if parts else (0,)


def error_type(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        return str(error.get("type")) if error.get("type") else None
    return None


def error_reason(body: Any) -> str:
    error = body.get("error") if isinstance(body, Mapping) else body
    if not isinstance(error, Mapping):
        return str(error)[:300]
    reason = str(error.get("reason") or "")
    caused = error.get("caused_by")
    root = (error.get("root_cause") or [{}])[0]
    if isinstance(caused, Mapping) and caused.get("reason"):
        reason = f"{reason}: {caused['reason']}" if reason else str(caused["reason"])
    elif isinstance(root, Mapping) and root.get("reason") and root.get("reason") != reason:
        reason = f"{reason}: {root['reason']}" if reason else str(root["reason"])
    return reason[:500]


def item_reason(info: Mapping[str, Any]) -> str:
    """One bulk item's failure, as 'status type: reason'."""
    error = info.get("error")
    status = info.get("status", "?")
    if isinstance(error, Mapping):
        kind = error.get("type", "error")
        reason = error.get("reason", "")
        caused = error.get("caused_by")
        if isinstance(caused, Mapping) and caused.get("reason"):
            reason = f"{reason}: {caused['reason']}"
        return f"{status} {kind}: {reason}"
    return f"{status} {error}"


def transport_reason(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    return str(message if message else exc)


def load_embedder(source: str, spec: str, options: Mapping[str, Any]) -> Embedder:
    """The embedder named by `spec` ("module:attr"): a ready object, or a class or factory called with `options`."""
    import importlib

    prefix = f"elasticsearch source '{source}': embedder {spec!r}"
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{prefix} cannot be imported ({exc}); fix sources.{source}.embedder") from None
    if isinstance(target, type) or not hasattr(target, "embed_query"):
        try:
            target = target(**options)
        except AgentkitError:
            raise
        except Exception as exc:
            raise KnowledgeSourceError(f"{prefix} could not be made: {type(exc).__name__}: {exc}") from exc
    if not all(hasattr(target, a) for a in ("embed_query", "embed_documents", "dimension")):
        raise ConfigError(f"{prefix} lacks embed_query, embed_documents or dimension; fix sources.{source}.embedder")
    return target  # type: ignore[no-any-return]
