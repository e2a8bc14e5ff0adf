"""The whole pipeline on real documents, real Qdrant, real training, with a deterministic LLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rerankforge import build, load_config
from rerankforge.artifacts import Chunk, Query, read_jsonl
from rerankforge.errors import InputError, RerankforgeError
from rerankforge.pipeline import run_lock
from tests.conftest import fake_build_config
from tests.fake_llm import FakeLLM

pytestmark = pytest.mark.slow


_config = fake_build_config


@pytest.fixture
def built(fake_build):
    """The session's FakeLLM build of the example documents (tests/conftest.py)."""
    return fake_build


def test_every_stage_runs_and_writes_its_manifest(built) -> None:
    result, _, run_dir = built
    assert [s.name for s in result.stages] == [
        "parse",
        "queries",
        "mine",
        "grade",
        "train",
        "evaluate",
        "export",
    ]
    assert all(s.status == "ran" for s in result.stages)
    for stage in result.stages:
        manifest = json.loads((run_dir / stage.name / "manifest.json").read_text())
        assert manifest["key"] and manifest["files"]
    assert (run_dir / "model" / "onnx" / "model.onnx").is_file()
    assert (run_dir / "model" / "onnx" / "model_qint8.onnx").is_file()


def test_export_measures_every_variant_and_serves_the_fastest_within_a_point(built) -> None:
    from rerankforge.serve.runtime import VARIANTS, Reranker

    result, _, run_dir = built
    meta = json.loads((run_dir / "model" / "rerankforge.json").read_text())
    variants = meta["variants"]
    # fp32, dynamic int8, static int8 (calibrated on the build's pairs), OpenVINO on fp32 and OpenVINO int8
    assert set(variants) == set(VARIANTS)
    for stats in variants.values():
        assert stats["pairs_per_s"] > 0 and 0 <= stats["ndcg@10"] <= 1
        assert stats["ndcg_loss"] == round(variants["fp32"]["ndcg@10"] - stats["ndcg@10"], 4)
    eligible = {name: stats["pairs_per_s"] for name, stats in variants.items() if stats["ndcg_loss"] <= 0.01}
    assert meta["recommended_variant"] == max(eligible, key=eligible.get)
    assert Reranker(run_dir / "model").variant == meta["recommended_variant"]  # what serve loads by default
    parity = meta["parity"]
    assert parity["max_abs_diff_fp32"] <= 1e-4 and 0 < parity["max_abs_diff_int8_static"] < 1
    export = next(s for s in result.stages if s.name == "export")
    assert export.summary["recommended_variant"] == meta["recommended_variant"]


def test_queries_are_not_copies_and_point_at_their_chunk(built) -> None:
    _, _, run_dir = built
    chunks = {c.id: c for c in read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)}
    queries = read_jsonl(run_dir / "queries" / "queries.jsonl", Query)
    assert len(queries) >= 8
    assert len({q.text for q in queries}) == len(queries)
    for query in queries:
        assert query.text.lower() not in chunks[query.chunk_id].text.lower()
    # the budget is spread across files, not spent on the first chunks of one file
    assert len({chunks[q.chunk_id].source for q in queries}) >= 8


def test_grades_cover_the_source_chunk_and_stay_in_range(built) -> None:
    _, _, run_dir = built
    queries = read_jsonl(run_dir / "queries" / "queries.jsonl", Query)
    judgments = [json.loads(line) for line in (run_dir / "grade" / "judgments.jsonl").read_text().splitlines()]
    assert all(0 <= j["grade"] <= 3 for j in judgments)
    graded = {(j["query_id"], j["chunk_id"]) for j in judgments}
    assert all((q.id, q.chunk_id) in graded for q in queries)
    flag = [json.loads(line) for line in (run_dir / "grade" / "train_flag.jsonl").read_text().splitlines()]
    assert flag and all(set(r) >= {"query", "pos", "neg", "pos_scores", "neg_scores"} for r in flag)


