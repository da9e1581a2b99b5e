"""The HTTP app behind `agentkit serve`: OpenAI's chat completions (JSON or SSE), models, health.

Generation is blocking, so each request runs in a worker thread; a bounded number run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agentkit.llm.base import Completion
from agentkit.logs import logged
from agentkit.server.guard import BrowserGuard
from agentkit.server.remote import routes as remote_routes
from agentkit.server.runs import Run
from agentkit.server.splitter import ReplySplitter
from agentkit.server.web import routes as web_routes
from agentkit.server.protocol import (
    DEFAULT_MAX_GRAMMAR,
    MAX_JSON_DEPTH,
    ApiError,
    ChatRequest,
    as_api_error,
    agentkit_field,
    answer_body,
    chunk,
    completion_id,
    ignored_note,
    json_depth,
    parse_chat_request,
    raw_body,
    raw_extra,
)
from agentkit.display import same_answer
from agentkit.types import Answer, AnswerEvent, ContentEvent, RouteEvent, StepEvent, TokenEvent, Usage

if TYPE_CHECKING:
    from agentkit.agent import Agent

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_MAX_CONCURRENCY = 8
#: Seconds a client is told to wait when every slot is taken.
RETRY_AFTER = 1


def create_app(
    agent: Agent,
    *,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    model_name: str = "agentkit",
    allowed_hosts: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    max_grammar_chars: int = DEFAULT_MAX_GRAMMAR,
) -> Starlette:
    """An ASGI app serving `agent` as model `model_name` and its bare LLM as `model_name/raw`.

    `token`: clients must send `Authorization: Bearer <token>` (GET /health answers without it,
    with its status only). Requests beyond `max_concurrency` get 429 with Retry-After; bodies
    over `max_body_bytes` get 413; grammars and JSON schemas over `max_grammar_chars` get 400.
    Browsers are kept out (see server/guard.py): without a token, Host must be an IP address,
    localhost or one of `allowed_hosts`; an Origin other than the server's own must be one of
    `cors_origins`, which alone get CORS headers; POST bodies must be application/json.
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
    server = AgentServer(
        agent,
        token=token,
        max_body_bytes=max_body_bytes,
        max_concurrency=max_concurrency,
        model_name=model_name,
        max_grammar_chars=max_grammar_chars,
    )
    # With a token a rebinding page cannot authenticate, so any Host passes unless the config lists some.
    middleware = [
        Middleware(
            BrowserGuard,
            check_host=server.token is None or bool(allowed_hosts),
            allowed_hosts=allowed_hosts,
            cors_origins=cors_origins,
        )
    ]
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
                max_age=600,
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        server.shutdown()

    app = Starlette(
        routes=[
            Route("/health", server.health, methods=["GET"]),
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/v1/chat/completions", server.chat, methods=["POST"]),
            Route("/extras/tokenize/count", server.count_tokens, methods=["POST"]),
            # `ingest` and `ask` run beside this server through it (it holds the store): server/remote.py.
            *remote_routes(server),
            # The chat page at / and the endpoints it alone uses: server/web.py.
            *web_routes(server),
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},  # type: ignore[dict-item]
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.agentkit = server
    return app


class AgentServer:
    """The endpoints, the token check and the concurrency slots of one served agent."""

    def __init__(
        self,
        agent: Agent,
        *,
        token: str | None,
        max_body_bytes: int,
        max_concurrency: int,
        model_name: str,
        max_grammar_chars: int = DEFAULT_MAX_GRAMMAR,
    ) -> None:
        self.agent = agent
        self.token = token or None
        self.max_body_bytes = max_body_bytes
        self.max_grammar_chars = max_grammar_chars
        self.max_concurrency = max_concurrency
        self.model_name = model_name
        #: Requests holding a slot: from the body read to the end of their worker thread.
        self.active = 0
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="agentkit-serve")
        self._runs: set[Run] = set()

    # --- endpoints --------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        if not self._authorized(request):
            # Anyone may ask whether it is up; what it serves is for clients holding the token.
            return JSONResponse({"status": "ok"})
        return JSONResponse(
            {
                "status": "ok",
                "model": self.agent.llm.name,
                "sources": list(self.agent.sources),
                "active": self.active,
                "max_concurrency": self.max_concurrency,
            }
        )

    async def models(self, request: Request) -> Response:
        self._check_token(request)
        # A remote backend may ask its own server: keep that off the event loop.
        context = await anyio.to_thread.run_sync(lambda: self.agent.llm.context_length)
        ids = (self.model_name, f"{self.model_name}/raw")
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": i, "object": "model", "created": 0, "owned_by": "agentkit", "context_length": context}
                    for i in ids
                ],
            }
        )

    async def count_tokens(self, request: Request) -> Response:
        """llama-cpp-python's `/extras/tokenize/count`, so that remote agents budget exactly."""
        self._check_token(request)
        self._check_declared_size(request)
        # Tokenizing a large body is real work on the model: it takes a slot like a generation.
        self._acquire()
        try:
            body = await self._read_json(request)
            text = body.get("input") if isinstance(body, dict) else None
            if not isinstance(text, str):
                raise ApiError(400, "send {\"input\": \"text to count\"}", param="input")
            count = await asyncio.wrap_future(self._pool.submit(self.agent.llm.count_tokens, text))
        finally:
            self._release()
        return JSONResponse({"count": count})

    async def chat(self, request: Request) -> Any:
        self._check_token(request)
        self._check_declared_size(request)
        self._acquire()
        try:
            body = await self._read_json(request)
            req = parse_chat_request(body, self.model_name, self.agent.settings.max_tokens, self.max_grammar_chars)
            run = self._start(req)
        except BaseException:
            self._release()
            raise
        try:
            first = await run.next()
        except BaseException as exc:
            run.stop()
            raise as_api_error(exc) from exc
        if req.stream:
            return _EventStream(run, self._chunks(req, run, first))
        rest = await _until_disconnect(request, run)
        if rest is None:
            return Response(status_code=499)  # nobody is left to read it
        items = [first, *rest]
        cid = completion_id()
        if req.raw:
            return JSONResponse(raw_body(cid, req.model, _completion(items), raw_extra(req)))
        answer = next(i.answer for i in items if isinstance(i, AnswerEvent))
        self._note_ignored(req, answer)
        return JSONResponse(answer_body(cid, req.model, answer))

    # --- helpers ------------------------------------------------------------------------------

    def _note_ignored(self, req: ChatRequest, answer: Answer) -> None:
        """Say, in the answer's warnings, which of the request's sampling fields the agent ignored."""
        note = ignored_note(req, f"{self.model_name}/raw")
        if note:
            answer.warnings.append(note)

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def _check_token(self, request: Request) -> None:
        if not self._authorized(request):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <token>' with the token the server "
                "was started with (agentkit serve --token, or $AGENTKIT_SERVER_TOKEN)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _too_large(self, size: str) -> ApiError:
        return ApiError(
            413,
            f"the request body is {size} bytes; this server accepts at most {self.max_body_bytes} "
            "(agentkit serve --max-body); send less history or shorter messages",
            code="request_too_large",
        )

    def _check_declared_size(self, request: Request) -> None:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large(declared)

    async def _read_json(self, request: Request) -> Any:
        self._check_declared_size(request)
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > self.max_body_bytes:
                raise self._too_large(f"over {self.max_body_bytes}")
        too_deep = ApiError(
            400,
            f"the request body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep, the most "
            "this server accepts; send a flatter body",
            code="invalid_json",
        )
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(
                400, f"the request body is not valid JSON ({exc}); send a JSON object with model and messages", code="invalid_json"
            ) from None
        except RecursionError:  # nested past Python's own limit
            raise too_deep from None
        # Deep nesting under that limit would still exhaust the recursion of whatever walks it
        # next (schema conversion, sorting keys) and surface as a 500.
        if json_depth(body) > MAX_JSON_DEPTH:
            raise too_deep
        return body

    def _acquire(self) -> None:
        # Slots are only counted on the event loop's thread, so a plain int needs no lock.
        if self.active >= self.max_concurrency:
            raise ApiError(
                429,
                f"the server is busy: {self.active} requests are running, the limit set by "
                f"--max-concurrency; retry after {RETRY_AFTER} s",
                "rate_limit_error",
                "concurrency_limit_exceeded",
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        self.active += 1

    def _release(self) -> None:
        self.active -= 1

    def _start(self, req: ChatRequest) -> Run:
        llm = self.agent.llm
        make: Callable[[], Iterator[Any]]
        if req.raw and (req.stream or req.options.logprobs is None):
            # Streamed even for a JSON reply, so that a client leaving stops it between tokens.
            make = lambda: llm.stream(req.messages, req.options)
        elif req.raw:
            make = lambda: iter([llm.chat(req.messages, req.options)])  # logprobs come with chat alone
        else:
            # Each served answer goes into `agentkit logs`, written in this worker thread.
            make = lambda: logged(self.agent.stream(
                req.question, history=req.history, route=req.route,
                max_tokens=req.max_tokens, temperature=req.temperature, seed=req.seed,
            ), self.agent.config, "serve")
        loop = asyncio.get_running_loop()

        def done(run: Run) -> None:
            self._runs.discard(run)
            self._release()

        run = Run(make, loop, done)
        self._runs.add(run)
        self._pool.submit(run.work)
        return run

    async def _chunks(self, req: ChatRequest, run: Run, first: Any) -> AsyncIterator[dict[str, Any]]:
        cid, model = completion_id(), req.model
        items = _mapped(run)
        if req.raw:
            yield chunk(cid, model, {"role": "assistant", "content": ""})
            usage = None
            item = first
            while True:
                if item.text:
                    yield chunk(cid, model, {"content": item.text})
                if item.finish_reason is not None:
                    usage = item.usage
                    last = None if req.include_usage else raw_extra(req)
                    yield chunk(cid, model, {}, finish_reason=item.finish_reason, extra=last)
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    break
            if req.include_usage and usage is not None:
                yield chunk(cid, model, None, usage=usage, extra=raw_extra(req))
            return
        route = first.decision.to_dict() if isinstance(first, RouteEvent) else None
        yield chunk(cid, model, {"role": "assistant", "content": ""}, extra={"route": route})
        splitter = ReplySplitter()
        content: list[str] = []  # what went out as content
        async for event in items:
            if isinstance(event, TokenEvent):
                for kind, text in splitter.feed(event.text):
                    if kind == "content":
                        content.append(text)
                    yield chunk(cid, model, {kind: text})
            elif isinstance(event, ContentEvent):
                # Answer text agentkit composes (the quote reader's: its quote as the model copies it).
                content.append(event.text)
                yield chunk(cid, model, {"content": event.text})
            elif isinstance(event, StepEvent):
                # Another generation follows (a search the model asked for, a re-retrieval): the
                # next reply is split afresh.
                for kind, text in splitter.finish():
                    if kind == "content":
                        content.append(text)
                    yield chunk(cid, model, {kind: text})
                splitter = ReplySplitter()
            elif isinstance(event, AnswerEvent):
                answer = event.answer
                self._note_ignored(req, answer)
                for kind, text in splitter.finish():
                    if kind == "content":
                        content.append(text)
                    yield chunk(cid, model, {kind: text})
                extra = agentkit_field(answer)
                streamed = "".join(content)
                if not streamed and answer.text:
                    # Nothing streamed as the answer (a reply that never reached its `Answer:`).
                    yield chunk(cid, model, {"content": answer.text})
                elif streamed and not same_answer(streamed, answer.text):
                    # agentkit withheld or replaced what streamed: the checked text follows it, and
                    # `revised` tells a client that can redraw to show `agentkit.text` alone.
                    extra["revised"] = True
                    yield chunk(cid, model, {"content": "\n\n" + answer.text})
                # The extra field rides on the very last chunk: the usage chunk when asked for.
                if req.include_usage:
                    yield chunk(cid, model, {}, finish_reason=answer.finish_reason)
                    yield chunk(cid, model, None, usage=answer.usage, extra=extra)
                else:
                    yield chunk(cid, model, {}, finish_reason=answer.finish_reason, extra=extra)

    def shutdown(self) -> None:
        for run in list(self._runs):
            run.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)


