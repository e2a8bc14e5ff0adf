"""Reranking speed and int8 quality, in one run on the same model and inputs.

Compares torch fp32 ``CrossEncoder.predict``, sentence-transformers' own ONNX backend (fp32 and its qint8
export; needs optimum, so it runs in the separate environment made by ``benchmarks/setup_st_onnx_venv.sh``),
and rerankforge's runtime for every ONNX variant the export wrote; then the HTTP server under concurrent
clients. Prints pairs/s, p50/p95 latency per query (100 documents), speed ratios, and nDCG@10 on real
MedQuAD questions (reranking the dense first stage's top candidates).

The model: a MiniLM-L6 cross-encoder fine-tuned briefly (BCE, 1 epoch) on MedQuAD questions that are not
among the evaluated ones, then exported by rerankforge (fp32, dynamic int8, static int8). Reads
../shared/data/medquad-dev in place; exits with a message when it is absent.

    .venv/bin/python benchmarks/serve_speed.py            # ~15 min on 2 cores
    .venv/bin/python benchmarks/serve_speed.py --quick    # fewer queries, a smoke run
    .venv/bin/python benchmarks/serve_speed.py --cross-encoder FOLDER   # a pretrained reranker instead
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "medquad-dev"
CACHE = ROOT / ".cache" / "bench-serve"
ST_VENV = ROOT / ".cache" / "venv-st-onnx"
MAX_LENGTH = 256
BATCH = 32


def load_medquad() -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    corpus = {}
    with open(DATA / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            corpus[rec["_id"]] = f"{rec['title']}. {rec['text']}"
    queries = {}
    with open(DATA / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            queries[rec["_id"]] = rec["text"]
    qrels: dict[str, set[str]] = defaultdict(set)
    with open(DATA / "qrels" / "test.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            qid, did, score = line.split("\t")
            if int(score) > 0:
                qrels[qid].add(did)
    return corpus, queries, qrels


def dense_candidates(args: argparse.Namespace) -> dict:
    """Eval and train queries with the dense first stage's top candidates over a sub-corpus (cached)."""
    cache = CACHE / f"candidates-{args.eval_queries}-{args.train_pool}-{args.subcorpus}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    from sentence_transformers import SentenceTransformer

    from rerankforge.models import resolve_model

    corpus, queries, qrels = load_medquad()
    rng = random.Random(13)
    qids = sorted(q for q in qrels if q in queries)
    rng.shuffle(qids)
    eval_ids, train_ids = qids[: args.eval_queries], qids[args.eval_queries : args.eval_queries + args.train_pool]
    doc_of = lambda did: did.rsplit("-", 1)[0]  # noqa: E731  (answers of one MedQuAD document share a prefix)
    wanted_docs = {doc_of(d) for q in eval_ids + train_ids for d in qrels[q]}
    sub = [d for d in corpus if doc_of(d) in wanted_docs]
    others = [d for d in corpus if doc_of(d) not in wanted_docs]
    sub += rng.sample(others, max(0, args.subcorpus - len(sub)))
    encoder = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    encoder.max_seq_length = MAX_LENGTH
    doc_emb = encoder.encode([corpus[d] for d in sub], batch_size=64, normalize_embeddings=True)
    out = {"eval": [], "train": []}
    for split, ids in (("eval", eval_ids), ("train", train_ids)):
        q_emb = encoder.encode([queries[q] for q in ids], normalize_embeddings=True)
        top = np.argsort(-(q_emb @ doc_emb.T), axis=1)[:, :100]
        for qid, row in zip(ids, top, strict=True):
            out[split].append(
                {
                    "query": queries[qid],
                    "docs": [corpus[sub[i]] for i in row],
                    "relevant": [int(sub[i] in qrels[qid]) for i in row],
                }
            )
    CACHE.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def prepare_model(train: list[dict]) -> Path:
    """Fine-tune a MiniLM cross-encoder (BCE) on the train queries, save and export it with rerankforge."""
    from rerankforge.stages.export import export_model

    model_dir = CACHE / f"model-{len(train)}"
    if (model_dir / "model.safetensors").is_file():
        if not (model_dir / "openvino" / "openvino_model_qint8_quantized.xml").is_file():  # exported before OpenVINO
            calibration = [(item["query"], doc) for item in train[:16] for doc in item["docs"][:4]]
            export_model(model_dir, max_length=MAX_LENGTH, calibration_pairs=calibration)
        return model_dir
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from rerankforge.models import resolve_model

    torch.manual_seed(13)
    rows = {"query": [], "doc": [], "label": []}
    for item in train:
        negatives = [d for d, rel in zip(item["docs"][:20], item["relevant"][:20], strict=True) if not rel][:2]
        positives = [d for d, rel in zip(item["docs"], item["relevant"], strict=True) if rel][:1]
        for doc, label in [(d, 1.0) for d in positives] + [(d, 0.0) for d in negatives]:
            rows["query"].append(item["query"])
            rows["doc"].append(doc)
            rows["label"].append(label)
    # trained at 128 tokens to keep this preparation to minutes on a small CPU; served and timed at MAX_LENGTH
    model = CrossEncoder(resolve_model("all-MiniLM-L6-v2"), num_labels=1, max_length=128, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = CrossEncoderTrainer(
            model=model,
            args=CrossEncoderTrainingArguments(
                output_dir=tmp,
                num_train_epochs=1,
                per_device_train_batch_size=16,
                learning_rate=1e-4,
                warmup_ratio=0.1,
                seed=13,
                report_to="none",
                save_strategy="no",
                logging_steps=20,
            ),
            train_dataset=Dataset.from_dict(rows).shuffle(seed=13),
            loss=BinaryCrossEntropyLoss(model),
        )
        trainer.train()
    model.save_pretrained(str(model_dir))
    calibration = [(item["query"], doc) for item in train[:16] for doc in item["docs"][:4]]
    summary = export_model(model_dir, max_length=MAX_LENGTH, calibration_pairs=calibration)
    print("export:", {k: v for k, v in summary.items() if k.startswith("max_abs")})
    return model_dir


def given_model(folder: Path, train: list[dict]) -> Path:
    """A saved cross-encoder (``--cross-encoder``: e.g. a pretrained reranker) copied and exported by rerankforge
    as a build exports the one it serves, once."""
    from rerankforge.stages.export import export_model

    model_dir = CACHE / f"given-{folder.resolve().name}"
    if not (model_dir / "openvino" / "openvino_model_qint8_quantized.xml").is_file():
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.copytree(folder, model_dir, ignore=shutil.ignore_patterns("onnx", "openvino", "*.onnx"))
        calibration = [(item["query"], doc) for item in train[:16] for doc in item["docs"][:4]]
        summary = export_model(model_dir, max_length=MAX_LENGTH, calibration_pairs=calibration)
        print("export:", {k: v for k, v in summary.items() if k.startswith("max_abs")})
    return model_dir


def scorer_copy(model_dir: Path, target: Path, cross_encoder_weight: float) -> Path:
    """A copy of the model folder that serves a build's scorer: the untuned first stage, plus the cross-encoder
    at ``cross_encoder_weight`` (0: the first stage alone)."""
    from rerankforge.index.embedding import load_bi_encoder
    from rerankforge.index.first_stage_export import export_first_stage
    from rerankforge.ranking import SCALE
    from rerankforge.serve.runtime import METADATA_FILE

    shutil.copytree(model_dir, target)
    export_first_stage(load_bi_encoder("all-MiniLM-L6-v2"), target / "first_stage")
    meta = json.loads((target / METADATA_FILE).read_text())
    meta["scorer"] = {"first_stage": "first_stage", "first_stage_weight": SCALE,
                      "cross_encoder_weight": cross_encoder_weight, "bias": 0.0}  # fmt: skip
    (target / METADATA_FILE).write_text(json.dumps(meta))
    return target


def graph_optimized_copy(model_dir: Path, tmp: Path) -> Path:
    """A copy of the model folder whose fp32 graph went through onnxruntime's transformer optimizer (BERT
    fusions: SkipLayerNorm, BiasGelu, attention where it matches), and its dynamic int8 quantization."""
    from onnxruntime.transformers.optimizer import optimize_model

    from rerankforge.stages.export import quantize_int8

    copy = tmp / "model"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("model_qint8*.onnx", "openvino"))
    optimized = optimize_model(str(copy / "onnx" / "model.onnx"), model_type="bert", num_heads=0, hidden_size=0)
    print(
        "onnxruntime transformer optimizer fusions:",
        {k: v for k, v in optimized.get_fused_operator_statistics().items() if v},
    )
    optimized.save_model_to_file(str(copy / "onnx" / "model.onnx"))
    quantize_int8(copy / "onnx" / "model.onnx")
    return copy


