"""A build's tuned first stage against the untuned one as retrievers over the whole MedQuAD corpus, on real
questions: nDCG@10 and Recall@20/50/100 with the paired two-sided t-test and wins/ties/losses, on the same 500
questions as the rerank rows of ``medquad_scorer.py`` (corpus = title + text, seed 42), and per source.

    .venv/bin/python benchmarks/medquad_retrieval.py RUN_DIR [--per-source 300]

What ``rerankforge eval RUN_DIR --retriever --data ../shared/data/medquad-dev`` measures, on the rerank rows'
questions. Prints one table per question set; the figures are also written to RUN_DIR/medquad_retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medquad_data import require_data
from medquad_scorer import SOURCES, real_questions, source_of

from rerankforge.evaluation.retrieval import first_stages, retrieval_table
from rerankforge.serve.runtime import usable_cores


class Embedded:
    """An embedder whose document vectors are computed once: every question set searches the same corpus."""

    def __init__(self, embedder) -> None:
        self.embedder = embedder
        self.documents = None

    def embed(self, texts: list[str], kind: str):
        if kind == "query":
            return self.embedder.embed(texts, "query")
        if self.documents is None or len(self.documents) != len(texts):
            self.documents = self.embedder.embed(texts, "document")
        return self.documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--per-source", type=int, default=300)
    args = parser.parse_args()
    require_data()
    docs, evaluated, _ = real_questions(args.queries, args.per_source)
    embedders, note = first_stages(args.run_dir, usable_cores())
    embedders = {name: Embedded(e) for name, e in embedders.items()}
    sets = {f"the {args.queries}": evaluated[: args.queries]}
    for source in SOURCES:
        sets[f"{source} ({args.per_source})"] = [
            (q, rel) for q, rel in evaluated if source_of(next(iter(rel))) == source
        ]
    results = {}
    started = time.time()
    for name, questions in sets.items():
        queries = {q: q for q, _ in questions}
        qrels = {q: dict(rel) for q, rel in questions}
        results[name] = retrieval_table(docs, queries, qrels, embedders, k=10, baseline="untuned")
    print(f"tuned first stage: {note}; {len(docs)} documents; {time.time() - started:.0f} s")
    for name, result in results.items():
        print(f"\n{name} questions ({result['queries']})")
        metrics = list(result["means"]["tuned"])
        print(f"{'':10s}" + "".join(f"{m:>22s}" for m in metrics))
        for system in ("untuned", "tuned"):
            print(f"{system:10s}" + "".join(f"{result['means'][system][m]:22.4f}" for m in metrics))
        means, p_values, wtl = result["means"], result["p_values"]["tuned"], result["win_tie_loss"]["tuned"]
        cells = [
            f"{means['tuned'][m] - means['untuned'][m]:+.4f} p {p_values[m]:.2g} {wtl[m]['W']}/{wtl[m]['L']}"
            for m in metrics
        ]
        gain = "".join(cell.rjust(22) for cell in cells)
        print(f"{'gain':10s}" + gain)
    (args.run_dir / "medquad_retrieval.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