async def _until_disconnect(request: Request, run: Run) -> list[Any] | None:
    """The rest of a run's items, or None when the client went away first (the run is stopped then).

    The body has been read, so the next ASGI message can only be the disconnect.
    """
    items: list[Any] = []
    left = False

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal left
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left = True
        run.stop()
        scope.cancel()

    failed: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            try:
                async for item in _mapped(run):
                    items.append(item)
            except Exception as exc:  # raised below, not wrapped in the task group's ExceptionGroup
                failed = exc
            tg.cancel_scope.cancel()
    except BaseException:
        run.stop()
        raise
    if failed is not None:
        raise failed
    return None if left else items


def _completion(deltas: list[Any]) -> Completion:
    """A streamed raw reply put back together (a single Completion passes through)."""
    if len(deltas) == 1 and isinstance(deltas[0], Completion):
        return deltas[0]
    last = deltas[-1]
    return Completion(
        text="".join(d.text for d in deltas), usage=last.usage or Usage(), finish_reason=last.finish_reason or "stop"
    )


async def _mapped(run: Run) -> AsyncIterator[Any]:
    """The rest of a run's items; agentkit's errors surface as ApiError."""
    while True:
        try:
            item = await run.next()
        except StopAsyncIteration:
            return
        except Exception as exc:
            raise as_api_error(exc) from exc
        yield item


