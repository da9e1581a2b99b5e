"""Chain-of-thought prompts: load a template from prompts/*.yaml and render it into chat messages.

Templates are data (system text, few-shot examples, a Jinja user turn) so they can be tuned without code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentkit.errors import ConfigError
from agentkit.types import Message

PROMPTS_DIR = Path(__file__).with_name("prompts")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str
    examples: tuple[tuple[str, str], ...]
    user: Any  # a compiled jinja2.Template

    def render(self, history: Sequence[Message] = (), **context: Any) -> list[Message]:
        messages = [Message("system", self.system.strip())]
        for user, assistant in self.examples:
            messages += [Message("user", user.strip()), Message("assistant", assistant.strip())]
        messages += list(history)
        messages.append(Message("user", self.user.render(**context).strip()))
        return messages


@lru_cache(maxsize=32)
def load_template(name_or_path: str) -> PromptTemplate:
    """A template by name (`answer`, `parametric`, `action`) or by path to a YAML file."""
    import jinja2
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"prompt template {name_or_path!r} not found (looked for {path})")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    missing = {"system", "user"} - set(data)
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(sorted(missing))}")
    env = jinja2.Environment(autoescape=False, keep_trailing_newline=False, undefined=jinja2.StrictUndefined)
    examples = tuple((ex["user"], ex["assistant"]) for ex in data.get("examples") or [])
    return PromptTemplate(path.stem, data["system"], examples, env.from_string(data["user"]))
