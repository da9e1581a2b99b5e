"""Keeps web pages in a browser from using a server meant for local clients: Host, Origin and
Content-Type checks in front of the app, and CORS headers only for origins the config names.

A page on another site can make the browser POST `text/plain` to 127.0.0.1 (no preflight), or,
by DNS rebinding, give 127.0.0.1 a name of its own so that the browser treats the server as
same-origin and lets the page read passages and file:// paths. The first is refused by Origin,
the second by Host (the page's own name), the rest by asking for `application/json`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from agentkit.server.protocol import ApiError


def host_name(host: str) -> str:
    """The name in a Host header: no port, no IPv6 brackets, no trailing dot, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def is_safe_host(name: str) -> bool:
    """An IP literal or a localhost name: no page's DNS can make a browser send these for its own site."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class BrowserGuard:
    """ASGI middleware: refuses foreign Host names (when `check_host`), foreign origins and non-JSON POSTs.

    `allowed_hosts`: names answered besides IP literals and localhost ("*" = any).
    `cors_origins`: other origins a browser may call from ("*" = any); same-origin pages always pass.
    """

    def __init__(
        self, app: ASGIApp, *, check_host: bool, allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.check_host = check_host
        self.allowed_hosts = {host_name(h) for h in allowed_hosts}
        self.cors_origins = {o.rstrip("/").lower() for o in cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self.refusal(scope)
        if error is not None:
            response = JSONResponse(error.body(), status_code=error.status)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> ApiError | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.check_host and host and not self._host_allowed(host_name(host)):
            return ApiError(
                403,
                f"Host {host!r} is not a name this server answers to without a token (IP addresses and "
                "localhost are): a web page may have renamed 127.0.0.1 to its own site (DNS rebinding). "
                "If you reach the server by this name, add it to server.allowed_hosts in the config, or "
                "start it with --token",
                "permission_error",
                "host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, f"{scope.get('scheme', 'http')}://{host}"):
            return ApiError(
                403,
                f"requests from the web page at {origin!r} are refused: this server answers browsers only "
                "from its own origin; to let that page call it, add the origin to server.cors_origins in the config",
                "permission_error",
                "origin_not_allowed",
            )
        if scope["method"] == "POST":
            media = headers.get("content-type", "").partition(";")[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                return ApiError(
                    415,
                    f"the request body must be sent as application/json, got {media or 'no Content-Type'!r}; "
                    "send the header 'Content-Type: application/json' (curl: -H 'Content-Type: application/json')",
                    code="unsupported_media_type",
                )
        return None

    def _host_allowed(self, name: str) -> bool:
        return "*" in self.allowed_hosts or is_safe_host(name) or name in self.allowed_hosts

    def _origin_allowed(self, origin: str, own: str) -> bool:
        origin = origin.rstrip("/").lower()
        return origin == own.lower() or "*" in self.cors_origins or origin in self.cors_origins
