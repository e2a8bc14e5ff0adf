"""The queries and grade stages end to end with the deterministic FakeLLM (built on the real provider base
class): the same files at any concurrency, self-consistency samples, the round-trip filter, and the exports
other tools read (BEIR folder, FlagEmbedding JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerankforge import build
from rerankforge.artifacts import Chunk, Query, read_jsonl
from rerankforge.config import MineConfig
from rerankforge.evaluation.labels import load_beir
from rerankforge.stages.queries import RoundTrip
from tests.conftest import fake_build_config
from tests.fake_llm import FakeLLM

LLM_FILES = ("queries/queries.jsonl", "grade/judgments.jsonl", "grade/train_flag.jsonl", "grade/qrels.tsv")


@pytest.mark.slow  # two small builds up to the grade stage (parsing, MiniLM, Qdrant)
def test_concurrency_changes_nothing_and_samples_multiply_the_calls(small_docs: Path, tmp_path: Path) -> None:
    overrides = {"queries": {"max_queries": 8}, "grade": {"samples": 2, "top_k": "all", "source": True}}
    one, many = FakeLLM(), FakeLLM()
    first = build(fake_build_config(small_docs, tmp_path / "one", llm={"concurrency": 1}, **overrides), llm=one,
                  until="grade")  # fmt: skip
    second = build(fake_build_config(small_docs, tmp_path / "many", llm={"concurrency": 4}, **overrides), llm=many,
                   until="grade")  # fmt: skip

    for name in LLM_FILES:
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "many" / name).read_text(), name
    pairs = first.summary("grade")["pairs"]
    assert first.llm_stats["by_stage"]["grade"] == 2 * pairs == second.llm_stats["by_stage"]["grade"]
    judgments = [json.loads(line) for line in (tmp_path / "many" / "grade" / "judgments.jsonl").open()]
    assert all(j["score"] == float(j["grade"]) for j in judgments)  # the FakeLLM answers both samples alike

    flag = [json.loads(line) for line in (tmp_path / "many" / "grade" / "train_flag.jsonl").open()]
    assert flag and all(list(row) == ["query", "pos", "neg", "pos_scores", "neg_scores"] for row in flag)
    beir = load_beir(tmp_path / "many" / "grade" / "beir")
    queries = read_jsonl(tmp_path / "many" / "queries" / "queries.jsonl", Query)
    assert set(beir.queries) == {q.id for q in queries if q.id in beir.qrels}
    assert all(beir.qrels[q.id][q.chunk_id] == 3 for q in queries)  # the FakeLLM grades its own source 3
    kept = second.summary("queries")
    assert sum(kept["kept_by_style"].values()) == kept["queries_kept"] and kept["dropped"]["round_trip"] == 0


@pytest.mark.slow  # loads MiniLM and embeds three documents' chunks
def test_round_trip_keeps_queries_that_find_their_chunk(small_docs: Path, tmp_path: Path, minilm_path: str) -> None:
    build(fake_build_config(small_docs, tmp_path / "run"), llm=FakeLLM(), until="parse")
    chunks = read_jsonl(tmp_path / "run" / "parse" / "chunks.jsonl", Chunk)
    dock = next(c for c in chunks if "circuit" in c.text.lower() or "outlet" in c.text.lower())
    round_trip = RoundTrip(chunks, MineConfig(bi_encoder=minilm_path, batch_size=16), top_k=3)

    passes = round_trip.passes([(dock.text[:200], dock.id), ("hotel booking rules for business travel", dock.id)])

    assert passes == [True, False]


@pytest.mark.slow  # parses three documents
def test_the_planner_counts_the_calls_of_the_sample(small_docs: Path, tmp_path: Path) -> None:
    from rerankforge.planner import plan_build

    cfg = fake_build_config(small_docs, tmp_path / "run", queries={"max_queries": 5},
                            grade={"samples": 2, "top_k": "all", "source": True},
                            llm={"concurrency": 2}, parse={"workers": 1})  # fmt: skip

    plan = plan_build(cfg, calibrate=False)

    queries, grade = plan.stages
    assert (queries.stage, queries.calls) == ("queries", 5)
    assert (grade.stage, grade.calls) == ("grade", 5 * 3 * 4 * 2)  # 3 queries a call, all kept, top_k 4, 2 samples
    assert grade.prompt_tokens > grade.calls * 50  # each grading prompt holds a passage and a query
    assert 0 < queries.output_tokens <= 5 * cfg.queries.max_tokens  # an estimate within the output cap
    assert plan.total_seconds is None and plan.concurrency == 2  # no calibration, no time


def test_only_the_users_examples_and_the_corpus_own_queries_are_few_shot(tmp_path: Path) -> None:
    from rerankforge.config import QueriesConfig
    from rerankforge.stages.queries import few_shot, load_examples

    default = QueriesConfig()
    own = ["what breaker for the dock", "AR-200 payload", "replace battery when"]
    assert load_examples(default) == [] and default.dynamic_examples == 0  # a small model copies examples
    assert few_shot(load_examples(default), []) == []
    assert few_shot(load_examples(default), own) == own
    user_file = tmp_path / "examples.txt"
    user_file.write_text("leave policy for parents\nexpense deadline\n")
    users = QueriesConfig(dynamic_examples=3, examples_file=str(user_file))
    assert few_shot(load_examples(users), own)[:2] == ["leave policy for parents", "expense deadline"]
