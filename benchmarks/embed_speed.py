"""How fast the build embeds chunks: the bi-encoder in torch against its ONNX export in onnxruntime, same texts.

It takes ``--n`` chunks of a finished build (every k-th, so lengths are as in the corpus) and embeds them
with both, in one run, each after a warm-up batch; then compares the vectors (largest difference) and the
rankings they give (top-10 of ``--queries`` of the build's kept queries over those chunks). Run it on a quiet
machine: the ratio is what it measures.

    .venv/bin/python benchmarks/embed_speed.py RUN_DIR [--n 2000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rerankforge.artifacts import Chunk, Query, read_jsonl
from rerankforge.config import BuildConfig
from rerankforge.index.embedding import embed, embed_documents, load_bi_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--n", type=int, default=2000, help="chunks to embed")
    parser.add_argument("--queries", type=int, default=200, help="kept queries whose top-10 are compared")
    args = parser.parse_args()
    cfg = BuildConfig.model_validate(json.loads((args.run_dir / "config.json").read_text(encoding="utf-8"))).mine
    chunks = read_jsonl(args.run_dir / "parse" / "chunks.jsonl", Chunk)
    texts = [c.text for c in chunks[:: max(1, len(chunks) // args.n)][: args.n]]
    model = load_bi_encoder(cfg.bi_encoder)
    embed(model.encode_document, texts[: cfg.batch_size], cfg.batch_size)  # warm-up
    embed_documents(cfg, texts[: cfg.batch_size])  # warm-up; makes the export on a first run

    start = time.perf_counter()
    torch_vectors = embed(model.encode_document, texts, cfg.batch_size)
    torch_s = time.perf_counter() - start
    start = time.perf_counter()
    onnx_vectors = embed_documents(cfg, texts)
    onnx_s = time.perf_counter() - start

    kept = read_jsonl(args.run_dir / "queries" / "queries.jsonl", Query)[: args.queries]
    queries = embed(model.encode_query, [q.text for q in kept], cfg.batch_size)
    top_torch = np.argsort(-(queries @ torch_vectors.T), axis=1)[:, :10]
    top_onnx = np.argsort(-(queries @ onnx_vectors.T), axis=1)[:, :10]
    same_lists = int(sum(np.array_equal(a, b) for a, b in zip(top_torch, top_onnx, strict=True)))
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_torch, top_onnx, strict=True)]))
    tokens = int(np.mean([len(t.split()) for t in texts]))
    print(f"{len(texts)} chunks of {args.run_dir} (about {tokens} words each), bi-encoder {cfg.bi_encoder}")
    print("| runtime | seconds | chunks/s |\n|---|---|---|")
    print(f"| torch ({model.device}) | {torch_s:.1f} | {len(texts) / torch_s:.1f} |")
    print(f"| ONNX export in onnxruntime | {onnx_s:.1f} | {len(texts) / onnx_s:.1f} |")
    print(f"onnxruntime / torch: {torch_s / onnx_s:.2f}x the chunks per second")
    print(f"largest difference of a vector component: {np.abs(torch_vectors - onnx_vectors).max():.2e}")
    print(f"top-10 of {len(kept)} queries: {same_lists} identical lists, {overlap:.1%} overlap")


if __name__ == "__main__":
    main()
