"""The exceptions agentkit raises; each message names the input and the fix.

    AgentkitError
    ├── ConfigError                 a config file or key is wrong
    ├── InputError                  the question itself is unusable (e.g. empty)
    │   └── PromptTooLong           the prompt does not fit the model's context
    ├── ModelError                  the parametric side
    │   ├── ModelNotFound           no file at the model path
    │   ├── ModelLoadError          the file exists but llama.cpp cannot load it
    │   └── RealModelForbidden      a unit test tried to load a real model
    ├── KnowledgeSourceError        a source failed
    │   ├── SourceUnavailable       server unreachable, store locked, ...
    │   │   └── StoreLocked         an embedded store is held by another process
    │   └── UnknownSource           a name that is not configured
    ├── IngestError                 a document could not be read or stored
    ├── MissingDependency           an optional extra is not installed
    └── AgentError                  the loop itself
        ├── AgentParsingError       the model's action could not be parsed
        └── AgentMaxStepsError      the loop ran out of steps
"""

from __future__ import annotations


class AgentkitError(Exception):
    """Base class of every error agentkit raises on purpose."""


class ConfigError(AgentkitError):
    pass


class InputError(AgentkitError):
    pass


class PromptTooLong(InputError):
    pass


class ModelError(AgentkitError):
    pass


class ModelNotFound(ModelError):
    pass


class ModelLoadError(ModelError):
    pass


class RealModelForbidden(ModelError):
    pass


class KnowledgeSourceError(AgentkitError):
    pass


class SourceUnavailable(KnowledgeSourceError):
    pass


class StoreLocked(SourceUnavailable):
    """`path`: the store's folder, so that a caller can find who holds it (see server/remote.py)."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class UnknownSource(KnowledgeSourceError):
    pass


class IngestError(AgentkitError):
    pass


class MissingDependency(AgentkitError):
    def __init__(self, package: str, extra: str | None = None, purpose: str = "") -> None:
        hint = f'pip install "agentkit[{extra}]"' if extra else f"pip install {package}"
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"{package} is not installed{what}; install it with: {hint}")
        self.package = package


class AgentError(AgentkitError):
    pass


class AgentParsingError(AgentError):
    pass


class AgentMaxStepsError(AgentError):
    pass
