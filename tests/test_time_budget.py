"""The build's time budget and what the grade stage asks by default: real stages, the FakeLLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerankforge import build, load_config
from rerankforge.artifacts import Judgment, Query, read_jsonl
from rerankforge.budget import expected_gain, parse_duration
from rerankforge.errors import ConfigError
from rerankforge.stages import grade_pairs_per_query
from rerankforge.stages.queries import ROUND
from tests.fake_llm import FakeLLM


def test_durations_are_read_in_the_forms_the_docs_name() -> None:
    assert [parse_duration(t) for t in ("2h", "90m", "1h30m", "45s", "30min", "600", 60)] == [
        7200.0, 5400.0, 5400.0, 45.0, 1800.0, 600.0, 60.0,
    ]  # fmt: skip
    for bad in ("", "2 days", "h", "-5", "0s"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_a_config_without_a_size_or_with_a_bad_budget_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match='time_budget is "off" and queries.max_queries is not set'):
        load_config(None, docs="d", time_budget="off")
    assert load_config(None, docs="d", time_budget="off", queries={"max_queries": 9}).time_budget_seconds() is None
    with pytest.raises(ConfigError, match=r"'two hours' is not a duration: write e\.g\. 2h"):
        load_config(None, docs="d", time_budget="two hours")
    # the bare default: sized by a two-hour budget, no query cap
    cfg = load_config(None, docs="d")
    assert cfg.time_budget_seconds() == 7200 and cfg.queries.max_queries is None


def test_the_learning_curve_is_read_between_its_points() -> None:
    assert expected_gain(0) == 0
    assert expected_gain(100) == 0  # small builds measured at dense (+0.005, -0.005): the curve promises no gain
    assert 0.030 < expected_gain(500) < 0.0565
    gains = [expected_gain(n) for n in range(150, 1200, 10)]
    assert gains == sorted(gains) and gains[-1] == 0.0565  # past the first fresh build the curve never falls
    assert expected_gain(5000) == expected_gain(904)  # past the last measured point: flat, not extrapolated


def test_a_cross_encoder_build_plans_for_its_training_scoring_and_export() -> None:
    from rerankforge.budget import seconds_after_queries
    from rerankforge.stages import cross_encoder_epochs

    assert cross_encoder_epochs(load_config(None, docs="d")) is None  # the plain backbone trains none
    assert cross_encoder_epochs(load_config(None, docs="d", train={"cross_encoder": True, "epochs": 2.0})) == 2.0
    plain = seconds_after_queries(230, 3523, 0, 0.0, first_stage_folds=4)
    # the measured CancerGov builds with a pretrained reranker, 230 kept queries, 4 epochs, four tunings of the first
    # stage, a quiet 2-core machine: mine 3 s, train 897 s, evaluate 162 s, export 120 s; a plan without the
    # cross-encoder falls far short of that, and the plan with it covers it without doubling it (a plan twice
    # the real time halves the queries a budget buys)
    with_ce = seconds_after_queries(230, 3523, 0, 0.0, cross_encoder_epochs=4.0, first_stage_folds=4)
    measured = 3 + 897 + 162 + 120
    assert plain < measured / 2
    assert measured <= with_ce <= 1.5 * measured
    assert seconds_after_queries(230, 3523, 0, 0.0, cross_encoder_epochs=1.0, first_stage_folds=4) < with_ce


def test_a_build_that_tunes_its_first_stage_per_fold_plans_for_every_tuning() -> None:
    from rerankforge.budget import seconds_after_queries
    from rerankforge.stages import first_stage_folds

    assert first_stage_folds(load_config(None, docs="d"), kept=336) == 4
    assert first_stage_folds(load_config(None, docs="d", train={"tune_first_stage": False}), kept=336) == 1
    # a build whose held-out quarter alone decided in every measured case plans for no more tunings
    assert first_stage_folds(load_config(None, docs="d"), kept=1205) == 1
    one, four = (seconds_after_queries(1205, 21602, 0, 0.0, first_stage_folds=k) for k in (1, 4))
    # the bare 2h build tuned its first stage on 904 of 1,205 kept queries in about 220 s: three more tunings on
    # most of the kept queries take about three times that
    assert 3 * 200 <= four - one <= 3 * 400


@pytest.mark.slow  # real parsing and embedding
def test_query_writing_stops_when_the_rest_of_the_build_would_not_fit(example_docs: Path, tmp_path: Path) -> None:
    # A one-second budget cannot hold even the stages after query writing: the first round is written (the
    # rate needs one), then the stage stops, whatever this machine's speed.
    cfg = load_config(None, docs=str(example_docs), run_dir=str(tmp_path / "run"), time_budget="1s",
                      queries={"per_chunk": 1})  # fmt: skip
    llm = FakeLLM()
    result = build(cfg, llm=llm, until="queries")

    summary = result.summary("queries")
    assert summary["stopped_by_time_budget"] is True
    assert summary["chunks_sampled"] == ROUND == llm.calls
    # with room to spare, every chunk is asked once and the budget never stops it
    roomy = cfg.model_copy(update={"time_budget": "100h", "run_dir": tmp_path / "roomy"})
    result = build(roomy, llm=FakeLLM(), until="queries")
    chunks = result.summary("parse")["chunks"]
    assert chunks > 2 * ROUND
    assert result.summary("queries")["chunks_sampled"] == chunks
    assert result.summary("queries")["stopped_by_time_budget"] is False


def test_grading_calls_per_query_follow_grade_source_and_top_k() -> None:
    base = {"docs": "d", "mine": {"top_k": 10}}
    assert grade_pairs_per_query(load_config(None, **base, grade={"top_k": 0})) == 0  # auto grades no source
    assert grade_pairs_per_query(load_config(None, **base, grade={"top_k": 0, "source": True})) == 1
    assert grade_pairs_per_query(load_config(None, **base, grade={"top_k": 2, "samples": 3})) == 6
    assert grade_pairs_per_query(load_config(None, **base, grade={"top_k": None})) == 9
    assert grade_pairs_per_query(load_config(None, **base, train={"cross_encoder": True}, grade={"top_k": 0})) == 0


@pytest.mark.slow  # real parsing, Qdrant and the first stage's tuning
def test_a_build_without_a_cross_encoder_grades_nothing_and_tunes_on_every_query(
    small_docs: Path, tmp_path: Path
) -> None:
    cfg = load_config(None, docs=str(small_docs), run_dir=str(tmp_path / "run"),
                      queries={"max_queries": 12, "per_chunk": 1}, grade={"top_k": 0})  # fmt: skip
    llm = FakeLLM()
    result = build(cfg, llm=llm, until="train")

    grade = result.summary("grade")
    assert grade["pairs"] == 0 and grade["source_graded"] is False
    assert read_jsonl(tmp_path / "run" / "grade" / "judgments.jsonl", Judgment) == []
    kept = read_jsonl(tmp_path / "run" / "queries" / "queries.jsonl", Query)
    assert llm.calls == result.summary("queries")["chunks_sampled"]  # query writing only
    tuned = result.summary("train")["first_stage"]
    split = result.summary("train")
    assert tuned["triplets"] == split["train_queries"] and split["train_queries"] + split["dev_queries"] == len(kept)
    # the same build asked to grade the source passages makes one call per kept query, and trains the same rows
    graded = cfg.model_copy(update={"grade": cfg.grade.model_copy(update={"source": True}),
                                    "run_dir": tmp_path / "graded"})  # fmt: skip
    llm = FakeLLM()
    result = build(graded, llm=llm, until="train")
    assert result.summary("grade")["pairs"] == len(read_jsonl(tmp_path / "graded" / "queries" / "queries.jsonl", Query))
