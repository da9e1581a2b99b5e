"""A model on a server: any OpenAI-compatible endpoint (llama-server, vLLM, Ollama, agentkit serve).

The official `openai` client does the HTTP: streaming, retries with backoff, timeouts. This module
adds what it lacks: the grammar / JSON-schema spelling each server understands (sent as
`extra_body`), what the server is and how long its context is, exact token counts, and errors that
name the URL and the setting to change.

Over 600 lines (about 630) because each of those is a small difference between servers that only
this backend meets; apart, they would be modules of a few dozen lines each used from one place.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentkit.errors import ModelError, PromptTooLong
from agentkit.llm.base import Completion, Delta, GenerationOptions, TokenLogprob
from agentkit.types import Message, Usage

if TYPE_CHECKING:
    import httpx2
    import openai
    from openai import Stream
    from openai.types.chat import ChatCompletionChunk

log = logging.getLogger(__name__)

Constraints = Literal["auto", "llama_cpp", "vllm", "openai", "none"]

#: Used when neither the config nor the server says how long the context is.
DEFAULT_CONTEXT = 4096
#: Template tokens assumed per message: the server's chat template is not visible from here.
MESSAGE_OVERHEAD = 4
#: Without a tokenize endpoint, one token per this many characters: a deliberate overestimate,
#: so that prompts budgeted with it still fit (English BPE averages about 4).
CHARS_PER_TOKEN = 3.0
#: The chat-completion fields sent as the client's own arguments; everything else goes in extra_body.
_NAMED = frozenset({
    "model", "messages", "temperature", "stream", "max_tokens", "stop", "seed", "stream_options", "logprobs",
    "top_logprobs", "top_p", "presence_penalty", "frequency_penalty",
})
#: GenerationOptions fields OpenAI's API lacks, by their name in llama.cpp's and vLLM's servers.
#: Sampling hints, not constraints: dropped where the server has no such knob (plain OpenAI).
_SERVER_SAMPLING: dict[str, dict[str, str]] = {
    "llama_cpp": {"repeat_penalty": "repeat_penalty", "top_k": "top_k", "min_p": "min_p"},
    "vllm": {"repeat_penalty": "repetition_penalty", "top_k": "top_k", "min_p": "min_p"},
}


class ModelUnavailable(ModelError):
    """The model server cannot be reached (refused, timed out, or kept failing)."""


class OpenAICompatConfig(BaseModel):
    """The `llm:` section that points agentkit at a model served over HTTP."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai_compat"] = "openai_compat"
    base_url: str = Field(description="the API root, e.g. http://gpu-box:8080/v1")
    model: str = Field(default="", description="model id to request; empty = the first one /v1/models lists")
    api_key: str | None = Field(default=None, description="sent as a bearer token; write ${ENV_VAR} to keep it out of the file")
    timeout: float = Field(default=120.0, gt=0, description="seconds to wait for the server's next bytes")
    connect_timeout: float = Field(default=5.0, gt=0, description="seconds to wait for a connection")
    max_retries: int = Field(default=2, ge=0, le=10, description="extra tries on connection errors, 429 and 5xx")
    backoff: float | None = Field(
        default=None, ge=0, description="ignored, kept so that older configs load: the openai client waits 0.5 s, doubling"
    )
    context_length: int | None = Field(default=None, ge=1, description="None = ask the server, else 4096")
    constraints: Constraints = Field(
        default="auto", description="how grammar / json_schema are sent: auto detects llama_cpp or vllm, else openai"
    )
    extra_body: dict[str, Any] = Field(default_factory=dict, description="extra fields sent with every request")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"base_url must start with http:// or https://, e.g. http://127.0.0.1:8080/v1; got {value!r}")
        return value.rstrip("/")

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # `api_key: ${KEY:-}` interpolates to "" when the variable is unset.
        return None if isinstance(value, str) and not value.strip() else value


@dataclass
class _ServerInfo:
    """What /v1/models (and llama-server's /props) say about the server, read once."""

    models: list[str]
    style: Constraints
    context_length: int | None


