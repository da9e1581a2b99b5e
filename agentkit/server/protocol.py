"""The OpenAI chat-completions wire format, as agentkit's server reads and writes it.

Pure functions and small classes (no HTTP here): request parsing, response and chunk bodies, errors.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentkit.errors import AgentkitError, InputError, PromptTooLong, UnknownSource
from agentkit.llm.base import Completion, GenerationOptions, TokenLogprob
from agentkit.types import Answer, Message, Passage, Usage

#: Largest grammar or JSON schema (characters; a schema as compact JSON) by default: each new one
#: is compiled by the model's backend, and a large one costs time and memory on every request.
DEFAULT_MAX_GRAMMAR = 16_384
#: Deepest nesting of arrays and objects a request body may have.
MAX_JSON_DEPTH = 64

#: Roles a client may send; OpenAI's newer "developer" role counts as "system".
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(Exception):
    """An error the client caused (or may retry), sent as OpenAI's `{"error": {...}}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


def as_api_error(exc: BaseException) -> ApiError:
    """The reply for an exception raised while answering: agentkit's own errors keep their text
    (a client's bad input is 4xx), anything else is a 500 that points at the server's log."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PromptTooLong):
        return ApiError(400, str(exc), code="context_length_exceeded")
    if isinstance(exc, UnknownSource):
        return ApiError(400, str(exc), code="unknown_source", param="agentkit.route")
    if isinstance(exc, (InputError, NotImplementedError)):
        return ApiError(422, str(exc) or type(exc).__name__, code="invalid_value")
    if isinstance(exc, AgentkitError):
        return ApiError(500, f"{type(exc).__name__}: {exc}", "server_error", "agentkit_error")
    return ApiError(500, f"internal error ({type(exc).__name__}: {exc}); see the server's log", "server_error", "internal_error")


@dataclass
class ChatRequest:
    """A validated `/v1/chat/completions` request."""

    model: str
    #: True for the bare model (no routing, no retrieval): `<name>/raw`.
    raw: bool
    messages: list[Message]
    stream: bool = False
    include_usage: bool = False
    options: GenerationOptions = field(default_factory=GenerationOptions)
    #: Forced route (agent mode only), from the extra field `{"agentkit": {"route": [...]}}`.
    route: list[str] | None = None
    #: Agent mode: the request's own limits (None = the agent's settings), see `AGENT_SAMPLING`.
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    #: Sampling fields the request set that the model it named does not apply (`ignored_note`).
    ignored: list[str] = field(default_factory=list)

    @property
    def question(self) -> str:
        return self.messages[-1].content

    @property
    def history(self) -> list[Message]:
        """Earlier user/assistant turns; system messages are dropped (the agent has its own)."""
        return [m for m in self.messages[:-1] if m.role in ("user", "assistant")]


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in decoded JSON (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break  # deep enough to refuse: walking further only costs time
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_chat_request(
    body: Any, model_name: str, max_tokens: int, max_grammar_chars: int = DEFAULT_MAX_GRAMMAR
) -> ChatRequest:
    """Validate a decoded JSON body; 400 for a malformed request, 422 for values agentkit cannot honour."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    model = body.get("model")
    known = (model_name, f"{model_name}/raw")
    if model not in known:
        raise ApiError(
            400,
            f"unknown model {model!r}; this server has {known[0]!r} (the agent: retrieval and citations) "
            f"and {known[1]!r} (the bare model); see GET /v1/models",
            code="model_not_found",
            param="model",
        )
    raw = model == known[1]
    messages = _messages(body.get("messages"), raw)
    if body.get("n", 1) != 1:
        raise ApiError(422, "n must be 1: agentkit returns one answer per request", code="invalid_value", param="n")
    if body.get("tools") or body.get("functions"):
        raise ApiError(422, "tools and functions are not supported; send plain messages", code="unsupported_parameter", param="tools")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(422, f"stream must be true or false, got {stream!r}", code="invalid_value", param="stream")
    stream_options = body.get("stream_options") or {}
    include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
    request = ChatRequest(model=str(model), raw=raw, messages=messages, stream=stream, include_usage=include_usage)
    if raw:
        request.options = _options(body, max_tokens, max_grammar_chars)
        request.ignored = _ignored(body, RAW_IGNORED)
    else:
        for name in ("response_format", "grammar", "logprobs"):
            value = body.get(name)
            if value and value != {"type": "text"}:
                raise ApiError(
                    422,
                    f"{name} applies to the bare model only: send it with model {known[1]!r}; "
                    f"{known[0]!r} always answers in text with citations",
                    code="unsupported_parameter",
                    param=name,
                )
        request.route = _route(body.get("agentkit"))
        _agent_sampling(body, request)
    return request


