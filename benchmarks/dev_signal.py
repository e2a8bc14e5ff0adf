"""Which held-out signal tells a first-stage recipe that helps real questions from one that hurts them:
one build's synthetic queries, several tuning recipes, each judged by the build's signals and by one
medquad-dev source's real questions.

    .venv/bin/python benchmarks/dev_signal.py RUN_DIR --target CancerGov --recipes build dense3 random lr5e-5x2

The kept queries are cut into ``--folds`` folds of whole files, the first fold being the train stage's own
held-out split (``train/split.json``). Each recipe is tuned once per fold on the other folds' queries, so:

- ``held-out``: the fold-1 model on the split's held-out queries: today's signal (each query judged by its own
  source passage among the untuned first stage's top 20, as the evaluate stage does);
- ``cross-fit``: every kept query judged by the fold model that never saw it (the same judgment, four times the
  queries);
- ``near``: the cross-fit lists judged answer-aware: the source's two neighbours either side in its file count
  as relevant too (a passage cut from the same answer).

Real: the fold-1 model (what the build serves today) reranks the dense top-20, over the whole corpus, of the
target source's first ``--questions`` real questions in ``served_quality.py``'s seeded order. Rows (gain, paired
one-sided p, wins / losses against the untuned model on the same queries or questions) are appended to
``RUN_DIR/dev_signal.jsonl``, and at the end the Spearman correlation of each signal's gain with the real gain.
``--paired build round2`` compares two recipes' fold-1 models, tuned by an earlier run, on the real questions.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import numpy as np
from medquad_data import require_data
from medquad_scorer import MINILM, SOURCES, chunk_position, compare, ndcg, source_tops
from scipy.stats import spearmanr

from rerankforge.artifacts import Candidate, CandidateList, Chunk, Query, read_json, read_jsonl
from rerankforge.index.qdrant import QdrantIndex
from rerankforge.training.bi_encoder import training_triplets, tune

NEIGHBOURS = 2
# NAME: (learning rate, epochs, negatives: build = the build's rule until 2026-12-07 (3, the source file's first),
# dense3 = the three best other candidates of any file (the build's rule since), random = three chunks of other files)
RECIPES = {
    "build": (2e-5, 1.0, "build"),
    "dense3": (2e-5, 1.0, "dense3"),
    "random": (2e-5, 1.0, "random"),
    "lr5e-5x2": (5e-5, 2.0, "build"),
    # a second round at no LLM cost: each fold's build-rule model re-mines its training queries' top 10 over every
    # chunk and is tuned again, from its own weights, on the build rule's negatives from those candidates
    "round2": (2e-5, 1.0, "build"),
}


def folds_of(run_dir: Path, queries: dict[str, Query], chunks: dict[str, Chunk], k: int) -> list[list[str]]:
    """Fold 1: the split's held-out queries; the rest of the split's training queries dealt out by whole files,
    in the split's seeded file order, each file to the smallest fold so far."""
    split = read_json(run_dir / "train" / "split.json")
    by_file: dict[str, list[str]] = {}
    order = sorted(split["train"])
    random.Random(13).shuffle(order)
    for query_id in order:
        by_file.setdefault(chunks[queries[query_id].chunk_id].source, []).append(query_id)
    folds: list[list[str]] = [list(split["dev"])] + [[] for _ in range(k - 1)]
    for group in by_file.values():
        min(folds[1:], key=len).extend(group)
    return folds


def triplets(kind: str, picked: list[Query], chunks, candidates, cfg: dict) -> list[dict[str, str]]:
    matched = re.fullmatch(r"([a-z]+)(\d*)", kind)
    assert matched, kind
    name, count = matched.groups()
    return training_triplets(
        picked,
        chunks,
        {} if name == "random" else candidates,
        [],
        positive_min_grade=cfg["grade"]["positive_min_grade"],
        negative_max_grade=cfg["grade"]["negative_max_grade"],
        seed=13,
        negatives=int(count) if count else cfg["train"]["first_stage_negatives"],
        same_file_first=name == "build",
    )


def remined(folder: Path, picked: list[Query], chunks: dict[str, Chunk], k: int) -> dict[str, CandidateList]:
    """Each query's top ``k`` chunks under the bi-encoder in ``folder`` (exact cosine over every chunk)."""
    score = Cosines(folder)
    ids = sorted(chunks)
    score.prepare([chunks[i].text for i in ids])
    matrix = np.stack([score.memo[chunks[i].text] for i in ids]).astype(np.float32)
    with score.autocast():
        q = score.model.encode([p.text for p in picked], normalize_embeddings=True, batch_size=64)
    out = {}
    for query, sims in zip(picked, np.asarray(q, dtype=np.float32) @ matrix.T, strict=True):
        top = np.argsort(-sims, kind="stable")[:k]
        out[query.id] = CandidateList(query_id=query.id, candidates=[
            Candidate(chunk_id=ids[i], score=float(sims[i]), rank=r) for r, i in enumerate(top)])  # fmt: skip
    return out