class _EventStream:
    """Server-sent events: one `data:` line per chunk, then `data: [DONE]`.

    Listens for the client going away meanwhile and stops the generation when it does.
    """

    def __init__(self, run: Run, chunks: AsyncIterator[dict[str, Any]]) -> None:
        self.run = run
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )

        async def write() -> None:
            try:
                try:
                    async for body in self.chunks:
                        await send({"type": "http.response.body", "body": _sse(body), "more_body": True})
                    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
                except ApiError as exc:
                    # The status line is gone already: the error travels as an event, which the
                    # openai client raises as an APIError.
                    await send({"type": "http.response.body", "body": _sse(exc.body()), "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the client went away while we were writing
                self.run.stop()

        async def watch(scope: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.run.stop()
            scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, tg.cancel_scope)
                await write()
                tg.cancel_scope.cancel()
        finally:
            self.run.stop()


def _sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def _api_error(request: Request, exc: ApiError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        message = f"no route {request.url.path}; this server has / (the chat page), /v1/chat/completions, /v1/models, /health and /extras/*"
    else:
        message = f"{request.method} {request.url.path}: {exc.detail}"
    err = ApiError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None)
    return JSONResponse(err.body(), status_code=exc.status_code, headers=dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    err = as_api_error(exc)
    return JSONResponse(err.body(), status_code=err.status)
