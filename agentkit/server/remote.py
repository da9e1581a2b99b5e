"""Working beside a running `agentkit serve`: `ingest`, `delete` and `ask` go through the server that holds
the embedded store, instead of failing on its lock.

Why through the server: the embedded store (qdrant-edge, or qdrant-client's local mode) is held
by a file lock for as long as the process keeps it open, and a server keeps it open from its first
question on. Opening it per request would make every question pay the open (for local mode, a
load of the whole collection) and still fail while an ingest held it; a shared read-only open is
not offered by either engine. So the process that holds the store does the writing too.

How: `serve` writes DATA_DIR/serve.json (pid, url, a random key; mode 0600) while it runs and
removes it when it stops. `ingest`, `delete` and `ask` find it, check that the pid is alive, and
POST to /extras/ingest, /extras/delete or /extras/ask with the key in X-Agentkit-Local-Key: reading the file proves the
caller is the user who started the server, so these endpoints need no bearer token, and a
browser page, which cannot read the file, cannot use them. Paths are read by the server, so the
document ids are those a local ingest gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import os
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentkit.errors import AgentkitError, SourceUnavailable, StoreLocked

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from agentkit.ingest.pipeline import IngestReport
    from agentkit.server.app import AgentServer
    from agentkit.types import Answer

#: The file a running server announces itself in, inside the data dir.
ANNOUNCE_FILE = "serve.json"
KEY_HEADER = "X-Agentkit-Local-Key"
#: Seconds to wait for a forwarded ingest or answer (an ingest of many files takes long).
FORWARD_TIMEOUT = 3600.0
#: The `ingest` options a command may pass on, and their types.
_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "chunk_tokens": int, "overlap": int, "max_file_mb": (int, float), "id_prefix": str, "prune": bool,
}


@dataclass
class Announced:
    """A server that said it runs with this data dir."""

    pid: int
    url: str
    key: str
    sources: list[str]
    file: Path

    def describe(self) -> str:
        return f"agentkit serve (pid {self.pid}, {self.url})"


# --- the server side ------------------------------------------------------------------------------


def routes(server: AgentServer) -> list[Route]:
    """The endpoints, registered by create_app; the key they check is made here, once per app."""
    from starlette.routing import Route

    endpoints = _Endpoints(server)
    server.local_key = endpoints.key  # type: ignore[attr-defined]
    return [
        Route("/extras/ingest", endpoints.ingest, methods=["POST"]),
        Route("/extras/ask", endpoints.ask, methods=["POST"]),
        Route("/extras/delete", endpoints.delete, methods=["POST"]),
    ]


@contextlib.contextmanager
def announce(server: AgentServer, host: str, port: int) -> Iterator[Announced | None]:
    """Announce `server` in its data dir while the block runs (nothing for port 0, whose port
    is known only once bound, or without a config's data dir)."""
    config = server.agent.config
    key = getattr(server, "local_key", None)
    if config is None or not port or key is None:
        yield None
        return
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    data_dir = Path(config.data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    entry = Announced(os.getpid(), f"http://{shown}:{port}", key, list(server.agent.sources), data_dir / ANNOUNCE_FILE)
    body = json.dumps({"pid": entry.pid, "url": entry.url, "key": entry.key, "sources": entry.sources})
    tmp = entry.file.with_name(f".{ANNOUNCE_FILE}.{entry.pid}")
    # 0600 from the start: the key in it is what lets a process ingest through this server.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
    os.replace(tmp, entry.file)
    try:
        yield entry
    finally:
        current = find_server(data_dir, check_alive=False)
        if current is not None and current.pid == entry.pid:
            with contextlib.suppress(OSError):
                entry.file.unlink()


class _Endpoints:
    def __init__(self, server: AgentServer) -> None:
        self.server = server
        self.key = secrets.token_urlsafe(32)
        #: One ingest at a time: two writers of one store would interleave their deletes.
        self._ingesting = threading.Lock()

    def _check_key(self, request: Request) -> None:
        from agentkit.server.protocol import ApiError

        given = request.headers.get(KEY_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.key.encode()):
            raise ApiError(
                403,
                f"this endpoint is for agentkit commands run by the user who started the server: send the key "
                f"from DATA_DIR/{ANNOUNCE_FILE} in {KEY_HEADER}",
                code="invalid_local_key",
            )

    async def _body(self, request: Request) -> dict[str, Any]:
        from agentkit.server.protocol import ApiError

        # The chat endpoint's reader: the same --max-body and nesting limits, the same 400s.
        body = await self.server._read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, f"send a JSON object, got {type(body).__name__}", code="invalid_json")
        return body

    async def ingest(self, request: Request) -> Response:
        """{"paths": [...], "source": NAME?, "chunk_tokens": N?, "overlap": N?} -> the ingest report."""
        import anyio
        from starlette.responses import JSONResponse

        from agentkit.server.protocol import ApiError

        self._check_key(request)
        body = await self._body(request)
        paths = body.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise ApiError(400, 'send {"paths": ["/absolute/path", ...]}', param="paths")
        agent = self.server.agent
        config = agent.config
        name = self._source_name(body)
        given = body.get("options") or {}
        if not isinstance(given, dict) or not all(k in _OPTIONS and isinstance(v, _OPTIONS[k]) for k, v in given.items()):
            raise ApiError(400, f"options: known are {', '.join(_OPTIONS)}, with scalar values", param="options")
        options: dict[str, Any] = {}
        if config is not None:
            options.update(chunk_tokens=config.ingest.chunk_tokens, overlap=config.ingest.chunk_overlap,
                           batch_size=config.ingest.batch_size, max_file_mb=config.ingest.max_file_mb)
        options.update(given, progress=False)

        def run() -> dict[str, Any]:
            from agentkit.ingest.pipeline import ingest as run_ingest

            with self._ingesting, _ingest_lock(config.data_dir if config else None):
                report = run_ingest([Path(p) for p in paths], agent.sources[name], **options)
            return {**dataclasses.asdict(report), "summary": report.summary()}

        try:
            result = await anyio.to_thread.run_sync(run)
        except AgentkitError as exc:
            raise ApiError(400, str(exc)) from exc
        return JSONResponse(result)

    async def delete(self, request: Request) -> Response:
        """{"ids": [...], "source": NAME?} -> {"source": NAME, "removed": {doc_id: chunks}}."""
        import anyio
        from starlette.responses import JSONResponse

        from agentkit.server.protocol import ApiError

        self._check_key(request)
        body = await self._body(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, 'send {"ids": ["document id", ...]}', param="ids")
        name = self._source_name(body)

        def run() -> dict[str, int]:
            from agentkit.ingest.pipeline import delete_documents

            config = self.server.agent.config
            with self._ingesting, _ingest_lock(config.data_dir if config else None):
                return delete_documents(self.server.agent.sources[name], list(dict.fromkeys(ids)))

        try:
            removed = await anyio.to_thread.run_sync(run)
        except AgentkitError as exc:
            raise ApiError(400, str(exc)) from exc
        return JSONResponse({"source": name, "removed": removed})

    def _source_name(self, body: dict[str, Any]) -> str:
        from agentkit.server.protocol import ApiError

        agent = self.server.agent
        config = agent.config
        name = body.get("source") or (config.ingest.source if config else None) or next(iter(agent.sources), "")
        if name not in agent.sources:
            raise ApiError(400, f"this server has no source named {name!r}; it serves {', '.join(agent.sources) or 'none'}",
                           param="source")
        return str(name)

    async def ask(self, request: Request) -> Response:
        """{"question": "...", "route": [...]?} -> Answer.to_dict(); takes a slot like a chat."""
        import anyio
        from starlette.responses import JSONResponse

        from agentkit.server.protocol import ApiError

        self._check_key(request)
        body = await self._body(request)
        question, route = body.get("question"), body.get("route")
        if not isinstance(question, str):
            raise ApiError(400, 'send {"question": "..."}', param="question")
        if route is not None and not (isinstance(route, list) and all(isinstance(r, str) for r in route)):
            raise ApiError(400, "route must be a list of source names", param="route")
        self.server._acquire()
        try:
            answer = await anyio.to_thread.run_sync(lambda: self.server.agent.ask(question, route=route))
        except AgentkitError as exc:
            raise ApiError(400, str(exc)) from exc
        finally:
            self.server._release()
        return JSONResponse(answer.to_dict())


def _ingest_lock(data_dir: Any) -> Any:
    """The data dir's ingest lock (agentkit.ingest.lock), so a server's ingest and a command's do not mix."""
    from agentkit.ingest.lock import ingest_lock

    return ingest_lock(data_dir) if data_dir is not None else contextlib.nullcontext()


# --- the command side -----------------------------------------------------------------------------


def find_server(data_dir: str | Path, *, check_alive: bool = True) -> Announced | None:
    """The server announced in `data_dir`, if any (and if its process still runs)."""
    file = Path(data_dir).expanduser() / ANNOUNCE_FILE
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
        entry = Announced(int(raw["pid"]), str(raw["url"]), str(raw["key"]), list(raw.get("sources") or []), file)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if check_alive and not _alive(entry.pid):
        return None  # killed without cleaning up: a stale file
    return entry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True


def _post(server: Announced, path: str, body: dict[str, Any], timeout: float = FORWARD_TIMEOUT) -> dict[str, Any]:
    request = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", KEY_HEADER: server.key},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - our own server's url
            return dict(json.loads(reply.read()))
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        raise AgentkitError(f"{server.describe()} refused the request: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceUnavailable(
            f"{server.describe()} holds the store but does not answer ({reason}); wait for it, or stop it "
            f"(kill {server.pid}) and run the command again"
        ) from None


def remote_ingest(server: Announced, paths: Sequence[Path], source: str, options: dict[str, Any]) -> dict[str, Any]:
    """Ingest through `server`; paths are made absolute, since the server has its own cwd."""
    body = {"paths": [str(Path(p).expanduser().absolute()) for p in paths], "source": source, "options": options}
    return _post(server, "/extras/ingest", body)


def remote_ask(server: Announced, question: str, route: Sequence[str] | None) -> Answer:
    body: dict[str, Any] = {"question": question}
    if route:
        body["route"] = list(route)
    return answer_from_dict(_post(server, "/extras/ask", body))


def locked_error(exc: StoreLocked, data_dir: str | Path) -> StoreLocked:
    """`exc` with who holds the store, when that can be told, and what to do."""
    announced = find_server(data_dir, check_alive=False)
    if announced is not None and _alive(announced.pid):
        holder = f"{announced.describe()} holds it, but did not take the request"
    elif announced is not None:
        holder = f"{announced.file} names pid {announced.pid}, which is no longer running"
    else:
        holder = "no agentkit serve announced itself in the data dir"
    where = f" ({exc.path})" if exc.path else ""
    return StoreLocked(f"{exc}. {holder}; find the holder of the store{where} with `fuser -v` or `lsof`", exc.path)


def answer_from_dict(d: dict[str, Any]) -> Answer:
    """The Answer a server sent (Answer.to_dict()), rebuilt for display."""
    from agentkit.types import Answer, Citation, Passage, RouteDecision, Step, Usage

    passages = [Passage(**p) for p in d.get("passages") or []]
    by_id = {p.id: p for p in passages}
    citations = []
    for c in d.get("citations") or []:
        passage = by_id.get(c["passage_id"]) or Passage(c["passage_id"], "", c.get("title", ""), c.get("source", ""),
                                                         uri=c.get("uri", ""))
        citations.append(Citation(c["marker"], passage, c.get("sentence", ""), c.get("inferred", False),
                                  c.get("support"), c.get("supported"), c.get("quote", ""), c.get("start"), c.get("end")))
    route = d.get("route")
    return Answer(
        question=d.get("question", ""), text=d.get("text", ""), citations=citations,
        route=RouteDecision(**route) if route else None, reasoning=d.get("reasoning", ""), passages=passages,
        usage=Usage(**{k: v for k, v in (d.get("usage") or {}).items() if k != "total_tokens"}), timings=d.get("timings") or {}, warnings=d.get("warnings") or [],
        steps=[Step(**s) for s in d.get("steps") or []], from_memory=bool(d.get("from_memory")),
        withheld=d.get("withheld", ""), adapters=d.get("adapters") or {}, kind=d.get("kind", "model"),
        finish_reason=d.get("finish_reason", "stop"),
    )


def forwarded_ingest(data_dir: str | Path, source: str, paths: Sequence[Path], **options: Any) -> IngestReport | None:
    """Ingest through the server announced in `data_dir` when it serves `source`; None when no
    such server runs (the caller then ingests itself). Options left at None keep the server's."""
    from agentkit.ingest.loaders import IngestFailure
    from agentkit.ingest.pipeline import IngestReport

    server = find_server(data_dir)
    if server is None or source not in server.sources:
        return None
    import click

    click.secho(f"{server.describe()} holds the store; ingesting through it", err=True)
    given = {k: v for k, v in options.items() if v is not None and v != ""}
    d = remote_ingest(server, paths, source, given)
    fields = {f.name for f in dataclasses.fields(IngestReport)}
    report = IngestReport(**{k: v for k, v in d.items() if k in fields})
    report.failures = [IngestFailure(*f) for f in report.failures]
    return report


def forwarded_delete(data_dir: str | Path, source: str, doc_ids: Sequence[str]) -> dict[str, int] | None:
    """Delete through the server announced in `data_dir` when it serves `source`; None when no
    such server runs (the caller then deletes itself)."""
    server = find_server(data_dir)
    if server is None or source not in server.sources:
        return None
    import click

    click.secho(f"{server.describe()} holds the store; deleting through it", err=True)
    reply = _post(server, "/extras/delete", {"ids": list(doc_ids), "source": source})
    return {str(k): int(v) for k, v in (reply.get("removed") or {}).items()}


def forwarded_answer(data_dir: str | Path, question: str, route: Sequence[str] | None) -> Answer | None:
    """The answer of the server announced in `data_dir`; None when none runs."""
    server = find_server(data_dir)
    if server is None:
        return None
    import click

    click.secho(f"answered by {server.describe()}, which holds the store", err=True)
    return remote_ask(server, question, route)

