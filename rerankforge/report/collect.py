"""Gather what a report shows from a run folder: stage manifests, build record, evaluations, data samples.

Everything is read from artifacts; a stage that has not run yet is simply missing from the report.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rerankforge.artifacts import CandidateList, Chunk, Judgment, Query, grade_histogram, read_json, read_jsonl
from rerankforge.errors import InputError
from rerankforge.evaluation.labelled import LABELLED_RESULT
from rerankforge.pipeline import BUILD_RECORD, STAGE_NAMES

LLM_COUNTERS = (
    "calls", "cache_hits", "prompt_tokens", "cached_prompt_tokens", "output_tokens", "invalid_outputs", "failed",
)  # fmt: skip
EXAMPLE_QUERIES = 3
SNIPPET_CHARS = 220


def _optional_json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def stage_records(run_dir: Path) -> list[dict[str, Any]]:
    """Each finished stage's summary and the time it took when it last ran."""
    records = []
    for name in STAGE_NAMES:
        manifest = _optional_json(run_dir / name / "manifest.json")
        if manifest is not None:
            records.append({"name": name, "seconds": manifest.get("seconds"), "summary": manifest.get("summary", {})})
    return records


def llm_usage(run_dir: Path) -> dict[str, Any]:
    """LLM calls and tokens summed over every build run, from ``build.json``; else counted in the LLM cache."""
    record = _optional_json(run_dir / BUILD_RECORD) or {}
    stats = [r["llm_stats"] for r in record.get("runs", []) if r.get("llm_stats")]
    if stats:
        return {"source": BUILD_RECORD, **{c: sum(int(s.get(c, 0)) for s in stats) for c in LLM_COUNTERS}}
    cache = run_dir / "llm_cache.jsonl"
    if cache.is_file():
        lines = sum(1 for line in cache.read_text(encoding="utf-8").splitlines() if line.strip())
        return {"source": "llm_cache.jsonl (this run folder predates build.json: tokens were not recorded)",
                "calls": lines}  # fmt: skip
    return {}


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


def synthetic_data(run_dir: Path) -> dict[str, Any]:
    """Query lengths, grade counts and a few example queries with their graded candidates."""
    data: dict[str, Any] = {}
    queries_file = run_dir / "queries" / "queries.jsonl"
    if not queries_file.is_file():
        return data
    queries = read_jsonl(queries_file, Query)
    lengths = [len(q.text.split()) for q in queries]
    data["queries"] = len(queries)
    data["query_lengths"] = lengths
    if lengths:
        data["query_length_summary"] = {
            "min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)
        }  # fmt: skip
    judgments_file = run_dir / "grade" / "judgments.jsonl"
    candidates_file = run_dir / "mine" / "candidates.jsonl"
    if not judgments_file.is_file() or not candidates_file.is_file():
        return data
    judgments = read_jsonl(judgments_file, Judgment)
    data["grade_counts"] = grade_histogram(judgments)
    grades = {(j.query_id, j.chunk_id): j.grade for j in judgments}
    chunks = {c.id: c for c in read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)}
    candidates = {c.query_id: c.candidates for c in read_jsonl(candidates_file, CandidateList)}
    split = _optional_json(run_dir / "train" / "split.json") or {}
    dev = set(split.get("dev", []))
    # held-out queries first: they are the ones the evaluation measured
    ordered = sorted(queries, key=lambda q: (q.id not in dev, q.id))
    examples = []
    for query in ordered[:EXAMPLE_QUERIES]:
        rows = [
            {
                "rank": c.rank + 1,
                "score": round(c.score, 3),
                "grade": grades.get((query.id, c.chunk_id)),
                "source": chunks[c.chunk_id].source if c.chunk_id in chunks else c.chunk_id,
                "is_source_chunk": c.chunk_id == query.chunk_id,
                "text": _snippet(chunks[c.chunk_id].text) if c.chunk_id in chunks else "",
            }
            for c in candidates.get(query.id, [])
        ]
        examples.append({"query": query.text, "held_out": query.id in dev, "candidates": rows})
    data["examples"] = examples
    return data


def synthetic_evaluation(run_dir: Path) -> dict[str, Any] | None:
    metrics = _optional_json(run_dir / "evaluate" / "metrics.json")
    if metrics is None:
        return None
    per_query = _optional_json(run_dir / "evaluate" / "per_query.json") or []
    main = next(iter(metrics["metrics"]["first_stage"]))
    metrics["main_metric"] = main
    metrics["deltas"] = [round(q["reranked"]["ndcg"] - q["first_stage"]["ndcg"], 4) for q in per_query]
    return metrics


def collect(run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, as plain data (also written as ``report/report.json``)."""
    if not (run_dir / "config.json").is_file():
        raise InputError(f"{run_dir} is not a run folder (no config.json). Pass the folder a build wrote.")
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    labelled = _optional_json(run_dir / LABELLED_RESULT)
    if labelled is not None:  # per-query change of the main metric, reranked minus its first stage
        labelled["deltas"] = [round(q["reranked"] - q[labelled["first_stage"]], 4) for q in labelled["per_query"]]
    return {
        "run_dir": str(run_dir),
        "docs": config.get("docs"),
        "config": config,
        "stages": stage_records(run_dir),
        "llm": llm_usage(run_dir),
        "synthetic": synthetic_data(run_dir),
        "evaluation": synthetic_evaluation(run_dir),
        "labelled": labelled,
        "loss_history": _optional_json(run_dir / "train" / "loss_history.json") or [],
        "model": _optional_json(run_dir / "model" / "rerankforge.json"),
    }
