"""The chat page `agentkit serve` shows at `/`, and the thin endpoints only that page needs:
the configured sources with counts, a search over one source, and the saved chat sessions.

The page is plain HTML, CSS and JS shipped in agentkit/server/web/ (no build step, no CDN). It is
served without a token (it holds no data); every endpoint it calls asks for the same bearer token
as /v1/chat/completions. Sessions are the SQLite store that `agentkit chat --session` uses
(DATA_DIR/sessions.sqlite); the page saves each finished or stopped turn through POST
/extras/sessions/{name}/turns, so the chat endpoint itself stays stateless.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkit.errors import InputError
from agentkit.server.protocol import ApiError, as_api_error

if TYPE_CHECKING:
    from starlette.requests import Request

    from agentkit.server.app import AgentServer
    from agentkit.sessions import SessionStore

#: The page's files: URL path -> (file in agentkit/server/web/, media type).
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/web/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/web/app.css": ("app.css", "text/css; charset=utf-8"),
    "/web/icon.svg": ("icon.svg", "image/svg+xml"),
}
#: Nothing but the page's own files may run or load: passage text that slipped into the DOM as
#: HTML would still find no script it may execute and no foreign host to send data to.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: The most passages one search from the page returns.
MAX_SEARCH_K = 50
#: The longest search query accepted, in characters.
MAX_QUERY_CHARS = 2_000


def routes(server: AgentServer, sessions_path: str | Path | None = None) -> list[Route]:
    """The page and its endpoints, registered by create_app.

    `sessions_path`: the session store's file; by default DATA_DIR/sessions.sqlite of the agent's
    config, and no sessions (the endpoints say so) for an agent built without a config.
    """
    if sessions_path is None and server.agent.config is not None:
        from agentkit.sessions import default_path

        sessions_path = default_path(server.agent.config.data_dir)
    web = _Web(server, Path(sessions_path) if sessions_path is not None else None)
    return [
        *(Route(path, web.file, methods=["GET"]) for path in _FILES),
        Route("/extras/sources", web.sources, methods=["GET"]),
        Route("/extras/search", web.search, methods=["POST"]),
        Route("/extras/sessions", web.sessions, methods=["GET"]),
        Route("/extras/sessions/{name:path}/turns", web.add_turn, methods=["POST"]),
        Route("/extras/sessions/{name:path}", web.session, methods=["GET"]),
    ]


class _Web:
    def __init__(self, server: AgentServer, sessions_path: Path | None) -> None:
        self.server = server
        self.sessions_path = sessions_path
        self._store: SessionStore | None = None
        self._opening = threading.Lock()

    async def file(self, request: Request) -> Response:
        name, media = _FILES[request.url.path]
        body = resources.files("agentkit.server").joinpath("web", name).read_bytes()
        headers = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        return Response(body, media_type=media, headers=headers)

    # --- sources ----------------------------------------------------------------------------

    async def sources(self, request: Request) -> Response:
        self.server._check_token(request)
        agent = self.server.agent

        def describe() -> list[dict[str, Any]]:
            out = []
            for name, source in agent.sources.items():
                count = getattr(source, "count", None)
                try:
                    n = int(count()) if callable(count) else None
                except Exception:  # noqa: BLE001 - an unreachable source still gets listed, without a count
                    n = None
                out.append({"name": name, "description": getattr(source, "description", ""), "count": n})
            return out

        listed = await anyio.to_thread.run_sync(describe)
        return JSONResponse(
            {"model": self.server.model_name, "llm": agent.llm.name, "sources": listed, "sessions": self.sessions_path is not None}
        )

    async def search(self, request: Request) -> Response:
        self.server._check_token(request)
        body = await self.server._read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, 'send {"source": "NAME", "query": "text", "k": 5}', code="invalid_json")
        sources = self.server.agent.sources
        name, query, k = body.get("source"), body.get("query"), body.get("k", 5)
        if name not in sources:
            raise ApiError(
                400,
                f"unknown source {name!r}; this server has {', '.join(sources) or 'no sources'} (GET /extras/sources)",
                code="unknown_source",
                param="source",
            )
        if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUERY_CHARS:
            raise ApiError(400, f"query must be 1-{MAX_QUERY_CHARS} characters of text", code="invalid_value", param="query")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_SEARCH_K:
            raise ApiError(400, f"k must be a whole number from 1 to {MAX_SEARCH_K}, got {k!r}", code="invalid_value", param="k")
        source = sources[name]
        # A search may take a slot's worth of work (embedding the query, a remote engine).
        self.server._acquire()
        try:
            passages = await anyio.to_thread.run_sync(lambda: source.search(query, k=k))
        except Exception as exc:
            raise as_api_error(exc) from exc
        finally:
            self.server._release()
        return JSONResponse(
            {
                "source": name,
                "query": query,
                "passages": [
                    {"id": p.id, "title": p.title, "uri": p.uri, "source": p.source or name, "score": p.score, "text": p.text}
                    for p in passages
                ],
            }
        )

    # --- sessions ---------------------------------------------------------------------------

    def _sessions(self) -> SessionStore:
        if self.sessions_path is None:
            raise ApiError(
                404,
                "this server keeps no sessions: it was started without a config (create_app(agent)); "
                "run `agentkit serve`, or build the agent with Agent.from_config, to save chats in DATA_DIR/sessions.sqlite",
                code="sessions_unavailable",
            )
        with self._opening:
            if self._store is None:
                from agentkit.sessions import SessionStore

                self._store = SessionStore(self.sessions_path)
            return self._store

    async def sessions(self, request: Request) -> Response:
        self.server._check_token(request)
        store = self._sessions()
        infos = await anyio.to_thread.run_sync(store.list)
        return JSONResponse({"sessions": [i.to_dict() for i in infos]})

    async def session(self, request: Request) -> Response:
        self.server._check_token(request)
        store = self._sessions()
        name = request.path_params["name"]
        try:
            data = await anyio.to_thread.run_sync(store.export, name)
        except InputError as exc:
            raise ApiError(404, str(exc), code="session_not_found") from None
        return JSONResponse(data)

    async def add_turn(self, request: Request) -> Response:
        """Save one question and its answer (or the part streamed before it was stopped)."""
        self.server._check_token(request)
        store = self._sessions()
        body = await self.server._read_json(request)
        usage = (
            'send {"question": "text", "answer": "text", "complete": true, "record": {citations, route, '
            "warnings, reasoning, evidence, ...}}"
        )
        if not isinstance(body, dict) or not isinstance(body.get("question"), str) or not isinstance(body.get("answer"), str):
            raise ApiError(400, usage, code="invalid_value")
        record = body.get("record")
        if record is not None and not isinstance(record, dict):
            raise ApiError(400, usage, code="invalid_value", param="record")
        name = request.path_params["name"]

        def save() -> int:
            return store.append_turn(name, body["question"], body["answer"], answer=record,
                                     complete=bool(body.get("complete", True)))

        try:
            seq = await anyio.to_thread.run_sync(save)
        except InputError as exc:
            raise ApiError(400, str(exc), code="invalid_value", param="name") from None
        return JSONResponse({"session": name.strip(), "seq": seq})
