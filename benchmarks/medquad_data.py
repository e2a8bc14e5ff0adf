"""MedQuAD (../shared/data/medquad-dev), read in place: the labelled slices the benchmarks evaluate on."""

from __future__ import annotations

import random
import sys
from collections import defaultdict
from pathlib import Path

from rerankforge.evaluation import LabelledData, load_labels

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "medquad-dev"


def require_data() -> None:
    """Exit with a message (status 0: nothing to measure) when the shared MedQuAD folder is absent."""
    if not (DATA / "docs").is_dir():
        print(f"skipped: MedQuAD is not at {DATA} (the benchmark reads ../shared/data/medquad-dev in place)")
        sys.exit(0)


def medquad_slice(foci: int, seed: int) -> LabelledData:
    """Every answer of ``foci`` seeded foci, and the questions whose answers they are.

    Each question then competes with the other answers about its own focus (symptoms vs causes vs
    treatment): the hard part a reranker is for.
    """
    full = load_labels(DATA)
    by_focus: dict[str, list[str]] = defaultdict(list)
    for doc_id, text in full.corpus.items():
        by_focus[text.split("\n", 1)[0]].append(doc_id)
    picked = random.Random(seed).sample(sorted(by_focus), foci)
    corpus = {d: full.corpus[d] for focus in picked for d in by_focus[focus]}
    qrels = {q: docs for q, docs in full.qrels.items() if set(docs) <= set(corpus)}
    return LabelledData(
        source=f"{DATA} ({foci} foci, seed {seed})",
        format="beir",
        corpus=corpus,
        queries={q: full.queries[q] for q in qrels},
        qrels=qrels,
        labels=sum(len(d) for d in qrels.values()),
    )
