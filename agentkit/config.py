"""Configuration: pydantic models for the YAML files in configs/, with `${ENV}` interpolation.

Unknown keys are errors; every error names the file, the key path and what is allowed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from agentkit.errors import ConfigError
from agentkit.tune.settings import TuneSettings

#: Where a config is looked for when none is given: these, in order, then the packaged default.
SEARCH_PATH = ("agentkit.yaml", "agentkit.yml")
DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

#: Keys whose values are secrets: never printed, not even in a validation error.
_SECRET_KEY = re.compile(r"(api_?key|password|passwd|secret(_?key)?|(^|_)token|credentials?|private_?key)$", re.I)
#: The password in a URL such as https://user:pass@host.
_URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)[^/@\s]+@")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentSettings(_Strict):
    """How the loop behaves."""

    top_k: int = Field(5, ge=1, description="Passages retrieved per source.")
    max_steps: int = Field(1, ge=1, le=10, description="1 = single shot; >1 lets the model ask for more searches.")
    evidence_tokens: int = Field(1200, ge=64, description="Token budget for the numbered evidence.")
    max_tokens: int = Field(384, ge=1, description="Tokens the answer may take.")
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    #: Small models loop without it; 1.0 turns it off.
    repeat_penalty: float = Field(1.15, ge=1.0, le=2.0)
    min_score: float = Field(0.0, ge=0.0, description="Drop passages scoring at or below this.")
    source_timeout: float = Field(30.0, gt=0, description="Seconds before a source's search is abandoned.")
    #: The citation check: `lexical` (the sentence's words, numbers, names and negation match the
    #: passage), `judge` (the model decides, under the lexical veto), `off`, or a verifier a plugin
    #: registered (`register_verifiers`).
    verify: str = "lexical"
    #: A citation scoring below this (0-1) is flagged unsupported.
    support_threshold: float = Field(0.5, ge=0.0, le=1.0)
    #: When sources were searched but no citation holds up, answer "I could not find this in the
    #: sources" (the model's reply is kept in Answer.withheld) instead of an unsupported answer.
    refuse_unsupported: bool = True
    #: When the check fails, reformulate the query once and search again (takes one of max_steps).
    reretrieve: bool = True
    #: How answers are read from documents: `quote` (the model quotes one of the focused source
    #: sentences, verbatim under a grammar with llama.cpp, then answers from it; see
    #: agentkit/reasoning/reader.py) or `cot` (free chain-of-thought over whole passages).
    reader: Literal["quote", "cot"] = "quote"
    #: The quote reader shows the model this many best sentences, each with its neighbours.
    focus_sentences: int = Field(2, ge=1, le=20)
    #: How many of the best sentences the model may choose its quote from. The ranker's first
    #: choice beats a 135M model's; raise this for a larger model.
    quote_choices: int = Field(1, ge=1, le=20)
    #: Sentence similarity for the focus, beside word overlap: `minilm` (the bundled ONNX encoder,
    #: every sentence of the evidence compared token by token with the question; ~0.1-0.3 s a
    #: question for sentences not seen before) or `none` (words only).
    focus_embedder: Literal["minilm", "none"] = "minilm"
    #: Refuse without asking the model when the question's premises (a negation, a name or
    #: figure, "most"/"least"/"first"...) are not in the best source sentence.
    check_premises: bool = True
    #: With `focus_embedder: minilm`, refuse when even the best sentence scores below this
    #: (IDF-weighted MaxSim over MiniLM's token vectors plus 0.05 x the word score; see
    #: reasoning/focus.py): nothing in the sources is about the question.
    #: 0 turns it off. Chosen on squad2-mini questions outside the `--sample 200 --seed 0` subset.
    focus_min_score: float = Field(0.4, ge=0.0, le=1.0)
    #: With `focus_embedder: minilm`: when the runner-up sentence is in the same passage with at
    #: most one sentence between them, and scores within this of the best, the quote spans them
    #: (the passage says it across sentences, and the ranker cannot tell which one holds it).
    #: 0 = one sentence.
    quote_span_margin: float = Field(0.1, ge=0.0, le=1.0)
    #: With `focus_embedder: minilm`: refuse when the runner-up sentence is not part of the quote
    #: (another passage, or too far away in the same one), says something else, and scores
    #: within this of the best: the sources do not settle which is meant. 0 turns it off. Both
    #: margins were chosen on squad2-mini questions outside the `--sample 200 --seed 0` subset
    #: (bench/focus.py shows the effect).
    ambiguity_margin: float = Field(0.04, ge=0.0, le=1.0)

    @field_validator("verify", mode="before")
    @classmethod
    def _off_is_false_in_yaml(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @field_validator("verify")
    @classmethod
    def _known_verifier(cls, value: str) -> str:
        if value in ("lexical", "judge", "off"):
            return value  # built-ins: no need to load plugins
        from agentkit.plugins import registry

        known = registry().verifiers
        if value not in known:
            raise ValueError(f"unknown verifier {value!r}; one of: {', '.join(sorted({'off', *known}))}")
        return value


class RuleSet(_Strict):
    """Rules that send a question to one target (a source name, or `parametric`)."""

    #: label -> regular expression (case-insensitive); a plain list uses each pattern as its label.
    patterns: dict[str, str] | list[str] = Field(default_factory=dict)
    #: Words that must all occur in the question (compared after stemming).
    keywords: list[str] = Field(default_factory=list)


class SemanticSettings(_Strict):
    #: `minilm` (the bundled ONNX encoder, ~4 ms a question) or `lexical` (no model).
    embedder: str = "minilm"
    #: Below this similarity to every target the policy abstains.
    threshold: float = Field(0.3, ge=-1.0, le=1.0)
    #: The model alone only wins by this margin over the closest source.
    parametric_margin: float = Field(0.12, ge=0.0, le=2.0)
    #: A question bound for the model alone is searched after all when a document source's best
    #: passage is at least this similar to it; null turns the check off.
    content_threshold: float | None = Field(0.6, ge=-1.0, le=1.0)


class ConfidenceSettings(_Strict):
    max_tokens: int = Field(16, ge=1, le=256)
    #: A closed-book draft with a mean token log-probability at or above this counts as known.
    min_mean_logprob: float = Field(-1.0, le=0.0)


ROUTING_POLICIES = ("rules", "dictionary", "semantic", "probe", "confidence", "judge")


class RouterConfig(_Strict):
    """How each question is routed: see agentkit/routing/ and `agentkit eval routing`."""

    #: auto: the policies below as a cascade; learned: a combiner fitted by `agentkit router fit`;
    #: simple: the first router (rules, then description overlap).
    policy: Literal["auto", "learned", "simple"] = "auto"
    #: Cascade order. Built-ins: rules, dictionary, semantic, probe (fast); confidence, judge (call the model).
    policies: list[str] = Field(default_factory=lambda: ["rules", "dictionary", "semantic", "probe"])
    #: Extra rules per target; the packaged ones (routing/rules.yaml) always apply.
    rules: dict[str, RuleSet] = Field(default_factory=dict)
    #: Example questions per target (a source name or `parametric`) for the semantic policy.
    examples: dict[str, list[str]] = Field(default_factory=dict)
    semantic: SemanticSettings = Field(default_factory=SemanticSettings)
    #: Passages each source returns to the retrieval probe.
    probe_k: int = Field(3, ge=1, le=50)
    confidence: ConfidenceSettings = Field(default_factory=ConfidenceSettings)
    #: The learned combiner's file (policy: learned); relative to the config file's folder.
    model: str = "router.json"
    #: simple only: extra regular expressions for questions the model answers alone.
    parametric_patterns: list[str] = Field(default_factory=list)
    #: simple only: extra regular expressions for definitional questions.
    dictionary_patterns: list[str] = Field(default_factory=list)
    #: simple only: sources whose description overlaps the question less than this are still searched
    #: when no source clears it; the confidence reported reflects the overlap.
    description_threshold: float = Field(0.15, ge=0.0, le=1.0)


class AdapterSpec(_Strict):
    """A LoRA adapter loaded beside the base model and chosen per question by the route.

    It is active for a question when the router sends it to one of `sources`, or when its route
    class (parametric, retrieve, dictionary) is in `routes`; `default` adapters are active when no
    binding matches. Switching never reloads the base model (see bench/adapters.py).
    """

    #: A GGUF LoRA (llama_cpp backend) or a PEFT folder (transformers backend); relative paths
    #: are read from the config file's folder.
    path: str
    scale: float = Field(1.0, ge=-4.0, le=4.0)
    sources: list[str] = Field(default_factory=list)
    routes: list[Literal["parametric", "retrieve", "dictionary"]] = Field(default_factory=list)
    default: bool = False


class IngestSettings(_Strict):
    # Counted by ingest/chunking.py's regex, not a model's tokenizer: ingesting needs no model.
    chunk_tokens: int = Field(
        200,
        ge=16,
        description="Chunk size in words and punctuation marks (not model tokens: ~1.1 SmolLM2 tokens each in English).",
    )
    chunk_overlap: int = Field(40, ge=0, description="Words and punctuation marks shared by consecutive chunks.")
    batch_size: int = Field(256, ge=1)
    #: A whole file over this many MB (for .jsonl: a line) is skipped and named, not read.
    max_file_mb: float = Field(50.0, gt=0)
    #: The source `agentkit ingest` writes to; empty = the first writable source.
    source: str = ""


class ServerSettings(_Strict):
    """`agentkit serve`: who may call it from a browser, and how large a client's grammar may be."""

    #: Host names answered besides IP literals and localhost when serving without a token: a
    #: DNS-rebinding page reaches 127.0.0.1 under a name of its own. "*" accepts any Host.
    allowed_hosts: list[str] = Field(default_factory=list)
    #: Browser origins ("https://app.example:8443") allowed to call the API, which get CORS
    #: headers; "*" allows any. Other origins are refused; same-origin pages always pass.
    cors_origins: list[str] = Field(default_factory=list)
    #: Largest GBNF grammar or JSON schema (characters of compact JSON) the raw model accepts.
    max_grammar_chars: int = Field(16_384, ge=64)


