"""How fast the embedded LLM answers a build's own prompts here, against llama.cpp's own speed on this CPU.

It loads the packaged model (or ``--model``) as the embedded provider does, once per setting, and asks the
prompts a build asks: query-writing calls (the few-shot template on sampled chunks) and grading calls (each
kept query against its source passage, in the grade stage's order, so queries of one passage follow each
other and share its prefix). Each call's figures are llama.cpp's own (its ``timings``): prompt tokens
computed and read from the prefix cache, prompt and generation milliseconds. "raw" is llama.cpp without our
requests: one 512-token prompt with no cache and 64 tokens generated with no grammar (what ``llama-bench``
calls pp512 / tg64), with the same threads. Run it on a quiet machine.

    .venv/bin/python benchmarks/llm_speed.py RUN_DIR [--calls 8] [--threads N] [--model GGUF]

RUN_DIR is a finished build's run folder (its chunks, config and kept queries give the prompts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import psutil

from rerankforge.artifacts import Chunk, Query, read_jsonl
from rerankforge.config import BuildConfig
from rerankforge.llm.embedded import EmbeddedProvider
from rerankforge.stages.grade import GRADE_SCHEMA
from rerankforge.stages.queries import few_shot, load_examples, pick_dynamic_examples, queries_schema, sample_chunks
from rerankforge.templates import load_template


def prompts(run_dir: Path, calls: int) -> tuple[list[tuple[list[dict], dict, int]], list[tuple[list[dict], dict, int]]]:
    """(messages, schema, max_tokens) of ``calls`` query-writing calls and ``calls`` grading calls of this build."""
    cfg = BuildConfig.model_validate(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
    chunks = read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)
    by_id = {c.id: c for c in chunks}
    kept = read_jsonl(run_dir / "queries" / "queries.jsonl", Query)
    q_cfg = cfg.queries
    template, examples, schema = load_template(q_cfg.template), load_examples(q_cfg), queries_schema(q_cfg)
    writing = []
    for i, chunk in enumerate(sample_chunks(chunks, q_cfg.max_queries, cfg.train.seed)[:calls]):
        dynamic = pick_dynamic_examples(kept, by_id, chunk.source, q_cfg.dynamic_examples, cfg.train.seed + i)
        messages = template.render(
            passage=chunk.text, title=chunk.title, source=chunk.source, examples=few_shot(examples, dynamic),
            n=q_cfg.per_chunk, style=next(iter(q_cfg.styles)),
        )  # fmt: skip
        writing.append((messages, schema, q_cfg.max_tokens))
    grade_template = load_template(cfg.grade.template)
    grading = []
    for query in sorted(kept, key=lambda q: (q.chunk_id, q.id))[:calls]:
        chunk = by_id[query.chunk_id]
        messages = grade_template.render(query=query.text, passage=chunk.text, title=chunk.title, source=chunk.source)
        grading.append((messages, GRADE_SCHEMA, cfg.grade.max_tokens))
    return writing, grading


def ask(provider: EmbeddedProvider, messages: list[dict], schema: dict, max_tokens: int) -> dict[str, float]:
    """One call as the provider makes it (its request body), with llama.cpp's timings and the wall time."""
    body = {
        "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "seed": 13,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    }  # fmt: skip
    start = time.perf_counter()
    response = provider._server.handle_chat_completions(body)
    wall = time.perf_counter() - start
    t = response["timings"]
    return {
        "wall": wall, "computed": t["prompt_n"], "cached": t["cache_n"], "prompt_s": t["prompt_ms"] / 1000,
        "generated": t["predicted_n"], "gen_s": t["predicted_ms"] / 1000,
        "text": response["choices"][0]["message"]["content"],
    }  # fmt: skip


def raw(provider: EmbeddedProvider) -> tuple[float, float]:
    """pp512 and tg64 tokens/s: a 512-token prompt without cache, 64 tokens generated without a grammar."""
    prompt = " ".join(["The liver filters the blood and stores energy."] * 60)
    ids = provider._server.handle_completions({"prompt": prompt, "n_predict": 0, "return_tokens": True})
    tokens = ids.get("tokens") or []
    body = {"prompt": tokens[:512] if len(tokens) >= 512 else prompt, "n_predict": 64, "cache_prompt": False,
            "ignore_eos": True, "temperature": 0.0}  # fmt: skip
    t = provider._server.handle_completions(body)["timings"]
    return t["prompt_per_second"], t["predicted_per_second"]


def summarize(name: str, rows: list[dict[str, float]]) -> dict[str, Any]:
    computed = sum(r["computed"] for r in rows)
    cached = sum(r["cached"] for r in rows)
    llama_s = sum(r["prompt_s"] + r["gen_s"] for r in rows)
    wall = sum(r["wall"] for r in rows)
    return {
        "calls": f"{name} x{len(rows)}",
        "s per call": statistics.mean(r["wall"] for r in rows),
        "prompt tok": (computed + cached) / len(rows),
        "prefix cache hit": cached / max(computed + cached, 1),
        "prompt tok/s": computed / max(sum(r["prompt_s"] for r in rows), 1e-9),
        "output tok": sum(r["generated"] for r in rows) / len(rows),
        "output tok/s": sum(r["generated"] for r in rows) / max(sum(r["gen_s"] for r in rows), 1e-9),
        "outside llama.cpp": (wall - llama_s) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--calls", type=int, default=8, help="query-writing and grading calls per setting")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", default=None, help="a GGUF path or packaged name (default: the packaged 1.5B)")
    parser.add_argument(
        "--settings",
        default="default,no-repack",
        help="comma-separated: default (the provider's own), no-repack, no-ram-cache (llama.cpp's RAM prompt cache)",
    )
    args = parser.parse_args()
    writing, grading = prompts(args.run_dir, args.calls)
    answers: dict[str, list[str]] = {}
    print(f"threads {args.threads}; {args.calls} calls of each kind; figures are llama.cpp's timings\n")
    header = ("setting", "calls", "s per call", "prompt tok", "prefix cache hit", "prompt tok/s", "output tok",
              "output tok/s", "outside llama.cpp")  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    raws, grown = {}, {}
    for setting in args.settings.split(","):
        provider = EmbeddedProvider(
            args.model,
            threads=args.threads,
            repack=setting != "no-repack",
            ram_cache_mib=0 if setting == "no-ram-cache" else None,
        )
        ask(provider, *grading[0])  # warm-up: first-touch of the weights, not counted
        provider._server.handle_completions({"prompt": "x", "n_predict": 0, "cache_prompt": False})
        rss = psutil.Process().memory_info().rss
        for name, calls in (("write queries", writing), ("grade", grading)):
            rows = [ask(provider, *call) for call in calls]
            answers[f"{setting} {name}"] = [r["text"] for r in rows]
            summary = summarize(name, rows)
            cells = [setting] + [
                f"{v:.1%}"
                if k in ("prefix cache hit", "outside llama.cpp")
                else (f"{v:.1f}" if isinstance(v, float) else v)
                for k, v in summary.items()
            ]
            print("| " + " | ".join(cells) + " |", flush=True)
        grown[setting] = (psutil.Process().memory_info().rss - rss) / 2**20
        raws[setting] = raw(provider)
        provider.close()
        del provider
    print()
    for setting, (pp, tg) in raws.items():
        print(f"raw llama.cpp, {setting}: pp512 {pp:.1f} tok/s, tg64 {tg:.1f} tok/s (no grammar, no cache)")
        print(f"  memory grown over its {2 * args.calls} calls: {grown[setting]:.0f} MiB")
    settings = args.settings.split(",")
    for other in settings[1:]:
        for name in ("write queries", "grade"):
            a, b = answers[f"{settings[0]} {name}"], answers[f"{other} {name}"]
            same = sum(x == y for x, y in zip(a, b, strict=True))
            print(f"{name}: {same} of {len(a)} answers the same with {settings[0]} and {other}")


if __name__ == "__main__":
    main()
