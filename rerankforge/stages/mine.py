"""Stage 3: embed chunks with a sentence-transformers bi-encoder into Qdrant; top-k candidates per query.

The source chunk of each query is always kept among its candidates (appended when the first stage
missed it), so the grader sees it and evaluation knows where the first stage put it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rerankforge.artifacts import Candidate, CandidateList, Chunk, Query, read_jsonl, write_jsonl
from rerankforge.config import BuildConfig
from rerankforge.index.embedding import embed, embed_chunks, load_bi_encoder
from rerankforge.index.qdrant import index_and_search
from rerankforge.models import resolve_model
from rerankforge.stage import StageContext, StageResult

VERSION = "1"


def cache_inputs(cfg: BuildConfig) -> dict[str, Any]:
    return {"bi_encoder": resolve_model(cfg.mine.bi_encoder)}


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.mine
    chunks = read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)
    queries = read_jsonl(ctx.dir("queries") / "queries.jsonl", Query)
    model = load_bi_encoder(cfg.bi_encoder)
    ctx.progress(0, 2, "embedding chunks")
    # encode_document / encode_query apply the model's own prompts, which asymmetric bi-encoders need
    chunk_vectors, cached = embed_chunks(cfg, [c.text for c in chunks])
    query_vectors = embed(model.encode_query, [q.text for q in queries], cfg.batch_size)
    ctx.progress(1, 2, "searching Qdrant")
    hits = index_and_search(
        chunk_vectors,
        [c.id for c in chunks],
        query_vectors,
        cfg.top_k,
        path=None if cfg.qdrant_url else ctx.out / "qdrant",
        url=cfg.qdrant_url,
        collection=cfg.collection,
    )
    position = {c.id: i for i, c in enumerate(chunks)}
    lists, source_found = [], 0
    for query, query_hits, query_vector in zip(queries, hits, query_vectors, strict=True):
        candidates = [Candidate(chunk_id=cid, score=score, rank=r) for r, (cid, score) in enumerate(query_hits)]
        if any(c.chunk_id == query.chunk_id for c in candidates):
            source_found += 1
        else:
            score = float(np.dot(query_vector, chunk_vectors[position[query.chunk_id]]))
            candidates.append(Candidate(chunk_id=query.chunk_id, score=score, rank=len(candidates)))
        lists.append(CandidateList(query_id=query.id, candidates=candidates))
    ctx.progress(2, 2)
    write_jsonl(ctx.out / "candidates.jsonl", lists)
    summary = {
        "chunks_indexed": len(chunks),
        "queries": len(queries),
        "top_k": cfg.top_k,
        "source_in_top_k": round(source_found / len(queries), 3),
        "qdrant": cfg.qdrant_url or "embedded (run folder)",
        "chunk_vectors_cached": cached,
    }
    return StageResult(files=["mine/candidates.jsonl"], summary=summary)
