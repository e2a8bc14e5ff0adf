"""A pretrained reranker, obtained as a model hub obtains one: a cross-encoder trained once on real labelled
questions that no evaluated build or question ever sees, then measured alone on the target source's questions.

No hub is reachable here, so this stands in for ``cross-encoder/ms-marco-MiniLM-L6-v2`` or a ``bge-reranker``
on the path a user who brings a reranker takes (``rerankforge build DOCS --backbone FOLDER``). The training data is
medquad-dev's other sources (by default GARD and GHR for the target CancerGov): each question with its own answer
as the positive and the dense first stage's best non-answers as hard negatives. Nothing of the target leaks: every
answer whose focus (title) is also a focus of the target's documents is dropped, with its questions, and so is
every question text that the target also asks.

    .venv/bin/python benchmarks/standin_reranker.py [--target CancerGov] [--questions 3000] [--negatives 4]

Saves a sentence-transformers ``CrossEncoder`` folder under ``.cache/standin-reranker-TARGET`` (never committed)
and prints its nDCG@10 alone on the target's real questions (its questions among ``served_quality.py``'s seeded
order, topped up to 300 as ``medquad_scorer.py --per-source 300`` does), dense top-20 reranked, next to dense.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
from medquad_data import DATA, require_data
from medquad_scorer import MINILM, SOURCES, compare, jsonl, ndcg, source_of, source_tops

from rerankforge.index.vector_cache import VectorCache
from rerankforge.stages.train import cpu_has_bf16

ROOT = Path(__file__).resolve().parent.parent
MAX_LENGTH = 256


def training_data(target: str) -> tuple[list[tuple[str, set[str]]], dict[str, str], dict[str, int]]:
    """(question, its answers) of the other sources, their answers' corpus, and what was dropped for leaking."""
    records = jsonl(DATA / "corpus.jsonl")
    target_foci = {r["title"].strip().lower() for r in records if source_of(r["_id"]) == target}
    kept = {r["_id"]: (r.get("title", "") + ". " + r["text"]).strip(". ") for r in records
            if source_of(r["_id"]) != target and r["title"].strip().lower() not in target_foci}  # fmt: skip
    shared = sum(1 for r in records if source_of(r["_id"]) != target) - len(kept)
    text = {q["_id"]: q["text"] for q in jsonl(DATA / "queries.jsonl")}
    answers: dict[str, set[str]] = {}
    target_questions: set[str] = set()
    for line in open(DATA / "qrels" / "test.tsv", encoding="utf-8"):
        q, d, g = line.rstrip("\n").split("\t")[:3]
        if q == "query-id" or int(g) <= 0:
            continue
        if source_of(d) == target:
            target_questions.add(text[q])
        answers.setdefault(text[q], set()).add(d)
    questions = [(q, docs) for q, docs in sorted(answers.items())
                 if q not in target_questions and docs <= set(kept)]  # fmt: skip
    dropped = {"answers_with_a_target_focus": shared, "target_foci": len(target_foci),
               "questions_the_target_asks": sum(1 for q in answers if q in target_questions)}  # fmt: skip
    return questions, kept, dropped


def triplets(questions, corpus: dict[str, str], encoder, negatives: int) -> list[dict[str, object]]:
    """(question, passage, label) rows: each question's answer(s) at 1, its dense best non-answers at 0."""
    ids = list(corpus)
    vectors = VectorCache(MINILM).embed(
        [corpus[i] for i in ids], lambda todo: encoder.encode(todo, normalize_embeddings=True, batch_size=64)
    )
    q_vectors = encoder.encode([q for q, _ in questions], normalize_embeddings=True, batch_size=64)
    rows: list[dict[str, object]] = []
    for (question, answers), v in zip(questions, q_vectors, strict=True):
        top = [ids[i] for i in np.argsort(-(vectors @ v), kind="stable")[: negatives + len(answers) + 4]]
        rows += [{"query": question, "passage": corpus[d], "label": 1.0} for d in sorted(answers)]
        rows += [{"query": question, "passage": corpus[d], "label": 0.0} for d in top if d not in answers][:negatives]
    return rows


