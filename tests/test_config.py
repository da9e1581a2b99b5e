"""Config loading: defaults, interpolation, and errors that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentkit.config import DEFAULTS_FILE, load_config, parse_config
from agentkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_configs_default_is_the_packaged_default() -> None:
    # One source: agentkit loads the packaged file (editable install and wheel alike); the copy
    # under configs/ is for reading and copying, and must not drift from it.
    assert DEFAULTS_FILE == Path(__import__("agentkit").__file__).with_name("defaults.yaml")
    assert (ROOT / "configs" / "default.yaml").read_bytes() == DEFAULTS_FILE.read_bytes(), (
        "configs/default.yaml differs from agentkit/defaults.yaml, the file agentkit loads: "
        "edit agentkit/defaults.yaml, then cp agentkit/defaults.yaml configs/default.yaml"
    )


def test_default_config_is_the_embedded_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTKIT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AGENTKIT_CONFIG", raising=False)
    monkeypatch.delenv("AGENTKIT_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.llm["backend"] == "llama_cpp" and cfg.llm["model_path"] is None
    assert cfg.sources["docs"]["type"] == "qdrant"
    assert cfg.data_dir == tmp_path


def test_unknown_key_names_file_key_and_allowed(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("llm:\n  backend: llama_cpp\n  modle_path: x.gguf\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert str(f) in msg and "llm.modle_path" in msg and "model_path" in msg


def test_unknown_top_level_and_nested_keys() -> None:
    with pytest.raises(ConfigError, match=r"agent\.topk: unknown key 'topk'.*top_k"):
        parse_config("agent:\n  topk: 3\n", origin="x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: colour: unknown key"):
        parse_config("colour: blue\n", origin="x.yaml")


def test_bad_value_and_unknown_types() -> None:
    with pytest.raises(ConfigError, match=r"agent\.top_k: .*greater than or equal to 1"):
        parse_config("agent: {top_k: 0}\n")
    with pytest.raises(ConfigError, match=r"llm\.backend: unknown value 'gpt'; one of: .*llama_cpp"):
        parse_config("llm: {backend: gpt}\n")
    with pytest.raises(ConfigError, match=r"sources\.x\.type: unknown value 'mongo'; one of: .*memory"):
        parse_config("sources: {x: {type: mongo}}\n")
    with pytest.raises(ConfigError, match=r"sources\.x: missing key 'type'"):
        parse_config("sources: {x: {description: hi}}\n")
    with pytest.raises(ConfigError, match=r"sources\.x\.colection: unknown key"):
        parse_config("sources: {x: {type: memory, colection: a}}\n")
    with pytest.raises(ConfigError, match=r"ingest\.source: no source named 'nope'"):
        parse_config("ingest: {source: nope}\n")


def test_env_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AK_DESC", "secret notes")
    monkeypatch.delenv("AK_UNSET", raising=False)
    cfg = parse_config(
        "sources:\n  n: {type: memory, description: '${AK_DESC}'}\n"
        "data_dir: ${AK_UNSET:-/tmp/ak-default}\n"
    )
    assert cfg.sources["n"]["description"] == "secret notes"
    assert cfg.data_dir == Path("/tmp/ak-default")
    with pytest.raises(ConfigError, match=r"sources\.n\.description: environment variable AK_UNSET is not set"):
        parse_config("sources:\n  n: {type: memory, description: '${AK_UNSET}'}\n")


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("llm: [unclosed\n", origin="y.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


# --- secrets, empty files, settings a backend cannot honour, router policies -------------------

SECRETS = """\
llm: {backend: openai_compat, base_url: 'http://gpu:8080/v1', api_key: '${AK_TEST_KEY}'}
sources:
  es: {type: elasticsearch, url: 'https://elastic:hunter2@es.example:9200', username: elastic, password: hunter2}
