"""`agentkit ask` (one question) and `agentkit chat` (the REPL in agentkit/cli/repl.py)."""

from __future__ import annotations

import sys

import click

from agentkit.cli.context import Context, model_option, record_answer, show_answer, threads_option


@click.command()
@click.argument("question", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole Answer as JSON.")
@click.option("--route", "routes", multiple=True, metavar="NAME", help="Force the route: a source name or 'parametric' (repeatable).")
@click.option("--stream/--no-stream", default=None, help="Print tokens as they come (default: when stdout is a terminal).")
@click.option("-v", "--verbose", is_flag=True, help="Also print the model's own answer when agentkit showed a source sentence or a refusal instead.")
@click.option("--progress/--no-progress", default=None, help="Say on stderr what agentkit is doing before the answer (default: when stderr is a terminal).")
@model_option
@threads_option
@click.pass_obj
def ask(obj: Context, question: tuple[str, ...], as_json: bool, routes: tuple[str, ...], stream: bool | None, verbose: bool,
        progress: bool | None) -> None:
    """Answer one QUESTION and exit."""
    from agentkit.display import LiveAnswer
    from agentkit.types import AnswerEvent

    from agentkit.server.remote import forwarded_answer

    text = " ".join(question)
    # Beside a running `agentkit serve` (which holds the store), the server answers.
    answer = None if obj.model else forwarded_answer(obj.config.data_dir, text, list(routes) or None)
    if answer is not None:
        record_answer(obj.config, answer, "ask")
        if as_json:
            click.echo(answer.to_json())
        else:
            show_answer(answer, hint="" if verbose else "--verbose shows it", verbose=verbose)
        return
    agent = obj.agent()
    # Tokens on stdout as they come (a terminal, or --stream); what agentkit is doing meanwhile
    # on stderr, so that stdout stays the answer.
    live = LiveAnswer(tokens=(sys.stdout.isatty() if stream is None else stream) and not as_json,
                      progress=sys.stderr.isatty() if progress is None else progress, err=True)
    with agent:
        for event in agent.stream(text, route=list(routes) or None):
            live.show(event)
            if isinstance(event, AnswerEvent):
                answer = event.answer
    assert answer is not None
    record_answer(obj.config, answer, "ask")
    if as_json:
        click.echo(answer.to_json())
        return
    show_answer(answer, live, hint="" if verbose else "--verbose shows it", verbose=verbose)


@click.command()
@click.option("--route", "routes", multiple=True, metavar="NAME", help="Force the route for every question.")
@click.option("--history-file", type=click.Path(dir_okay=False), default=None, help="Line-editing history (default: DATA_DIR/chat_history).")
@click.option("--session", "session", metavar="NAME", default=None, help="Save the conversation as NAME (in DATA_DIR/sessions.sqlite) and resume it if it exists.")
@threads_option
@model_option
@click.pass_obj
def chat(obj: Context, routes: tuple[str, ...], history_file: str | None, session: str | None) -> None:
    """An interactive session: streamed answers with their sources. /help lists the commands."""
    from agentkit.cli.repl import Repl

    if session is None:
        agent = obj.agent()
        with agent:
            Repl(agent, routes=list(routes) or None, history_file=history_file).run()
        return
    from agentkit.sessions import SessionStore, default_path

    with SessionStore(default_path(obj.config.data_dir)) as store:
        agent = obj.agent()
        with agent:
            Repl(agent, routes=list(routes) or None, history_file=history_file, store=store, session=session).run()
