"""The served scorer: first stage (tuned or not) plus the cross-encoder as a residual, never worse than the first
stage it starts from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rerankforge.evaluation.scorer_choice import DevList, choose_scorer


def _lists(n: int, *, tuned_rank: int | None, ce: str, seed: int = 0) -> list[DevList]:
    """``n`` held-out queries; the untuned first stage puts each source passage first, second or third of ten."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        first = np.sort(np.linspace(0.8, 0.35, 10) + rng.normal(0, 0.005, 10))[::-1]
        source = (0, 1, 2)[i % 3]
        grades = [0] * 10
        grades[source] = 1
        tuned = None
        if tuned_rank is not None:
            tuned = first.copy()
            tuned[[source, tuned_rank]] = tuned[[tuned_rank, source]]
        if ce == "finds":
            cross = rng.normal(0, 1, 10)
            cross[source] = 6.0
        else:
            cross = rng.normal(0, 1, 10)
        out.append(DevList(grades=grades, first=first, tuned=tuned, cross_encoder=cross))
    return out


def test_nothing_learned_that_wins_serves_the_untuned_first_stage() -> None:
    for seed in range(5):
        choice = choose_scorer(_lists(30, tuned_rank=5, ce="noise", seed=seed), k=10, p_value=0.05)
        assert choice["scorer"]["first_stage"] == "untuned" and choice["scorer"]["cross_encoder_weight"] == 0.0
    assert choice["scorer"]["cross_encoder_weight"] == 0.0
    assert choice["learned"] is False and choice["fusion_alpha"] == 0.0
    assert choice["systems"]["tuned first stage"] < choice["systems"]["first stage"]


def test_a_tuned_first_stage_that_ranks_the_source_higher_is_served() -> None:
    choice = choose_scorer(_lists(30, tuned_rank=0, ce="noise"), k=10, p_value=0.05)
    assert choice["scorer"]["first_stage"] == "tuned"
    assert choice["learned"] is True and choice["p_value"] < 0.05
    assert choice["gain_ndcg"] == pytest.approx((2 - 1 / math.log2(3) - 1 / math.log2(4)) / 3, abs=1e-3)


def test_the_cross_encoder_keeps_a_weight_only_when_it_helps() -> None:
    helps = choose_scorer(_lists(30, tuned_rank=None, ce="finds"), k=10, p_value=0.05)
    assert helps["scorer"]["cross_encoder_weight"] > 0 and helps["learned"]
    assert "tuned first stage" not in helps["systems"]
    noise = choose_scorer(_lists(30, tuned_rank=None, ce="noise"), k=10, p_value=0.05)
    assert noise["scorer"]["cross_encoder_weight"] == 0.0


def test_a_significant_gain_below_the_margin_is_not_served() -> None:
    lists = _lists(30, tuned_rank=0, ce="noise")
    gain = choose_scorer(lists, k=10, p_value=0.05)["gain_ndcg"]
    assert choose_scorer(lists, k=10, p_value=0.05, min_gain=gain * 0.9)["scorer"]["first_stage"] == "tuned"
    above = choose_scorer(lists, k=10, p_value=0.05, min_gain=gain * 1.1)
    assert above["scorer"]["first_stage"] == "untuned" and above["learned"] is False


def test_the_folds_judge_the_tuned_first_stage_on_every_kept_query() -> None:
    """Four held-out queries cannot show a gain; the same tuning's folds (each query judged by a tuning that
    never saw it) can. They are evidence for the first stage only: the cross-encoder is judged where it was
    held out."""
    held_out = _lists(4, tuned_rank=0, ce="noise")
    assert choose_scorer(held_out, k=10, p_value=0.05)["scorer"]["first_stage"] == "untuned"
    folds = [DevList(grades=d.grades, first=d.first, tuned=d.tuned, cross_encoder=None)
             for d in _lists(30, tuned_rank=0, ce="noise", seed=1)]  # fmt: skip
    choice = choose_scorer(held_out, k=10, p_value=0.05, first_stage_lists=folds)
    assert choice["scorer"]["first_stage"] == "tuned" and choice["learned"] is True
    assert choice["judged_queries"] == choice["every_fold_queries"] == 34 and choice["p_value"] < 0.05
    assert choice["systems"]["tuned first stage, every fold"] > choice["systems"]["first stage, every fold"]
    # folds whose tuning ranks the source lower outvote the four held-out queries that favour it
    worse = [DevList(grades=d.grades, first=d.first, tuned=d.tuned, cross_encoder=None)
             for d in _lists(30, tuned_rank=5, ce="noise", seed=1)]  # fmt: skip
    assert choose_scorer(_lists(9, tuned_rank=0, ce="noise"), k=10, p_value=0.05)["scorer"]["first_stage"] == "tuned"
    mixed = choose_scorer(_lists(9, tuned_rank=0, ce="noise"), k=10, p_value=0.05, first_stage_lists=worse)
    assert mixed["scorer"]["first_stage"] == "untuned" and mixed["learned"] is False


