"""Stage 5: fine-tune the scorer's parts: the first stage's bi-encoder and (``train.cross_encoder``) a
sentence-transformers CrossEncoder on the graded groups with CrossEncoderTrainer.

A seeded slice of the synthetic queries is held out (``train/split.json``) for the evaluate stage.
Launched under ``torchrun`` / ``accelerate launch``, every process trains (the trainer's distributed data
parallel) and only rank 0 writes files (:mod:`rerankforge.distributed`).
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

from rerankforge.artifacts import (
    CandidateList,
    Chunk,
    Judgment,
    Query,
    grade_histogram,
    group_by_query,
    read_jsonl,
    text_sha256,
    write_json,
)
from rerankforge.config import BuildConfig, GradeConfig, TrainConfig
from rerankforge.distributed import Launch
from rerankforge.errors import StageError
from rerankforge.models import resolve_model
from rerankforge.stage import StageContext, StageResult
from rerankforge.stages import grades_source
from rerankforge.training.bi_encoder import FIRST_STAGE_FOLDS, TUNED_FIRST_STAGE, candidate_order, rejected_queries
from rerankforge.training.models import TUNED_CROSS_ENCODER, load_cross_encoder, trains_cross_encoder
from rerankforge.training.models import device as _device

VERSION = "12"  # 12: train.first_stage_folds: the first stage tuned once more per fold
# 11: the tuned cross-encoder in train/cross_encoder (the export serves it or the backbone)
# 10: without a cross-encoder, a query counts unless the grader rejected its source passage
# 9: the first stage's tuning in bf16 autocast where the hardware has bf16 (train.precision auto)
# 8: the cross-encoder is trained only where train.cross_encoder asks for it (auto: a reranker backbone)
# 7: the first stage's tuning takes 3 hard negatives per query, the source file's first
# 5: the first stage's bi-encoder is tuned too (train/first_stage)
# 4: labels are the expected grades where the LLM gave probabilities
# 3: best checkpoint by held-out nDCG@10, max length from the data, resumable, model card


def cache_inputs(cfg: BuildConfig) -> dict[str, Any]:
    return {
        "backbone": resolve_model(cfg.train.backbone),
        "grade": cfg.grade.model_dump(),
        "first_stage": resolve_model(cfg.mine.bi_encoder),
    }


def split_queries(
    query_ids: list[str], dev_fraction: float, seed: int, files: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Seeded train/dev split; dev gets at least one query and train keeps at least one.

    With ``files`` (query id -> its source file), whole files go to one side: queries written from the same
    chunk or file are near paraphrases, and one of them in training would let the tuned model pass the other
    in dev by memory (a dev gain that real questions do not show). One file only: split by query.
    """
    shuffled = sorted(query_ids)
    random.Random(seed).shuffle(shuffled)
    n_dev = min(max(1, round(len(shuffled) * dev_fraction)), len(shuffled) - 1)
    by_file: dict[str, list[str]] = {}
    for query_id in shuffled:  # files in the seeded order of their first query
        by_file.setdefault((files or {}).get(query_id, query_id), []).append(query_id)
    if files is None or len(by_file) < 2:
        return sorted(shuffled[n_dev:]), sorted(shuffled[:n_dev])
    dev: list[str] = []
    for group in by_file.values():  # whole files that fit the dev share, in the seeded order
        if len(dev) + len(group) <= n_dev:
            dev.extend(group)
    if not dev:  # every file is larger than the dev share: the smallest one
        dev = min(by_file.values(), key=len)
    held = set(dev)
    return sorted(q for q in shuffled if q not in held), sorted(dev)


def fold_queries(query_ids: list[str], folds: int, seed: int, files: dict[str, str]) -> list[list[str]]:
    """``folds`` folds of whole files (query id -> its source file), in a seeded file order, each file to the
    smallest fold so far; with fewer files than folds, fewer (non-empty) folds."""
    shuffled = sorted(query_ids)
    random.Random(seed).shuffle(shuffled)
    by_file: dict[str, list[str]] = {}
    for query_id in shuffled:
        by_file.setdefault(files.get(query_id, query_id), []).append(query_id)
    out: list[list[str]] = [[] for _ in range(folds)]
    for group in by_file.values():
        min(out, key=len).extend(group)
    return [sorted(fold) for fold in out if fold]


