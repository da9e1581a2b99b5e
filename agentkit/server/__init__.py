"""An OpenAI-compatible HTTP front for an agent: `agentkit serve`, or `create_app(agent)` in code.

Importing this package loads nothing; `agentkit.server.app` pulls in starlette when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app"]

if TYPE_CHECKING:
    from agentkit.server.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from agentkit.server.app import create_app

        return create_app
    raise AttributeError(f"module 'agentkit.server' has no attribute {name!r}")
