"""Which packaged LLM can grade? Grading agreement with real labels and seconds per call, per model.

Reads MedQuAD (../shared/data/medquad-dev, in place) and, for a seeded sample of real questions, grades
three passages with rerankforge's own grading template and provider: the question's own answer (relevant),
another answer about the same focus (a hard negative: symptoms vs treatment of one disease), and an answer
about another focus (easy negative). Prints, per model: JSON failure rate, mean grade per kind, pairwise
accuracy (own answer graded above each negative), binary accuracy at grade >= 2, and seconds per call.

    .venv/bin/python benchmarks/llm_grading.py --questions 12 \
        --models gemma-3-270m-q4_k_m qwen2.5-coder-1.5b-instruct-q4_k_m
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "medquad-dev"


def load_triples(n: int, seed: int) -> list[tuple[str, dict[str, str]]]:
    corpus = {d["_id"]: d for d in map(json.loads, (DATA / "corpus.jsonl").read_text().splitlines())}
    queries = {q["_id"]: q["text"] for q in map(json.loads, (DATA / "queries.jsonl").read_text().splitlines())}
    qrels = [line.split("\t") for line in (DATA / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    by_title: dict[str, list[str]] = defaultdict(list)
    for doc_id, doc in corpus.items():
        by_title[doc["title"]].append(doc_id)
    rng = random.Random(seed)
    rng.shuffle(qrels)
    triples = []
    for query_id, doc_id, _ in qrels:
        own = corpus[doc_id]
        siblings = [d for d in by_title[own["title"]] if d != doc_id]
        if not siblings or len(own["text"]) > 1500:
            continue
        other = corpus[rng.choice(list(corpus))]
        triples.append(
            (
                queries[query_id],
                {"own": own["text"], "same_focus": corpus[rng.choice(siblings)]["text"], "other": other["text"]},
            )
        )
        if len(triples) == n:
            break
    return triples


def grade_all(model: str, triples: list[tuple[str, dict[str, str]]]) -> dict[str, object]:
    from rerankforge.llm.base import extract_json
    from rerankforge.llm.embedded import EmbeddedProvider
    from rerankforge.stages.grade import GRADE_SCHEMA, parse_grade
    from rerankforge.templates import load_template

    template = load_template("grade.jinja")
    provider = EmbeddedProvider(model, num_ctx=4096)
    grades: dict[str, list[int]] = defaultdict(list)
    failures, seconds, calls = 0, 0.0, 0
    wins = 0
    for query, passages in triples:
        got: dict[str, int] = {}
        for kind, passage in passages.items():
            messages = template.render(query=query, passage=passage[:1500], title=None, source="")
            started = time.perf_counter()
            reply = provider.chat_json(messages, GRADE_SCHEMA, max_tokens=24)
            seconds += time.perf_counter() - started
            calls += 1
            try:
                got[kind] = parse_grade(extract_json(reply.text))
            except (ValueError, TypeError, KeyError):
                failures += 1
                got[kind] = 0
            grades[kind].append(got[kind])
        wins += (got["own"] > got["same_focus"]) + (got["own"] > got["other"])
    provider.close()
    binary = sum(g >= 2 for g in grades["own"]) + sum(g < 2 for k in ("same_focus", "other") for g in grades[k])
    return {
        "model": model,
        "pairs": calls,
        "json_failures": failures,
        "mean_grade": {k: round(sum(v) / len(v), 2) for k, v in grades.items()},
        "pairwise_accuracy": round(wins / (2 * len(triples)), 3),
        "binary_accuracy": round(binary / calls, 3),
        "seconds_per_call": round(seconds / calls, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=["gemma-3-270m-q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m"])
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is not there (the shared MedQuAD slice)")
        sys.exit(0)
    triples = load_triples(args.questions, args.seed)
    print(f"{len(triples)} real MedQuAD questions x (own answer, same-focus answer, other answer)")
    for model in args.models:
        print(json.dumps(grade_all(model, triples)), flush=True)


if __name__ == "__main__":
    main()