def build_groups(
    queries: list[Query],
    chunks: dict[str, Chunk],
    judgments: list[Judgment],
    *,
    group_size: int,
    positive_min_grade: int,
    max_other_grade: int,
    seed: int,
    cross_query_negatives: int = 0,
    mined: dict[str, list[str]] | None = None,
    mined_negatives: int = 0,
) -> list[dict[str, Any]]:
    """One training group per (query, positive): the positive first, then ``group_size - 1`` others.

    Others are graded candidates of the same query with a grade <= ``max_other_grade``, labelled with their
    grades, then up to ``mined_negatives`` of the query's mined candidates (``mined``: query id to chunk ids in
    the order to take them) that the grader did not judge, labelled 0: the hard negatives the first stage
    found, at no LLM cost. ``cross_query_negatives`` of them are instead positives of *other* queries of
    ``queries``, from other files and never graded for this query, labelled 0: every positive passage is then a negative
    somewhere else, so a model cannot score a passage without reading the query. When a query has too few
    graded others, more of these fill its groups before anything is repeated, and with them a query whose
    candidates were all graded relevant still trains. Every loss trains on the rows this returns.
    """
    rng = random.Random(seed)
    by_query = group_by_query(judgments)
    positives_of = {q.id: [j for j in by_query.get(q.id, []) if j.grade >= positive_min_grade] for q in queries}
    pool = sorted({j.chunk_id for found in positives_of.values() for j in found}) if cross_query_negatives else []
    rows = []
    for query in queries:
        graded = by_query.get(query.id, [])
        positives = positives_of[query.id]
        others = [(j.chunk_id, j.level) for j in graded if j.grade <= max_other_grade]
        judged = {j.chunk_id for j in graded}
        if mined_negatives and mined:
            unjudged = [c for c in mined.get(query.id, []) if c not in judged and c != query.chunk_id]
            others += [(c, 0.0) for c in unjudged[:mined_negatives]]
        sources = {chunks[j.chunk_id].source for j in positives} | {chunks[query.chunk_id].source}
        foreign = [(c, 0.0) for c in pool if c not in judged and chunks[c].source not in sources]
        if not positives or not (others or foreign):
            continue
        k = group_size - 1
        n_foreign = k if not others else min(len(foreign), max(cross_query_negatives, k - len(others)))
        for positive in positives:
            picked = _pick(rng, others, k - n_foreign) + _pick(rng, foreign, n_foreign)
            members = [(positive.chunk_id, positive.level), *picked]
            rows.append(
                {
                    "query": query.text,
                    "docs": [chunks[chunk_id].text for chunk_id, _ in members],
                    "labels": [label for _, label in members],
                }
            )
    return rows


def source_positives(queries: list[Query], judgments: list[Judgment]) -> list[Judgment]:
    """``judgments`` and, for each query whose source passage was not graded, that passage at the top grade: the
    query was written from it (the kept queries passed the round trip), as the first stage takes it."""
    judged = {(j.query_id, j.chunk_id) for j in judgments}
    top = [Judgment(query_id=q.id, chunk_id=q.chunk_id, grade=3) for q in queries if (q.id, q.chunk_id) not in judged]
    return [*judgments, *top]


def _mined_order(ctx: StageContext, chunks: dict[str, Chunk], queries: list[Query]) -> dict[str, list[str]]:
    """Each query's mined candidates in the order its hard negatives are taken (as the first stage's are)."""
    path = ctx.dir("mine") / "candidates.jsonl"
    if ctx.config.train.mined_negatives == 0 or not path.is_file():
        return {}
    found = {c.query_id: c for c in read_jsonl(path, CandidateList)}
    same_file = ctx.config.train.first_stage_same_file
    return {q.id: candidate_order(found.get(q.id), chunks, q.chunk_id, same_file) for q in queries}


def _pick(rng: random.Random, items: list[Any], n: int) -> list[Any]:
    """``n`` items sampled without repeats while there are enough, then repeated."""
    if n <= 0:
        return []
    return rng.sample(items, n) if len(items) >= n else items + rng.choices(items, k=n - len(items))


def _other_grade_limit(loss: str, grade: GradeConfig) -> int:
    # LCE contrasts the positive with true negatives only; the list-wise loss also learns middle levels.
    return grade.negative_max_grade if loss == "lce" else grade.positive_min_grade - 1


