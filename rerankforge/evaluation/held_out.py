"""The lists the evaluate stage chooses the served scorer on: each synthetic query's top candidates from the
build's first-stage index, with the scores of every part (the untuned and the tuned first stage, the cross-encoder,
the reranker the user brought), and each query's own source passage as the one relevant candidate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import Chunk, Query, read_json, read_jsonl
from rerankforge.config import BuildConfig
from rerankforge.evaluation.scorer_choice import DevList

Progress = Callable[[int, int, str], None] | None


class Vectors:
    """A bi-encoder's vectors, each document text embedded once across the stage's uses of it."""

    def __init__(self, model: Any, batch_size: int) -> None:
        self.model, self.batch_size = model, batch_size
        self.seen: dict[str, np.ndarray] = {}

    def query(self, text: str) -> np.ndarray:
        from rerankforge.index.embedding import embed

        return embed(self.model.encode_query, [text], self.batch_size)[0]

    def documents(self, texts: list[str]) -> np.ndarray:
        from rerankforge.index.embedding import embed

        todo = [t for t in dict.fromkeys(texts) if t not in self.seen]
        if todo:  # in one call: the encoder batches them by length
            self.seen.update(zip(todo, embed(self.model.encode_document, todo, self.batch_size), strict=True))
        return np.stack([self.seen[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def fold_lists(run_dir: Path, config: BuildConfig, progress: Progress = None) -> list[DevList]:
    """The lists of every fold's queries (``train.first_stage_folds`` > 1), each query's tuned cosines from the
    tuning that never saw it: more evidence for the tuned first stage, none for a cross-encoder."""
    from rerankforge.training.bi_encoder import FIRST_STAGE_FOLDS

    folds_dir = run_dir / "train" / FIRST_STAGE_FOLDS
    if not (folds_dir / "folds.json").is_file():
        return []
    lists = []
    for i, fold in enumerate(read_json(folds_dir / "folds.json")["folds"]):
        tuned = tuned_vectors(folds_dir / str(i), config.mine.batch_size)
        if tuned is None:  # too few queries to tune without this fold
            return []
        lists += held_out_lists(run_dir, config, fold, tuned=tuned, progress=progress)
    return lists


def tuned_vectors(tuned_dir: Path, batch_size: int) -> Vectors | None:
    """The tuned first stage saved in ``tuned_dir``, if one is."""
    if not (tuned_dir / "modules.json").is_file():
        return None
    from sentence_transformers import SentenceTransformer

    from rerankforge.training.models import device

    return Vectors(SentenceTransformer(str(tuned_dir), device=device()), batch_size)


def held_out_lists(
    run_dir: Path,
    config: BuildConfig,
    query_ids: list[str],
    *,
    cross_encoder: Any | None = None,
    tuned: Vectors | None = None,
    brought: Any | None = None,
    progress: Progress = None,
) -> list[DevList]:
    """The queries' top candidates from the build's first-stage index, with every part's scores
    (``cross_encoder`` None: a build without one; ``tuned``: the tuned first stage, None: not tuned; ``brought``:
    the pretrained reranker the cross-encoder was tuned from, as it came)."""
    import torch

    from rerankforge.index.embedding import embed, load_bi_encoder
    from rerankforge.index.qdrant import QdrantIndex

    progress = progress or (lambda done, total, what: None)
    chunks = {c.id: c for c in read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)}
    queries = {q.id: q for q in read_jsonl(run_dir / "queries" / "queries.jsonl", Query)}
    dev = [queries[i] for i in query_ids]
    mine = config.mine
    first = load_bi_encoder(mine.bi_encoder)
    vectors = embed(first.encode_query, [q.text for q in dev], mine.batch_size)
    index = QdrantIndex(path=None if mine.qdrant_url else run_dir / "mine" / "qdrant", url=mine.qdrant_url,
                        collection=mine.collection)  # fmt: skip
    try:
        hits = index.search(vectors, k=min(config.evaluate.dev_top_k, len(chunks)))
    finally:
        index.close()
    if tuned is not None:
        progress(0, len(dev), "embedding held-out candidates")
        tuned.documents([chunks[cid].text for query_hits in hits for cid, _ in query_hits])
    lists = []
    for done, (query, query_hits) in enumerate(zip(dev, hits, strict=True)):
        progress(done, len(dev), "scoring held-out queries")
        docs = [chunks[cid].text for cid, _ in query_hits]
        tuned_cos = None if tuned is None else tuned.documents(docs) @ tuned.query(query.text)
        pairs = [(query.text, d) for d in docs]
        logits, brought_logits = (
            None if model is None else model.predict(pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False)
            for model in (cross_encoder, brought)
        )
        lists.append(
            DevList(
                grades=[int(cid == query.chunk_id) for cid, _ in query_hits],
                first=np.array([score for _, score in query_hits], dtype=np.float64),
                tuned=None if tuned_cos is None else np.asarray(tuned_cos, dtype=np.float64),
                cross_encoder=None if logits is None else np.asarray(logits, dtype=np.float64).reshape(-1),
                brought=None if brought_logits is None else np.asarray(brought_logits, dtype=np.float64).reshape(-1),
            )
        )
    return lists
