"""Config loading: defaults, interpolation, and errors that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkit.config import DEFAULTS_FILE, load_config, parse_config
from agentkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_configs_default_is_the_packaged_default() -> None:
    assert (ROOT / "configs" / "default.yaml").read_text() == DEFAULTS_FILE.read_text()


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