def run(ctx: StageContext) -> StageResult:
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from transformers import PrinterCallback, set_seed

    from rerankforge.losses import make_loss
    from rerankforge.training import card
    from rerankforge.training.dev import dev_evaluator, dev_queries, first_stage_ndcg
    from rerankforge.training.lengths import choose_max_length, pair_lengths

    cfg: TrainConfig = ctx.config.train
    grade_cfg = ctx.config.grade
    chunks = {c.id: c for c in read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)}
    queries = read_jsonl(ctx.dir("queries") / "queries.jsonl", Query)
    judgments = read_jsonl(ctx.dir("grade") / "judgments.jsonl", Judgment)
    cross_encoder = trains_cross_encoder(cfg.cross_encoder, cfg.backbone)
    if cross_encoder and not grades_source(ctx.config):
        judgments = source_positives(queries, judgments)
    if cross_encoder:  # its groups need a graded positive
        relevant = sorted({j.query_id for j in judgments if j.grade >= grade_cfg.positive_min_grade})
    else:  # the first stage's positive is the source passage: a query counts unless the grader rejected its source
        rejected = rejected_queries(queries, judgments, grade_cfg.positive_min_grade)
        relevant = sorted(q.id for q in queries if q.id not in rejected)
    if len(relevant) < 2:
        raise StageError(
            f"Only {len(relevant)} queries have a passage graded >= {grade_cfg.positive_min_grade}: too few to "
            "train and evaluate. Raise queries.max_queries or use a stronger LLM."
        )
    launch = Launch.from_env()
    source_file = {q.id: chunks[q.chunk_id].source for q in queries}
    train_ids, dev_ids = split_queries(relevant, cfg.dev_fraction, cfg.seed, files=source_file)
    if not launch.follower:
        write_json(ctx.out / "split.json", {"train": train_ids, "dev": dev_ids})
    if not cross_encoder:
        return _first_stage_only(ctx, train_ids, dev_ids, queries, chunks, judgments, launch)

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
            cross_query_negatives=cfg.cross_query_negatives,
            mined=mined,
            mined_negatives=cfg.mined_negatives,
        )

    mined = _mined_order(ctx, chunks, queries)
    rows = groups(train_ids)
    dev_rows = groups(dev_ids)  # the held-out loss curve in the report; training never sees these
    if not rows:
        raise StageError(
            "No training query has both a positive and a negative passage. Raise mine.top_k so the first "
            "stage finds negatives, or queries.max_queries for more queries."
        )
    dev = dev_queries(ctx.run_dir, dev_ids, chunks, queries, judgments)
    set_seed(cfg.seed)
    model = load_cross_encoder(cfg.backbone, cfg.max_length)
    lengths = choose_max_length(pair_lengths(model.tokenizer, rows), cfg.max_length)
    model.max_length = lengths["max_length"]  # batches are padded to their own longest pair (dynamic padding)
    loss = make_loss(cfg.loss, model, temperature=cfg.temperature)
    device = _device()
    precision = _precision(cfg.precision, device)
    if launch.distributed:  # sentence-transformers drops the last partial batch under DDP; batches go round ranks
        batches = math.ceil(len(rows) // cfg.batch_size / launch.world_size)
    else:
        batches = math.ceil(len(rows) / cfg.batch_size)
    steps = max(1, math.ceil(batches / cfg.gradient_accumulation_steps * cfg.epochs))
    eval_every = max(1, math.ceil(steps / cfg.eval_points))
    checkpoints = ctx.out / "checkpoints"
    resume = _resumable_checkpoint(
        checkpoints, _fingerprint(cfg, rows, dev_rows, launch.world_size), prepare=not launch.follower
    )
    args = CrossEncoderTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the steps
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=1,
        eval_strategy="steps" if dev else "no",
        eval_steps=eval_every,
        save_strategy="steps",
        save_steps=eval_every,
        save_total_limit=2,  # the best and the latest: enough to resume and to keep the best
        load_best_model_at_end=bool(dev) and cfg.keep_best,
        metric_for_best_model="eval_dev_ndcg@10" if dev else None,
        greater_is_better=True,
        report_to="none",
        use_cpu=device == "cpu",
        ddp_backend="gloo" if launch.distributed and device == "cpu" else None,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        disable_tqdm=True,
    )
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(dev_rows) if dev_rows else None,
        evaluator=dev_evaluator(dev) if dev else None,
        loss=loss,
        callbacks=[_progress_callback(ctx)],
    )
    trainer.remove_callback(PrinterCallback)  # library code prints nothing: progress goes through ctx
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.accelerator.wait_for_everyone()  # every rank has loaded the best checkpoint before rank 0 cleans up
    tuned_dir = ctx.out / TUNED_FIRST_STAGE
    if not launch.follower:  # an earlier build's tuned bi-encoder must not pass for this one's
        shutil.rmtree(tuned_dir, ignore_errors=True)
        shutil.rmtree(ctx.out / FIRST_STAGE_FOLDS, ignore_errors=True)
    first_stage = None
    if cfg.tune_first_stage:  # every rank takes part: under torchrun the bi-encoder's trainer is distributed too
        first_stage = _tune_first_stage(ctx, train_ids, queries, chunks, judgments, device, save=not launch.follower)
        first_stage.update(_tune_folds(ctx, train_ids, dev_ids, queries, chunks, judgments, device, launch))
    if launch.follower:  # rank 0 writes the model, the card and the history
        return StageResult(files=[], summary={"steps": trainer.state.global_step, "processes": launch.world_size})
    history = [
        {"step": e["step"], key: e[key]}
        for e in trainer.state.log_history
        if "step" in e
        for key in ("loss", "eval_loss", "eval_dev_ndcg@10")
        if key in e
    ]
    model_dir = ctx.out / TUNED_CROSS_ENCODER
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.rmtree(ctx.run_dir / "model", ignore_errors=True)  # an earlier export's files: not this model's
    model.save_pretrained(str(model_dir))
    write_json(ctx.out / "loss_history.json", history)
    train_losses = [h["loss"] for h in history if "loss" in h]
    first = sum(train_losses[:3]) / max(len(train_losses[:3]), 1)
    last = sum(train_losses[-3:]) / max(len(train_losses[-3:]), 1)
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    dev_points = [h for h in history if "eval_dev_ndcg@10" in h]
    best = max(dev_points, key=lambda h: h["eval_dev_ndcg@10"]) if dev_points else None  # first of equals
    summary = {
        "loss": cfg.loss,
        "backbone": cfg.backbone,
        "train_queries": len(train_ids),
        "dev_queries": len(dev_ids),
        "groups": len(rows),
        "group_size": cfg.group_size,
        "steps": trainer.state.global_step,
        "resumed_from_step": _step_of(resume),
        "loss_first": round(first, 4),
        "loss_last": round(last, 4),
        "held_out_loss_first": round(eval_losses[0], 4) if eval_losses else None,
        "held_out_loss_last": round(eval_losses[-1], 4) if eval_losses else None,
        "dev": {
            "best_ndcg@10": round(best["eval_dev_ndcg@10"], 4),
            "best_step": best["step"],
            "last_ndcg@10": round(dev_points[-1]["eval_dev_ndcg@10"], 4),
            "first_stage_ndcg@10": round(first_stage_ndcg(dev, 10), 4),
            "kept": "best" if cfg.keep_best else "last",
        }
        if best
        else None,
        "max_length": lengths,
        "device": device,
        "precision": precision,
        "processes": launch.world_size,
    }
    histogram = grade_histogram(judgments)
    card.write(model_dir, card.render(summary, cfg.model_dump(mode="json"), histogram))
    shutil.rmtree(checkpoints, ignore_errors=True)
    # the card (README.md) is left out: it records how the training went (its time, its log), not what it made
    files = [
        str(p.relative_to(ctx.run_dir)) for p in sorted(model_dir.rglob("*")) if p.is_file() and p.name != "README.md"
    ]
    if first_stage is not None:
        summary["first_stage"] = first_stage
        files += _first_stage_files(ctx)
    return StageResult(files=[*files, "train/split.json", "train/loss_history.json"], summary=summary)