"""


def test_config_command_masks_secrets_and_names_their_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from agentkit.cli import cli

    monkeypatch.setenv("AK_TEST_KEY", "sk-live-123456")
    f = tmp_path / "agentkit.yaml"
    f.write_text(SECRETS)
    result = CliRunner().invoke(cli, ["--config", str(f), "config"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "sk-live-123456" not in out and "hunter2" not in out  # before: both printed in clear
    assert "api_key: '*** (set from $AK_TEST_KEY)'" in out
    assert "password: '*** (set)'" in out
    assert "https://elastic:***@es.example:9200" in out
    assert "username: elastic" in out and "max_retries: 2" in out  # only secrets are masked


def test_a_wrong_type_error_does_not_echo_a_secret() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("llm: {backend: openai_compat, base_url: 'http://x/v1', api_key: [sk-live-654321]}\n", origin="s.yaml")
    msg = str(err.value)
    assert "s.yaml: llm.api_key" in msg and "the value is a secret and not shown" in msg
    assert "sk-live-654321" not in msg  # before: "(got ['sk-live-654321'])"


def test_secret_keys_are_recognised_by_name() -> None:
    from agentkit.config import is_secret_key, mask_secrets

    for key in ("api_key", "apikey", "password", "llm.api_key", "hf_token", "token", "client_secret", "credentials"):
        assert is_secret_key(key), key
    for key in ("max_tokens", "evidence_tokens", "chunk_tokens", "username", "description", "tokenizer"):
        assert not is_secret_key(key), key
    assert mask_secrets({"a": {"token": None, "password": ""}}) == {"a": {"token": None, "password": ""}}  # unset stays unset


def test_an_empty_config_file_is_an_error_naming_it(tmp_path: Path) -> None:
    for text in ("", "# all commented out\n# sources: ...\n"):
        f = tmp_path / "agentkit.yaml"
        f.write_text(text)
        # before: a config with no sources at all, silently
        with pytest.raises(ConfigError, match=rf"{f}: the file is empty \(or only comments\).*remove the file"):
            load_config(f)


TRANSFORMERS = "llm: {backend: transformers}\nsources:\n  notes: {type: memory}\n"


@pytest.mark.parametrize(("extra", "key"), [
    ("agent: {max_steps: 3}\n", r"agent\.max_steps: 3 lets the model choose searches as JSON; set agent\.max_steps: 1"),
    ("agent: {verify: judge}\n", r"agent\.verify: judge asks the model for a JSON verdict"),
    ("router: {policies: [rules, judge]}\n", r"router\.policies: the judge policy.*remove 'judge'"),
    ("tools: [word_count]\n", r"tools: the agent calls tools through JSON it cannot produce"),
])
def test_transformers_refuses_settings_that_need_a_grammar(extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"t\.yaml: {key}.*llama_cpp.*\(the transformers backend cannot constrain"):
        parse_config(TRANSFORMERS + extra, origin="t.yaml")
    # The same settings are fine with a backend that constrains its output.
    parse_config(TRANSFORMERS.replace("transformers", "fake") + extra, origin="t.yaml")


def test_transformers_with_the_defaults_is_accepted() -> None:
    cfg = parse_config(TRANSFORMERS, origin="t.yaml")  # reformulation degrades instead (see test_llm_transformers)
    assert cfg.agent.reretrieve and cfg.agent.max_steps == 1


def test_unknown_router_policy_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"r\.yaml: router\.policies: unknown policy 'semantc'; one of: confidence, dictionary, judge"):
        parse_config("router: {policies: [rules, semantc]}\n", origin="r.yaml")
    parse_config("router: {policy: simple, policies: [semantc]}\n")  # simple does not use them


def test_transformers_defaults_degrade_where_a_grammar_is_optional() -> None:
    """Reformulation (on by default), the quote reader's grammar and model-chosen searches ask for
    constrained output; a backend that refuses it still gets an answer (before: NotImplementedError)."""
    from agentkit.agent import Agent
    from agentkit.config import AgentSettings
    from agentkit.knowledge.memory import MemorySource
    from agentkit.llm.transformers import TransformersLLM
    from agentkit.testing import FakeLLM
    from agentkit.types import Passage

    refuses = TransformersLLM()  # cheap: nothing loads; its own check raises the real error
    refused: list[str] = []

    class Unconstrained(FakeLLM):
        constrained_output = False

        def _reply(self, messages, options):  # type: ignore[no-untyped-def]
            try:
                refuses._check(options)
            except NotImplementedError:
                refused.append("grammar" if options.grammar else "json_schema")
                raise
            return super()._reply(messages, options)

    notes = MemorySource("notes", "Facts about bananas.")
    notes.add([Passage(id="b1", text="Bananas are yellow when ripe.", source="notes", title="Bananas")])
    llm = Unconstrained("Reasoning: unsure.\nAnswer: Bananas are blue and square [1].")
    no_actions = "the model backend cannot produce JSON actions; answering with what was found"

    def ask(reader: str, max_steps: int) -> Any:
        refused.clear()
        agent = Agent(llm, {"notes": notes}, settings=AgentSettings(reader=reader, max_steps=max_steps,
                                                                    reretrieve=True, focus_embedder="none"))
        return agent.ask("What colour are bananas?", route=["notes"])

    # The quote reader's grammar is dropped; the source sentence is still shown.
    answer = ask("quote", 1)
    assert refused == ["grammar"] and "Bananas are yellow when ripe." in answer.text
    # Model-chosen searches are skipped with a warning, reformulation falls back to the key terms.
    answer = ask("cot", 3)
    assert refused == ["json_schema", "json_schema"]
    assert no_actions in answer.warnings
    assert [(st.action, st.query) for st in answer.steps] == [("retry", "colour bananas")]
    assert answer.text  # the unsupported answer is withheld, as with any backend


# --- `agentkit sources` checks what it reports ---------------------------------------------------


def test_sources_connects_to_a_dict_server_before_calling_it_fine(tmp_path: Path) -> None:
    import socket

    from click.testing import CliRunner

    from agentkit.cli import cli
    from dictd_server import FakeDictServer, free_port, greet, read_command

    def serve(conn: socket.socket) -> None:
        greet(conn)
        assert read_command(conn) == "SHOW DB"
        conn.sendall(b'110 2 databases present\r\nwn "WordNet"\r\ngcide "GCIDE"\r\n.\r\n250 ok\r\n')
        read_command(conn)  # QUIT
        conn.sendall(b"221 bye\r\n")

    server = FakeDictServer(serve)
    dead = free_port()  # nothing listens here
    f = tmp_path / "agentkit.yaml"
    f.write_text(
        "llm: {backend: fake}\nsources:\n"
        f"  live: {{type: dictionary, server: 'dict://127.0.0.1:{server.port}', timeout: 2}}\n"
        f"  dead: {{type: dictionary, server: 'dict://127.0.0.1:{dead}', timeout: 2}}\n"
    )
    try:
        result = CliRunner().invoke(cli, ["--config", str(f), "sources"])
    finally:
        server.close()
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert f"read-only, server 127.0.0.1:{server.port}: 2 database(s)" in lines["live"]
    # before: "read-only", as if it were fine
    assert f"unavailable: DICT server 127.0.0.1:{dead}: cannot connect" in lines["dead"], result.output
