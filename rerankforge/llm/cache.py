"""An append-only cache of LLM answers in the run folder: a rerun never pays for the same call twice."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rerankforge.llm.base import LLMProvider, LLMReply, Message, TokenAlternatives, extract_json

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class LLMStats:
    calls: int = 0
    cache_hits: int = 0
    invalid_outputs: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_prompt_tokens: int = 0  # of prompt_tokens: read from the server's prefix cache, not computed
    busy_seconds: float = 0.0  # wall time with at least one call in flight (calls in parallel count once)
    by_stage: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def entry_checksum(key: str, text: str, ok: bool, logprobs: list[TokenAlternatives] | None = None) -> str:
    """A short sha256 over one cache entry: a line changed on disk no longer matches it."""
    material: list[Any] = [key, text, ok] if logprobs is None else [key, text, ok, logprobs]
    return hashlib.sha256(json.dumps(material, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


class LLMCache:
    """JSONL file of ``{"key", "text", "ok", "sum"}`` (and ``logprobs`` where asked for); each answer is
    appended and flushed as it arrives.

    A torn last line (a crash mid-write) is ignored on load, so at most the call in flight is lost. An entry
    whose checksum does not match its content was damaged on disk: it is not trusted, and the call is made
    again (``damaged`` counts them). Entries written before checksums existed (no ``sum``) are read as they are.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.damaged = 0
        if path.is_file():
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                        key, text, ok = entry["key"], entry["text"], entry["ok"]
                        if "sum" in entry and entry["sum"] != entry_checksum(key, text, ok, entry.get("logprobs")):
                            raise ValueError("checksum mismatch")
                        self._entries[key] = entry
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                        self.damaged += 1
                        logger.warning("Ignoring a damaged line in the LLM cache %s; that call is made again", path)
            with path.open("rb+") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size:
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":
                        handle.write(b"\n")  # end a torn last line so the next append starts a line of its own
        path.parent.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: str, text: str, ok: bool, logprobs: list[TokenAlternatives] | None = None) -> None:
        """Append one answer (thread-safe: one whole line per call, flushed and synced before it returns)."""
        entry: dict[str, Any] = {"key": key, "text": text, "ok": ok}
        if logprobs is not None:
            entry["logprobs"] = logprobs
        entry["sum"] = entry_checksum(key, text, ok, logprobs)
        with self._lock:
            self._entries[key] = entry
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())


@dataclass(frozen=True)
class Answer:
    """A validated answer and, where asked for and returned, the per-token log-probabilities behind it."""

    value: Any
    logprobs: list[TokenAlternatives] | None = None


class CachedLLM:
    """Asks a provider for JSON through the cache, re-asking once when the output cannot be used.

    Safe to call from several threads: the cache appends whole lines under a lock, the counters too.
    """

    def __init__(self, provider: LLMProvider, cache: LLMCache, concurrency: int = 1) -> None:
        self.provider = provider
        self.cache = cache
        self.concurrency = concurrency
        self.stats = LLMStats()
        self._stats_lock = threading.Lock()
        self._in_flight = 0
        self._busy_since = 0.0

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        """One provider call, its wall time added to ``stats.busy_seconds`` unless another call already runs."""
        with self._stats_lock:
            if self._in_flight == 0:
                self._busy_since = time.perf_counter()
            self._in_flight += 1
        try:
            return self.provider.chat_json(messages, schema, max_tokens, **request)
        finally:
            with self._stats_lock:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self.stats.busy_seconds += time.perf_counter() - self._busy_since

    def key(
        self,
        messages: list[Message],
        schema: dict[str, Any],
        template_hash: str,
        request: dict[str, Any] | None = None,
    ) -> str:
        # A call's own options (seed and temperature of a sample, top_logprobs) override the provider's;
        # without any the key is what it always was, so earlier caches stay valid.
        options = {**self.provider.sampling_options(), **(request or {})}
        material = json.dumps(
            [self.provider.identity, template_hash, messages, schema, options],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def _count(self, **changes: int) -> None:
        with self._stats_lock:
            for name, value in changes.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    def ask(
        self,
        messages: list[Message],
        schema: dict[str, Any],
        *,
        template_hash: str,
        max_tokens: int,
        validate: Callable[[Any], T],
        stage: str,
    ) -> T | None:
        """Return ``validate(parsed JSON)``, or ``None`` when the model fails twice (counted, cached)."""
        answer = self.ask_answer(
            messages, schema, template_hash=template_hash, max_tokens=max_tokens, validate=validate, stage=stage
        )
        return None if answer is None else answer.value

    def ask_answer(
        self,
        messages: list[Message],
        schema: dict[str, Any],
        *,
        template_hash: str,
        max_tokens: int,
        validate: Callable[[Any], Any],
        stage: str,
        request: dict[str, Any] | None = None,
    ) -> Answer | None:
        """Like :meth:`ask`, with this call's own ``request`` options, returning the log-probabilities too."""
        request = request or {}
        key = self.key(messages, schema, template_hash, request)
        cached = self.cache.get(key)
        if cached is not None:
            if not cached["ok"]:
                self._count(cache_hits=1)
                return None
            try:
                value = validate(extract_json(cached["text"]))
                self._count(cache_hits=1)
                return Answer(value, cached.get("logprobs"))
            except (ValueError, TypeError, KeyError):
                logger.warning("A cached LLM answer no longer validates; asking again")
        text = ""
        asked = messages
        for attempt in range(2):
            reply = self._chat(asked, schema, max_tokens, **request)
            with self._stats_lock:
                self.stats.calls += 1
                self.stats.by_stage[stage] = self.stats.by_stage.get(stage, 0) + 1
                self.stats.prompt_tokens += reply.prompt_tokens
                self.stats.output_tokens += reply.output_tokens
                self.stats.cached_prompt_tokens += reply.cached_tokens
            text = reply.text
            try:
                value = validate(extract_json(text))
            except (ValueError, TypeError, KeyError) as exc:
                self._count(invalid_outputs=1)
                logger.debug("Invalid LLM output (attempt %d): %s", attempt + 1, exc)
                asked = [
                    *messages,
                    {"role": "assistant", "content": text},
                    {
                        "role": "user",
                        "content": f"That answer was not usable ({exc}). Reply with only the JSON object.",
                    },
                ]
                continue
            self.cache.put(key, text, ok=True, logprobs=reply.logprobs)
            return Answer(value, reply.logprobs)
        self._count(failed=1)
        self.cache.put(key, text, ok=False)
        return None