def _first_stage_only(
    ctx: StageContext,
    train_ids: list[str],
    dev_ids: list[str],
    queries: list[Query],
    chunks: dict[str, Chunk],
    judgments: list[Judgment],
    launch: Launch,
) -> StageResult:
    """No cross-encoder: the first stage's tuning alone, and a model folder that holds no cross-encoder."""
    from rerankforge.training import card

    cfg = ctx.config.train
    tuned_dir = ctx.out / TUNED_FIRST_STAGE
    model_dir = ctx.run_dir / "model"
    if not launch.follower:  # an earlier build's weights must not pass for this one's
        shutil.rmtree(tuned_dir, ignore_errors=True)
        shutil.rmtree(ctx.out / FIRST_STAGE_FOLDS, ignore_errors=True)
        shutil.rmtree(ctx.out / TUNED_CROSS_ENCODER, ignore_errors=True)
        shutil.rmtree(model_dir, ignore_errors=True)
    device = _device()
    first_stage = None
    if cfg.tune_first_stage:
        first_stage = _tune_first_stage(ctx, train_ids, queries, chunks, judgments, device, save=not launch.follower)
        first_stage.update(_tune_folds(ctx, train_ids, dev_ids, queries, chunks, judgments, device, launch))
    reason = (
        "train.cross_encoder = false"
        if cfg.cross_encoder is False
        else f"train.cross_encoder = auto and the backbone {cfg.backbone} is not a pretrained reranker"
    )
    summary: dict[str, Any] = {
        "cross_encoder": f"not trained ({reason})",
        "train_queries": len(train_ids),
        "dev_queries": len(dev_ids),
        "first_stage": first_stage,
        "device": device,
        "processes": launch.world_size,
    }
    if launch.follower:
        return StageResult(files=[], summary=summary)
    model_dir.mkdir(parents=True)
    histogram = grade_histogram(judgments)
    card.write(model_dir, card.render_first_stage_only(summary, histogram))
    files = _first_stage_files(ctx)
    return StageResult(files=[*files, "train/split.json"], summary=summary)


