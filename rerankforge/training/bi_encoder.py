"""The first stage inside the scorer: tune the bi-encoder on the build's queries, export it torch-free.

Tuning is source-anchored: a query's positive is the chunk it was written from (kept only when the grader
also called it relevant), its hard negatives (``train.first_stage_negatives``) the best-ranked candidates
the grader called not relevant, then the best-ranked ones the grader did not judge (beyond ``grade.top_k``),
the source file's own first (``train.first_stage_same_file``), then chunks of other documents; candidates
the grader called relevant are never negatives. The other queries' passages in the
batch are more negatives
(sentence-transformers' MultipleNegativesRankingLoss, cosine scaled by ``SCALE``).

The exported first stage is a sentence-transformers folder plus ``onnx/model.onnx``, a graph that ends in the
model's own pooling and an L2 normalisation, read by :class:`rerankforge.serve.embedder.OnnxEmbedder`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import CandidateList, Chunk, Judgment, Query, write_json
from rerankforge.errors import StageError
from rerankforge.serve.embedder import EMBEDDER_FILE, EMBEDDER_METADATA
from rerankforge.training.onnx_trace import trace_to_onnx

logger = logging.getLogger(__name__)

TUNED_FIRST_STAGE = "first_stage"  # train/first_stage: the bi-encoder tuned on the training queries
UNTUNED_EXPORT_VERSION = "1"  # of the cached exports in $RERANKFORGE_HOME/first_stage: bump when they change
SCALE = 20.0  # cosine scale of the loss, and the first stage's weight in the served score


def training_triplets(
    queries: list[Query],
    chunks: dict[str, Chunk],
    candidates: dict[str, CandidateList],
    judgments: list[Judgment],
    *,
    positive_min_grade: int,
    negative_max_grade: int,
    seed: int,
    negatives: int = 1,
    same_file_first: bool = False,
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
    rows = []
    for query in queries:
        source = chunks[query.chunk_id]
        if grades.get((query.id, query.chunk_id), positive_min_grade) < positive_min_grade:
            continue  # the grader says the query does not fit its own passage: a bad query
        ranked = candidates[query.id].candidates if query.id in candidates else []
        others = [c.chunk_id for c in ranked if c.chunk_id != query.chunk_id]
        if same_file_first:
            others.sort(key=lambda c: chunks[c].source != source.source)  # stable: rank order within each
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


def untuned_export(name: str, opset: int = 17) -> tuple[Path, dict[str, Any]]:
    """The bi-encoder ``name`` as it is, exported for onnxruntime once per model and opset into
    ``$RERANKFORGE_HOME/first_stage``, and its parity figures. The build embeds its chunks with it and the
    export stage copies it into a model folder that serves the untuned first stage.

    Raises OSError when that folder cannot be written, :class:`StageError` when the export fails its parity check.
    """
    from sentence_transformers import SentenceTransformer

    from rerankforge.index.vector_cache import cache_home, model_fingerprint
    from rerankforge.models import resolve_model

    resolved = resolve_model(name)
    cached = cache_home() / "first_stage" / f"{model_fingerprint(resolved)}-opset{opset}-e{UNTUNED_EXPORT_VERSION}"
    parity_file = cached / "parity.json"
    if not parity_file.is_file():
        staging = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            model = SentenceTransformer(resolved, device="cpu")  # its own copy: the export switches it to eager
            write_json(staging / "parity.json", export_first_stage(model, staging, opset=opset))
            shutil.rmtree(cached, ignore_errors=True)
            os.replace(staging, cached)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return cached, json.loads(parity_file.read_text(encoding="utf-8"))


def save_folder(model: Any, out_dir: Path, origin: str) -> None:
    """``model.save`` with the same bytes for the same weights: the tokenizer file without the padding and
    truncation state that encoding leaves in it, and a fixed card instead of one with training times."""
    from tokenizers import Tokenizer

    model.save(str(out_dir))
    tokenizer_file = out_dir / "tokenizer.json"
    if tokenizer_file.is_file():
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        tokenizer.save(str(tokenizer_file))
    (out_dir / "README.md").write_text(
        "# rerankforge first stage\n\nA sentence-transformers bi-encoder, " + origin + ". `onnx/model.onnx` "
        "(where present) outputs its pooled, L2-normalised embeddings for onnxruntime.\n",
        encoding="utf-8",
    )


def export_first_stage(model: Any, out_dir: Path, *, opset: int = 17, tolerance: float = 1e-4) -> dict[str, Any]:
    """Save the SentenceTransformer ``model`` to ``out_dir`` with its ONNX graph (pooled, normalised vectors).

    Raises :class:`StageError` when the ONNX vectors differ from torch's by more than ``tolerance``.
    """
    import torch

    from rerankforge.serve.embedder import OnnxEmbedder

    model = model.to("cpu").eval()
    save_folder(model, out_dir, "the first stage of a rerankforge scorer")
    sample = (getattr(model, "preprocess", None) or model.tokenize)(["a query", "a somewhat longer document"])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Embeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            features = self.inner(dict(zip(names, args, strict=True)))
            return torch.nn.functional.normalize(features["sentence_embedding"], p=2, dim=1)

    path = out_dir / EMBEDDER_FILE
    transformer = model[0].auto_model
    with contextlib.suppress(ValueError, AttributeError):  # eager attention: plain ops, as for the cross-encoder
        transformer.set_attn_implementation("eager")
    trace_to_onnx(Embeddings(), tuple(sample[n] for n in names), names, "sentence_embedding", path, opset)
    prompts = {kind: model.prompts.get(kind, "") for kind in ("query", "document") if model.prompts.get(kind)}
    tokenizer = model.tokenizer
    write_json(
        out_dir / EMBEDDER_METADATA,
        {"max_length": int(model.max_seq_length), "pad_token_id": int(tokenizer.pad_token_id or 0), "prompts": prompts},
    )
    if not (out_dir / "tokenizer.json").is_file():
        raise StageError(f"The bi-encoder in {out_dir} has no fast tokenizer (tokenizer.json): it cannot be served.")
    texts = ["how do I reset my password", "To reset your password, open Settings and choose Security.", "x " * 400]
    expected = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    got = OnnxEmbedder(out_dir).embed(texts)
    diff = float(np.max(np.abs(expected - got)))
    if diff > tolerance:
        raise StageError(
            f"The first stage's ONNX vectors differ from torch by {diff:.2e} (> {tolerance}). The export is "
            "wrong; please report this with the bi-encoder's name."
        )
    return {"max_abs_diff": diff, "max_length": int(model.max_seq_length)}
