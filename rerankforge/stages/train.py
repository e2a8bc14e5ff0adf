"""Stage 5: fine-tune a sentence-transformers CrossEncoder on the graded groups with CrossEncoderTrainer.

A seeded slice of the synthetic queries is held out (``train/split.json``) for the evaluate stage.
"""

from __future__ import annotations

import math
import random
import shutil
from typing import Any

from rerankforge.artifacts import Chunk, Judgment, Query, read_jsonl, write_json
from rerankforge.config import BuildConfig, GradeConfig, TrainConfig
from rerankforge.errors import MissingDependencyError, StageError
from rerankforge.models import resolve_model
from rerankforge.pipeline import StageContext, StageResult
from rerankforge.stages.grade import group_by_query

VERSION = "2"  # 2: the held-out loss is logged in train/loss_history.json
EVAL_POINTS = 10  # held-out loss evaluations per training run


def cache_inputs(cfg: BuildConfig) -> dict[str, Any]:
    return {"backbone": resolve_model(cfg.train.backbone), "grade": cfg.grade.model_dump()}


def split_queries(query_ids: list[str], dev_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded train/dev split; dev gets at least one query and train keeps at least one."""
    shuffled = sorted(query_ids)
    random.Random(seed).shuffle(shuffled)
    n_dev = min(max(1, round(len(shuffled) * dev_fraction)), len(shuffled) - 1)
    return sorted(shuffled[n_dev:]), sorted(shuffled[:n_dev])


def build_groups(
    queries: list[Query],
    chunks: dict[str, Chunk],
    judgments: list[Judgment],
    *,
    group_size: int,
    positive_min_grade: int,
    max_other_grade: int,
    seed: int,
) -> list[dict[str, Any]]:
    """One training group per (query, positive): the positive first, then ``group_size - 1`` others.

    Others are graded candidates of the same query with a grade <= ``max_other_grade`` (sampled, repeated
    when there are too few). Labels are the grades. Every loss trains on the rows this returns.
    """
    rng = random.Random(seed)
    by_query = group_by_query(judgments)
    rows = []
    for query in queries:
        graded = by_query.get(query.id, [])
        positives = [j for j in graded if j.grade >= positive_min_grade]
        others = [j for j in graded if j.grade <= max_other_grade]
        if not positives or not others:
            continue
        for positive in positives:
            k = group_size - 1
            picked = rng.sample(others, k) if len(others) >= k else others + rng.choices(others, k=k - len(others))
            members = [positive, *picked]
            rows.append(
                {
                    "query": query.text,
                    "docs": [chunks[j.chunk_id].text for j in members],
                    "labels": [float(j.grade) for j in members],
                }
            )
    return rows


def _other_grade_limit(loss: str, grade: GradeConfig) -> int:
    # LCE contrasts the positive with true negatives only; the list-wise loss also learns middle levels.
    return grade.negative_max_grade if loss == "lce" else grade.positive_min_grade - 1


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_cross_encoder(name: str, max_length: int) -> Any:
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as exc:
        raise MissingDependencyError("sentence-transformers", "build", "Training") from exc
    return CrossEncoder(resolve_model(name), num_labels=1, max_length=max_length, device=_device())


def run(ctx: StageContext) -> StageResult:
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from transformers import PrinterCallback, set_seed

    from rerankforge.losses import LOSSES

    cfg: TrainConfig = ctx.config.train
    grade_cfg = ctx.config.grade
    chunks = {c.id: c for c in read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)}
    queries = read_jsonl(ctx.dir("queries") / "queries.jsonl", Query)
    judgments = read_jsonl(ctx.dir("grade") / "judgments.jsonl", Judgment)
    relevant = sorted({j.query_id for j in judgments if j.grade >= grade_cfg.positive_min_grade})
    if len(relevant) < 2:
        raise StageError(
            f"Only {len(relevant)} queries have a passage graded >= {grade_cfg.positive_min_grade}: too few to "
            "train and evaluate. Raise queries.max_queries or use a stronger LLM."
        )
    train_ids, dev_ids = split_queries(relevant, cfg.dev_fraction, cfg.seed)
    write_json(ctx.out / "split.json", {"train": train_ids, "dev": dev_ids})

    def groups(ids: list[str]) -> list[dict[str, Any]]:
        wanted = set(ids)
        return build_groups(
            [q for q in queries if q.id in wanted],
            chunks,
            judgments,
            group_size=cfg.group_size,
            positive_min_grade=grade_cfg.positive_min_grade,
            max_other_grade=_other_grade_limit(cfg.loss, grade_cfg),
            seed=cfg.seed,
        )

    rows = groups(train_ids)
    dev_rows = groups(dev_ids)  # the held-out loss curve in the report; training never sees these
    if not rows:
        raise StageError(
            "No training query has both a positive and a negative passage. Raise mine.top_k so the first "
            "stage finds negatives, or queries.max_queries for more queries."
        )
    set_seed(cfg.seed)
    model = load_cross_encoder(cfg.backbone, cfg.max_length)
    loss = LOSSES[cfg.loss](model, temperature=cfg.temperature)
    device = _device()
    steps = math.ceil(len(rows) / cfg.batch_size) * cfg.epochs
    eval_every = max(1, round(steps / EVAL_POINTS))
    args = CrossEncoderTrainingArguments(
        output_dir=str(ctx.out / "checkpoints"),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the steps
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=1,
        eval_strategy="steps" if dev_rows else "no",
        eval_steps=eval_every,
        save_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        bf16=device == "cuda" and _bf16_ok(),
        disable_tqdm=True,
    )
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(dev_rows) if dev_rows else None,
        loss=loss,
        callbacks=[_progress_callback(ctx)],
    )
    trainer.remove_callback(PrinterCallback)  # library code prints nothing: progress goes through ctx
    trainer.train()
    history = [
        {"step": e["step"], key: e[key]}
        for e in trainer.state.log_history
        if "step" in e
        for key in ("loss", "eval_loss")
        if key in e
    ]
    model_dir = ctx.run_dir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)  # stale ONNX files must not outlive the weights they came from
    model.save_pretrained(str(model_dir))
    shutil.rmtree(ctx.out / "checkpoints", ignore_errors=True)
    write_json(ctx.out / "loss_history.json", history)
    train_losses = [h["loss"] for h in history if "loss" in h]
    first = sum(train_losses[:3]) / max(len(train_losses[:3]), 1)
    last = sum(train_losses[-3:]) / max(len(train_losses[-3:]), 1)
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    summary = {
        "loss": cfg.loss,
        "backbone": cfg.backbone,
        "train_queries": len(train_ids),
        "dev_queries": len(dev_ids),
        "groups": len(rows),
        "group_size": cfg.group_size,
        "steps": trainer.state.global_step,
        "loss_first": round(first, 4),
        "loss_last": round(last, 4),
        "held_out_loss_first": round(eval_losses[0], 4) if eval_losses else None,
        "held_out_loss_last": round(eval_losses[-1], 4) if eval_losses else None,
        "device": device,
    }
    files = [str(p.relative_to(ctx.run_dir)) for p in sorted(model_dir.rglob("*")) if p.is_file()]
    return StageResult(files=[*files, "train/split.json", "train/loss_history.json"], summary=summary)


def _bf16_ok() -> bool:
    import torch

    return bool(torch.cuda.is_bf16_supported())


def _progress_callback(ctx: StageContext) -> Any:
    """A TrainerCallback reporting steps to the build's progress callback."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ctx.progress(state.global_step, state.max_steps, "training")

    return ProgressCallback()