class OpenAICompatLLM:
    """A chat model behind an OpenAI-compatible HTTP API.

    Construction does no I/O; the server is asked what it serves on first use. Safe to share
    between threads (one pooled HTTP client). Closing a stream closes its connection, which
    makes llama-server, vLLM and agentkit serve stop generating.
    """

    config_model = OpenAICompatConfig

    def __init__(
        self,
        base_url: str,
        model: str = "",
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        max_retries: int = 2,
        backoff: float | None = None,
        context_length: int | None = None,
        constraints: Constraints = "auto",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.base_url = OpenAICompatConfig(base_url=base_url).base_url
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        if backoff is not None:
            log.warning(
                "llm.backoff is no longer used: the openai client waits 0.5 s before the first retry, doubling up "
                "to 8 s, or what the server's Retry-After says; remove backoff from the config"
            )
        self._context_length = context_length
        self.constraints: Constraints = constraints
        self.extra_body = dict(extra_body or {})
        self.name = model or urlsplit(self.base_url).netloc
        self._client: openai.OpenAI | None = None
        self._info: _ServerInfo | None = None
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()  # its own: the server probe holds _lock while it builds the client
        #: How to count tokens, found on first use: (path, body key, tokens baseline) or None.
        self._tokenizer: tuple[str, str, int] | None | Literal[False] = False
        self._counts: dict[str, int] = {}

    @classmethod
    def from_config(cls, config: OpenAICompatConfig) -> OpenAICompatLLM:
        return cls(
            config.base_url,
            config.model,
            api_key=config.api_key,
            timeout=config.timeout,
            connect_timeout=config.connect_timeout,
            max_retries=config.max_retries,
            backoff=config.backoff,
            context_length=config.context_length,
            constraints=config.constraints,
            extra_body=config.extra_body,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatLLM({self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def warm_up(self) -> None:
        """Ask the server what it serves now, so that a wrong URL fails at start-up."""
        self._server(retries=self.max_retries)

    # --- the protocol ---------------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        """The configured length, else what the server reports, else 4096.

        A failed probe is not remembered: `isinstance(x, LLM)` reads this property on Python < 3.12,
        and a type check must not fail because the server is down.
        """
        if self._context_length is not None:
            return self._context_length
        try:
            info = self._server(retries=0)
        except ModelError:
            return DEFAULT_CONTEXT
        return info.context_length or DEFAULT_CONTEXT

    def chat(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Completion:
        options = options or GenerationOptions()
        url = self.base_url + "/chat/completions"
        with self._errors(url):
            reply = self._api().chat.completions.create(**self._request(messages, options, stream=False))
        # Servers answer in more shapes than the client's types: read each field defensively.
        choices = getattr(reply, "choices", None)
        message = getattr(choices[0], "message", None) if isinstance(choices, list) and choices else None
        if message is None:
            raise ModelError(f"{url} answered without choices[0].message: {_show(reply)}; is llm.base_url an OpenAI-compatible API?")
        choice = choices[0]
        usage = getattr(reply, "usage", None)
        return Completion(
            text=getattr(message, "content", None) or "",
            usage=Usage(int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)),
            finish_reason=getattr(choice, "finish_reason", None) or "stop",
            logprobs=_logprobs(getattr(choice, "logprobs", None)) if options.logprobs is not None else None,
        )

    def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Iterator[Delta]:
        """Yield text as the server sends it; the last `Delta` has `finish_reason` and `usage`.

        The request is sent (and connection errors raised) here, before the first `next()`. A stream
        that ends before the server said why it finished raises `ModelUnavailable`: the answer is cut.
        """
        options = options or GenerationOptions()
        with self._errors(self.base_url + "/chat/completions"):
            chunks = self._api().chat.completions.create(**self._request(messages, options, stream=True))
        return _Stream(self._deltas(chunks, messages), chunks)

    def count_tokens(self, text: str) -> int:
        """Exact when the server has a tokenize endpoint (llama-server, llama-cpp-python, vLLM,
        agentkit serve), else about one token per three characters, rounded up."""
        if not text:
            return 0
        cached = self._counts.get(text)
        if cached is not None:
            return cached
        tokenizer = self._find_tokenizer()
        if tokenizer is None:
            n = math.ceil(len(text) / CHARS_PER_TOKEN)
        else:
            n = self._count_remote(tokenizer, text)
        if len(self._counts) > 10_000:
            self._counts.clear()
        self._counts[text] = n
        return n

    def count_message_tokens(self, messages: Sequence[Message]) -> int:
        """Content tokens plus a few per message for the chat template, which the server applies."""
        return sum(self.count_tokens(m.content) + MESSAGE_OVERHEAD for m in messages) + 2

    # --- requests -------------------------------------------------------------------------------

    def _api(self) -> openai.OpenAI:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = _client(self)
        return self._client

    def _auth(self) -> dict[str, Any]:
        """Per-request headers: without a key, no Authorization header at all."""
        import openai

        return {} if self.api_key else {"Authorization": openai.omit}

    @contextmanager
    def _errors(self, url: str) -> Iterator[None]:
        """Turn the client's exceptions into ModelErrors that name the URL and what to change."""
        import httpx2
        import openai

        attempts = self.max_retries + 1
        try:
            yield
        except openai.APITimeoutError as exc:  # before APIConnectionError: it is a subclass
            if isinstance(exc.__cause__, httpx2.ConnectTimeout):
                raise _unreachable(url, exc.__cause__, attempts) from exc
            raise ModelUnavailable(
                f"the model server at {url} sent nothing for {self.timeout:g} s; raise llm.timeout for slow models "
                "or long prompts, or check the server's load"
            ) from exc
        except openai.APIConnectionError as exc:
            raise _unreachable(url, exc.__cause__ or exc, attempts) from exc
        except openai.APIStatusError as exc:
            raise self._http_error(url, exc.response, attempts) from None
        except openai.APIResponseValidationError as exc:
            raise ModelError(
                f"{url} answered what is not an OpenAI response ({exc.response.text[:200]!r}); "
                "is llm.base_url an OpenAI-compatible API?"
            ) from None

    def _call(self, method: Literal["GET", "POST"], url: str, body: dict[str, Any] | None = None, *, retries: int | None = None) -> dict[str, Any]:
        """A request outside the chat API (/models, /props, /tokenize), answered with a JSON object."""
        api = self._api()
        options: Any = {"headers": self._auth(), "max_retries": self.max_retries if retries is None else retries}
        with self._errors(url):
            if method == "GET":
                data = api.get(url, cast_to=object, options=options)
            else:
                data = api.post(url, cast_to=object, body=body, options=options)
        if isinstance(data, (str, bytes)):
            raise ModelError(f"{url} did not answer JSON (got {data[:200]!r}); is llm.base_url an OpenAI-compatible API?")
        if not isinstance(data, dict):
            raise ModelError(f"{url} answered {type(data).__name__}, not a JSON object")
        return data

    def _http_error(self, url: str, response: httpx2.Response, attempts: int) -> ModelError | PromptTooLong:
        status = response.status_code
        message = _error_message(response)
        if status in (401, 403):
            return ModelError(
                f"the model server at {url} refused the API key ({status}: {message}); "
                "set llm.api_key (e.g. api_key: ${MODEL_API_KEY})"
            )
        if status == 404:
            models = ", ".join(self._info.models) if self._info and self._info.models else "see GET /v1/models"
            return ModelError(
                f"{url} answered 404 ({message}); check llm.base_url (it usually ends in /v1) "
                f"and llm.model {self.model!r} (the server has: {models})"
            )
        if status == 400 and any(w in message.lower() for w in ("context", "too long", "exceed", "maximum")):
            return PromptTooLong(
                f"the model server at {url} says the prompt does not fit ({message}); set llm.context_length "
                "to the server's context size so agentkit trims evidence to fit, or shorten the question"
            )
        if status in (408, 409, 429) or status >= 500:  # the statuses the client retries
            return ModelUnavailable(
                f"the model server at {url} kept failing ({status}: {message}) after {attempts} attempt(s); "
                "check its log, or raise llm.max_retries if it is only busy"
            )
        return ModelError(f"the model server at {url} rejected the request ({status}: {message})")

    def _request(self, messages: Sequence[Message], options: GenerationOptions, *, stream: bool) -> dict[str, Any]:
        """The arguments of `chat.completions.create`: standard fields by name, the server's own in extra_body."""
        server_only = any(getattr(options, name) is not None for name in _SERVER_SAMPLING["llama_cpp"])
        style = self._style() if options.grammar is not None or options.json_schema is not None or server_only else self.constraints
        named: dict[str, Any] = {
            "model": self._model_id(),
            "messages": [m.to_dict() for m in messages],
            "temperature": options.temperature,
            "stream": stream,
        }
        if options.max_tokens and options.max_tokens > 0:
            # max_tokens, not max_completion_tokens: llama.cpp, vLLM and Ollama read this one.
            named["max_tokens"] = options.max_tokens
        if options.stop:
            named["stop"] = list(options.stop)
        if options.seed is not None:
            named["seed"] = options.seed
        for name in ("top_p", "presence_penalty", "frequency_penalty"):
            if getattr(options, name) is not None:
                named[name] = getattr(options, name)
        if stream:
            named["stream_options"] = {"include_usage": True}
        if options.logprobs is not None:
            named["logprobs"] = True
            if options.logprobs > 0:
                named["top_logprobs"] = options.logprobs
        # extra_body overrides the named fields on the wire, so the config's cannot replace ours.
        extra = {k: v for k, v in self.extra_body.items() if k not in _NAMED}
        for name, wire in _SERVER_SAMPLING.get(style, {}).items():
            if getattr(options, name) is not None:
                extra[wire] = getattr(options, name)
        extra.update(_constraint(options, style, self.base_url))
        return {**named, "extra_body": extra or None, "extra_headers": self._auth()}

    def _deltas(self, chunks: Stream[ChatCompletionChunk], messages: Sequence[Message]) -> Generator[Delta, None, None]:
        import openai

        url = self.base_url + "/chat/completions"
        finish: str | None = None
        usage, pieces = None, 0
        try:
            for chunk in chunks:
                u = getattr(chunk, "usage", None)
                if u:
                    usage = Usage(int(getattr(u, "prompt_tokens", 0) or 0), int(getattr(u, "completion_tokens", 0) or 0))
                for choice in getattr(chunk, "choices", None) or []:
                    text = getattr(getattr(choice, "delta", None), "content", None)
                    if text:
                        pieces += 1
                        yield Delta(text)
                    finish = getattr(choice, "finish_reason", None) or finish
        except json.JSONDecodeError as exc:
            raise ModelError(
                f"the model server at {url} sent a stream event that is not JSON ({exc.msg}): {exc.doc[:200]!r}; "
                "is llm.base_url an OpenAI-compatible API? check the server's log"
            ) from None
        except openai.APIConnectionError as exc:  # also APITimeoutError
            raise ModelUnavailable(
                f"the model server at {url} stopped sending mid-answer ({type(exc.__cause__ or exc).__name__}: "
                f"{exc.__cause__ or exc}); raise llm.timeout if it is slow, or check its log"
            ) from exc
        except openai.APIError as exc:  # an `error` event
            raise ModelError(f"the model server at {url} failed mid-answer: {exc.message}") from None
        finally:
            # Also on close(): dropping the connection is how the server learns to stop generating.
            chunks.close()
        if finish is None:
            # The server ends every complete answer with a finish_reason; without one the text is cut.
            raise ModelUnavailable(
                f"the model server at {url} ended the stream after {pieces} piece(s) without a finish_reason, so "
                "the answer is cut off; check the server's log (a crash, or out of memory) and any proxy's timeout"
            )
        if usage is None:
            usage = Usage(self.count_message_tokens(messages), pieces)
        yield Delta("", finish_reason=finish, usage=usage)

    # --- what the server is ----------------------------------------------------------------------

    def _server(self, retries: int) -> _ServerInfo:
        info = self._info
        if info is None:
            with self._lock:
                if self._info is None:
                    self._info = self._probe(retries)
                info = self._info
        return info

    def _probe(self, retries: int) -> _ServerInfo:
        data = self._call("GET", self.base_url + "/models", retries=retries)
        items = [m for m in data.get("data") or [] if isinstance(m, dict)]
        ids = [str(m.get("id")) for m in items]
        owners = {str(m.get("owned_by", "")) for m in items}
        context: int | None = None
        for m in items:
            if self.model and m.get("id") != self.model:
                continue
            for key in ("context_length", "max_model_len"):
                if isinstance(m.get(key), int):
                    context = m[key]
            meta = m.get("meta")
            if context is None and isinstance(meta, dict) and isinstance(meta.get("n_ctx"), int):
                context = meta["n_ctx"]
            break
        if "vllm" in owners or any("max_model_len" in m for m in items):
            style: Constraints = "vllm"
        elif owners & {"llamacpp", "me", "agentkit"}:
            # llama-server, llama-cpp-python's server ("me") and agentkit serve all take
            # `grammar` and `response_format: {type: json_object, schema}`.
            style = "llama_cpp"
        else:
            style = "openai"
        if context is None and style == "llama_cpp":
            context = self._props_context()
        return _ServerInfo(ids, style, context)

    def _props_context(self) -> int | None:
        """llama-server's /props knows the slot context; other servers answer 404 there."""
        try:
            data = self._call("GET", _root(self.base_url) + "/props", retries=0)
            value = (data.get("default_generation_settings") or {}).get("n_ctx")
        except (ModelError, AttributeError):
            return None
        return value if isinstance(value, int) and value > 0 else None

    def _style(self) -> Constraints:
        if self.constraints != "auto":
            return self.constraints
        return self._server(retries=self.max_retries).style

    def _model_id(self) -> str:
        if not self.model:
            models = self._server(retries=self.max_retries).models
            if not models:
                raise ModelError(f"{self.base_url}/models lists no model; set llm.model to the id the server expects")
            self.model = models[0]
            self.name = self.model
        return self.model

    def _find_tokenizer(self) -> tuple[str, str, int] | None:
        """The first tokenize endpoint the server answers, as (url, how to read it, baseline)."""
        if self._tokenizer is not False:
            return self._tokenizer
        root = _root(self.base_url)
        candidates = [
            (root + "/tokenize", "vllm"),  # vLLM; llama-server answers it too, with another body
            (root + "/tokenize", "llama_server"),
            (root + "/extras/tokenize/count", "count"),  # llama-cpp-python's server, agentkit serve
        ]
        if self._style() != "vllm":
            candidates = candidates[1:] + candidates[:1]
        found: tuple[str, str, int] | None = None
        for url, kind in candidates:
            try:
                # Some servers count BOS in every answer: the count of "" is subtracted later.
                baseline = self._count_remote((url, kind, 0), "", retries=0)
            except ModelUnavailable as exc:
                if exc.__cause__ is not None:  # unreachable, not just a missing endpoint
                    raise
                continue
            except ModelError:
                continue
            found = (url, kind, baseline)
            break
        if found is None:
            log.info("%s has no tokenize endpoint; counting about %g characters per token", self.base_url, CHARS_PER_TOKEN)
        self._tokenizer = found
        return found

    def _count_remote(self, tokenizer: tuple[str, str, int], text: str, retries: int | None = None) -> int:
        url, kind, baseline = tokenizer
        if kind == "vllm":
            body: dict[str, Any] = {"model": self._model_id(), "prompt": text, "add_special_tokens": False}
        elif kind == "llama_server":
            body = {"content": text, "add_special": False}
        else:
            body = {"input": text, "model": self.model or None}
        data = self._call("POST", url, body, retries=retries)
        if kind == "count" or (kind == "vllm" and isinstance(data.get("count"), int)):
            n = data.get("count")
        else:
            tokens = data.get("tokens")
            n = len(tokens) if isinstance(tokens, list) else None
        if not isinstance(n, int):
            raise ModelError(f"{url} answered without a token count: {str(data)[:200]}")
        return max(0, n - baseline)


class _Stream(Iterator[Delta]):
    """A delta generator that also closes its HTTP response when closed before it started."""

    def __init__(self, deltas: Generator[Delta, None, None], chunks: Stream[ChatCompletionChunk]) -> None:
        self._deltas = deltas
        self._chunks = chunks

    def __next__(self) -> Delta:
        return next(self._deltas)

    def close(self) -> None:
        self._deltas.close()
        self._chunks.close()


# --- helpers -----------------------------------------------------------------------------------


def _client(llm: OpenAICompatLLM) -> openai.OpenAI:
    """The openai client for `llm`: its URL, key, timeouts and retries, and nothing from OPENAI_* variables."""
    import httpx2
    import openai

    class ReadTimeoutIsFinal(httpx2.BaseTransport):
        """The client retries every timeout; a read timeout here is a slow generation, and sending it
        again would queue a second one behind it on the server. Raising the client's own error
        (which it passes on untouched) makes only connect timeouts retried."""

        def __init__(self) -> None:
            self._inner = httpx2.HTTPTransport()

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            try:
                return self._inner.handle_request(request)
            except (httpx2.ReadTimeout, httpx2.WriteTimeout) as exc:
                raise openai.APITimeoutError(request=request) from exc

        def close(self) -> None:
            self._inner.close()

    timeout = httpx2.Timeout(llm.timeout, connect=llm.connect_timeout)
    return openai.OpenAI(
        base_url=llm.base_url,
        # The client insists on a key; without one, _auth() omits the header from every request.
        api_key=llm.api_key or "unused",
        timeout=timeout,
        max_retries=llm.max_retries,
        # OPENAI_ORG_ID / OPENAI_PROJECT_ID are for api.openai.com, not for this server.
        default_headers={"OpenAI-Organization": openai.omit, "OpenAI-Project": openai.omit},
        http_client=openai.DefaultHttpxClient(transport=ReadTimeoutIsFinal(), timeout=timeout),
    )


def _unreachable(url: str, cause: BaseException, attempts: int) -> ModelUnavailable:
    return ModelUnavailable(
        f"cannot reach the model server at {url} ({type(cause).__name__}: {cause}) after {attempts} "
        f"attempt(s); start the server (e.g. python -m llama_cpp.server --model MODEL.gguf, "
        f"llama-server -m MODEL.gguf, vllm serve MODEL) or fix llm.base_url"
    )


def _root(base_url: str) -> str:
    """The server root, where llama.cpp and vLLM keep their non-OpenAI endpoints."""
    return base_url.removesuffix("/v1")


def _show(value: Any) -> str:
    dump = getattr(value, "model_dump", None)
    return str(dump() if callable(dump) else value)[:300]


def _error_message(response: httpx2.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    if isinstance(err, str):
        return err
    if isinstance(data, dict) and "detail" in data:  # FastAPI's validation errors
        return json.dumps(data["detail"])[:300]
    return str(data)[:300]


def _constraint(options: GenerationOptions, style: Constraints, where: str) -> dict[str, Any]:
    """The request fields that make the server follow a grammar or a JSON schema."""
    if options.grammar is None and options.json_schema is None:
        return {}
    if options.grammar is not None and options.json_schema is not None:
        raise NotImplementedError("pass grammar or json_schema, not both")
    if style == "none":
        raise NotImplementedError(f"llm.constraints is 'none' for {where}: it cannot honour a grammar or a JSON schema")
    if options.json_schema is not None:
        if style == "llama_cpp":
            return {"response_format": {"type": "json_object", "schema": options.json_schema}}
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "agentkit", "schema": options.json_schema}}}
    if style == "llama_cpp":
        return {"grammar": options.grammar}
    if style == "vllm":
        # `guided_grammar` for vLLM before 0.10, `structured_outputs` after; each ignores the other.
        return {"guided_grammar": options.grammar, "structured_outputs": {"grammar": options.grammar}}
    raise NotImplementedError(
        f"{where} speaks plain OpenAI, which has no GBNF grammars; use json_schema, or set "
        "llm.constraints to llama_cpp or vllm if the server is one of those"
    )


def _logprobs(value: Any) -> list[TokenLogprob] | None:
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    items = value.get("content") if isinstance(value, dict) else None
    if not isinstance(items, list):
        return None
    out = []
    for item in items:
        top = {str(t.get("token")): float(t.get("logprob")) for t in item.get("top_logprobs") or [] if t.get("logprob") is not None}
        out.append(TokenLogprob(token=str(item.get("token", "")), logprob=float(item.get("logprob", float("nan"))), top=top))
    return out