def ndcg_at_10(relevant: list[int], scores: list[float]) -> float:
    order = np.argsort(-np.asarray(scores), kind="stable")[:10]
    dcg = sum(relevant[i] / np.log2(r + 2) for r, i in enumerate(order))
    ideal = sum(1 / np.log2(r + 2) for r in range(min(10, sum(relevant))))
    return dcg / ideal if ideal else 0.0


def time_system(score_fn, timing: list[list[tuple[str, str]]]) -> list[float]:
    score_fn(timing[0][:8])  # warm-up
    latencies = []
    for pairs in timing:
        started = time.perf_counter()
        score_fn(pairs)
        latencies.append(time.perf_counter() - started)
    return latencies


def server_throughput(model_dir: Path, variant: str, requests: list[tuple[str, list[str]]], clients: int) -> dict:
    """The HTTP server on 127.0.0.1 (uvicorn in a thread): sequential vs ``clients`` concurrent clients."""
    import httpx
    import uvicorn

    from rerankforge.serve.app import create_app

    app = create_app(model_dir, variant=variant)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/v2/rerank"
    figures = {}
    try:
        with httpx.Client(timeout=600) as client:
            client.post(url, json={"query": "warm up", "documents": ["a", "b"]}).raise_for_status()
            started = time.perf_counter()
            sequential = [client.post(url, json={"query": q, "documents": d}).json() for q, d in requests]
            figures["sequential_s"] = time.perf_counter() - started
        results: dict[int, dict] = {}
        latencies: list[float] = []
        errors: list[BaseException] = []
        next_index = iter(range(len(requests)))
        lock = threading.Lock()

        def worker() -> None:
            with httpx.Client(timeout=600) as client:
                while True:
                    with lock:
                        i = next(next_index, None)
                    if i is None:
                        return
                    t = time.perf_counter()
                    try:
                        response = client.post(url, json={"query": requests[i][0], "documents": requests[i][1]})
                        response.raise_for_status()
                        results[i] = response.json()
                    except BaseException as exc:
                        errors.append(exc)
                    latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        workers = [threading.Thread(target=worker) for _ in range(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        figures["concurrent_s"] = time.perf_counter() - started
        same = all(
            [r["index"] for r in results[i]["results"]] == [r["index"] for r in sequential[i]["results"]]
            for i in results
        )
        pairs = sum(len(d) for _, d in requests)
        figures.update(
            errors=len(errors),
            same_rankings_as_sequential=same,
            sequential_pairs_per_s=pairs / figures["sequential_s"],
            concurrent_pairs_per_s=pairs / figures["concurrent_s"],
            concurrent_p50_ms=1e3 * statistics.median(latencies),
            concurrent_p95_ms=1e3 * float(np.percentile(latencies, 95)),
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return figures


def first_stage_folder(target: Path, texts: list[str]) -> Path:
    """A model folder whose scorer is the untuned MiniLM first stage alone, with every variant an export writes
    (dynamic int8; OpenVINO int8 calibrated on ``texts``; OpenVINO runs the fp32 graph itself)."""
    from rerankforge.index.first_stage_export import untuned_export
    from rerankforge.ranking import SCALE
    from rerankforge.serve.runtime import METADATA_FILE
    from rerankforge.stages.export import embedder_feeds, openvino_available, quantize_int8, quantize_openvino

    folder = target / "first_stage"
    cached, _ = untuned_export("all-MiniLM-L6-v2")
    shutil.copytree(cached, folder, ignore=shutil.ignore_patterns("parity.json"))
    quantize_int8(folder / "onnx" / "model.onnx")
    if openvino_available():
        quantize_openvino(folder / "onnx" / "model.onnx", embedder_feeds(folder, texts[:64]))
    scorer = {"first_stage": "first_stage", "first_stage_weight": SCALE, "bias": 0.0, "cross_encoder": False}
    (target / METADATA_FILE).write_text(json.dumps({"format": "rerankforge-onnx-1", "scorer": scorer}))
    return target


def first_stage_section(args: argparse.Namespace, data: dict) -> None:
    """The first stage as the reranker, per query of 20 and of 100 documents, in one run: torch
    ``CrossEncoder.predict`` of a MiniLM-L6 cross-encoder (1.00x), the bi-encoder in torch and in
    sentence-transformers' own ONNX backend (separate venv), and rerankforge's first stage in each variant without
    the memo, with it cold (every document new) and warm (every document seen)."""
    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from rerankforge.models import resolve_model
    from rerankforge.serve.embedder import first_stage_variants
    from rerankforge.serve.runtime import Reranker

    minilm = resolve_model("all-MiniLM-L6-v2")
    torch.manual_seed(0)
    cross_encoder = CrossEncoder(minilm, num_labels=1, max_length=MAX_LENGTH, device="cpu")  # speed only
    bi_encoder = SentenceTransformer(minilm, device="cpu")
    items = data["eval"][: args.timing_queries * 2]
    quality_items = data["eval"]
    # a server that has run a while: its engines have seen inputs of every length (OpenVINO prepares its kernels
    # the first time it sees a shape), but the timed documents are new to it
    seen = {d for it in items for d in it["docs"]}
    warm_texts = [d for it in data["train"] for d in it["docs"] if d not in seen][:400]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = first_stage_folder(Path(tmp) / "model", [d for it in data["train"][:16] for d in it["docs"][:4]])
        variants = first_stage_variants(folder / "first_stage")
        for depth in (20, 100):
            timing = [[(it["query"], d) for d in it["docs"][:depth]] for it in items]

            def torch_ce(pairs: list[tuple[str, str]]) -> list[float]:
                return list(cross_encoder.predict(pairs, batch_size=BATCH, show_progress_bar=False))

            def torch_cosine(pairs: list[tuple[str, str]]) -> list[float]:
                q = bi_encoder.encode([pairs[0][0]], normalize_embeddings=True)[0]
                return list(bi_encoder.encode([d for _, d in pairs], normalize_embeddings=True, batch_size=BATCH) @ q)

            rows[f"torch CrossEncoder.predict|{depth}"] = {"latencies": time_system(torch_ce, timing)}
            rows[f"torch bi-encoder|{depth}"] = {"latencies": time_system(torch_cosine, timing)}
            for variant in variants:
                plain = Reranker(folder, variant=variant, vector_cache_mb=0)
                plain.first_stage.embed(warm_texts)
                rows[f"first stage {variant}, no memo|{depth}"] = {
                    "latencies": time_system(lambda pairs, r=plain: r.score_pairs(pairs).logits, timing)
                }
                memo = Reranker(folder, variant=variant)
                memo.first_stage.embed(warm_texts)  # the engine, not the memo
                memo.score_pairs(timing[0][:8])  # the warm-up of time_system, outside the timed queries
                cold = [_timed(lambda pairs=pairs, r=memo: r.score_pairs(pairs)) for pairs in timing]
                warm = [_timed(lambda pairs=pairs, r=memo: r.score_pairs(pairs)) for pairs in timing]
                rows[f"first stage {variant}, memo cold|{depth}"] = {"latencies": cold}
                rows[f"first stage {variant}, memo warm|{depth}"] = {"latencies": warm}
        if (ST_VENV / "bin" / "python").is_file():
            inputs, out = Path(tmp) / "fs_inputs.json", Path(tmp) / "fs_out.json"
            timing_texts = {str(depth): [[it["query"], it["docs"][:depth]] for it in items] for depth in (20, 100)}
            embed_texts = [d for it in items for d in it["docs"]]
            inputs.write_text(
                json.dumps({"timing": timing_texts, "batch_size": BATCH, "embed": embed_texts, "warm": warm_texts})
            )
            subprocess.run(
                [str(ST_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "st_onnx_worker.py"), inputs,
                 minilm, out, "first_stage"],
                check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )  # fmt: skip
            st = json.loads(out.read_text())
            for name, rec in st["rows"].items():
                rows[name] = rec
        else:
            st = None
            print(f"sentence-transformers' ONNX backend skipped: run benchmarks/setup_st_onnx_venv.sh ({ST_VENV})")
        # quality: each variant's order of the dense top-20 on the eval questions
        ndcg = {}
        for variant in variants:
            reranker = Reranker(folder, variant=variant, vector_cache_mb=0)
            ndcg[variant] = float(np.mean([
                ndcg_at_10(it["relevant"][:20], list(reranker.logits(it["query"], it["docs"][:20])))
                for it in quality_items
            ]))  # fmt: skip
        # embedding per text, as the /embed and /v1/embeddings routes do it (documents, no memo)
        texts = [d for it in items for d in it["docs"]]
        embed_rates = {}
        for variant in variants:
            plain = Reranker(folder, variant=variant, vector_cache_mb=0)
            plain.first_stage.embed(warm_texts)
            embed_rates[f"rerankforge {variant}"] = len(texts) / min(
                _timed(lambda p=plain: p.first_stage.embed(texts)) for _ in range(2)
            )
        if st is not None:
            embed_rates.update(st["embed_rates"])
    print(f"\nThe first stage as the reranker: {len(items)} queries; nDCG@10 of its order of the dense top-20 on "
          f"{len(quality_items)} questions: " + ", ".join(f"{v} {n:.4f}" for v, n in ndcg.items()))  # fmt: skip
    for depth in (20, 100):
        base_name = f"torch CrossEncoder.predict|{depth}"
        base = depth * len(rows[base_name]["latencies"]) / sum(rows[base_name]["latencies"])
        print(f"\n{depth} documents per query")
        print(f"{'system':36s} {'pairs/s':>9s} {'x torch CE':>10s} {'p50 ms':>8s} {'p95 ms':>8s}")
        for name, rec in rows.items():
            label, row_depth = name.rsplit("|", 1)
            if int(row_depth) != depth:
                continue
            lat = rec["latencies"]
            rate = depth * len(lat) / sum(lat)
            print(f"{label:36s} {rate:9.1f} {rate / base:10.2f} {1e3 * statistics.median(lat):8.1f} "
                  f"{1e3 * float(np.percentile(lat, 95)):8.1f}")  # fmt: skip
    print(f"\nDocuments embedded per second ({len(texts)} texts, no memo):")
    for name, rate in embed_rates.items():
        print(f"  {name:36s} {rate:8.1f}")


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run: few queries.")
    parser.add_argument("--timing-queries", type=int, default=6, help="Queries timed (100 documents each).")
    parser.add_argument("--eval-queries", type=int, default=60, help="Queries for nDCG@10.")
    parser.add_argument("--rerank-depth", type=int, default=20, help="Dense candidates reranked for nDCG@10.")
    parser.add_argument("--train-queries", type=int, default=200, help="Queries the benchmark model is tuned on.")
    parser.add_argument("--train-pool", type=int, default=300, help="Queries given candidates for training.")
    parser.add_argument("--subcorpus", type=int, default=2500, help="MedQuAD answers indexed for candidates.")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--first-stage", action="store_true", help="Only the first stage's rows (no CE training).")
    parser.add_argument("--cross-encoder", type=Path, default=None,
                        help="A saved CrossEncoder folder (a pretrained reranker) to export and time instead of the "
                             "benchmark's own briefly tuned MiniLM.")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.timing_queries, args.rerank_depth = 2, 10
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent (the MedQuAD slice beside the project)")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import CrossEncoder

    from rerankforge.serve.runtime import Reranker, available_variants

    data = dense_candidates(args)
    if args.first_stage:
        first_stage_section(args, data)
        return
    if args.cross_encoder:
        model_dir = given_model(args.cross_encoder, data["train"])
    else:
        model_dir = prepare_model(data["train"][: args.train_queries])
    print(f"cross-encoder: {model_dir}")
    eval_items = data["eval"][: 10 if args.quick else None]
    timing = [[(it["query"], d) for d in it["docs"]] for it in eval_items[: args.timing_queries]]
    quality = [[(it["query"], d) for d in it["docs"][: args.rerank_depth]] for it in eval_items]
    relevant = [it["relevant"][: args.rerank_depth] for it in eval_items]

    systems: dict[str, dict] = {}
    cross_encoder = CrossEncoder(str(model_dir), max_length=MAX_LENGTH, device="cpu")
    print(f"torch threads {torch.get_num_threads()}; {len(timing)} timed queries x 100 documents")

    def torch_predict(pairs: list[tuple[str, str]]) -> list[float]:
        return list(cross_encoder.predict(pairs, batch_size=BATCH, show_progress_bar=False))

    systems["torch_fp32"] = {"latencies": time_system(torch_predict, timing), "scores": None}
    for variant in available_variants(model_dir):
        reranker = Reranker(model_dir, variant=variant)  # its own default batch size

        def score(pairs: list[tuple[str, str]], reranker: Reranker = reranker) -> list[float]:
            return list(reranker.score_pairs(pairs).logits)

        systems[f"rerankforge_{variant}"] = {
            "latencies": time_system(score, timing),
            "scores": [score(pairs) for pairs in quality],
        }
    with tempfile.TemporaryDirectory() as tmp:  # onnxruntime's offline transformer fusions, for comparison
        optimized = graph_optimized_copy(model_dir, Path(tmp))
        for variant in ("fp32", "int8"):
            reranker = Reranker(optimized, variant=variant)

            def score(pairs: list[tuple[str, str]], reranker: Reranker = reranker) -> list[float]:
                return list(reranker.score_pairs(pairs).logits)

            systems[f"rerankforge_{variant}+ortopt"] = {
                "latencies": time_system(score, timing),
                "scores": [score(pairs) for pairs in quality],
            }
    with tempfile.TemporaryDirectory() as tmp:  # the build's scorer: first stage alone, and with the cross-encoder
        for name, weight in (("scorer_first_stage_only", 0.0), ("scorer_first_stage+ce", 1.0)):
            copy = scorer_copy(model_dir, Path(tmp) / name, weight)
            for variant in ("fp32", *(v for v in available_variants(copy) if v == "openvino_int8")):
                reranker = Reranker(copy, variant=variant)

                def score(pairs: list[tuple[str, str]], reranker: Reranker = reranker) -> list[float]:
                    return list(reranker.score_pairs(pairs).logits)

                label = name if weight == 0 else f"{name}_{variant}"
                systems[label] = {"latencies": time_system(score, timing), "scores": [score(p) for p in quality]}
                if weight == 0:
                    break
    from sentence_transformers import SentenceTransformer

    from rerankforge.models import resolve_model

    bi_encoder = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")

    def torch_cosine(pairs: list[tuple[str, str]]) -> list[float]:
        q = bi_encoder.encode([pairs[0][0]], normalize_embeddings=True)[0]
        docs = bi_encoder.encode([d for _, d in pairs], normalize_embeddings=True, batch_size=BATCH)
        return list(docs @ q)

    systems["torch_first_stage_only"] = {"latencies": time_system(torch_cosine, timing),
                                          "scores": [torch_cosine(p) for p in quality]}  # fmt: skip
    tokens = Reranker(model_dir, variant="fp32").score_pairs([p for pairs in timing for p in pairs]).tokens
    mean_tokens = tokens / sum(len(p) for p in timing)

    if (ST_VENV / "bin" / "python").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "model"
            shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("model_qint8*.onnx"))
            inputs, out = Path(tmp) / "inputs.json", Path(tmp) / "out.json"
            inputs.write_text(
                json.dumps({"timing": timing, "quality": quality, "max_length": MAX_LENGTH, "batch_size": BATCH})
            )
            subprocess.run(
                [str(ST_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "st_onnx_worker.py"), inputs, copy, out],
                check=True,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            for name, rec in json.loads(out.read_text()).items():
                systems[name] = {"latencies": rec["latencies"], "scores": rec["quality_scores"]}
    else:
        print(f"sentence-transformers ONNX backend skipped: run benchmarks/setup_st_onnx_venv.sh to make {ST_VENV}")

    first_stage = float(np.mean([ndcg_at_10(rel, list(range(len(rel), 0, -1))) for rel in relevant]))
    torch_quality = [torch_predict(pairs) for pairs in quality]
    systems["torch_fp32"]["scores"] = torch_quality
    n_pairs = sum(len(p) for p in timing)
    base = n_pairs / sum(systems["torch_fp32"]["latencies"])
    print(
        f"\npairs: {n_pairs} timed, mean {mean_tokens:.0f} tokens per pair (max_length {MAX_LENGTH}); batch size "
        f"{BATCH} for torch and sentence-transformers (their default), {Reranker(model_dir).batch_size} for rerankforge"
    )
    print(f"nDCG@10 on {len(quality)} MedQuAD questions, top-{args.rerank_depth} dense candidates reranked")
    print(f"{'system':28s} {'pairs/s':>8s} {'x torch':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'nDCG@10':>8s}")
    print(f"{'dense first stage':28s} {'':>8s} {'':>8s} {'':>8s} {'':>8s} {first_stage:8.4f}")
    rates = {}
    for name, rec in systems.items():
        lat = rec["latencies"]
        rates[name] = n_pairs / sum(lat)
        ndcg = float(np.mean([ndcg_at_10(rel, s) for rel, s in zip(relevant, rec["scores"], strict=True)]))
        rec["ndcg"] = ndcg
        print(
            f"{name:28s} {rates[name]:8.1f} {rates[name] / base:8.2f} {1e3 * statistics.median(lat):8.0f} "
            f"{1e3 * float(np.percentile(lat, 95)):8.0f} {ndcg:8.4f}"
        )
    for variant in ("int8", "int8_static", "openvino", "openvino_int8"):
        name = f"rerankforge_{variant}"
        if name in rates:
            st = f", {rates[name] / rates['st_onnx_qint8']:.2f}x st qint8" if "st_onnx_qint8" in rates else ""
            loss = 100 * (systems["rerankforge_fp32"]["ndcg"] - systems[name]["ndcg"])
            print(f"{name}: {rates[name] / base:.2f}x torch fp32{st}; nDCG loss vs fp32 {loss:.2f} points")

    # the server runs what a build would serve: the fastest variant within 1 nDCG point of fp32
    fp32_ndcg = systems["rerankforge_fp32"]["ndcg"]
    served = max(
        (n.removeprefix("rerankforge_") for n in systems if n.startswith("rerankforge_") and "+" not in n),
        key=lambda v: rates[f"rerankforge_{v}"] if fp32_ndcg - systems[f"rerankforge_{v}"]["ndcg"] <= 0.01 else 0,
    )
    requests = [(it["query"], it["docs"][:25]) for it in data["eval"][: 4 if args.quick else 2 * args.clients]]
    figures = server_throughput(model_dir, served, requests, args.clients)
    print(
        f"\nserver ({served}), {len(requests)} requests x 25 documents: sequential "
        f"{figures['sequential_pairs_per_s']:.1f} pairs/s; {args.clients} concurrent clients "
        f"{figures['concurrent_pairs_per_s']:.1f} pairs/s, p50 {figures['concurrent_p50_ms']:.0f} ms, "
        f"p95 {figures['concurrent_p95_ms']:.0f} ms, errors {figures['errors']}, "
        f"same rankings as sequential: {figures['same_rankings_as_sequential']}"
    )


if __name__ == "__main__":
    sys.exit(main())