def test_training_loss_falls_and_the_build_reports_metrics(built) -> None:
    result, _, _ = built
    train = result.summary("train")
    assert train["steps"] > 0
    assert train["loss_last"] < train["loss_first"]
    evaluation = result.summary("evaluate")
    for system in ("first_stage", "reranked"):
        assert 0.0 <= evaluation[system]["ndcg@10"] <= 1.0
    assert evaluation["better"] == evaluation["verdict"].startswith("better than")
    # the "fused" row: the cross-encoder fused at the weight chosen for it; alpha 0 is the first stage's own
    # order, and an alpha above 0 needs a significant gain on these queries
    alpha = evaluation["fusion"]["cross_encoder_alpha"]
    fused, first = evaluation["fused"]["ndcg@10"], evaluation["first_stage"]["ndcg@10"]
    assert (fused == first) == (alpha == 0.0) and fused >= first
    export = result.summary("export")
    assert export["max_abs_diff_fp32"] < 1e-4
    assert export["fusion_alpha"] == evaluation["fusion"]["alpha"]


def test_rerun_skips_every_stage_and_makes_no_llm_call(built, example_docs: Path) -> None:
    _, _, run_dir = built
    llm = FakeLLM()
    again = build(_config(example_docs, run_dir), llm=llm)
    assert [s.status for s in again.stages] == ["skipped"] * 7
    assert llm.calls == 0


def test_a_config_change_reruns_that_stage_and_downstream_only(built, example_docs: Path, tmp_path: Path) -> None:
    _, _, run_dir = built
    llm = FakeLLM()
    # the evaluation cut-off changes the evaluate stage's key, and export's (it stores the fusion weight)
    again = build(_config(example_docs, run_dir, evaluate={"k": 5}), llm=llm)
    status = {s.name: s.status for s in again.stages}
    assert status == {
        "parse": "skipped", "queries": "skipped", "mine": "skipped", "grade": "skipped",
        "train": "skipped", "evaluate": "ran", "export": "ran",
    }  # fmt: skip
    assert llm.calls == 0


def test_a_damaged_artifact_is_detected_and_redone(tmp_path: Path, small_docs: Path) -> None:
    cfg = _config(small_docs, tmp_path / "run", queries={"max_queries": 6})
    build(cfg, llm=FakeLLM(), until="queries")
    chunks = tmp_path / "run" / "parse" / "chunks.jsonl"
    chunks.write_text(chunks.read_text()[:-20])
    llm = FakeLLM()
    again = build(cfg, llm=llm, until="queries")
    assert [s.status for s in again.stages] == ["ran", "skipped"]
    assert read_jsonl(chunks, Chunk)  # whole again
    assert llm.calls == 0


def test_force_redoes_stages_but_cached_llm_answers_are_reused(tmp_path: Path, small_docs: Path) -> None:
    cfg = _config(small_docs, tmp_path / "run", queries={"max_queries": 6})
    first = FakeLLM()
    build(cfg, llm=first, until="grade")
    assert first.calls > 0
    second = FakeLLM()
    again = build(cfg, llm=second, until="grade", force=True)
    assert all(s.status == "ran" for s in again.stages)
    assert second.calls == 0  # every answer came from the run folder's LLM cache


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope.*does not exist"):
        build(load_config(None, docs=str(tmp_path / "nope")), llm=FakeLLM())


def test_empty_folder_says_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"No files found in .*empty"):
        build(load_config(None, docs=str(tmp_path / "empty"), run_dir=str(tmp_path / "r")), llm=FakeLLM())


