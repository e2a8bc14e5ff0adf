"""The errors rerankforge raises: each message says what was expected, what arrived and how to fix it."""

from __future__ import annotations


class RerankforgeError(Exception):
    """Base class of every error a user can act on. The CLI prints its message as one line."""


class ConfigError(RerankforgeError):
    """A config file or option is wrong."""


class InputError(RerankforgeError):
    """The documents folder or another input file cannot be used."""


class LLMError(RerankforgeError):
    """The LLM provider is unreachable, lacks the model, or keeps answering nonsense."""


class StageError(RerankforgeError):
    """A stage could not produce its artifacts (e.g. too little data to train)."""


class MissingDependencyError(RerankforgeError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, what: str) -> None:
        super().__init__(
            f"{what} needs the Python package '{package}', which is not installed. "
            f"Install it with: pip install 'rerankforge[{extra}]'"
        )
