"""Bounded concurrency and several hosts: real Ollama-API servers on 127.0.0.1 backed by the tiny packaged
Gemma in llama.cpp, the official ``ollama`` client, the run folder's cache. The schema is an enum so each
answer is a few tokens."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerankforge.config import LLMConfig
from rerankforge.llm import CachedLLM, LLMCache, concurrency_for, make_provider
from rerankforge.llm.base import Message
from rerankforge.llm.hosts import MultiHostProvider, default_concurrency, map_ordered
from tests.ollama_api_server import OllamaAPIServer
from tests.test_llm_providers import CAPITAL_SCHEMA as CITY_SCHEMA
from tests.test_llm_providers import SERVED

COUNTRIES = ["France", "England", "Italy", "Germany", "the United Kingdom", "the French Republic"]


def _question(country: str) -> list[Message]:
    return [{"role": "user", "content": f'What is the capital of {country}? Reply in JSON like {{"answer": "..."}}'}]


def _answer(value: object) -> str:
    if not isinstance(value, dict) or value.get("answer") not in CITY_SCHEMA["properties"]["answer"]["enum"]:
        raise ValueError(f"not a city from the list: {value!r}")
    return str(value["answer"])


def _ask_all(llm: CachedLLM, concurrency: int) -> list[str | None]:
    def one(country: str) -> str | None:
        return llm.ask(_question(country), CITY_SCHEMA, template_hash="t", max_tokens=24, validate=_answer, stage="x")

    return list(map_ordered(one, COUNTRIES, concurrency))


@pytest.fixture
def two_servers(gemma_provider: object) -> Iterator[tuple[OllamaAPIServer, OllamaAPIServer]]:
    with (
        OllamaAPIServer(gemma_provider, models=[SERVED], max_lifetime_s=120) as a,  # type: ignore[arg-type]
        OllamaAPIServer(gemma_provider, models=[SERVED], max_lifetime_s=120) as b,  # type: ignore[arg-type]
    ):
        yield a, b


def test_map_ordered_keeps_the_order_and_never_exceeds_the_bound() -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def slow_square(x: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02 * (x % 3))  # later items often finish first
        with lock:
            running[0] -= 1
        return x * x

    assert list(map_ordered(slow_square, range(20), concurrency=3)) == [x * x for x in range(20)]
    assert 2 <= peak[0] <= 3


def test_map_ordered_raises_the_first_failure() -> None:
    def fail_on_five(x: int) -> int:
        if x == 5:
            raise RuntimeError("item 5 failed")
        return x

    with pytest.raises(RuntimeError, match="item 5 failed"):
        list(map_ordered(fail_on_five, range(10), concurrency=4))


def test_default_concurrency_follows_ollama_num_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "3")
    assert default_concurrency("ollama", 2) == 6
    assert default_concurrency("embedded", 2) == 1
    monkeypatch.delenv("OLLAMA_NUM_PARALLEL")
    assert default_concurrency("openai", 1) == 4
    cfg = LLMConfig(provider="ollama", model=SERVED, concurrency=5)
    assert concurrency_for(cfg, make_provider(cfg)) == 5


@pytest.mark.slow  # 12 real generations of a few tokens each
def test_calls_spread_over_two_hosts_overlap_and_match_one_at_a_time(
    two_servers: tuple[OllamaAPIServer, OllamaAPIServer], tmp_path: Path, loopback_only: list[object]
) -> None:
    a, b = two_servers
    cfg = LLMConfig(provider="ollama", model=SERVED, hosts=[a.host, b.host], concurrency=4, num_ctx=1024)
    provider = make_provider(cfg)
    assert isinstance(provider, MultiHostProvider)

    parallel = _ask_all(CachedLLM(provider, LLMCache(tmp_path / "parallel.jsonl")), concurrency_for(cfg, provider))

    got = [len(a.requests_to("/api/chat")), len(b.requests_to("/api/chat"))]
    assert got == provider.asked and sum(got) == len(COUNTRIES) and min(got) >= 2
    assert a.max_in_flight + b.max_in_flight >= 3  # several calls in flight at once, on both hosts
    assert max(a.max_in_flight, b.max_in_flight) <= 2  # the least busy host gets the next call
    one_host = make_provider(LLMConfig(provider="ollama", model=SERVED, host=a.host, num_ctx=1024))
    sequential = _ask_all(CachedLLM(one_host, LLMCache(tmp_path / "sequential.jsonl")), 1)
    assert parallel == sequential and all(parallel)
    assert loopback_only == []


@pytest.mark.slow  # real generations
def test_faults_on_one_host_are_retried_on_the_other_and_garbage_is_re_asked(
    two_servers: tuple[OllamaAPIServer, OllamaAPIServer], tmp_path: Path, no_backoff: list[float]
) -> None:
    a, b = two_servers
    provider = make_provider(LLMConfig(provider="ollama", model=SERVED, hosts=[a.host, b.host], retries=2))
    a.fail_next(1, status=500, error="llama runner process has terminated", path="/api/chat")
    b.garbage_next(1, text="Sorry, I am not sure.", path="/api/chat")
    llm = CachedLLM(provider, LLMCache(tmp_path / "cache.jsonl"))

    first = _ask_all(llm, 1)
    assert all(first)
    first_a, first_b = a.requests_to("/api/chat")[0], b.requests_to("/api/chat")[0]
    assert (first_a.fault, first_a.answered) == ("status", 500)
    assert (first_b.fault, first_b.answered) == ("nonsense", 200)  # the retry went to the other host
    assert llm.stats.invalid_outputs == 1 and llm.stats.failed == 0  # garbage was re-asked once
    assert len(no_backoff) == 1

    calls = llm.stats.calls
    again = CachedLLM(provider, LLMCache(tmp_path / "cache.jsonl"))
    assert _ask_all(again, 4) == first
    assert again.stats.calls == 0 and again.stats.cache_hits == len(COUNTRIES)  # a rerun is all cache hits
    assert llm.stats.calls == calls