#: Sampling fields the agent model applies: max_tokens (or max_completion_tokens) caps each reply
#: the model generates for the answer; temperature applies to free-text replies (the quote
#: reader's grammar-forced reply is greedy); seed fixes the sampling.
AGENT_SAMPLING = ("max_tokens", "max_completion_tokens", "temperature", "seed")
#: Sampling fields the agent model ignores, each with the value that changes nothing (a request
#: sending that value is not warned about). The agent writes its reply in a fixed format and
#: composes the answer from it, so stop sequences and penalties would break the format, not
#: shape the answer; model `NAME/raw` takes them all but logit_bias (`RAW_SAMPLING`).
AGENT_IGNORED: dict[str, Any] = {
    "top_p": 1, "stop": None, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None,
    "repeat_penalty": 1, "top_k": 0, "min_p": 0,
}
#: Sampling fields the bare model applies, each with its range (`stop` and the response format
#: are checked on their own); `GenerationOptions` says what each means.
RAW_SAMPLING: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0, 2), "top_p": (float, 0, 1), "top_k": (int, 0, 1_000_000), "min_p": (float, 0, 1),
    "presence_penalty": (float, -2, 2), "frequency_penalty": (float, -2, 2), "repeat_penalty": (float, 0, 10),
}
#: Sampling fields the bare model ignores, as `AGENT_IGNORED`: no backend has a per-token bias.
RAW_IGNORED: dict[str, Any] = {"logit_bias": None}


def _agent_sampling(body: dict[str, Any], request: ChatRequest) -> None:
    limit = _number(body, "max_completion_tokens", int, 1, 1 << 20) or _number(body, "max_tokens", int, 1, 1 << 20)
    request.max_tokens = limit or None
    temperature = _number(body, "temperature", float, 0, 2)
    request.temperature = None if temperature is None else float(temperature)
    request.seed = _number(body, "seed", int, -(1 << 63), 1 << 63)
    request.ignored = _ignored(body, AGENT_IGNORED)


def _ignored(body: dict[str, Any], ignored: dict[str, Any]) -> list[str]:
    """The fields of `ignored` the request set to anything but their neutral value."""
    return [name for name, neutral in ignored.items() if body.get(name) not in (None, neutral, {}, [])]


def ignored_note(request: ChatRequest, raw_model: str) -> str:
    """The warning for the sampling fields a request set that its model does not apply ("" = none)."""
    if not request.ignored:
        return ""
    if request.raw:
        applied = ["max_tokens", "seed", "stop", *RAW_SAMPLING]
        return (
            f"ignored {', '.join(request.ignored)}: model {request.model!r} has no per-token bias; it applies "
            f"{', '.join(applied[:-1])} and {applied[-1]}"
        )
    return (
        f"ignored {', '.join(request.ignored)}: model {request.model!r} applies only max_tokens, temperature "
        f"and seed (its reply has a fixed format it composes the answer from); send them to {raw_model!r} "
        "for the bare model"
    )


def _messages(value: Any, raw: bool) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise ApiError(
            400,
            "messages is missing or empty; send a list like [{\"role\": \"user\", \"content\": \"What is agentkit?\"}]",
            code="missing_messages",
            param="messages",
        )
    out: list[Message] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ApiError(400, f"messages[{i}] must be an object with role and content", param="messages")
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise ApiError(
                422,
                f"messages[{i}].role {item.get('role')!r} is not supported; use system, user or assistant",
                code="invalid_value",
                param="messages",
            )
        out.append(Message(role, _text(item.get("content"), i)))  # type: ignore[arg-type]
    if not raw and out[-1].role != "user":
        raise ApiError(
            422,
            f"the last message must be the user's question, got role {out[-1].role!r}",
            code="invalid_value",
            param="messages",
        )
    return out