def real_ndcg(score, docs: dict[str, str], evaluated: list, tops: list[list[str]]) -> list[float]:
    """nDCG@10 of each real question's dense top-20 reordered by ``score`` (a ``Cosines``)."""
    score.prepare([docs[d] for top in tops for d in top])
    out = []
    for top, (question, rel) in zip(tops, evaluated, strict=True):
        s = score(question, [docs[d] for d in top])
        out.append(ndcg([top[i] for i in np.argsort(-s, kind="stable")], rel))
    return out


def append_row(run: Path, out: dict) -> None:
    """One result row, appended to RUN_DIR/dev_signal.jsonl."""
    with (run / "dev_signal.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(out) + "\n")


def interpolate(base: Path | str, tuned: Path, alpha: float, out: Path) -> Path:
    """The weights (1 - alpha) * base + alpha * tuned (weight-space ensembling), saved as a folder."""
    from sentence_transformers import SentenceTransformer

    if not (out / "modules.json").is_file():
        model = SentenceTransformer(str(tuned), device="cpu")
        start = SentenceTransformer(str(base), device="cpu").state_dict()
        model.load_state_dict({k: (1 - alpha) * start[k] + alpha * v if v.is_floating_point() else v
                               for k, v in model.state_dict().items()})  # fmt: skip
        model.save(str(out))
    return out


def soup(folders: list[Path], out: Path) -> Path:
    """The uniform average of the fold models' weights (a model soup: every kept query seen by some of them)."""
    from sentence_transformers import SentenceTransformer

    if not (out / "modules.json").is_file():
        models = [SentenceTransformer(str(f), device="cpu") for f in folders]
        states = [m.state_dict() for m in models]
        models[0].load_state_dict({k: sum(s[k] for s in states) / len(states) if v.is_floating_point() else v
                                   for k, v in states[0].items()})  # fmt: skip
        models[0].save(str(out))
    return out


class Cosines:
    """A bi-encoder's cosine scorer with a memo of passage vectors (bf16 autocast on this CPU)."""

    def __init__(self, folder: Path | str) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), device="cpu")
        self.memo: dict[str, np.ndarray] = {}
        self.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)

    def prepare(self, texts: list[str]) -> None:
        todo = sorted({t for t in texts if t not in self.memo})
        if todo:
            with self.autocast():
                self.memo.update(zip(todo, self.model.encode(todo, normalize_embeddings=True, batch_size=32),
                                     strict=True))  # fmt: skip

    def __call__(self, query: str, texts: list[str]) -> np.ndarray:
        self.prepare(texts)
        with self.autocast():
            q = self.model.encode([query], normalize_embeddings=True)[0]
        return np.stack([self.memo[t] for t in texts]).astype(np.float32) @ q.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--target", required=True, choices=SOURCES)
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--wise", type=float, nargs="*", default=[0.5], help="interpolations of the build recipe")
    parser.add_argument("--served-only", action="store_true", help="only the build's own tuned first stage, real")
    parser.add_argument("--paired", nargs=2, metavar=("A", "B"), help="real gain of recipe B's fold-1 model over A's")
    args = parser.parse_args()
    require_data()
    from sentence_transformers import SentenceTransformer

    run = args.run_dir
    if args.served_only or args.paired:  # real questions only: models tuned before, no folds
        docs, evaluated, tops, dense = source_tops(SentenceTransformer(MINILM, device="cpu"), args.target,
                                                   limit=args.questions)  # fmt: skip
        if args.served_only:  # the build's own train/first_stage
            real = real_ndcg(Cosines(run / "train" / "first_stage"), docs, evaluated, tops)
            out = {"recipe": "the build's own tuned first stage", "target": args.target, "real": compare(real, dense)}
        else:  # two recipes' fold-1 models, tuned by an earlier run, on the same questions
            a, b = (real_ndcg(Cosines(run.parent / f".dev-signal-{run.name}" / f"{name}-fold0"), docs, evaluated,
                              tops) for name in args.paired)  # fmt: skip
            out = {"recipe": f"{args.paired[1]} over {args.paired[0]}", "target": args.target, "real": compare(b, a)}
        append_row(run, out)
        print(out)
        return
    cfg = read_json(run / "config.json")
    chunks = {c.id: c for c in read_jsonl(run / "parse" / "chunks.jsonl", Chunk)}
    queries = {q.id: q for q in read_jsonl(run / "queries" / "queries.jsonl", Query)}
    candidates = {c.query_id: c for c in read_jsonl(run / "mine" / "candidates.jsonl", CandidateList)}
    folds = folds_of(run, queries, chunks, args.folds)
    everyone = [q for fold in folds for q in fold]
    print(f"{len(everyone)} kept queries in {args.folds} folds of {[len(f) for f in folds]}")

    # the held-out lists: each kept query's untuned top 20 from the build's own index
    base = SentenceTransformer(MINILM, device="cpu")
    q_vectors = base.encode([queries[q].text for q in everyone], normalize_embeddings=True, batch_size=64)
    index = QdrantIndex(path=run / "mine" / "qdrant", url=None, collection=cfg["mine"]["collection"])
    try:
        hits = index.search(np.asarray(q_vectors, dtype=np.float32), k=20)
    finally:
        index.close()
    lists = {q: [c for c, _ in found] for q, found in zip(everyone, hits, strict=True)}

    def judged(order: list[str], query: Query) -> tuple[float, float]:
        if query.chunk_id not in order:
            return 0.0, 0.0
        file, at = chunk_position(query.chunk_id)
        near = {c: 1 for c in order if chunk_position(c)[0] == file and abs(chunk_position(c)[1] - at) <= NEIGHBOURS}
        return ndcg(order, {query.chunk_id: 1}), ndcg(order, near)

    def dev_values(score_of_fold) -> tuple[list[float], list[float]]:
        """(source-passage, answer-aware) nDCG@10 of every kept query, in ``everyone``'s order."""
        source, near = [], []
        for f, fold in enumerate(folds):
            score = score_of_fold(f)
            for query_id in fold:
                query, ids = queries[query_id], lists[query_id]
                order = ids if score is None else [ids[i] for i in np.argsort(
                    -np.asarray(score(query.text, [chunks[c].text for c in ids])), kind="stable")]  # fmt: skip
                s, n = judged(order, query)
                source.append(s)
                near.append(n)
        return source, near

    # real questions: the target's, dense top-20 over the whole corpus
    docs, evaluated, tops, dense = source_tops(base, args.target, limit=args.questions)

    def real_values(score) -> list[float]:
        return real_ndcg(score, docs, evaluated, tops)

    base_source, base_near = dev_values(lambda f: None)
    n_hold = len(folds[0])
    rows = []

    def record(name: str, fold_dirs: list[Path], seconds: float) -> None:
        scorers = [Cosines(d) for d in fold_dirs]
        source, near = dev_values(lambda f: scorers[f])
        real = real_values(scorers[0])
        soup_real = real_values(Cosines(soup(fold_dirs, fold_dirs[0].with_name(fold_dirs[0].name + "-soup"))))
        out = {
            "recipe": name,
            "target": args.target,
            "tune_seconds": round(seconds),
            "held-out": compare(source[:n_hold], base_source[:n_hold]),
            "cross-fit": compare(source, base_source),
            "near": compare(near, base_near),
            "real": compare(real, dense),
            "real, the fold models' soup": compare(soup_real, dense),
        }
        rows.append(out)
        append_row(run, out)
        print(name, {k: (v["gain"], v["p_greater"]) for k, v in out.items() if isinstance(v, dict)}, flush=True)

    work = run.parent / f".dev-signal-{run.name}"
    for name in args.recipes:
        lr, epochs, kind = RECIPES[name]
        fold_dirs, started = [], time.time()
        for f in range(args.folds):
            out = work / f"{name}-fold{f}"
            if not (out / "modules.json").is_file():
                seen = {q for g, fold in enumerate(folds) if g != f for q in fold}
                picked = [queries[q] for q in sorted(seen)]
                start, mined = MINILM, candidates
                if name == "round2":
                    start = work / f"build-fold{f}"
                    if not (start / "modules.json").is_file():
                        raise SystemExit(f"round2 tunes {start} again: run --recipes build first")
                    mined = remined(start, picked, chunks, cfg["mine"]["top_k"])
                tune(str(start), triplets(kind, picked, chunks, mined, cfg), out, learning_rate=lr, epochs=epochs,
                     batch_size=16, seed=13, device="cpu", bf16=True)  # fmt: skip
            fold_dirs.append(out)
        record(name, fold_dirs, time.time() - started)
        if name in ("build", "random", "lr5e-5x2"):
            for alpha in args.wise:
                wise = [interpolate(MINILM, d, alpha, work / f"{name}-wise{alpha}-fold{f}")
                        for f, d in enumerate(fold_dirs)]  # fmt: skip
                record(f"{name}, weights x{alpha} (weight-space ensemble with the untuned model)", wise, 0)
    if len(rows) > 2:
        real = [0.0] + [r["real"]["gain"] for r in rows]  # the first row: the untuned model
        for signal in ("held-out", "cross-fit", "near"):
            rho = spearmanr(real, [0.0] + [r[signal]["gain"] for r in rows]).statistic
            print(f"Spearman of {signal} with real over {len(rows) + 1} rows (untuned included): {rho:.2f}")


if __name__ == "__main__":
    main()
