"""What LLM data generation costs on a fixed corpus and model, and what concurrency and the cache save.

Starts llama.cpp's OpenAI-compatible server (the ``xllamacpp`` wheel) on 127.0.0.1 with N parallel slots,
then builds the example documents up to the grade stage through rerankforge's ``openai`` provider:

1. at concurrency 1 (one call in flight),
2. at concurrency N (a fresh run folder: same calls, N in flight),
3. the second build again with ``--force``: every stage reruns, every LLM answer should come from the cache.

Prints LLM calls, prompt and output tokens per kept training query (a query with a positive and a negative),
the parse-failure rate (outputs that were not the JSON asked for, re-asked once), throughput at 1 vs N
(calls and output tokens per second over the queries + grade stages), and the rerun's cache hit rate.

    python benchmarks/llm_data.py                      # packaged Qwen2.5-Coder 1.5B, 4 slots, 12 queries
    python benchmarks/llm_data.py --model gemma-3-270m-q4_k_m --max-queries 6 --parallel 2
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from rerankforge import build, load_config
from rerankforge.llm.embedded import resolve_gguf
from rerankforge.llm.packaged import PACKAGED_MODELS

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: str, parallel: int, ctx_per_slot: int, threads: int | None) -> Any:
    """llama.cpp's HTTP server in this process; the server object stops when it is garbage-collected."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(resolve_gguf(model))
    params.n_parallel = parallel
    params.n_ctx = ctx_per_slot * parallel  # the context is shared out among the slots
    params.no_extra_bufts = True  # the AMX weight-repack path crashes on some x86 CPUs
    params.warmup = False
    params.verbosity = -1
    if threads:
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
    packaged = PACKAGED_MODELS.get(model)
    if packaged and packaged.chat_template:
        params.chat_template = packaged.chat_template
        params.use_jinja = False
    params.port = _free_port()
    params.hostnames = ["127.0.0.1"]
    return xllamacpp.Server(params)


def run_build(args: argparse.Namespace, url: str, run_dir: Path, concurrency: int, force: bool) -> dict[str, Any]:
    cfg = load_config(
        None,
        docs=str(ROOT / "examples" / "docs"),
        run_dir=str(run_dir),
        llm={"provider": "openai", "model": args.model, "host": f"{url}/v1", "concurrency": concurrency},
        queries={"max_queries": args.max_queries},
        mine={"top_k": args.top_k},
        parse={"workers": 1},
    )
    started = time.perf_counter()
    result = build(cfg, until="grade", force=force)
    wall = time.perf_counter() - started
    llm_seconds = sum(s.seconds for s in result.stages if s.name in ("queries", "grade"))
    groups = sum(1 for _ in (run_dir / "grade" / "train_flag.jsonl").open())
    judgments = [json.loads(line) for line in (run_dir / "grade" / "judgments.jsonl").open()]
    return {
        "queries_text": (run_dir / "queries" / "queries.jsonl").read_text(),
        "grades": {(j["query_id"], j["chunk_id"]): j["grade"] for j in judgments},
        "concurrency": concurrency,
        "stats": result.llm_stats or {},
        "llm_stage_seconds": llm_seconds,
        "wall_seconds": wall,
        "training_queries": groups,
        "queries": result.summary("queries"),
        "grade": result.summary("grade"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct-q4_k_m", help="packaged name or GGUF path")
    parser.add_argument("--parallel", type=int, default=4, help="server slots = concurrency of the second build")
    parser.add_argument("--max-queries", type=int, default=12)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--ctx-per-slot", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    server = start_server(args.model, args.parallel, args.ctx_per_slot, args.threads)
    url = str(server.listening_address)
    with tempfile.TemporaryDirectory() as tmp:
        one = run_build(args, url, Path(tmp) / "c1", 1, force=False)
        many = run_build(args, url, Path(tmp) / "cN", args.parallel, force=False)
        rerun = run_build(args, url, Path(tmp) / "cN", args.parallel, force=True)
    del server

    s = many["stats"]
    kept = max(many["training_queries"], 1)
    queries_kept = max(many["queries"]["queries_kept"], 1)
    shared = set(one["grades"]) & set(many["grades"])
    asked = rerun["stats"].get("calls", 0) + rerun["stats"].get("cache_hits", 0)
    figures = {
        "model": args.model,
        "corpus": "examples/docs",
        "max_queries": args.max_queries,
        "top_k": args.top_k,
        "queries_kept": many["queries"]["queries_kept"],
        "training_queries": many["training_queries"],
        "llm_calls": s["calls"],
        "calls_by_stage": s["by_stage"],
        "calls_per_training_query": round(s["calls"] / kept, 2),
        "prompt_tokens_per_training_query": round(s["prompt_tokens"] / kept),
        "output_tokens_per_training_query": round(s["output_tokens"] / kept),
        "calls_per_kept_query": round(s["calls"] / queries_kept, 2),
        "prompt_tokens_per_kept_query": round(s["prompt_tokens"] / queries_kept),
        "output_tokens_per_kept_query": round(s["output_tokens"] / queries_kept),
        "parse_failure_rate": round(s["invalid_outputs"] / max(s["calls"], 1), 4),
        "failed_after_re_ask": s["failed"],
        "queries_dropped": many["queries"]["dropped"],
        # llama.cpp batches the slots' tokens together, and a batch of several sequences rounds differently
        # from a batch of one: greedy answers can differ at N even though rerankforge asks the same calls.
        "same_queries_at_1_and_n": one["queries_text"] == many["queries_text"],
        "grades_differing_at_1_and_n": f"{sum(one['grades'][k] != many['grades'][k] for k in shared)} of {len(shared)}",
        "throughput": {
            str(r["concurrency"]): {
                "llm_stage_seconds": round(r["llm_stage_seconds"], 1),
                "calls_per_s": round(r["stats"]["calls"] / r["llm_stage_seconds"], 3),
                "output_tokens_per_s": round(r["stats"]["output_tokens"] / r["llm_stage_seconds"], 1),
            }
            for r in (one, many)
        },
        "rerun_cache_hit_rate": round(rerun["stats"].get("cache_hits", 0) / max(asked, 1), 4),
        "rerun_calls": rerun["stats"].get("calls", 0),
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