def grouped(rows: list[dict[str, object]], negatives: int) -> list[dict[str, str]]:
    """(query, positive, negative_1..n) rows for the listwise loss: each answer with its question's hard negatives."""
    by_query: dict[str, tuple[list[str], list[str]]] = {}
    for row in rows:
        by_query.setdefault(str(row["query"]), ([], []))[0 if row["label"] else 1].append(str(row["passage"]))
    out = []
    for query, (positives, negs) in by_query.items():
        if len(negs) < negatives:
            continue
        out += [{"query": query, "positive": p, **{f"negative_{i + 1}": n for i, n in enumerate(negs[:negatives])}}
                for p in positives]  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="CancerGov", choices=SOURCES)
    parser.add_argument("--questions", type=int, default=3000, help="Training questions sampled (seed 13).")
    parser.add_argument("--negatives", type=int, default=4, help="Dense hard negatives per question.")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--per-source", type=int, default=300, help="Target questions evaluated.")
    parser.add_argument("--out", type=Path, default=None, help="Default: .cache/standin-reranker-TARGET.")
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH, help="Token cap of a training pair.")
    parser.add_argument(
        "--loss",
        choices=("mnrl", "bce"),
        default="mnrl",  # fmt: skip
        help="mnrl: each answer against its hard negatives and one in-batch one (listwise, as "
        "hub rerankers are trained); bce: pointwise labels (stayed at chance from MiniLM).",
    )
    args = parser.parse_args()
    require_data()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from datasets import Dataset
    from sentence_transformers import CrossEncoder, SentenceTransformer
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MultipleNegativesRankingLoss

    out = args.out or ROOT / ".cache" / f"standin-reranker-{args.target}"
    encoder = SentenceTransformer(MINILM, device="cpu")
    started = time.time()
    questions, corpus, dropped = training_data(args.target)
    random.Random(13).shuffle(questions)
    questions = questions[: args.questions]
    rows = triplets(questions, corpus, encoder, args.negatives)
    mined = time.time() - started
    print(f"training data: {len(questions)} questions of {', '.join(s for s in SOURCES if s != args.target)}, "
          f"{len(rows)} pairs, {len(corpus)} answers; dropped for the target: {dropped}; {mined:.0f} s")  # fmt: skip

    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        model = CrossEncoder(MINILM, num_labels=1, max_length=args.max_length, device="cpu")
        if args.loss == "mnrl":
            train = Dataset.from_list(grouped(rows, args.negatives)).shuffle(seed=0)
            loss = MultipleNegativesRankingLoss(model, num_negatives=1)
        else:
            train, loss = Dataset.from_list(rows).shuffle(seed=0), BinaryCrossEntropyLoss(model)
        trainer = CrossEncoderTrainer(
            model=model,
            args=CrossEncoderTrainingArguments(
                output_dir=str(out.with_name(out.name + "-checkpoints")),
                num_train_epochs=args.epochs,
                per_device_train_batch_size=32,
                learning_rate=args.lr,
                warmup_ratio=0.1,
                seed=0,
                bf16=cpu_has_bf16(),  # bf16 autocast where the CPU computes it natively (AMX), else fp32
                save_strategy="no",
                logging_steps=50,
                report_to=[],
                use_cpu=True,
            ),  # fmt: skip
            train_dataset=train,
            loss=loss,
        )
        t = time.time()
        trainer.train()
        trained = time.time() - t
        model.save_pretrained(str(out))
        cost = {"train_seconds": round(trained), "mine_seconds": round(mined), "pairs": len(rows),
                "questions": len(questions), "lr": args.lr, "epochs": args.epochs, "negatives": args.negatives,
                "max_length": args.max_length, "loss": args.loss, "backbone": "all-MiniLM-L6-v2",
                "dropped": dropped}  # fmt: skip
        (out / "standin.json").write_text(json.dumps(cost, indent=1))
    cost = json.loads((out / "standin.json").read_text())
    print(f"stand-in: {out} (trained in {cost['train_seconds']} s on {cost['pairs']} pairs)")

    # the target's questions, the dense top-20 of each over the whole corpus, reranked by the stand-in alone
    docs, evaluated, tops, dense = source_tops(encoder, args.target, per_source=args.per_source)
    standin = CrossEncoder(str(out), device="cpu", max_length=MAX_LENGTH)
    t = time.time()
    values = []
    for top, (question, rel) in zip(tops, evaluated, strict=True):
        scores = standin.predict([(question, docs[d]) for d in top], batch_size=20, show_progress_bar=False)
        values.append(ndcg([top[i] for i in np.argsort(-np.asarray(scores), kind="stable")], rel))
    result = {"row": "the stand-in alone, dense top-20", "target": args.target, **compare(values, dense),
              "rerank_seconds": round(time.time() - t), **cost}  # fmt: skip
    print(json.dumps(result))
    (out / "standin_eval.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