class Config(_Strict):
    """A whole agentkit configuration. `llm` and each source are validated by their backend."""

    data_dir: Path = Path("~/.local/share/agentkit")
    llm: dict[str, Any] = Field(default_factory=lambda: {"backend": "llama_cpp"})
    sources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    router: RouterConfig = Field(default_factory=RouterConfig)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    #: Log every answer (ask, chat, serve) to DATA_DIR/sessions.sqlite for `agentkit logs`;
    #: false turns it off for this config (`agentkit logs off` for every config).
    logs: bool = True
    #: Tools the agent may call (names registered by plugins through `register_tools`).
    tools: list[str] = Field(default_factory=list)
    #: Named LoRA adapters and the sources/routes that select them (see AdapterSpec).
    adapters: dict[str, AdapterSpec] = Field(default_factory=dict)
    #: How `agentkit tune` builds data and trains (see agentkit/tune/settings.py).
    tune: TuneSettings = Field(default_factory=TuneSettings)
    #: Where this config was read from (not a key in the file).
    origin: str = Field("<defaults>", exclude=True)
    #: Dotted key path -> the environment variables its value was read from (`${VAR}`).
    _env: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        self.data_dir = self.data_dir.expanduser()

    @property
    def llm_backend(self) -> str:
        return str(self.llm.get("backend", "llama_cpp"))

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in this config are read from: the config file's folder (the
        data_dir for the packaged default). Plugins' `from_config` get it as `config_dir`."""
        return self.resolve_path(".")

    def with_overrides(self, sections: dict[str, Any]) -> Config:
        """A new Config with `sections` (section name -> settings) merged in and validated like
        the file: `{"agent": {"max_tokens": 48}}` changes that one key. A mapping is merged key by
        key (a source or `llm` whose `type`/`backend` changes is replaced whole); anything else
        replaces the value."""
        raw = self.model_dump()
        for key, value in sections.items():
            raw[key] = _merge(raw.get(key), value, key)
        config = validate_config(raw, self.origin)
        config._env = dict(self._env)
        return config

    def resolve_path(self, path: str | Path) -> Path:
        """A path from this config: absolute as given, else relative to the config file's folder
        (the data_dir for the packaged default config)."""
        resolved = Path(path).expanduser()
        if resolved.is_absolute():
            return resolved
        origin = Path(self.origin)
        if origin.is_file() and origin.resolve() != DEFAULTS_FILE.resolve():
            return origin.parent / resolved
        return self.data_dir / resolved