def _tune_first_stage(
    ctx: StageContext,
    train_ids: list[str],
    queries: list[Query],
    chunks: dict[str, Chunk],
    judgments: list[Judgment],
    device: str,
    save: bool,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """The bi-encoder tuned on the training queries (never the held-out ones), saved to ``out_dir`` (default
    train/first_stage) by the process that writes (``save``)."""
    from rerankforge.training.bi_encoder import training_triplets, tune

    cfg, grade = ctx.config.train, ctx.config.grade
    wanted = set(train_ids)
    candidates = {c.query_id: c for c in read_jsonl(ctx.dir("mine") / "candidates.jsonl", CandidateList)}
    rows = training_triplets(
        [q for q in queries if q.id in wanted],
        chunks,
        candidates,
        judgments,
        positive_min_grade=grade.positive_min_grade,
        negative_max_grade=grade.negative_max_grade,
        seed=cfg.seed,
        negatives=cfg.first_stage_negatives,
        same_file_first=cfg.first_stage_same_file,
    )
    if len(rows) < 2:
        return {"triplets": len(rows), "skipped": "fewer than 2 training queries with their source passage"}
    bf16 = _first_stage_bf16(cfg.precision, device)
    stats = tune(
        resolve_model(ctx.config.mine.bi_encoder),
        rows,
        out_dir or ctx.out / TUNED_FIRST_STAGE,
        learning_rate=cfg.first_stage_learning_rate,
        epochs=cfg.first_stage_epochs,
        batch_size=min(cfg.first_stage_batch_size, len(rows)),
        seed=cfg.seed,
        device=device,
        progress=ctx.progress,
        save=save,
        bf16=bf16,
    )
    return {**stats, "precision": "bf16" if bf16 else "fp32"}


def _first_stage_files(ctx: StageContext) -> list[str]:
    """The tuned first stage's files and its folds', for the stage's manifest."""
    folders = (ctx.out / TUNED_FIRST_STAGE, ctx.out / FIRST_STAGE_FOLDS)
    return [str(p.relative_to(ctx.run_dir)) for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()]


def _tune_folds(
    ctx: StageContext,
    train_ids: list[str],
    dev_ids: list[str],
    queries: list[Query],
    chunks: dict[str, Chunk],
    judgments: list[Judgment],
    device: str,
    launch: Launch,
) -> dict[str, Any]:
    """``train.first_stage_folds`` > 1: the training queries cut into K - 1 more folds of whole files, and the
    first stage tuned once per fold on every kept query but that fold's (the held-out ones included), saved to
    train/first_stage_folds/<i> with folds.json, so that the evaluate stage judges every kept query by a tuning
    that never saw it. Not where the held-out queries alone already show the tuned first stage's gain (the
    evaluate stage's rule 1): more evidence would change nothing. Under torchrun every rank tunes the folds (the
    ranks must agree without a check)."""
    from rerankforge.evaluation.held_out import held_out_lists, tuned_vectors
    from rerankforge.evaluation.scorer_choice import choose_scorer

    folds_dir = ctx.out / FIRST_STAGE_FOLDS
    k = ctx.config.train.first_stage_folds
    if k < 2:
        return {}
    tuned = tuned_vectors(ctx.out / TUNED_FIRST_STAGE, ctx.config.mine.batch_size) if not launch.distributed else None
    if tuned is None and not launch.distributed:  # the first tuning was skipped: too few queries
        return {}
    if not launch.distributed:
        ev = ctx.config.evaluate
        lists = held_out_lists(ctx.run_dir, ctx.config, dev_ids, tuned=tuned, progress=ctx.progress)
        if choose_scorer(lists, k=ev.k, p_value=ev.dev_p_value, min_gain=ev.min_gain)["learned"]:
            return {"folds": "none: the held-out queries alone show the tuned first stage's gain"}
    files = {q.id: chunks[q.chunk_id].source for q in queries}
    folds = fold_queries(train_ids, k - 1, ctx.config.train.seed, files)
    everyone = set(train_ids) | set(dev_ids)
    tunings = []
    for i, fold in enumerate(folds):
        ctx.progress(i, len(folds), f"tuning the first stage without fold {i + 1} of {len(folds)}")
        seen = sorted(everyone - set(fold))
        stats = _tune_first_stage(ctx, seen, queries, chunks, judgments, device, save=not launch.follower,
                                  out_dir=folds_dir / str(i))  # fmt: skip
        tunings.append({"judged": len(fold), "trained_on": len(seen), **stats})
    if not launch.follower:
        write_json(folds_dir / "folds.json", {"folds": folds})
    return {"folds": tunings}


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), as torch detects them."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _first_stage_bf16(wanted: str, device: str) -> bool:
    """The first stage's tuning in bf16 autocast: with train.precision = auto on a CUDA GPU that supports it or
    a CPU with bf16 instructions (on MedQuAD, 1.76x faster than fp32 at the same real-question nDCG@10, within
    0.0013); bf16 where asked; fp32 otherwise (fp16 is not used for it)."""
    import torch

    if wanted == "bf16":
        return True
    if wanted != "auto":
        return False
    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return device == "cpu" and cpu_has_bf16()


