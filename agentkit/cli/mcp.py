"""`agentkit mcp`: the MCP server of agentkit/mcp_server.py over stdio (stdout is the protocol)."""

from __future__ import annotations

import contextlib
import logging
import sys

import click

from agentkit.cli.context import Context
from agentkit.mcp_server import build_server, log


@click.command("mcp")
@click.option("--ask/--no-ask", "with_ask", default=True, show_default=True, help="Also offer the `ask` tool (runs the local model).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="WARNING", show_default=True, help="Logging, on stderr.")
@click.pass_obj
def mcp_command(obj: Context, with_ask: bool, log_level: str) -> None:
    """Serve the knowledge sources as MCP tools over stdio (for Claude Desktop and other clients).

    stdout carries the protocol; logs go to stderr.
    """
    logging.basicConfig(stream=sys.stderr, level=log_level, format="agentkit mcp: %(levelname)s %(message)s")
    log.setLevel(log_level)
    # Whatever building the agent prints must not reach stdout, which is the protocol.
    with contextlib.redirect_stdout(sys.stderr):
        agent = obj.agent()
        server = build_server(agent, ask=with_ask)
    log.info("serving %d source(s) over stdio: %s", len(agent.sources), ", ".join(agent.sources) or "none")
    with agent:
        try:
            server.run("stdio")
        except KeyboardInterrupt:
            log.info("stopped")