def _merge(base: Any, override: Any, key: str) -> Any:
    if isinstance(override, BaseModel):
        override = override.model_dump()
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    # A different backend or source type has other settings: the old ones would be unknown keys.
    for kind in ("backend", "type"):
        if kind in override and kind in base and override[kind] != base[kind]:
            return dict(override)
    merged = dict(base)
    for k, v in override.items():
        merged[k] = _merge(base.get(k), v, k)
    return merged


# --- loading --------------------------------------------------------------------------------


def find_config(explicit: str | Path | None = None) -> Path | None:
    """The config file to use: explicit, then $AGENTKIT_CONFIG, then ./agentkit.yaml; else None."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("AGENTKIT_CONFIG")
    if env:
        return Path(env)
    for name in SEARCH_PATH:
        if Path(name).is_file():
            return Path(name)
    return None


def load_config(path: str | Path | None = None) -> Config:
    """Read, interpolate and validate a config; `None` searches (see `find_config`)."""
    found = find_config(path)
    if found is None:
        return parse_config(DEFAULTS_FILE.read_text(encoding="utf-8"), origin=str(DEFAULTS_FILE))
    if not found.is_file():
        raise ConfigError(f"config file {found} does not exist; pass an existing file to --config")
    return parse_config(found.read_text(encoding="utf-8"), origin=str(found))


def parse_config(text: str, origin: str = "<string>") -> Config:
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    if raw is None:
        # Read as "no keys", an empty file would run with no sources at all, silently.
        raise ConfigError(
            f"{origin}: the file is empty (or only comments), so it would configure no model and no sources; "
            f"write the keys to change (start from `agentkit config` or configs/default.yaml), "
            f"or remove the file to use the built-in default"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys, got {type(raw).__name__}")
    env: dict[str, list[str]] = {}
    raw = _interpolate(raw, origin, (), env)
    config = validate_config(raw, origin)
    config._env = env
    return config


def validate_config(raw: dict[str, Any], origin: str = "<dict>") -> Config:
    try:
        config = Config.model_validate({**raw, "origin": origin})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin, "", Config)) from None
    # Validate the parts whose schema depends on the backend chosen.
    from agentkit.plugins import registry

    reg = registry()
    backend = config.llm_backend
    llm_cls = reg.llm(backend, origin=origin)
    config.llm = _validate_part(llm_cls.config_model, config.llm, origin, "llm.").model_dump()
    for name, spec in config.sources.items():
        kind = spec.get("type")
        if not kind:
            raise ConfigError(
                f"{origin}: sources.{name}: missing key 'type'; one of: {', '.join(reg.knowledge_types())}"
            )
        cls = reg.knowledge(kind, origin=origin, where=f"sources.{name}.type")
        config.sources[name] = _validate_part(cls.config_model, spec, origin, f"sources.{name}.").model_dump()
    known = {"parametric", *config.sources}
    for key in ("rules", "examples"):
        unknown = [t for t in getattr(config.router, key) if t not in known]
        if unknown:
            raise ConfigError(
                f"{origin}: router.{key}: no source named {', '.join(map(repr, unknown))}; "
                f"targets are 'parametric' or one of: {', '.join(config.sources) or 'none configured'}"
            )
    check_adapter_sources(config.adapters, config.sources, origin)
    if config.router.policy != "simple":
        unknown = [p for p in config.router.policies if p not in reg.routers]
        if unknown:
            raise ConfigError(
                f"{origin}: router.policies: unknown policy {', '.join(map(repr, unknown))}; "
                f"one of: {', '.join(sorted(reg.routers))} (plugins add more through register_routers)"
            )
    check_constrained_output(config, llm_cls, origin)
    if config.ingest.source and config.ingest.source not in config.sources:
        raise ConfigError(
            f"{origin}: ingest.source: no source named {config.ingest.source!r}; "
            f"configured: {', '.join(config.sources) or 'none'}"
        )
    return config


def check_constrained_output(config: Config, llm_cls: Any, origin: str = "") -> None:
    """ConfigError when a setting needs grammar-constrained output (JSON actions, the judge) and
    the backend cannot produce it (`constrained_output = False`, e.g. transformers): the agent
    would otherwise fail at the first question that needs it. Reformulation degrades instead."""
    if getattr(llm_cls, "constrained_output", True):
        return
    backend = config.llm_backend
    fix = "or use llm.backend: llama_cpp, which can"
    needs = []
    if config.tools:
        needs.append(f"tools: the agent calls tools through JSON it cannot produce; remove `tools` {fix}")
    if config.agent.max_steps > 1 and config.sources:
        needs.append(f"agent.max_steps: {config.agent.max_steps} lets the model choose searches as JSON; "
                     f"set agent.max_steps: 1 {fix}")
    if config.agent.verify == "judge":
        needs.append(f"agent.verify: judge asks the model for a JSON verdict; set agent.verify: lexical {fix}")
    if config.router.policy != "simple" and "judge" in config.router.policies:
        needs.append(f"router.policies: the judge policy asks the model for a JSON route; remove 'judge' {fix}")
    if needs:
        where = f"{origin}: " if origin else ""
        raise ConfigError("\n".join(f"{where}{need} (the {backend} backend cannot constrain its output "
                                     f"to a grammar)" for need in needs))


def check_adapter_sources(adapters: dict[str, AdapterSpec], sources: Any, origin: str = "") -> None:
    """ConfigError when an adapter is bound to a source that is not configured."""
    for name, spec in adapters.items():
        unknown = [t for t in spec.sources if t not in sources]
        if unknown:
            where = f"{origin}: " if origin else ""
            raise ConfigError(
                f"{where}adapters.{name}.sources: no source named {', '.join(map(repr, unknown))}; "
                f"configured: {', '.join(sources) or 'none'}"
            )


def _validate_part(model: type[BaseModel], data: dict[str, Any], origin: str, prefix: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin, prefix, model)) from None


def _describe(exc: ValidationError, origin: str, prefix: str, model: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = (prefix + ".".join(loc)).rstrip(".") or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            msg = f"unknown key {loc[-1]!r}"
            if allowed:
                msg += f"; allowed keys here: {', '.join(allowed)}"
        else:
            msg = err["msg"]
            if err["type"] != "missing" and "input" in err:
                if is_secret_key(key):
                    msg += f" (got a {type(err['input']).__name__}; the value is a secret and not shown)"
                else:
                    msg += f" (got {mask_secrets(err['input'])!r})"
        lines.append(f"{origin}: {key}: {msg}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    fields = getattr(current, "model_fields", None)
    return [k for k in fields if k != "origin"] if fields else []


def _interpolate(value: Any, origin: str, path: tuple[str, ...], env: dict[str, list[str]] | None = None) -> Any:
    """`value` with `${VAR}` replaced; `env` collects key path -> the variables actually read."""
    if isinstance(value, dict):
        return {k: _interpolate(v, origin, (*path, str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, origin, (*path, str(i)), env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        got = os.environ.get(name)
        if got is None or (got == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"{origin}: {'.'.join(path)}: environment variable {name} is not set; "
                    f"export {name}=... or write ${{{name}:-default}}"
                )
            return default
        if env is not None:
            env.setdefault(".".join(path), []).append(name)
        return got

    return _ENV.sub(sub, value)


# --- secrets ----------------------------------------------------------------------------------


def is_secret_key(key: str) -> bool:
    """Whether a key (or a dotted path ending in one) holds a secret: api_key, password, token..."""
    return bool(_SECRET_KEY.search(key.rsplit(".", 1)[-1]))


def mask_secrets(value: Any, path: str = "", env: dict[str, list[str]] | None = None) -> Any:
    """`value` with every secret replaced by a note that it is set (and from which environment
    variable), and passwords in URLs starred; safe to print or log."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, f"{path}.{i}" if path else str(i), env) for i, v in enumerate(value)]
    if value is not None and value != "" and path and is_secret_key(path):
        names = (env or {}).get(path)
        return f"*** (set from ${', $'.join(names)})" if names else "*** (set)"
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


def redacted(config: Config) -> dict[str, Any]:
    """The config as plain data, for showing: secrets masked (see `mask_secrets`)."""
    return mask_secrets(config.model_dump(mode="json"), env=config._env)
