"""The served scorer against the first stage on real MedQuAD questions, one row per recipe.

Each row reorders the same candidates: the dense (all-MiniLM-L6-v2) top-20 of the same seeded 500 real
questions that ../shared/tools/served_quality.py samples (corpus = title + text, seed 42), and reports
nDCG@10 with the paired one-sided t-test against dense, wins and losses. Next to it, the dev signal the build
chooses on (its held-out synthetic queries judged by their own source passage among the untuned first
stage's top 20), so the agreement of the two can be read over the rows (Spearman).

    .venv/bin/python benchmarks/medquad_scorer.py RUN_DIR                 # dense, served, the build's parts
    .venv/bin/python benchmarks/medquad_scorer.py RUN_DIR --recipes lr5e-5:5e-5:1 --oracle 300

A recipe NAME:LR:EPOCHS[:SHARE[:NEGATIVES[:STYLES[:TITLED]]]] tunes the bi-encoder again on the build's training
triplets (SHARE of the training queries, for a learning curve; NEGATIVES: ``build``, the build's rule,
``dense``, the best other candidate whatever its grade, ``random``, a chunk of another file, or ``samefile``, the
build's rule with the source file's other candidates first; a count after it, ``build3``, gives each query that
many negatives; STYLES: only
the queries of these styles, joined by +, e.g. ``question``, or ``all``; TITLED: ``titled`` puts each
passage's section title on top of its text where the text does not name it); ``--oracle N`` tunes it on N real
questions that are not among the evaluated ones, with their own answers as positives (never the product's
path: it separates the training design from the synthetic data's quality). Rows are appended to
RUN_DIR/scorer_results.jsonl, and each row's per-question values to RUN_DIR/scorer_values.json, so that two rows
compare paired on the same questions (all 500, then each source):

    .venv/bin/python benchmarks/medquad_scorer.py RUN_DIR --paired "served scorer (the build's choice)" samefile3
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

import numpy as np
from medquad_data import DATA, require_data
from scipy.stats import spearmanr, ttest_rel

from rerankforge.artifacts import CandidateList, Chunk, Judgment, Query, read_json, read_jsonl
from rerankforge.index.qdrant import QdrantIndex
from rerankforge.index.vector_cache import VectorCache
from rerankforge.models import resolve_model
from rerankforge.serve.runtime import Reranker
from rerankforge.training.bi_encoder import training_triplets, tune

MINILM = resolve_model("all-MiniLM-L6-v2")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


SOURCES = ("CancerGov", "GARD", "GHR")  # medquad-dev's three sources: a document id starts with its source


def source_of(doc_id: str) -> str:
    return doc_id.split("_", 1)[0]


def real_questions(
    max_queries: int, per_source: int = 0
) -> tuple[dict[str, str], list[tuple[str, dict[str, int]]], list]:
    """corpus, the evaluated (question, qrels) in served_quality.py's order, and the rest for the oracle.

    With ``per_source``, each source's questions are topped up from the same seeded order until it has that many
    among the evaluated (the first ``max_queries`` stay first: they are the 500 of the overall rows)."""
    docs = {d["_id"]: (d.get("title", "") + ". " + d["text"]).strip(". ") for d in jsonl(DATA / "corpus.jsonl")}
    text = {q["_id"]: q["text"] for q in jsonl(DATA / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    for line in open(DATA / "qrels" / "test.tsv", encoding="utf-8"):
        q, d, g = line.rstrip("\n").split("\t")[:3]
        if q != "query-id" and int(g) > 0 and d in docs:
            qrels.setdefault(text[q], {})[d] = int(g)
    picked = sorted(qrels)
    random.Random(42).shuffle(picked)
    evaluated = picked[:max_queries]
    if per_source:
        counts = {source: 0 for source in SOURCES}
        for q in evaluated:
            counts[source_of(next(iter(qrels[q])))] += 1
        for q in picked[max_queries:]:
            source = source_of(next(iter(qrels[q])))
            if counts[source] < per_source:
                evaluated.append(q)
                counts[source] += 1
    chosen = set(evaluated)
    return docs, [(q, qrels[q]) for q in evaluated], [(q, qrels[q]) for q in picked if q not in chosen]


def ndcg(ranked: list[str], rel: dict[str, int]) -> float:
    dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rel.values(), reverse=True)[:10]
    return dcg / sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))


class Bench:
    def __init__(self, run_dir: Path, max_queries: int, k: int, bf16: bool = False, per_source: int = 0) -> None:
        from sentence_transformers import SentenceTransformer

        self.run_dir = run_dir
        self.bf16 = bf16
        self.train_bf16 = False  # the recipes' tuning in bf16 autocast (--train-bf16)
        self.docs, self.evaluated, self.rest = real_questions(max_queries, per_source)
        self.overall = min(max_queries, len(self.evaluated))  # the first ones: the overall rows' questions
        self.sources = [source_of(next(iter(rel))) for _, rel in self.evaluated]
        self.ids = list(self.docs)
        self.base = SentenceTransformer(MINILM, device="cpu")
        started = time.time()
        vectors = VectorCache(MINILM).embed(
            [self.docs[i] for i in self.ids],
            lambda todo: self.base.encode(todo, normalize_embeddings=True, batch_size=64),
        )
        print(f"corpus vectors: {len(self.ids)} in {time.time() - started:.0f} s")
        self.vectors = vectors
        questions = [q for q, _ in self.evaluated]
        q_vectors = self.base.encode(questions, normalize_embeddings=True, batch_size=64)
        self.top = [[self.ids[i] for i in np.argsort(-(vectors @ v), kind="stable")[:k]] for v in q_vectors]
        self.dense = [ndcg(top, rel) for top, (_, rel) in zip(self.top, self.evaluated, strict=True)]

    def rerank(self, score: object) -> list[float]:
        """nDCG@10 per question of the candidates reordered by ``score(question, texts)``."""
        values = []
        for top, (question, rel) in zip(self.top, self.evaluated, strict=True):
            scores = np.asarray(score(question, [self.docs[d] for d in top]))  # type: ignore[operator]
            values.append(ndcg([top[i] for i in np.argsort(-scores, kind="stable")], rel))
        return values

    def precision(self) -> object:
        """bf16 autocast for the tuned bi-encoders' passages (``--bf16``: about 2x faster on this CPU, cosines
        within 1e-4 of fp32); the dense baseline always comes from the fp32 corpus vectors."""
        import contextlib

        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def bi_encoder_scores(self, model: object) -> object:
        """Cosine scores of ``model``; every distinct passage is embedded once, all the candidates up front (one
        sorted pass instead of 500 small ones: the row's cost is the embedding of about 10,000 passages)."""
        memo: dict[str, np.ndarray] = {}

        def embed(texts: list[str]) -> None:
            todo = sorted({t for t in texts if t not in memo})
            if todo:
                with self.precision():
                    vectors = model.encode_document(todo, normalize_embeddings=True, batch_size=32)  # type: ignore[attr-defined]
                memo.update(zip(todo, vectors, strict=True))

        embed([self.docs[d] for top in self.top for d in top])

        def score(question: str, texts: list[str]) -> np.ndarray:
            embed(texts)
            q = model.encode_query([question], normalize_embeddings=True)[0]  # type: ignore[attr-defined]
            return np.stack([memo[t] for t in texts]) @ q

        return score

    def dev_signal(self, score: object | None) -> dict[str, float]:
        """The build's held-out queries judged by their source passage among the untuned top 20 (its choice)."""
        split = build_split(self.run_dir)
        chunks = {c.id: c for c in read_jsonl(self.run_dir / "parse" / "chunks.jsonl", Chunk)}
        queries = {q.id: q for q in read_jsonl(self.run_dir / "queries" / "queries.jsonl", Query)}
        dev = [queries[i] for i in read_json(split)["dev"]]  # type: ignore[arg-type]
        vectors = self.base.encode_query([q.text for q in dev], normalize_embeddings=True)
        index = QdrantIndex(path=self.run_dir / "mine" / "qdrant", url=None, collection="rerankforge_chunks")
        try:
            hits = index.search(np.asarray(vectors, dtype=np.float32), k=20)
        finally:
            index.close()
        values, near = [], []
        for query, found in zip(dev, hits, strict=True):
            ids = [cid for cid, _ in found]
            if score is None:
                order = ids
            else:
                scores = score(query.text, [chunks[c].text for c in ids])  # type: ignore[operator]
                order = [ids[i] for i in np.argsort(-np.asarray(scores), kind="stable")]
            values.append(ndcg(order, {query.chunk_id: 1}) if query.chunk_id in ids else 0.0)
            # the same lists judged answer-aware: the source's neighbours in its file (often the same answer cut
            # in pieces) count as relevant too, so separating the pieces of one answer earns nothing
            file, index = chunk_position(query.chunk_id)
            rel = {c: 1 for c in ids
                   if chunk_position(c)[0] == file and abs(chunk_position(c)[1] - index) <= NEIGHBOURS}  # fmt: skip
            near.append(ndcg(order, rel) if query.chunk_id in ids else 0.0)
        out = {"dev": round(float(np.mean(values)), 4), "dev_near": round(float(np.mean(near)), 4)}
        if score is None:
            self.dev_base = (values, near)
        elif getattr(self, "dev_base", None):  # the floor's test on each signal: one-sided paired t-test
            for name, mine, base in (("dev", values, self.dev_base[0]), ("dev_near", near, self.dev_base[1])):
                diffs = np.asarray(mine) - np.asarray(base)
                p = float(ttest_rel(mine, base, alternative="greater").pvalue) if np.any(diffs != 0) else None
                out[f"{name}_gain"], out[f"{name}_p"] = round(float(diffs.mean()), 4), p
        for style in sorted({q.style for q in dev if q.style}):  # each query style's own signal
            mine = [v for v, q in zip(values, dev, strict=True) if q.style == style]
            out[f"dev_{style}"] = round(float(np.mean(mine)), 4)
        for source in SOURCES:  # and each source's, by the file its passage came from
            mine = [v for v, q in zip(values, dev, strict=True)
                    if Path(chunks[q.chunk_id].source).name.startswith(source)]  # fmt: skip
            if mine:
                out[f"dev_{source}"] = round(float(np.mean(mine)), 4)
        return out


def source_tops(encoder: object, target: str, per_source: int = 100_000, limit: int = 0) -> tuple:
    """(corpus, the target source's evaluated (question, qrels) in ``served_quality.py``'s order, at most ``limit``
    of them (0: all), each one's dense top-20 over the whole corpus, and dense's nDCG@10 per question)."""
    docs, evaluated, _ = real_questions(500, per_source)
    evaluated = [(q, rel) for q, rel in evaluated if source_of(next(iter(rel))) == target]
    evaluated = evaluated[:limit] if limit else evaluated
    ids = list(docs)
    vectors = VectorCache(MINILM).embed(
        [docs[i] for i in ids],
        lambda todo: encoder.encode(todo, normalize_embeddings=True, batch_size=64),  # type: ignore[attr-defined]
    )
    q_vectors = encoder.encode([q for q, _ in evaluated], normalize_embeddings=True, batch_size=64)  # type: ignore[attr-defined]
    tops = [[ids[i] for i in np.argsort(-(vectors @ v), kind="stable")[:20]] for v in q_vectors]
    dense = [ndcg(top, rel) for top, (_, rel) in zip(tops, evaluated, strict=True)]
    return docs, evaluated, tops, dense


def compare(values: list[float], dense: list[float]) -> dict[str, object]:
    """nDCG@10 against dense on the same questions: gain, the paired one-sided t-test, wins and losses."""
    d = np.asarray(values) - np.asarray(dense)
    p = float(ttest_rel(values, dense, alternative="greater").pvalue) if np.any(d != 0) else None
    return {
        "ndcg@10": round(float(np.mean(values)), 4),
        "dense": round(float(np.mean(dense)), 4),
        "gain": round(float(d.mean()), 4),
        "p_greater": p,
        "wins": int((d > 0).sum()),
        "losses": int((d < 0).sum()),
        "questions": len(values),
    }


def row(bench: Bench, name: str, values: list[float], **extra: object) -> dict:
    n = bench.overall
    out: dict[str, object] = {"recipe": name, **compare(values[:n], bench.dense[:n]), **extra}
    if len(values) > n:  # --per-source: each source on its own questions
        out["per_source"] = {
            source: compare(
                [v for v, s in zip(values, bench.sources, strict=True) if s == source],
                [v for v, s in zip(bench.dense, bench.sources, strict=True) if s == source],
            )
            for source in SOURCES
        }
    print(json.dumps(out))
    with open(bench.run_dir / "scorer_results.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(out) + "\n")
    # each question's nDCG@10, in the same order for every row, so that two rows can be compared paired
    # (``paired_rows``): rerunning a row replaces its values
    saved = bench.run_dir / "scorer_values.json"
    every = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
    every.update(sources=bench.sources, overall=bench.overall)
    every[name] = [round(float(v), 6) for v in values]
    saved.write_text(json.dumps(every), encoding="utf-8")
    return out


def paired_rows(run_dir: Path, a: str, b: str) -> None:
    """Row ``a`` against row ``b`` on the same questions (all, then each source): gain, one-sided p, wins / losses."""
    every = json.loads((run_dir / "scorer_values.json").read_text(encoding="utf-8"))
    if "sources" not in every:
        raise SystemExit(f"{run_dir}/scorer_values.json has no question sources: rerun a row with this version")
    missing = [name for name in (a, b) if name not in every]
    if missing:
        saved = sorted(set(every) - {"sources", "overall"})
        raise SystemExit(f"no saved row {missing} in {run_dir}/scorer_values.json; saved rows: {saved}")
    sources = every["sources"]
    n = every["overall"]
    print(json.dumps({"a": a, "b": b, "all": compare(every[a][:n], every[b][:n])}))
    for source in SOURCES:
        pick = [i for i, s in enumerate(sources) if s == source]
        print(json.dumps({"source": source, **compare([every[a][i] for i in pick], [every[b][i] for i in pick])}))


# the build's rule; the best other candidate, grades ignored; another file; the build's rule with the source file's
# other chunks first. A count after the name (``build3``) asks for that many negatives per query.
# none: the batch's other passages only; samefar: samefile without the source's neighbours (two chunks either side
# in its file: often the same answer cut in pieces, a false negative)
NEGATIVES = ("build", "dense", "random", "samefile", "samefar", "none")
NEIGHBOURS = 2


def chunk_position(chunk_id: str) -> tuple[str, int]:
    """(file, index) of a chunk id ``file#index``."""
    source, _, index = chunk_id.rpartition("#")
    return source, int(index) if index.isdigit() else -1


def without_neighbours(candidates: dict[str, CandidateList], queries: list[Query]) -> dict[str, CandidateList]:
    source = {q.id: chunk_position(q.chunk_id) for q in queries}
    kept = {}
    for query_id, found in candidates.items():
        if query_id not in source:
            continue
        file, index = source[query_id]
        far = [c for c in found.candidates
               if c.chunk_id == f"{file}#{index}" or chunk_position(c.chunk_id)[0] != file
               or abs(chunk_position(c.chunk_id)[1] - index) > NEIGHBOURS]  # fmt: skip
        kept[query_id] = found.model_copy(update={"candidates": far})
    return kept


def build_split(run_dir: Path) -> Path:
    """The train stage's split.json; for a build stopped after grading (``--until grade``), the same split
    made here with the train stage's own rule and the run's config (whole files held out)."""
    path = run_dir / "train" / "split.json"
    if not path.is_file():
        from rerankforge.artifacts import write_json
        from rerankforge.stages.train import split_queries

        cfg = read_json(run_dir / "config.json")
        chunks = {c.id: c for c in read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)}
        queries = read_jsonl(run_dir / "queries" / "queries.jsonl", Query)
        judgments = build_judgments(run_dir)
        bad = {j.query_id for j in judgments if j.grade < cfg["grade"]["positive_min_grade"]}
        relevant = sorted(q.id for q in queries if q.id not in bad)  # ungraded queries count as fitting
        files = {q.id: chunks[q.chunk_id].source for q in queries}
        train, dev = split_queries(relevant, cfg["train"]["dev_fraction"], cfg["train"]["seed"], files=files)
        path.parent.mkdir(exist_ok=True)
        write_json(path, {"train": train, "dev": dev})
    return path


def build_judgments(run_dir: Path) -> list[Judgment]:
    """The grade stage's judgments; none for a build stopped before grading (every kept query then counts as
    fitting its source passage, as the grader said of all of them in the measured builds)."""
    path = run_dir / "grade" / "judgments.jsonl"
    return read_jsonl(path, Judgment) if path.is_file() else []


def titled(chunk: Chunk) -> Chunk:
    """The chunk with its section title on top where its text does not already name it (as retrievers often
    index, and as MedQuAD's answers come: title + text)."""
    if not chunk.title or chunk.title.lower() in chunk.text.lower():
        return chunk
    return chunk.model_copy(update={"text": f"{chunk.title}\n{chunk.text}"})


def synthetic_triplets(
    run_dir: Path,
    share: float,
    cfg: dict,
    negatives: str = "build",
    styles: set[str] | None = None,
    with_titles: bool = False,
) -> list[dict[str, str]]:
    chunks = {c.id: titled(c) if with_titles else c for c in read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)}
    queries = read_jsonl(run_dir / "queries" / "queries.jsonl", Query)
    train = set(read_json(build_split(run_dir))["train"])
    kept = [q for q in queries if q.id in train and (not styles or q.style in styles)]
    kept = kept[: max(2, round(len(kept) * share))]
    candidates = {c.query_id: c for c in read_jsonl(run_dir / "mine" / "candidates.jsonl", CandidateList)}
    judgments = build_judgments(run_dir)
    matched = re.fullmatch(r"([a-z]+)(\d*)", negatives)
    kind, count = matched.groups() if matched else ("", "")
    if kind not in NEGATIVES:
        raise SystemExit(f"unknown negatives {negatives!r}: one of {', '.join(NEGATIVES)}, optionally with a count")
    negatives = kind
    if negatives in ("dense", "random"):  # keep the source's grade (it filters bad queries), forget the others
        source = {q.id: q.chunk_id for q in queries}
        judgments = [j for j in judgments if source[j.query_id] == j.chunk_id]
    if negatives == "random":
        candidates = {}
    if negatives == "none":
        count = "0"
    if negatives == "samefar":
        candidates = without_neighbours(candidates, queries)
    return training_triplets(
        kept,
        chunks,
        candidates,
        judgments,
        positive_min_grade=cfg["grade"]["positive_min_grade"],
        negative_max_grade=cfg["grade"]["negative_max_grade"],
        seed=13,
        negatives=int(count) if count else 1,
        same_file_first=negatives in ("samefile", "samefar"),
    )


