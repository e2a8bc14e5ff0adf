"""Query-writing calls per minute of the embedded LLM with parallel sequences (llama.cpp slots), on a build's
own prompts: the first ``--calls`` chunks the queries stage samples, written with the build's template, styles
and examples, through the provider's own call path, ``--parallel`` calls in flight (the provider's slots).

    .venv/bin/python benchmarks/llm_parallel.py RUN_DIR [--calls 16] [--parallel 1,2,4]

RUN_DIR needs only a parse stage (its chunks and config). Run it on a quiet machine: one setting after the
other in one process, figures as ratios within the run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rerankforge.artifacts import Chunk, read_jsonl
from rerankforge.config import BuildConfig
from rerankforge.llm.base import extract_json
from rerankforge.llm.embedded import EmbeddedProvider
from rerankforge.llm.hosts import map_ordered
from rerankforge.stages.queries import assign_styles, load_examples, queries_schema, sample_chunks
from rerankforge.templates import load_template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--calls", type=int, default=16)
    parser.add_argument("--parallel", default="1,2,4")
    args = parser.parse_args()
    cfg = BuildConfig.model_validate(json.loads((args.run_dir / "config.json").read_text(encoding="utf-8")))
    q = cfg.queries
    chunks = read_jsonl(args.run_dir / "parse" / "chunks.jsonl", Chunk)
    sample = sample_chunks(chunks, q.max_queries, cfg.train.seed)[: args.calls]
    styles = assign_styles(len(sample), q.styles, cfg.train.seed)
    template, examples, schema = load_template(q.template), load_examples(q), queries_schema(q)
    calls = [
        template.render(passage=c.text, title=c.title, source=c.source, examples=examples, n=q.per_chunk, style=s)
        for c, s in zip(sample, styles, strict=True)
    ]
    answers: dict[int, list[str]] = {}
    print("| parallel | calls | wall s | s per call | calls per min | output tok | valid JSON | x of parallel 1 |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for parallel in [int(p) for p in args.parallel.split(",")]:
        provider = EmbeddedProvider(None, num_ctx=cfg.llm.num_ctx, parallel=parallel)
        provider._chat(calls[0], schema, q.max_tokens)  # warm-up: first touch of the weights
        start = time.perf_counter()
        replies = list(map_ordered(lambda m, p=provider: p._chat(m, schema, q.max_tokens), calls, parallel))
        wall = time.perf_counter() - start
        valid = 0
        for reply in replies:
            try:
                valid += isinstance(extract_json(reply.text).get("queries"), list)
            except (ValueError, AttributeError):
                pass
        answers[parallel] = [r.text for r in replies]
        per_min = 60 * len(calls) / wall
        base = base or per_min
        out_tokens = sum(r.output_tokens for r in replies) / len(replies)
        print(f"| {parallel} | {len(calls)} | {wall:.1f} | {wall / len(calls):.2f} | {per_min:.1f} | "
              f"{out_tokens:.0f} | {valid}/{len(calls)} | {per_min / base:.2f} |", flush=True)  # fmt: skip
        provider.close()
        del provider
    first = min(answers)
    for parallel, texts in answers.items():
        if parallel != first:
            same = sum(a == b for a, b in zip(answers[first], texts, strict=True))
            print(f"parallel {parallel}: {same} of {len(texts)} answers the same as parallel {first}")


if __name__ == "__main__":
    main()