def test_folder_without_parsable_files_is_an_error_that_lists_reasons(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (docs / "empty.txt").write_text("")
    with pytest.raises(InputError, match=r"No file in .* could be parsed.*unsupported file type '.png'"):
        build(load_config(None, docs=str(docs), run_dir=str(tmp_path / "r")), llm=FakeLLM())
    report = json.loads((tmp_path / "r" / "parse" / "report.json").read_text())
    assert {s["path"] for s in report["skipped"]} == {"image.png", "empty.txt"}


def test_a_second_build_into_the_same_run_folder_is_refused(tmp_path: Path, small_docs: Path) -> None:
    run_dir = tmp_path / "run"
    with run_lock(run_dir):
        with pytest.raises(RerankforgeError, match="Another build is running"):
            build(_config(small_docs, run_dir), llm=FakeLLM())


def test_wasserstein_loss_trains_on_the_same_graded_data(built, example_docs: Path, tmp_path: Path) -> None:
    _, _, run_dir = built
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    llm = FakeLLM()
    # the loss is under test: the first stage's tuning, evaluate and export are not
    train = {"loss": "wasserstein", "epochs": 2, "max_length": 128, "cross_encoder": True, "tune_first_stage": False}
    result = build(_config(example_docs, copy, train=train), llm=llm, until="train")
    status = {s.name: s.status for s in result.stages}
    assert status["grade"] == "skipped" and status["train"] == "ran" and llm.calls == 0
    train = result.summary("train")
    assert train["loss"] == "wasserstein"
    assert train["loss_last"] < train["loss_first"]


def test_another_backbone_with_the_same_tokenizer_reruns_only_training_and_after(
    built, example_docs: Path, tmp_path: Path, onnx_model_dir: Path
) -> None:
    """A saved reranker (standing in for a hub id such as cross-encoder/ms-marco-MiniLM-L6-v2) whose tokenizer is
    the default backbone's: the chunks would be the same, so parse, queries, mine and grade are reused."""
    _, _, run_dir = built
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    llm = FakeLLM()
    train = {"epochs": 1, "max_length": 128, "batch_size": 4, "cross_encoder": True, "backbone": str(onnx_model_dir)}
    export = {"openvino": False, "static_int8": False, "first_stage_variants": []}  # the export is not under test
    result = build(_config(example_docs, copy, train=train, export=export), llm=llm)
    status = {s.name: s.status for s in result.stages}
    assert status == {
        "parse": "skipped", "queries": "skipped", "mine": "skipped", "grade": "skipped",
        "train": "ran", "evaluate": "ran", "export": "ran",
    }, status  # fmt: skip
    assert llm.calls == 0
    # a window that changes the chunk limit does change the chunks' key
    from rerankforge.stages.parse import chunking_key

    assert (
        chunking_key(_config(example_docs, copy, train={**train, "max_length": 112}))["max_tokens"]
        < (chunking_key(_config(example_docs, copy, train=train))["max_tokens"])
    )


@pytest.mark.parametrize("flags", [[], ["--onnx"], ["--onnx", "--int8"]])
def test_eval_command_rescores_a_finished_build(built, flags: list[str]) -> None:
    from typer.testing import CliRunner

    from rerankforge.cli.main import app

    result, _, run_dir = built
    out = CliRunner().invoke(app, ["eval", str(run_dir), *flags], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    alpha = result.summary("evaluate")["fusion"]["alpha"]
    assert f"fused with the first stage (alpha {alpha})" in out.output
    assert "The reranker is" in out.output


def test_serve_command_answers_over_real_http(built) -> None:
    """`rerankforge serve` as a real process on 127.0.0.1, with a bearer token, stopped after a bounded wait."""
    import httpx

    from tests.serve_process import serve_process

    _, _, run_dir = built
    with serve_process(run_dir / "model", env={"RERANKFORGE_API_KEY": "s3cret"}) as base:
        body = {"query": "charging dock breaker", "documents": ["a 32 A breaker", "parental leave"], "top_n": 1}
        assert httpx.post(f"{base}/rerank", json=body, timeout=10).status_code == 401
        response = httpx.post(f"{base}/rerank", json=body, headers={"Authorization": "Bearer s3cret"}, timeout=10)
        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == 1 and results[0]["index"] in (0, 1) and 0 < results[0]["relevance_score"] < 1