def _precision(wanted: str, device: str) -> str:
    """The mixed precision to train in: bf16 where the GPU supports it, else fp16 on CUDA; fp32 elsewhere."""
    import torch

    if wanted == "auto":
        if not device.startswith("cuda"):
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if wanted in ("bf16", "fp16") and not device.startswith("cuda"):
        raise StageError(f"train.precision = {wanted} needs a CUDA GPU; this machine trains on {device}. Use auto.")
    return wanted


def _fingerprint(cfg: TrainConfig, rows: list[dict[str, Any]], dev_rows: list[dict[str, Any]], processes: int) -> str:
    """What a checkpoint must have been trained on to be resumed: the settings, the exact groups, the processes."""
    material = {"config": cfg.model_dump(mode="json"), "backbone": resolve_model(cfg.backbone), "rows": rows,
                "dev": dev_rows, "processes": processes}  # fmt: skip
    return text_sha256(json.dumps(material, sort_keys=True))


def _resumable_checkpoint(folder: Path, fingerprint: str, prepare: bool = True) -> Path | None:
    """The latest checkpoint of an interrupted run of this same training, else None.

    With ``prepare`` (rank 0), stale checkpoints are removed and the folder is stamped for this training;
    other ranks only read.
    """
    stamp = folder / "fingerprint.txt"
    if folder.is_dir() and stamp.is_file() and stamp.read_text(encoding="utf-8") == fingerprint:
        # the trainer writes trainer_state.json last: a checkpoint without it was cut off mid-save
        complete = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        if complete:
            return max(complete, key=_step_of)
    if not prepare:
        return None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    stamp.write_text(fingerprint, encoding="utf-8")
    return None


def _step_of(checkpoint: Path | None) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else 0


def _progress_callback(ctx: StageContext) -> Any:
    """A TrainerCallback reporting steps to the build's progress callback."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ctx.progress(state.global_step, state.max_steps, "training")

    return ProgressCallback()
