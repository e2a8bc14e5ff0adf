"""Build rerankers from MedQuAD's documents only, one per loss, and evaluate them on its real questions.

1. `rerankforge build` of ../shared/data/medquad-dev/docs (no questions, no labels) up to the grade stage,
   with benchmarks/medquad.toml (the embedded 1.5B LLM writes the queries and grades the candidates).
2. For each loss, the same graded data is trained and evaluated on the held-out synthetic queries
   (a copy of the run folder per loss, so the LLM work is done once).
3. Each model reranks the dense top-k of real MedQuAD questions (a seeded slice of foci: every answer of
   each focus competes), next to BM25 and dense alone and the fusion chosen on the synthetic dev split.

    .venv/bin/python benchmarks/medquad_losses.py                       # every loss
    .venv/bin/python benchmarks/medquad_losses.py --losses lce --set learning_rate=1e-4 --tag lr1e-4

Results are appended to RUN-DIR/results.jsonl as each loss finishes, and printed as a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from medquad_data import DATA, medquad_slice, require_data

from rerankforge import build, load_config
from rerankforge.config import EvaluateConfig
from rerankforge.evaluation import evaluate_labelled, load_scorer
from rerankforge.losses import LOSS_NAMES

ROOT = Path(__file__).resolve().parent.parent
LLM_STAGES = ("parse", "queries", "mine", "grade")


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".cache" / "bench-medquad" / "run")
    parser.add_argument("--losses", nargs="+", default=list(LOSS_NAMES), choices=LOSS_NAMES)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings to change: train keys, or section.key"
    )
    parser.add_argument("--tag", default="", help="suffix of the per-loss run folders and the results rows")
    parser.add_argument("--foci", type=int, default=120, help="MedQuAD foci in the evaluation slice")
    parser.add_argument("--queries", type=int, default=150, help="real questions evaluated")
    parser.add_argument("--top-k", type=int, default=20, help="dense candidates reranked per question")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    require_data()
    overrides: dict[str, dict[str, object]] = {}
    for item in args.set:
        key, value = item.split("=", 1)
        section, _, name = key.rpartition(".")
        overrides.setdefault(section or "train", {})[name] = _value(value)
    base = load_config(ROOT / "benchmarks" / "medquad.toml", docs=str(DATA / "docs"), run_dir=str(args.run_dir))
    started = time.perf_counter()
    result = build(base, until="grade")
    print(f"LLM data: {[(s.name, s.status, round(s.seconds)) for s in result.stages]} "
          f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    for stage in ("queries", "grade"):
        print(f"  {stage}: {result.summary(stage)}")
    data = medquad_slice(args.foci, args.seed)
    eval_cfg = EvaluateConfig(rerank_top_k=args.top_k, max_queries=args.queries)
    rows = []
    for loss in args.losses:
        run_dir = args.run_dir.with_name(f"{args.run_dir.name}-{loss}{'-' + args.tag if args.tag else ''}")
        run_dir.mkdir(parents=True, exist_ok=True)
        for stage in LLM_STAGES:  # the same graded data for every loss
            shutil.rmtree(run_dir / stage, ignore_errors=True)
            shutil.copytree(args.run_dir / stage, run_dir / stage)
        shutil.copy(args.run_dir / "llm_cache.jsonl", run_dir)  # new grade thresholds re-run grade from the cache
        train = {**base.train.model_dump(), **overrides.get("train", {}), "loss": loss}
        sections = {name: {**getattr(base, name).model_dump(), **values} for name, values in overrides.items()}
        cfg = load_config(
            ROOT / "benchmarks" / "medquad.toml",
            docs=str(DATA / "docs"),
            run_dir=str(run_dir),
            **{**sections, "train": train},
        )
        started = time.perf_counter()
        built = build(cfg, until="evaluate")
        train_seconds = time.perf_counter() - started
        trained, synthetic = built.summary("train"), built.summary("evaluate")
        alpha = synthetic["fusion"]["alpha"]
        scorer = dataclasses.replace(load_scorer(run_dir / "model"), fusion_alpha=alpha)
        started = time.perf_counter()
        real = evaluate_labelled(data, [scorer], eval_cfg, bi_encoder=base.mine.bi_encoder, seed=args.seed)
        row = {
            "loss": loss,
            "tag": args.tag,
            "train": {k: v for k, v in trained.items() if k not in ("backbone",)},
            "train_seconds": round(train_seconds),
            "synthetic_dev": {k: synthetic[k] for k in ("first_stage", "reranked", "fused", "fusion")},
            "real": {
                "queries": real["data"]["queries_evaluated"],
                "metrics": real["metrics"],
                "p_values": real["p_values"],
                "verdict": real["verdict"],
            },
            "eval_seconds": round(time.perf_counter() - started),
            "settings": train,
        }
        rows.append(row)
        with (args.run_dir.parent / "results.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
        print(f"{loss}: trained in {train_seconds:.0f} s, {real['verdict']}", flush=True)
    _print_table(rows)


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    real = rows[0]["real"]
    print(f"\nReal MedQuAD questions ({real['queries']}), dense top-k reranked; synthetic dev split alongside")
    header = ["loss", "steps", "dev nDCG first/rerank/fused (alpha)", "real nDCG@10", "MRR@10", "fused nDCG@10", "p"]
    print(" | ".join(header))
    first = rows[0]["real"]["metrics"]
    for system in ("bm25", "dense"):
        print(f"{system} alone | | | {first[system]['ndcg@10']:.4f} | {first[system]['mrr@10']:.4f} | |")
    for row in rows:
        dev, metrics = row["synthetic_dev"], row["real"]["metrics"]
        p = row["real"]["p_values"].get("reranked", {}).get("ndcg@10")
        print(
            f"{row['loss']}{' ' + row['tag'] if row['tag'] else ''} | {row['train']['steps']} | "
            f"{dev['first_stage']['ndcg@10']:.3f}/{dev['reranked']['ndcg@10']:.3f}/{dev['fused']['ndcg@10']:.3f}"
            f" ({dev['fusion']['alpha']}) | {metrics['reranked']['ndcg@10']:.4f} | {metrics['reranked']['mrr@10']:.4f}"
            f" | {metrics['fused']['ndcg@10']:.4f} | {p:.3g}"
        )


if __name__ == "__main__":
    main()
