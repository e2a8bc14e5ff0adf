"""Whole builds (parse .. grade) against an Ollama-API server on 127.0.0.1 that fails in every way a real one
does: 500s, dropped connections, stalls past the timeout, replies that are not JSON, answers that are not
JSON, and going away mid-run, then coming back or not. The real ``ollama`` client and OllamaProvider talk
to it over HTTP; behind the server, the FakeLLM answers (the test is about the build, not the model)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerankforge import build
from rerankforge.errors import LLMError
from tests.conftest import fake_build_config
from tests.fake_llm import FakeLLM
from tests.ollama_api_server import OllamaAPIServer

pytestmark = pytest.mark.slow

SETTINGS = {"parse": {"workers": 1}, "queries": {"max_queries": 6}, "mine": {"top_k": 4}}
DATA = ["queries/queries.jsonl", "grade/judgments.jsonl", "grade/train_flag.jsonl", "grade/qrels.tsv"]


@pytest.fixture
def server() -> Iterator[OllamaAPIServer]:
    with OllamaAPIServer(FakeLLM(), models=["fake"], max_lifetime_s=300) as running:
        yield running


def _config(docs: Path, run_dir: Path, server: OllamaAPIServer, **llm: object):
    # one call at a time, so each fault meets exactly one call and the retry counts below are exact
    settings = {"provider": "ollama", "model": "fake", "host": server.host, "timeout_s": 1.0, "concurrency": 1, **llm}
    return fake_build_config(docs, run_dir, llm=settings, **SETTINGS)


def _answered_prompts(server: OllamaAPIServer) -> list[str]:
    """The prompts whose answers reached the client (a stalled one may be answered after the client gave up)."""
    chat = server.requests_to("/api/chat")
    return [json.dumps(r.body["messages"]) for r in chat if r.answered == 200 and r.fault is None]


@pytest.fixture
def fault_free(small_docs: Path, tmp_path: Path) -> Path:
    """The same build with the FakeLLM called directly: the data every faulty run must end with."""
    run_dir = tmp_path / "fault-free"
    build(fake_build_config(small_docs, run_dir, **SETTINGS), llm=FakeLLM(), until="grade")
    return run_dir


def test_a_build_survives_every_server_fault_and_reports_them(
    server: OllamaAPIServer,
    fault_free: Path,
    small_docs: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    connections: list[tuple[str, object]],
) -> None:
    faults = {
        2: ("status", {"status": 500, "error": "llama runner process has terminated"}),
        4: ("drop", {}),
        6: ("stall", {"seconds": 4.0}),  # past the 1 s timeout
        8: ("garbage", {}),  # a reply cut short: not JSON
        10: ("nonsense", {}),  # the model answers in prose: asked again
        14: ("away", {"seconds": 1.0}),  # in the grade stage: the server restarts
        20: ("status", {"status": 503, "error": "server busy"}),
    }
    for n, (kind, details) in faults.items():
        server.fault_at(n, kind, **details)
    run_dir = tmp_path / "run"

    with caplog.at_level(logging.WARNING, logger="rerankforge.llm.base"):
        result = build(_config(small_docs, run_dir, server), until="grade")

    for relative in DATA:
        assert (run_dir / relative).read_bytes() == (fault_free / relative).read_bytes(), relative
    hit = Counter(r.fault for r in server.requests_to("/api/chat") if r.fault)
    assert hit == {"status": 2, "drop": 1, "stall": 1, "garbage": 1, "nonsense": 1, "away": 1}
    stats = result.llm_stats
    assert stats is not None and stats["failed"] == 0
    assert stats["invalid_outputs"] == 1  # the prose answer, asked again once
    # one retry per fault on the wire; the restart may refuse a retry or two before it listens again
    assert 6 <= stats["retries"] <= 8
    assert len([r for r in caplog.records if "retrying in" in r.getMessage()]) == stats["retries"]
    assert len(set(_answered_prompts(server))) == len(_answered_prompts(server))  # nothing paid for twice
    assert {what for kind, what in connections if kind == "connect"} == {("127.0.0.1", server.port)}


def test_a_server_that_never_comes_back_stops_the_build_and_keeps_the_work(
    server: OllamaAPIServer, fault_free: Path, small_docs: Path, tmp_path: Path, no_backoff: list[float]
) -> None:
    server.fault_at(12, "away", seconds=None)  # in the grade stage, gone for good
    run_dir = tmp_path / "run"
    config = _config(small_docs, run_dir, server)

    with pytest.raises(
        LLMError, match=r"failed 3 times in a row \(No Ollama server answers at http://127\.0\.0\.1:\d+.*re-run"
    ):
        build(config, until="grade")

    assert len(no_backoff) == 2
    assert (run_dir / "queries" / "manifest.json").is_file()
    assert not (run_dir / "grade" / "manifest.json").exists()
    cached = (run_dir / "llm_cache.jsonl").read_text().count("\n")
    assert cached == len(_answered_prompts(server)) == 11  # every answer before the crash is kept

    server.start(server_port := _port_of(config))
    result = build(config, until="grade")

    assert server.port == server_port
    assert [s.status for s in result.stages] == ["skipped", "skipped", "skipped", "ran"]
    assert result.llm_stats is not None and result.llm_stats["cache_hits"] == 11 - 6  # the grades done before
    for relative in DATA:
        assert (run_dir / relative).read_bytes() == (fault_free / relative).read_bytes(), relative
    assert len(set(_answered_prompts(server))) == len(_answered_prompts(server))  # nothing paid for twice


def _port_of(config) -> int:
    return int(str(config.llm.host).rsplit(":", 1)[1])
