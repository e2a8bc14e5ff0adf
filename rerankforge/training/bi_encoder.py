"""The first stage inside the scorer: tune the bi-encoder on the build's queries.

Tuning is source-anchored: a query's positive is the chunk it was written from (kept only when the grader
also called it relevant), its hard negatives (``train.first_stage_negatives``) the best-ranked candidates
the grader called not relevant, then the best-ranked ones the grader did not judge (beyond ``grade.top_k``),
with ``train.first_stage_same_file`` the source file's own first, then chunks of other documents; candidates
the grader called relevant are never negatives. The other queries' passages in the
batch are more negatives
(sentence-transformers' MultipleNegativesRankingLoss, cosine scaled by ``SCALE``).

Its export for onnxruntime is :mod:`rerankforge.index.first_stage_export`.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import CandidateList, Chunk, Judgment, Query
from rerankforge.index.first_stage_export import save_folder
from rerankforge.ranking import SCALE

logger = logging.getLogger(__name__)

TUNED_FIRST_STAGE = "first_stage"  # train/first_stage: the bi-encoder tuned on the training queries
FIRST_STAGE_FOLDS = "first_stage_folds"  # train/first_stage_folds/<i>: tuned without fold i (train.first_stage_folds)


def rejected_queries(queries: list[Query], judgments: list[Judgment], positive_min_grade: int) -> set[str]:
    """The queries whose own source passage the grader graded below ``positive_min_grade``: queries that do not
    fit the passage they were written from. An ungraded source counts as relevant (``grade.source`` off)."""
    source_of = {q.id: q.chunk_id for q in queries}
    return {j.query_id for j in judgments if j.chunk_id == source_of.get(j.query_id) and j.grade < positive_min_grade}


def candidate_order(
    found: CandidateList | None, chunks: dict[str, Chunk], source_id: str, same_file_first: bool
) -> list[str]:
    """A query's mined candidates other than its source chunk, in rank order; with ``same_file_first``, the
    source file's other chunks first (stable: rank order within each)."""
    others = [c.chunk_id for c in (found.candidates if found else []) if c.chunk_id != source_id]
    if same_file_first:
        others.sort(key=lambda c: chunks[c].source != chunks[source_id].source)
    return others


def training_triplets(
    queries: list[Query],
    chunks: dict[str, Chunk],
    candidates: dict[str, CandidateList],
    judgments: list[Judgment],
    *,
    positive_min_grade: int,
    negative_max_grade: int,
    seed: int,
    negatives: int,
    same_file_first: bool,
) -> list[dict[str, str]]:
    """(anchor, positive, negative...) rows: the source chunk, and ``negatives`` graded or cheap negatives (see
    module doc); with ``same_file_first``, the source file's other chunks come first among the candidates (the
    same topic, another aspect: what a reranker must tell apart)."""
    rng = random.Random(seed)
    grades = {(j.query_id, j.chunk_id): j.grade for j in judgments}
    ids = sorted(chunks)
    by_source: dict[str, list[str]] = {}
    for i in ids:
        by_source.setdefault(chunks[i].source, []).append(i)
    rejected = rejected_queries(queries, judgments, positive_min_grade)
    rows = []
    for query in queries:
        source = chunks[query.chunk_id]
        if query.id in rejected:
            continue
        others = candidate_order(candidates.get(query.id), chunks, query.chunk_id, same_file_first)
        graded_negatives = [c for c in others if grades.get((query.id, c), 99) <= negative_max_grade]
        ungraded = [c for c in others if (query.id, c) not in grades]  # dense negatives the grader did not see
        picked = (graded_negatives + ungraded)[:negatives]
        if len(picked) < negatives:
            taken = set(picked) | {c for c in others if grades.get((query.id, c), -1) >= positive_min_grade}
            elsewhere = [i for s, group in by_source.items() if s != source.source for i in group if i not in taken]
            if len(elsewhere) < negatives - len(picked):
                continue
            picked += rng.sample(elsewhere, negatives - len(picked))
        row = {"anchor": query.text, "positive": source.text}
        row.update({f"negative_{n}" if n else "negative": chunks[c].text for n, c in enumerate(picked)})
        rows.append(row)
    return rows


def tune(
    base: str,
    rows: list[dict[str, str]],
    out_dir: Path,
    *,
    learning_rate: float,
    epochs: float,
    batch_size: int,
    seed: int,
    device: str,
    progress: Any = None,
    save: bool = True,
    bf16: bool = False,
) -> dict[str, Any]:
    """Fine-tune the bi-encoder ``base`` on ``rows`` and save it to ``out_dir`` (with ``save``: under torchrun
    every process trains and one saves); returns steps and losses. ``bf16``: mixed precision (autocast), on a
    CUDA GPU or a CPU with bf16 instructions."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import PrinterCallback, TrainerCallback, set_seed

    set_seed(seed)
    model = SentenceTransformer(base, device=device)
    loss = MultipleNegativesRankingLoss(model, scale=SCALE)
    scratch = out_dir.parent / f".{out_dir.name}.checkpoints"

    class Progress(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if progress:
                progress(state.global_step, state.max_steps, "tuning the first stage")

    from rerankforge.distributed import Launch

    # set, not derived: under torchrun the no-duplicates batch sampler has no length for the trainer to count
    steps = max(1, math.ceil(len(rows) / (batch_size * Launch.from_env().world_size) * epochs))
    args = Arguments(
        output_dir=str(scratch),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.1,
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        disable_tqdm=True,
        batch_sampler="no_duplicates",  # a passage twice in a batch would be its own in-batch negative
        bf16=bf16,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), loss=loss, callbacks=[Progress()]
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    if save:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)
        save_folder(model, out_dir, f"tuned from `{base}` on {len(rows)} (query, source passage) pairs of the build")
    return {
        "triplets": len(rows),
        "steps": trainer.state.global_step,
        "loss_first": round(float(np.mean(losses[:3])), 4) if losses else None,
        "loss_last": round(float(np.mean(losses[-3:])), 4) if losses else None,
    }
