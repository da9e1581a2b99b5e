"""`agentkit serve`: the configured agent behind an OpenAI-compatible HTTP API, run by uvicorn.

Binds to 127.0.0.1 unless told otherwise, and warns when it is exposed without a token.
"""

from __future__ import annotations

import ipaddress

import click

from agentkit.cli.context import Context, model_option, threads_option
from agentkit.server.app import DEFAULT_MAX_BODY, DEFAULT_MAX_CONCURRENCY


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes the server to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port (0 = any free port).")
@click.option("--token", envvar="AGENTKIT_SERVER_TOKEN", default=None, help="Require 'Authorization: Bearer TOKEN' (default: $AGENTKIT_SERVER_TOKEN).")
@click.option("--max-concurrency", default=DEFAULT_MAX_CONCURRENCY, show_default=True, type=click.IntRange(1), help="Requests answered at once; more get 429 with Retry-After.")
@click.option("--max-body", default=DEFAULT_MAX_BODY, show_default=True, type=click.IntRange(1), help="Largest request body in bytes; larger ones get 413.")
@click.option("--model-name", default="agentkit", show_default=True, help="The model id clients send; NAME/raw is the bare model.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@model_option
@threads_option
@click.pass_obj
def serve(
    obj: Context,
    host: str,
    port: int,
    token: str | None,
    max_concurrency: int,
    max_body: int,
    model_name: str,
    log_level: str,
) -> None:
    """Serve the agent behind an OpenAI-compatible HTTP API.

    POST /v1/chat/completions (model NAME: the agent, with citations in the extra field
    `agentkit`; model NAME/raw: the bare model), GET /v1/models, GET /health.
    """
    import uvicorn

    from agentkit.server.app import create_app
    from agentkit.server.guard import host_name, is_safe_host

    if not token and not is_loopback(host):
        click.secho(
            f"warning: serving on {host} without a token: anyone who can reach this port can use the "
            "model; pass --token or set $AGENTKIT_SERVER_TOKEN",
            fg="yellow",
            err=True,
        )
    agent = obj.agent()
    warm = getattr(agent.llm, "warm_up", None)
    if warm is not None:
        warm()  # a missing or broken model fails now, with its own error, not at the first request
    settings = obj.config.server
    allowed_hosts = list(settings.allowed_hosts)
    if not token and not is_safe_host(host_name(host)):
        allowed_hosts.append(host)  # a name given to --host is the one its clients use
    app = create_app(
        agent,
        token=token,
        max_body_bytes=max_body,
        max_concurrency=max_concurrency,
        model_name=model_name,
        allowed_hosts=allowed_hosts,
        cors_origins=settings.cors_origins,
        max_grammar_chars=settings.max_grammar_chars,
    )
    shown = f"[{host}]" if ":" in host else host
    click.secho(
        f"agentkit serving {agent.llm.name} with sources {', '.join(agent.sources) or 'none'} on "
        f"http://{shown}:{port}/v1 (models: {model_name}, {model_name}/raw); chat page: http://{shown}:{port}/",
        err=True,
    )
    from agentkit.server.remote import announce

    # Announced in the data dir, so that `ingest` and `ask` beside it go through it (server/remote.py).
    with agent, announce(app.state.agentkit, host, port):
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