def test_a_gain_on_too_few_queries_is_not_enough() -> None:
    choice = choose_scorer(_lists(2, tuned_rank=0, ce="finds"), k=10, p_value=0.05)
    assert choice["learned"] is False and choice["scorer"]["first_stage"] == "untuned"


def test_the_brought_reranker_is_the_floor_that_tuning_must_beat() -> None:
    """A user who brings a reranker would serve it anyway: where it beats the first stage it is the floor, and a
    tuned cross-encoder is served alone only when it beats that floor, not merely the first stage."""
    rng = np.random.default_rng(3)

    def finds(lists: list[DevList], miss_every: int) -> list[np.ndarray]:  # the source first, but on some queries
        out = []
        for i, d in enumerate(lists):
            scores = rng.normal(0, 1, 10)
            scores[d.grades.index(1)] = 6.0 if i % miss_every else -6.0
            out.append(scores)
        return out

    lists = _lists(40, tuned_rank=None, ce="noise")
    for d, scores in zip(lists, finds(lists, 100), strict=True):
        d.brought = scores
    hurt = choose_scorer(lists, k=10, p_value=0.05)  # tuning made noise of a reranker that knew
    assert hurt["scorer"]["cross_encoder_alone"] == "brought" and hurt["scorer"]["first_stage_weight"] == 0.0
    assert hurt["systems"]["brought reranker alone"] > hurt["systems"]["cross-encoder alone"]
    assert hurt["learned"] and hurt["gain_ndcg"] > 0.2
    for d, scores in zip(lists, finds(lists, 100), strict=True):  # tuning kept what the reranker knew, and more
        d.cross_encoder = scores
    for d, scores in zip(lists, finds(lists, 4), strict=True):  # the reranker as it came misses a quarter
        d.brought = scores
    helped = choose_scorer(lists, k=10, p_value=0.05)
    systems = helped["systems"]
    assert systems["first stage"] < systems["brought reranker alone"] < systems["cross-encoder alone"], systems
    # the tuned cross-encoder is served (alone or over the first stage), not the floor
    assert helped["scorer"].get("cross_encoder_alone") != "brought" and helped["scorer"]["cross_encoder_weight"] > 0
    for d in lists:  # a brought reranker no better than the first stage is not the floor
        d.brought, d.cross_encoder = rng.normal(0, 1, 10), rng.normal(0, 1, 10)
    neither = choose_scorer(lists, k=10, p_value=0.05)
    assert neither["scorer"]["cross_encoder_weight"] == 0.0 and not neither["learned"]
    assert "cross_encoder_alone" not in neither["scorer"]


def _dense_top(bi_encoder: object, chunks: dict[str, str], query: str, k: int) -> list[str]:
    ids = list(chunks)
    vectors = bi_encoder.encode([chunks[i] for i in ids], normalize_embeddings=True)  # type: ignore[attr-defined]
    q = bi_encoder.encode([query], normalize_embeddings=True)[0]  # type: ignore[attr-defined]
    return [ids[i] for i in np.argsort(-(vectors @ q), kind="stable")[:k]]


