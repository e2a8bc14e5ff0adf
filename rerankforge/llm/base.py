"""The one small protocol every LLM provider implements, plus tolerant JSON parsing of model output."""

from __future__ import annotations

import json
import logging
import random
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from rerankforge.errors import LLMError

logger = logging.getLogger(__name__)

Message = dict[str, str]


# One generated token and its alternatives: ``{"token": "2", "top": {"2": -0.1, "1": -2.4}}``, the most
# likely tokens at that position with their log-probabilities (JSON as it is, so it caches as it is).
TokenAlternatives = dict[str, Any]


@dataclass(frozen=True)
class LLMReply:
    """A model's answer; ``logprobs`` (one entry per generated token) only when asked for and supported."""

    text: str
    prompt_tokens: int = 0
    output_tokens: int = 0
    logprobs: list[TokenAlternatives] | None = None
    cached_tokens: int = 0  # prompt tokens the server took from its prefix cache (0 where it does not say)


class TransientLLMError(LLMError):
    """A failure worth retrying: timeout, dropped connection, 5xx."""


class LLMProvider(ABC):
    """Chat completion with a JSON schema for structured output.

    Subclasses implement :meth:`_chat`; retries with exponential backoff and jitter live here, once.
    A subclass raises :class:`TransientLLMError` for faults worth retrying and :class:`LLMError`
    (with the fix in its message) for the rest.
    """

    name: str = "base"
    supports_logprobs: bool = False  # True where the runtime returns per-token top log-probabilities

    def __init__(self, model: str, *, seed: int = 13, temperature: float = 0.0, retries: int = 2) -> None:
        self.model = model
        self.seed = seed
        self.temperature = temperature
        self.retries = retries
        self.retried = 0  # transient faults retried so far, for the build's report

    @property
    def identity(self) -> str:
        """What the LLM cache keys on: provider and model."""
        return f"{self.name}:{self.model}"

    def sampling_options(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "seed": self.seed}

    def sampling(self, request: dict[str, Any]) -> tuple[float, int]:
        """The (temperature, seed) of one call: the provider's own unless the call overrides them."""
        return request.get("temperature", self.temperature), request.get("seed", self.seed)

    @abstractmethod
    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        """One call. ``request`` holds only what a call sets beyond the defaults: ``temperature`` and ``seed``
        (self-consistency samples), ``top_logprobs`` (alternatives per token, where supported)."""

    def chat_json(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        """One chat call asking for JSON that follows ``schema``; retried on transient faults.

        ``request`` may set ``temperature``, ``seed`` and ``top_logprobs`` for this call only.
        """
        delay = 1.0
        for attempt in range(self.retries + 1):
            try:
                return self._chat(messages, schema, max_tokens, **request)
            except TransientLLMError as exc:
                if attempt == self.retries:
                    raise LLMError(
                        f"{self.identity} failed {attempt + 1} times in a row ({exc}). Check that the server "
                        "is up and not overloaded, then re-run: finished calls are cached and not repeated."
                    ) from exc
                self.retried += 1
                wait = delay * (1 + random.random())
                logger.warning("LLM call failed (%s); retrying in %.1f s", exc, wait)
                time.sleep(wait)
                delay *= 2
        raise AssertionError("unreachable")

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for remote providers
        """Release the model or connection (no-op for remote providers)."""


def token_alternatives(content: list[Any]) -> list[TokenAlternatives]:
    """Per-token alternatives from an OpenAI-style ``logprobs.content`` list (dicts or client objects).

    The generated token is always among them, also when a grammar picked one outside the top list.

    Example:
        >>> token_alternatives([{"token": "2", "logprob": -0.1, "top_logprobs": [{"token": "1", "logprob": -2.4}]}])
        [{'token': '2', 'top': {'1': -2.4, '2': -0.1}}]
    """
    alternatives = []
    for item in content:
        item = item if isinstance(item, dict) else item.model_dump()
        top = {t["token"]: float(t["logprob"]) for t in item.get("top_logprobs") or []}
        top.setdefault(item["token"], float(item["logprob"]))
        alternatives.append({"token": item["token"], "top": top})
    return alternatives


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


_DECODER = json.JSONDecoder()


def _decode_at(candidate: str, start: int) -> Any:
    """The JSON value starting at ``start``; trailing commas are repaired only when strict parsing fails."""
    try:
        return _DECODER.raw_decode(candidate, start)[0]
    except json.JSONDecodeError:
        return _DECODER.raw_decode(_TRAILING_COMMA.sub(r"\1", candidate[start:]))[0]


def extract_json(text: str) -> Any:
    """Parse JSON from model output that may wrap it in prose or code fences or leave trailing commas.

    Returns the parsed value, or raises ``ValueError`` when no JSON can be found.

    Example:
        >>> extract_json('Sure! ```json\\n{"grade": 2,}\\n```')
        {'grade': 2}
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        for opener in "{[":
            start = candidate.find(opener)
            while start != -1:
                try:
                    return _decode_at(candidate, start)
                except json.JSONDecodeError:
                    start = candidate.find(opener, start + 1)
    stripped = text.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", stripped):
        return json.loads(stripped)
    raise ValueError(f"no JSON found in model output: {text[:120]!r}")