def _text(content: Any, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(
                    422, f"messages[{i}].content: only text parts are supported, got {kind!r}", code="invalid_value", param="messages"
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts", param="messages")


def _route(extra: Any) -> list[str] | None:
    if extra is None:
        return None
    route = extra.get("route") if isinstance(extra, dict) else None
    if route is None:
        return None
    if isinstance(route, str):
        route = [route]
    if not isinstance(route, list) or not all(isinstance(r, str) for r in route):
        raise ApiError(400, "agentkit.route must be a source name or a list of them (or 'parametric')", param="agentkit.route")
    return route


def _number(body: dict[str, Any], name: str, kind: type, low: float, high: float) -> Any:
    value = body.get(name)
    if value is None:
        return None
    what = "an integer" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ApiError(422, f"{name} must be {what}, got {value!r}", code="invalid_value", param=name)
    if not low <= value <= high:
        raise ApiError(
            422, f"{name} must be between {_bound(low)} and {_bound(high)}, got {value!r}", code="invalid_value", param=name
        )
    return value


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _options(body: dict[str, Any], max_tokens: int, max_grammar_chars: int = DEFAULT_MAX_GRAMMAR) -> GenerationOptions:
    """Sampling and constraints for the bare model, in agentkit's GenerationOptions."""
    options = GenerationOptions(max_tokens=max_tokens)
    limit = _number(body, "max_completion_tokens", int, 1, 1 << 20) or _number(body, "max_tokens", int, 1, 1 << 20)
    if limit:
        options.max_tokens = limit
    for name, (kind, low, high) in RAW_SAMPLING.items():
        value = _number(body, name, kind, low, high)
        if value is not None:
            setattr(options, name, kind(value))
    options.seed = _number(body, "seed", int, -(1 << 63), 1 << 63)
    stop = body.get("stop")
    if isinstance(stop, str):
        options.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        options.stop = list(stop)
    elif stop is not None:
        raise ApiError(422, "stop must be a string or a list of strings", code="invalid_value", param="stop")
    if body.get("logprobs"):
        options.logprobs = _number(body, "top_logprobs", int, 0, 20) or 0
    grammar = body.get("grammar")
    if grammar is not None and not isinstance(grammar, str):
        raise ApiError(422, "grammar must be GBNF text", code="invalid_value", param="grammar")
    options.grammar = grammar or None
    options.json_schema = _schema(body.get("response_format"))
    if options.grammar is not None:
        _check_size("grammar", len(options.grammar), max_grammar_chars)
    if options.json_schema is not None:
        _check_size("response_format", len(json.dumps(options.json_schema, separators=(",", ":"))), max_grammar_chars)
    return options


def _check_size(param: str, size: int, limit: int) -> None:
    if size > limit:
        what = "grammar" if param == "grammar" else "JSON schema in response_format"
        raise ApiError(
            400,
            f"the {what} is {size} characters; this server accepts at most {limit} "
            "(server.max_grammar_chars in its config); send a smaller one",
            code="grammar_too_large",
            param=param,
        )


def _schema(fmt: Any) -> dict[str, Any] | None:
    """The JSON schema of a response_format, in llama.cpp's and in OpenAI's spelling."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        schema = fmt.get("schema") or {"type": "object"}
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
    else:
        schema = None
    if not isinstance(schema, dict):
        raise ApiError(
            422,
            "response_format must be {\"type\": \"json_object\", \"schema\": {...}} or "
            "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}",
            code="invalid_value",
            param="response_format",
        )
    return schema


# --- responses ------------------------------------------------------------------------------


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def agentkit_field(answer: Answer) -> dict[str, Any]:
    """What an OpenAI response cannot say: how the text was made, citations with their quotes,
    route, warnings, the evidence (ids, and the texts that quote offsets index), timings.

    Each citation's `quote` is `text[start:end]` of the evidence entry whose `id` is its `passage_id`.
    A stream sends this on its very last chunk, the usage chunk when `include_usage` is set.
    """
    return {
        "text": answer.text,
        "kind": answer.kind,
        "withheld": answer.withheld,
        "citations": [c.to_dict() for c in answer.citations],
        "route": answer.route.to_dict() if answer.route else None,
        "warnings": list(answer.warnings),
        "passages": [p.id for p in answer.passages],
        "evidence": [_evidence(p) for p in _cited_evidence(answer)],
        "reasoning": answer.reasoning,
        "from_memory": answer.from_memory,
        "timings": dict(answer.timings),
    }


def _cited_evidence(answer: Answer) -> list[Passage]:
    """The evidence in [n] order, then any cited passage not among it, each once."""
    seen: dict[str, Passage] = {}
    for p in [*answer.passages, *(c.passage for c in answer.citations)]:
        seen.setdefault(p.id, p)
    return list(seen.values())


def _evidence(p: Passage) -> dict[str, Any]:
    return {"id": p.id, "title": p.title, "uri": p.uri, "source": p.source, "score": p.score, "text": p.text}


def completion_body(
    cid: str,
    model: str,
    text: str,
    usage: Usage,
    *,
    finish_reason: str = "stop",
    logprobs: Sequence[TokenLogprob] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": _logprobs(logprobs) if logprobs is not None else None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage.to_dict(),
    }
    if extra is not None:
        body["agentkit"] = extra
    return body


def answer_body(cid: str, model: str, answer: Answer) -> dict[str, Any]:
    return completion_body(
        cid, model, answer.text, answer.usage, finish_reason=answer.finish_reason, extra=agentkit_field(answer)
    )


def raw_body(cid: str, model: str, completion: Completion, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return completion_body(
        cid, model, completion.text, completion.usage, finish_reason=completion.finish_reason,
        logprobs=completion.logprobs, extra=extra,
    )


def raw_extra(request: ChatRequest) -> dict[str, Any] | None:
    """The bare model's `agentkit` field: only `warnings`, and only when there is one to give
    (the fields it ignored); a stream sends it on its very last chunk, as the agent's."""
    note = ignored_note(request, request.model)
    return {"warnings": [note]} if note else None


def chunk(
    cid: str,
    model: str,
    delta: dict[str, Any] | None,
    *,
    finish_reason: str | None = None,
    usage: Usage | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk`; `delta=None` gives the usage-only chunk (no choices)."""
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage.to_dict()
    if extra is not None:
        body["agentkit"] = extra
    return body


def _logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {
        "content": [
            {**entry(t.token, t.logprob), "top_logprobs": [entry(k, v) for k, v in t.top.items()]} for t in items
        ]
    }