def _ndcg(ranked: list[str], relevant: dict[str, int]) -> float:
    dcg = sum((2 ** relevant.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


@pytest.mark.slow
def test_served_order_through_http_is_never_worse_than_dense_on_the_example_labels(default_build, minilm_path) -> None:
    """What a RAG stack gets from a build with the default settings: each labelled query's dense top-20 sent to
    /v2/rerank without first-stage scores."""
    import csv

    import httpx
    from sentence_transformers import SentenceTransformer

    from rerankforge.artifacts import Chunk, read_jsonl
    from rerankforge.evaluation.labels import normalise
    from tests.serve_process import serve_process

    _, _, run_dir = default_build
    chunks = {c.id: c.text for c in read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)}
    labels: dict[str, dict[str, int]] = {}
    with open(Path(__file__).parent.parent / "examples" / "eval-labels.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for cid, text in chunks.items():
                if normalise(row["document"]) in normalise(text):
                    labels.setdefault(row["query"], {})[cid] = int(row["grade"])
    assert len(labels) >= 15
    bi_encoder = SentenceTransformer(minilm_path, device="cpu")
    meta = json.loads((run_dir / "model" / "rerankforge.json").read_text())
    served, dense = [], []
    with serve_process(run_dir / "model") as base:
        for query, relevant in labels.items():
            top = _dense_top(bi_encoder, chunks, query, 20)
            body = {"model": "m", "query": query, "documents": [chunks[c] for c in top], "top_n": 20}
            results = httpx.post(f"{base}/v2/rerank", json=body, timeout=60).json()["results"]
            served.append(_ndcg([top[r["index"]] for r in results], relevant))
            dense.append(_ndcg(top, relevant))
            assert len(results) == 20 and all(0 < r["relevance_score"] < 1 for r in results)
    assert np.mean(served) >= np.mean(dense) - 0.005, (np.mean(served), np.mean(dense))
    if meta["scorer"]["first_stage"] == "first_stage" and not meta["scorer"]["first_stage_tuned"]:
        if meta["scorer"]["cross_encoder_weight"] == 0:  # nothing learned: exactly the first stage's ranking
            assert served == pytest.approx(dense, abs=1e-9)


def test_auto_trains_a_cross_encoder_only_on_a_reranker_backbone(tmp_path: Path, minilm_path: str) -> None:
    from sentence_transformers import CrossEncoder

    from rerankforge.errors import InputError
    from rerankforge.training.models import trains_cross_encoder

    reranker = tmp_path / "reranker"
    CrossEncoder(minilm_path, num_labels=1, max_length=128, device="cpu").save_pretrained(str(reranker))
    assert trains_cross_encoder("auto", str(reranker)) is True
    assert trains_cross_encoder("auto", "all-MiniLM-L6-v2") is False  # a bi-encoder's plain encoder
    assert trains_cross_encoder(True, "all-MiniLM-L6-v2") is True
    assert trains_cross_encoder(False, str(reranker)) is False
    with pytest.raises(InputError, match="train.backbone 'no-such-org/no-such-model'"):
        trains_cross_encoder("auto", "no-such-org/no-such-model")


@pytest.mark.slow
def test_a_build_without_a_cross_encoder_serves_its_first_stage_and_drops_the_old_one(default_build) -> None:
    """The default on a plain encoder: the earlier cross-encoder of the same run folder is gone, the folder
    serves, evaluates and describes the first stage alone."""
    from sentence_transformers import SentenceTransformer
    from typer.testing import CliRunner

    from rerankforge import Reranker
    from rerankforge.cli.main import app
    from rerankforge.errors import InputError
    from rerankforge.evaluation.scorers import load_scorer

    result, llm, run_dir = default_build
    status = {s.name: s.status for s in result.stages}
    assert status == {"parse": "skipped", "queries": "skipped", "mine": "skipped", "grade": "ran",
                      "train": "ran", "evaluate": "ran", "export": "ran"}  # fmt: skip
    assert llm.calls == 0  # the default grades nothing for a build without a cross-encoder
    assert result.summary("grade")["pairs"] == 0
    assert result.summary("train")["cross_encoder"].startswith("not trained (train.cross_encoder = auto")
    from rerankforge.stages.train import _first_stage_bf16, cpu_has_bf16

    # train.precision = auto: the first stage is tuned in bf16 where this CPU has bf16 instructions
    assert result.summary("train")["first_stage"]["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert _first_stage_bf16("auto", "cpu") is cpu_has_bf16()
    assert _first_stage_bf16("fp32", "cpu") is False and _first_stage_bf16("bf16", "cpu") is True
    model_dir = run_dir / "model"
    # the copied run had a trained, exported cross-encoder: none of its files may pass for this build's
    assert not any((model_dir / name).exists() for name in ("config.json", "model.safetensors", "onnx", "openvino"))
    meta = json.loads((model_dir / "rerankforge.json").read_text())
    assert meta["scorer"]["cross_encoder"] is False and meta["scorer"]["cross_encoder_weight"] == 0.0
    card = (model_dir / "README.md").read_text()
    assert "holds no cross-encoder" in card and "### What is served" in card
    docs = ["The dock needs a 32 A type C breaker.", "Parental leave is sixteen weeks.", "Charge for 2 h."]
    first_stage = SentenceTransformer(str(model_dir / "first_stage"), device="cpu")
    cosine = first_stage.encode(docs, normalize_embeddings=True) @ first_stage.encode(["dock breaker"])[0]
    for reranker in (Reranker(model_dir), Reranker(model_dir, quantized=True)):  # no cross-encoder file to pick
        assert reranker.variant == "first_stage:fp32"
        assert reranker.logits("dock breaker", docs) == pytest.approx(
            meta["scorer"]["first_stage_weight"] * cosine + meta["scorer"]["bias"], abs=1e-4
        )
    with pytest.raises(InputError, match="holds no cross-encoder"):
        Reranker(model_dir, cross_encoder_only=True)
    assert load_scorer(model_dir).kind == "onnx first_stage:fp32"
    with pytest.raises(InputError, match="no cross-encoder to load with torch"):
        load_scorer(model_dir, onnx=False)
    out = CliRunner().invoke(app, ["eval", str(run_dir)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "The reranker is" in out.output
    out = CliRunner().invoke(app, ["export", str(model_dir)])
    assert out.exit_code != 0 and "holds no cross-encoder to export" in str(out.exception)
    from rerankforge.report import write_report

    write_report(run_dir, latency=False)  # its LLM-graded rows are the served scorer's, not a cross-encoder's
    for name in ("report.md", "report.html"):
        text = (run_dir / name).read_text()
        assert "served scorer" in text and "cross-encoder alone" not in text, name


@pytest.mark.slow
def test_the_model_folder_carries_its_first_stage_and_the_verdict_says_what_is_served(fake_build) -> None:
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from rerankforge import Reranker

    result, _, run_dir = fake_build
    model_dir = run_dir / "model"
    meta = json.loads((model_dir / "rerankforge.json").read_text())
    scorer, evaluate = meta["scorer"], result.summary("evaluate")
    assert evaluate["scorer"]["cross_encoder_weight"] == scorer["cross_encoder_weight"]
    assert (model_dir / "first_stage" / "onnx" / "model.onnx").is_file()
    learned = scorer["first_stage_tuned"] or scorer["cross_encoder_weight"] > 0
    assert evaluate["better"] is learned
    assert ("serves the first stage's own order" in evaluate["verdict"]) is not learned
    assert learned or meta["fusion_alpha"] == 0.0  # nothing learned: no weight against a client's own scores
    # the first stage is a plain sentence-transformers folder: a user's new (or unchanged) embedder
    first_stage = SentenceTransformer(str(model_dir / "first_stage"), device="cpu")
    docs = ["The dock needs a 32 A type C breaker.", "Parental leave is sixteen weeks.", "Charge for 2 h."]
    cosine = first_stage.encode(docs, normalize_embeddings=True) @ first_stage.encode(["dock breaker"])[0]
    # a plain CrossEncoder load of the folder gives the cross-encoder alone, as does cross_encoder_only
    alone = Reranker(model_dir, cross_encoder_only=True, variant="fp32").logits("dock breaker", docs)
    torch_alone = CrossEncoder(str(model_dir), device="cpu").predict(
        [("dock breaker", d) for d in docs], activation_fn=__import__("torch").nn.Identity()
    )
    assert alone == pytest.approx(np.asarray(torch_alone), abs=1e-4)
    # the served score is the folder's scorer over those two parts, whatever weights the build chose
    served = Reranker(model_dir, variant="fp32").logits("dock breaker", docs)
    weights = scorer["first_stage_weight"], scorer["cross_encoder_weight"], scorer["bias"]
    assert served == pytest.approx(weights[0] * cosine + weights[1] * np.asarray(alone) + weights[2], abs=1e-3)


@pytest.mark.slow
def test_a_pretrained_cross_encoder_folder_as_backbone_builds_into_the_same_scorer(
    tmp_path: Path, small_docs: Path, minilm_path: str
) -> None:
    """What users with a model hub do (``--backbone cross-encoder/ms-marco-MiniLM-L6-v2``); a locally saved
    cross-encoder folder stands in for the hub id."""
    import torch
    from sentence_transformers import CrossEncoder

    from rerankforge import Reranker, build
    from tests.conftest import fake_build_config
    from tests.fake_llm import FakeLLM

    torch.manual_seed(1)
    pretrained = tmp_path / "pretrained-cross-encoder"
    CrossEncoder(minilm_path, num_labels=1, max_length=128, device="cpu").save_pretrained(str(pretrained))
    config = fake_build_config(
        small_docs, tmp_path / "run", train={"backbone": str(pretrained), "epochs": 1, "max_length": 128},
        export={"openvino": False, "static_int8": False, "first_stage_variants": []},
    )  # fmt: skip
    result = build(config, llm=FakeLLM())  # train.cross_encoder = auto: a reranker backbone is trained
    assert result.summary("train")["backbone"] == str(pretrained)
    meta = json.loads((result.model_dir / "rerankforge.json").read_text())
    assert meta["scorer"]["first_stage"] == "first_stage" and "cross_encoder_weight" in meta["scorer"]
    ranked = Reranker(result.model_dir).rerank("dock circuit breaker", ["a 32 A breaker", "travel expenses"])
    assert sorted(i for i, _ in ranked) == [0, 1]
    tuned = CrossEncoder(str(result.model_dir), device="cpu")
    before = CrossEncoder(str(pretrained), device="cpu")
    pair = [("dock circuit breaker", "a 32 A breaker")]
    assert tuned.predict(pair)[0] != pytest.approx(before.predict(pair)[0], abs=1e-6)  # it was fine-tuned


@pytest.mark.slow  # a build of the example documents with a scripted LLM (parsing, tuning, export)
def test_a_build_whose_queries_point_at_the_wrong_passages_serves_the_dense_order(
    tmp_path: Path, example_docs: Path, minilm_path: str
) -> None:
    """Harmful data: every synthetic query is about another text than the passage it is filed under. The floor
    must keep the first stage's own order, and say why, and the server must return exactly that order."""
    from fastapi.testclient import TestClient
    from sentence_transformers import SentenceTransformer

    from rerankforge import build, load_config
    from rerankforge.artifacts import Chunk, read_jsonl
    from rerankforge.serve.app import create_app
    from tests.fake_llm import MisleadingLLM

    texts = [p.read_text(encoding="utf-8") for p in sorted(example_docs.rglob("*")) if p.suffix in (".md", ".txt")]
    decoys = [para for text in texts for para in text.split("\n\n") if len(para) > 80]
    cfg = load_config(None, docs=str(example_docs), run_dir=str(tmp_path / "run"), time_budget="off",
                      queries={"max_queries": 40, "round_trip_top_k": 0}, parse={"workers": 1})  # fmt: skip
    result = build(cfg, llm=MisleadingLLM(decoys))
    evaluate = result.summary("evaluate")
    # enough queries that a real gain would have been seen: the floor judged evidence, not too little of it
    assert result.summary("queries")["queries_kept"] >= 25 and evaluate["dev_queries"] >= 6
    assert evaluate["scorer"]["first_stage"] == "untuned" and evaluate["better"] is False
    assert "serves the first stage's own order" in evaluate["verdict"]
    # the held-out queries showed no gain, so the first stage was tuned once more per fold (train.first_stage_folds
    # = 4 by default), each time on every kept query but one fold's, and judged on every kept query: still none
    split = json.loads((tmp_path / "run" / "train" / "split.json").read_text())
    folds = json.loads((tmp_path / "run" / "train" / "first_stage_folds" / "folds.json").read_text())["folds"]
    assert len(folds) == 3 and sorted(q for fold in folds for q in fold) == sorted(split["train"])
    tunings = result.summary("train")["first_stage"]["folds"]
    assert [t["trained_on"] for t in tunings] == [len(split["train"]) + len(split["dev"]) - len(f) for f in folds]
    assert "never saw it" in evaluate["verdict"], evaluate["verdict"]
    every = evaluate["scorer_ndcg"]
    assert every["tuned first stage, every fold"] <= every["first stage, every fold"] + 0.05, every
    chunks = [c.text for c in read_jsonl(tmp_path / "run" / "parse" / "chunks.jsonl", Chunk)]
    bi_encoder = SentenceTransformer(minilm_path, device="cpu")
    client = TestClient(create_app(tmp_path / "run" / "model"))
    for query in ("which breaker does the charging dock need", "how long is parental leave", "battery life"):
        vectors = bi_encoder.encode(chunks, normalize_embeddings=True)
        dense = list(np.argsort(-(vectors @ bi_encoder.encode([query], normalize_embeddings=True)[0]), kind="stable"))
        top = [chunks[i] for i in dense[:20]]
        body = {"model": "m", "query": query, "documents": top, "top_n": 20}
        served = [r["index"] for r in client.post("/v2/rerank", json=body).json()["results"]]
        assert served[:10] == list(range(10)), (query, served)  # the dense top-20, in dense's order


def test_a_build_whose_queries_teach_something_real_serves_better_than_dense_through_http(
    tmp_path: Path, minilm_path: str
) -> None:
    """Teaching data: users ask for a service's aspect by a code word that no document contains, and the scripted
    LLM writes exactly those queries. The floor must serve what was learned, and through /v2/rerank the order of
    the dense top-20 must beat dense's own on the held-out files, which no training query came from."""
    from fastapi.testclient import TestClient
    from sentence_transformers import SentenceTransformer

    from rerankforge import build, load_config
    from rerankforge.artifacts import Chunk, Query, read_jsonl
    from rerankforge.evaluation.labels import LabelledData
    from rerankforge.evaluation.retrieval import evaluate_retrieval
    from rerankforge.ranking import ndcg_of_scores, one_sided_p
    from rerankforge.serve.app import create_app
    from tests.fake_llm import CodedLLM, coded_query, write_coded_corpus

    write_coded_corpus(tmp_path / "docs", files=16)
    run = tmp_path / "run"
    cfg = load_config(
        None,
        docs=str(tmp_path / "docs"),
        run_dir=str(run),
        time_budget="off",
        queries={"max_queries": 200, "per_chunk": 1, "round_trip_top_k": 0},
        parse={"workers": 1, "combine_under_n_characters": 0},
        train={"first_stage_learning_rate": 2e-4, "first_stage_epochs": 2, "first_stage_negatives": 1},
    )
    result = build(cfg, llm=CodedLLM())
    evaluate = result.summary("evaluate")
    assert evaluate["scorer"]["first_stage"] == "tuned" and evaluate["better"] is True, evaluate["verdict"]
    # the held-out queries alone showed the gain: no more tunings of the first stage per fold were needed
    assert result.summary("train")["first_stage"]["folds"].startswith("none: the held-out queries alone")
    assert not (run / "train" / "first_stage_folds").exists()
    # a tuned first stage is served in its fastest variant within 1 nDCG point of fp32 (export.first_stage_variants)
    variants = result.summary("export")["first_stage"]
    stats, served = variants["variants"], variants["recommended_variant"]
    assert len(stats) >= 2 and stats[served]["ndcg_loss"] <= 0.01 and "fp32_kept" not in variants
    assert all(row["docs_per_s"] <= stats[served]["docs_per_s"] for row in stats.values() if row["ndcg_loss"] <= 0.01)
    assert json.loads((run / "model" / "rerankforge.json").read_text())["scorer"]["first_stage_variant"] == served

    chunks = list(read_jsonl(run / "parse" / "chunks.jsonl", Chunk))
    texts = [c.text for c in chunks]
    dev = set(json.loads((run / "train" / "split.json").read_text())["dev"])
    source_of = {c.id: c.source for c in chunks}
    held_out = {source_of[q.chunk_id] for q in read_jsonl(run / "queries" / "queries.jsonl", Query) if q.id in dev}
    assert held_out and len(held_out) < len({c.source for c in chunks})
    bi_encoder = SentenceTransformer(minilm_path, device="cpu")
    vectors = bi_encoder.encode(texts, normalize_embeddings=True)
    client = TestClient(create_app(run / "model"))
    dense_ndcg, served_ndcg = [], []
    for chunk in (c for c in chunks if c.source in held_out):
        query = coded_query(chunk.text)  # the question a user asks of this passage, and of no other
        top = list(
            np.argsort(-(vectors @ bi_encoder.encode([query], normalize_embeddings=True)[0]), kind="stable")[:20]
        )
        grades = [1.0 if texts[i] == chunk.text else 0.0 for i in top]
        body = {"model": "m", "query": query, "documents": [texts[i] for i in top], "top_n": 20}
        results = client.post("/v2/rerank", json=body).json()["results"]
        served_scores = np.zeros(len(top))
        for result in results:
            served_scores[result["index"]] = result["relevance_score"]
        dense_ndcg.append(ndcg_of_scores(grades, -np.arange(len(top), dtype=float), 10))
        served_ndcg.append(ndcg_of_scores(grades, served_scores, 10))
    assert len(served_ndcg) >= 8
    assert np.mean(served_ndcg) >= np.mean(dense_ndcg) + 0.1, (np.mean(served_ndcg), np.mean(dense_ndcg))
    p = one_sided_p(served_ndcg, dense_ndcg)
    assert p is not None and p < 0.05, p

    # the tuned first stage handed back as the retriever: over the whole corpus, the held-out files' passages
    # come up for their users' questions where the untuned one misses them (`rerankforge eval --retriever`)
    held_out_chunks = [c for c in chunks if c.source in held_out]
    labels = LabelledData(
        source="coded questions", format="test", corpus={c.id: c.text for c in chunks},
        queries={c.id: coded_query(c.text) for c in held_out_chunks}, qrels={c.id: {c.id: 1} for c in held_out_chunks},
    )  # fmt: skip
    retrieval = evaluate_retrieval(run, labels)
    labelled, synthetic = retrieval["labelled"], retrieval["synthetic"]
    assert labelled["queries"] == len(held_out_chunks) and synthetic["queries"] == len(dev)
    assert labelled["means"]["tuned"]["ndcg@10"] >= labelled["means"]["untuned"]["ndcg@10"] + 0.1, labelled["means"]
    assert labelled["p_values"]["tuned"]["ndcg@10"] < 0.05
    assert labelled["means"]["tuned"]["recall@20"] >= labelled["means"]["untuned"]["recall@20"]
    assert retrieval["tuned"] == "served by the model folder"


def _hub_reranker(folder: Path, docs: Path, minilm_path: str) -> Path:
    """A reranker trained as a model hub trains one: on labelled questions of documents no build here sees
    (``write_coded_corpus``'s other services), each question against three of its service's other passages,
    saved as a sentence-transformers CrossEncoder folder (it ranks unseen services' passages right)."""
    import random

    import torch
    from datasets import Dataset
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    from tests.fake_llm import coded_training_pairs, write_coded_corpus

    write_coded_corpus(docs, files=8, seed=99)
    by_query: dict[str, list[tuple[str, float]]] = {}
    for query, passage, label in coded_training_pairs(docs):
        by_query.setdefault(query, []).append((passage, label))
    rng, rows = random.Random(0), []
    for query, passages in by_query.items():
        others = [p for p, label in passages if not label]
        for positive in (p for p, label in passages if label):
            negatives = {f"negative_{i + 1}": n for i, n in enumerate(rng.sample(others, 3))}
            rows.append({"query": query, "positive": positive, **negatives})
    torch.manual_seed(0)
    model = CrossEncoder(minilm_path, num_labels=1, max_length=64, device="cpu")
    args = CrossEncoderTrainingArguments(
        output_dir=str(folder.with_name("hub-checkpoints")), num_train_epochs=6, per_device_train_batch_size=8,
        learning_rate=3e-4, warmup_ratio=0.1, seed=0, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    loss = MultipleNegativesRankingLoss(model, num_negatives=1)
    train = Dataset.from_list(rows).shuffle(seed=0)
    CrossEncoderTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
    model.save_pretrained(str(folder))
    return folder


@pytest.mark.slow  # a reranker trained for the test, then a build that tunes it (parsing, tuning, export)
def test_the_floor_serves_the_brought_reranker_as_it_came_when_tuning_hurts(tmp_path: Path, minilm_path: str) -> None:
    """A user brings a pretrained reranker (``--backbone``). A lenient grader calls every passage about a query's
    service relevant, so tuning on its grades unlearns what the reranker knew (which section a code word asks
    for). The floor is then the reranker as it came: the model folder holds its own weights, the server ranks as it
    does, and the build says why."""
    from fastapi.testclient import TestClient
    from sentence_transformers import CrossEncoder

    from rerankforge import build, load_config
    from rerankforge.artifacts import Chunk, read_jsonl
    from rerankforge.serve.app import create_app
    from tests.fake_llm import CODES, LenientCodedLLM, coded_query, write_coded_corpus

    hub = _hub_reranker(tmp_path / "hub-reranker", tmp_path / "hub-docs", minilm_path)
    write_coded_corpus(tmp_path / "docs", files=16)
    run = tmp_path / "run"
    cfg = load_config(
        None, docs=str(tmp_path / "docs"), run_dir=str(run), time_budget="off",
        queries={"max_queries": 200, "per_chunk": 1, "round_trip_top_k": 0},
        parse={"workers": 1, "combine_under_n_characters": 0}, mine={"top_k": 6}, grade={"top_k": "all"},
        train={"backbone": str(hub), "tune_first_stage": False, "epochs": 2, "max_length": 96},
        export={"openvino": False, "static_int8": False, "first_stage_variants": []},
        evaluate={"dev_p_value": 0.05},  # 16 held-out queries: the rule under test, not the default's strictness
    )  # fmt: skip
    result = build(cfg, llm=LenientCodedLLM())
    evaluate = result.summary("evaluate")
    systems, scorer = evaluate["scorer_ndcg"], evaluate["scorer"]
    assert systems["brought reranker alone"] > systems["first stage"] + 0.1, systems  # the hub's reranker knows
    assert systems["cross-encoder alone"] < systems["brought reranker alone"], systems  # tuning hurt it
    assert scorer["cross_encoder_alone"] == "brought" and scorer["first_stage_weight"] == 0.0, scorer
    assert "the reranker it was given, untuned" in evaluate["verdict"]
    model_dir = run / "model"
    assert "as it came" in (model_dir / "README.md").read_text(encoding="utf-8")

    # the folder is the brought reranker: a plain sentence-transformers load gives its scores
    chunks = [c for c in read_jsonl(run / "parse" / "chunks.jsonl", Chunk) if c.title in CODES][:12]
    sections = [c.text for c in chunks]  # one service's passages, then the next one's
    queries = [coded_query(f"{c.title}\n{c.text}") for c in chunks]
    pairs = list(zip(queries, sections, strict=True))
    served_ce, original = CrossEncoder(str(model_dir), device="cpu"), CrossEncoder(str(hub), device="cpu")
    np.testing.assert_allclose(served_ce.predict(pairs), original.predict(pairs), rtol=0, atol=1e-6)
    # and /v2/rerank ranks as the brought reranker does
    client = TestClient(create_app(model_dir))
    for asked, query in zip(chunks[:8:2], queries[:8:2], strict=True):  # four aspects of the first service
        body = {"model": "m", "query": query, "documents": sections, "top_n": len(sections)}
        served = [r["index"] for r in client.post("/v2/rerank", json=body).json()["results"]]
        expected = list(np.argsort(-original.predict([(query, c) for c in sections]), kind="stable"))
        top = chunks[served[0]]
        assert served[0] == expected[0], (query, served, expected)
        assert (top.source, top.title) == (asked.source, asked.title), (query, top)  # the section the code asks for