def remined_triplets(run_dir: Path, model_dir: Path, cfg: dict, negatives: int, bf16: bool) -> list[dict[str, str]]:
    """A second round at no LLM cost (self-training): the training queries' candidates mined again over every
    chunk by the first round's tuned bi-encoder, and the build's rule on them (the source file's first where the
    build's ``train.first_stage_same_file`` says so, as it did by default before 2026-12-07)."""
    import contextlib

    import torch
    from sentence_transformers import SentenceTransformer

    from rerankforge.artifacts import Candidate

    model = SentenceTransformer(str(model_dir), device="cpu")
    chunk_list = read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)
    chunks = {c.id: c for c in chunk_list}
    queries = read_jsonl(run_dir / "queries" / "queries.jsonl", Query)
    train = set(read_json(build_split(run_dir))["train"])
    kept = [q for q in queries if q.id in train]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    started = time.time()
    with autocast:
        docs = model.encode_document([c.text for c in chunk_list], normalize_embeddings=True, batch_size=64)
        vectors = model.encode_query([q.text for q in kept], normalize_embeddings=True, batch_size=64)
    print(f"round 2: {len(chunk_list)} chunks and {len(kept)} queries embedded in {time.time() - started:.0f} s")
    top_k = cfg["mine"]["top_k"]
    candidates = {}
    for query, vector in zip(kept, vectors, strict=True):
        scores = docs @ vector
        best = np.argsort(-scores)[:top_k]
        candidates[query.id] = CandidateList(
            query_id=query.id,
            candidates=[
                Candidate(chunk_id=chunk_list[i].id, score=float(scores[i]), rank=r) for r, i in enumerate(best)
            ],
        )
    return training_triplets(kept, chunks, candidates, build_judgments(run_dir),
                             positive_min_grade=cfg["grade"]["positive_min_grade"],
                             negative_max_grade=cfg["grade"]["negative_max_grade"], seed=13, negatives=negatives,
                             same_file_first=cfg["train"].get("first_stage_same_file", True))  # fmt: skip


