"""The product path for a user who brings a pretrained reranker, measured on real questions: builds of one
medquad-dev source's documents with ``--backbone`` a stand-in reranker (``standin_reranker.py``, trained on the
other sources), one build per loss, against the stand-in as it came.

    .venv/bin/python benchmarks/pretrained_reranker.py --standin .cache/standin-reranker-CancerGov \\
        bce=.cache/bench-pretrained/bce lce=.cache/bench-pretrained/lce

Every row reorders the same candidates: the dense (all-MiniLM-L6-v2) top-20 over the whole corpus (all 11,548
answers, title + text) of every real question of the target source. Rows: dense; each build's tuned first stage
(cosine); the stand-in alone; each build's tuned cross-encoder alone (torch); what each build's model folder serves
(``Reranker``, in process, as ``rerankforge serve`` scores); then each two builds' tuned cross-encoders against each
other. Each row: nDCG@10, and against dense and against the stand-in the gain, the paired one-sided t-test and
wins / losses. Rows are appended to ``.cache/bench-pretrained/results.jsonl``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
from medquad_data import require_data
from medquad_scorer import MINILM, SOURCES, compare, ndcg, source_tops

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".cache" / "bench-pretrained" / "results.jsonl"
VALUES = OUT.with_name("values.json")  # per-question nDCG of each scored folder, so a rerun scores only new ones
MAX_LENGTH = 256


class Lazy:
    """A scorer loaded on its first call: a folder whose values are saved is never loaded."""

    def __init__(self, make) -> None:
        self.make, self.score = make, None

    def __call__(self, question: str, passages: list[str]):
        self.score = self.score or self.make()
        return self.score(question, passages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="*", help="NAME=RUN_DIR of builds with --backbone the stand-in")
    parser.add_argument("--standin", type=Path, required=True)
    parser.add_argument("--target", default="CancerGov", choices=SOURCES)
    parser.add_argument("--max-questions", type=int, default=0, help="0: every question of the target")
    args = parser.parse_args()
    require_data()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from rerankforge import Reranker

    encoder = SentenceTransformer(MINILM, device="cpu")
    docs, evaluated, tops, dense = source_tops(encoder, args.target, limit=args.max_questions)
    ids = list(docs)

    saved = json.loads(VALUES.read_text()) if VALUES.is_file() else {}

    def reranked(score, folder: Path) -> tuple[list[float], float]:
        weights = max((f.stat().st_mtime_ns for f in folder.iterdir() if f.is_file()), default=0)
        key = f"{folder.resolve()}|{weights}|{len(evaluated)}|{args.target}"
        if key in saved:
            return saved[key]["values"], saved[key]["seconds"]
        started, values = time.time(), []
        for top, (question, rel) in zip(tops, evaluated, strict=True):
            scores = np.asarray(score(question, [docs[d] for d in top]), dtype=np.float64).reshape(-1)
            values.append(ndcg([top[i] for i in np.argsort(-scores, kind="stable")], rel))
        saved[key] = {"values": values, "seconds": time.time() - started}
        VALUES.parent.mkdir(parents=True, exist_ok=True)
        VALUES.write_text(json.dumps(saved))
        return values, time.time() - started

    def cross_encoder(path: Path):
        model = CrossEncoder(str(path), device="cpu", max_length=MAX_LENGTH)
        return lambda q, ds: model.predict([(q, d) for d in ds], batch_size=20, show_progress_bar=False)

    def bi_encoder(path: Path):
        model = SentenceTransformer(str(path), device="cpu")

        def cosine(q: str, ds: list[str]) -> np.ndarray:
            return model.encode(ds, normalize_embeddings=True) @ model.encode([q], normalize_embeddings=True)[0]

        return cosine

    standin, standin_s = reranked(cross_encoder(args.standin), args.standin)
    rows = [{"row": "dense first stage", **compare(dense, dense)},
            {"row": "the stand-in as it came", "seconds": round(standin_s), **compare(standin, dense)}]  # fmt: skip
    tuned: dict[str, list[float]] = {}  # each build's tuned cross-encoder alone, per question
    for spec in args.builds:
        name, run = spec.split("=", 1)
        run_dir = Path(run)
        systems = {}  # label: (scorer, the folder it loads)
        if (run_dir / "train" / "first_stage" / "modules.json").is_file():
            folder = run_dir / "train" / "first_stage"
            systems[f"{name}: tuned first stage"] = (lambda f=folder: bi_encoder(f), folder)
        folder = run_dir / "train" / "cross_encoder"
        systems[f"{name}: tuned cross-encoder alone"] = (lambda f=folder: cross_encoder(f), folder)
        if (run_dir / "model" / "rerankforge.json").is_file():  # a build run --until evaluate has no model folder
            served = Reranker(run_dir / "model")
            systems[f"{name}: served ({served.variant}, {json.dumps(served.scorer, sort_keys=True)})"] = (
                lambda r=served: lambda q, ds: r.logits(q, ds),
                run_dir / "model",
            )
        for label, (make, folder) in systems.items():
            values, seconds = reranked(Lazy(make), folder)
            rows.append({"row": label, "seconds": round(seconds), **compare(values, dense),
                         "against_standin": compare(values, standin)})  # fmt: skip
            if label.endswith("tuned cross-encoder alone"):
                tuned[name] = values
    # the builds' tuned cross-encoders against each other, paired on the same questions (builds that share their
    # queries and split and differ in one setting, e.g. the loss, isolate that setting)
    for a, b in itertools.combinations(tuned, 2):
        rows.append({"row": f"{a} against {b}: tuned cross-encoder alone", **compare(tuned[a], tuned[b])})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("a", encoding="utf-8") as handle:
        for row in rows:
            row.update(target=args.target, standin=str(args.standin))
            handle.write(json.dumps(row) + "\n")
    print(f"{len(evaluated)} {args.target} questions, dense top-20 over {len(ids)} answers")
    for row in rows:
        vs = row.get("against_standin") or {}
        print(f"{row['row'][:110]:110s} {row['ndcg@10']:.4f} {row['gain']:+.4f} p {row['p_greater']} "
              f"{row['wins']}/{row['losses']}" + (f" | vs stand-in {vs['gain']:+.4f} p {vs['p_greater']} "
              f"{vs['wins']}/{vs['losses']}" if vs else ""))  # fmt: skip


if __name__ == "__main__":
    main()