def oracle_triplets(bench: Bench, n: int) -> list[dict[str, str]]:
    rows = []
    for question, rel in bench.rest[:n]:
        v = bench.base.encode([question], normalize_embeddings=True)[0]
        top = [bench.ids[i] for i in np.argsort(-(bench.vectors @ v))[:10]]
        negative = next((d for d in top if d not in rel), None)
        if negative:
            rows.append({"anchor": question, "positive": bench.docs[next(iter(rel))], "negative": bench.docs[negative]})
    return rows


def tuned_row(bench: Bench, name: str, rows: list[dict[str, str]], lr: float, epochs: float, **extra: object) -> dict:
    from sentence_transformers import SentenceTransformer

    out = bench.run_dir.parent / f"bench-bi-{name}"
    started = time.time()
    stats = tune(MINILM, rows, out, learning_rate=lr, epochs=epochs, batch_size=16, seed=13, device="cpu",
                 bf16=bench.train_bf16)  # fmt: skip
    seconds = round(time.time() - started)
    model = SentenceTransformer(str(out), device="cpu")
    score = bench.bi_encoder_scores(model)
    return row(bench, name, bench.rerank(score), **bench.dev_signal(score),
               tune_seconds=seconds, **stats, **extra)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--per-source", type=int, default=0, help="also each source on this many of its questions")
    parser.add_argument("--recipes", nargs="*", default=[], help="NAME:LR:EPOCHS[:SHARE[:NEGATIVES[:STYLES[:TITLED]]]]")
    parser.add_argument("--oracle", type=int, nargs="*", default=[], help="real training questions (oracle rows)")
    parser.add_argument("--skip-build-rows", action="store_true", help="only the recipes and oracle rows")
    parser.add_argument("--second-round", nargs="*", default=[], help="recipes (or 'build') tuned again, re-mined")
    parser.add_argument("--skip-cross-encoder", action="store_true", help="no cross-encoder-alone row")
    parser.add_argument("--bf16", action="store_true", help="tuned bi-encoders embed in bf16 (about 2x faster)")
    parser.add_argument("--control", action="store_true", help="the untuned bi-encoder through the rows' own path")
    parser.add_argument("--train-bf16", action="store_true", help="the recipes' tuning in bf16 autocast")
    parser.add_argument("--paired", nargs=2, metavar=("A", "B"), help="only compare two saved rows, paired")
    args = parser.parse_args()
    if args.paired:
        paired_rows(args.run_dir, *args.paired)
        return
    require_data()
    bench = Bench(args.run_dir, args.queries, args.top_k, bf16=args.bf16, per_source=args.per_source)
    bench.train_bf16 = args.train_bf16
    cfg = read_json(args.run_dir / "config.json")
    results = [row(bench, "dense first stage (all-MiniLM-L6-v2)", bench.dense, **bench.dev_signal(None))]
    if not args.skip_build_rows:
        model_dir = args.run_dir / "model"
        served = Reranker(model_dir)
        results.append(row(bench, "served scorer (the build's choice)", bench.rerank(served.logits),
                           **bench.dev_signal(served.logits), scorer=served.scorer))  # fmt: skip
        if not args.skip_cross_encoder:  # about 10,000 cross-encoder pairs: the slowest row
            alone = Reranker(model_dir, cross_encoder_only=True)
            values = bench.rerank(alone.logits)
            results.append(row(bench, "cross-encoder alone", values, **bench.dev_signal(alone.logits)))
        tuned_dir = args.run_dir / "train" / "first_stage"
        if tuned_dir.is_dir():
            from sentence_transformers import SentenceTransformer

            score = bench.bi_encoder_scores(SentenceTransformer(str(tuned_dir), device="cpu"))
            results.append(
                row(bench, "tuned first stage (the build's)", bench.rerank(score), **bench.dev_signal(score))
            )
    if args.control:  # what the rows' own embedding path gives the untuned model: their zero
        score = bench.bi_encoder_scores(bench.base)
        values = bench.rerank(score)
        results.append(row(bench, "untuned bi-encoder, the rows' path", values, **bench.dev_signal(score)))
    for recipe in args.recipes:
        name, lr, epochs, *rest = recipe.split(":")
        fraction = float(rest[0]) if rest else 1.0
        negatives = rest[1] if len(rest) > 1 else "build"
        styles = set(rest[2].split("+")) - {"all"} if len(rest) > 2 else None
        with_titles = len(rest) > 3 and rest[3] == "titled"
        rows = synthetic_triplets(args.run_dir, fraction, cfg, negatives, styles, with_titles)
        results.append(tuned_row(bench, name, rows, float(lr), float(epochs), share=fraction, negatives=negatives,
                                 styles=sorted(styles) if styles else "all", titled=with_titles))  # fmt: skip
    for name in args.second_round:  # after the recipe NAME: its model mines the negatives of a second tuning
        if name == "build":  # the build's own tuned first stage mines, and the build's settings tune again
            lr, epochs = cfg["train"]["first_stage_learning_rate"], cfg["train"]["first_stage_epochs"]
            first_model = args.run_dir / "train" / "first_stage"
        else:
            first = next(r for r in args.recipes if r.split(":")[0] == name).split(":")
            lr, epochs = float(first[1]), float(first[2])
            first_model = args.run_dir.parent / f"bench-bi-{name}"
        rows = remined_triplets(args.run_dir, first_model, cfg, cfg["train"]["first_stage_negatives"], args.bf16)
        same = "samefile" if cfg["train"].get("first_stage_same_file", True) else "build"
        results.append(tuned_row(bench, f"{name}-round2", rows, lr, epochs, negatives=f"remined {same}3"))
    for n in args.oracle:
        results.append(tuned_row(bench, f"oracle-{n}-real", oracle_triplets(bench, n), 5e-5, 2.0))
    for column in sorted({key for r in results for key in r if key.startswith("dev")}):
        paired = [r for r in results if r.get(column) is not None]
        if len(paired) >= 3:
            rho = spearmanr([r[column] for r in paired], [r["ndcg@10"] for r in paired]).statistic
            print(f"{column} vs real nDCG@10 over {len(paired)} rows: Spearman {rho:.3f}")


if __name__ == "__main__":
    main()
