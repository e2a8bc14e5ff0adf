"""How fast finished builds were, per stage, from what each build recorded in its run folder.

It times nothing itself: it reads ``build.json`` (each run's stage seconds and LLM stats), the stages'
``manifest.json`` summaries, and counts lines of ``parse/chunks.jsonl`` and ``grade/judgments.jsonl``. A stage's
seconds are those of its latest entry with status "ran"; a stage that was only ever skipped shows n/a and is
left out of the totals. Run each build on a quiet machine, or its figures say little.

    .venv/bin/python benchmarks/build_speed.py RUN_DIR [RUN_DIR ...]

The summary gives the LLM share of the stages' wall time (queries + grade) and training queries (kept and
judged) per CPU hour of the stages' wall time; with two runs, the second's rate over the first's. Builds that
recorded it also get the measured share: the wall time with an LLM call in flight (``busy_seconds``) over the
stages' wall time, and the share of prompt tokens the LLM server read from its prefix cache.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

STAGES = ("parse", "queries", "mine", "grade", "train", "evaluate", "export")


def load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def lines(path: Path) -> list[str] | None:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return None


def parse(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def get(record: Any, *keys: str) -> Any:
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    return record


def per(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def last_ran(runs: list[dict]) -> dict[str, tuple[float, dict]]:
    """stage -> (seconds, the run it ran in) for the latest entry of each stage with status "ran"."""
    found: dict[str, tuple[float, dict]] = {}
    for run in runs:
        for stage in run.get("stages", []):
            if stage.get("status") == "ran" and stage.get("seconds") is not None:
                found[stage["name"]] = (float(stage["seconds"]), run)
    return found


def report(run_dir: Path) -> float | None:
    """Print one run folder's table; return its training queries per CPU hour."""
    runs = load(run_dir / "build.json").get("runs", [])
    ran = last_ran(runs)
    secs = {name: ran[name][0] for name in ran}
    summary = {name: get(load(run_dir / name / "manifest.json"), "summary") or {} for name in STAGES}
    print(f"\n{run_dir}  (build.json: {len(runs)} recorded run(s))")
    print(f"  {'stage':<9}{'seconds':>9}  rates")
    rows: dict[str, str] = {}
    if "parse" not in ran:
        old = get(load(run_dir / "parse" / "manifest.json"), "seconds")
        rows["parse"] = f'no entry with status "ran" (its manifest says {fmt(old, ".1f")} s, not counted)'
    q = summary["queries"]
    q_calls = get(ran.get("queries", (0, {}))[1], "llm_stats", "by_stage", "queries")
    kept = q.get("queries_kept")
    sampled = q.get("chunks_sampled")  # one call per sampled chunk; calls the LLM cache answered cost ~0 s
    per_call = per(secs.get("queries"), q_calls)
    rows["queries"] = (
        f"{fmt(sampled, 'd')} calls ({fmt(q_calls, 'd')} asked, the rest answered by the LLM cache), "
        f"{fmt(per_call, '.2f')} s per asked call, {fmt(q.get('queries_written'), 'd')} written, {fmt(kept, 'd')} kept "
        f"({fmt(per(kept, sampled))} per call), "
        f"{fmt(per(kept, per(per_call * sampled if per_call and sampled else None, 60)))} kept per LLM minute "
        "(every call asked)"
    )
    chunks = lines(run_dir / "parse" / "chunks.jsonl")
    n_chunks = None if chunks is None else len(chunks)
    cached = summary["mine"].get("chunk_vectors_cached")
    rows["mine"] = f"{fmt(n_chunks, 'd')} chunks, {fmt(per(n_chunks, secs.get('mine')), '.1f')} chunks/s" + (
        f" ({cached} vectors came from the vector cache, so not an embedding rate)" if cached else ""
    )
    judgments = lines(run_dir / "grade" / "judgments.jsonl")
    n_judg = None if judgments is None else len(judgments)
    rows["grade"] = f"{fmt(n_judg, 'd')} judgments, {fmt(per(n_judg, secs.get('grade')))} judgments/s"
    t = summary["train"]
    ce_steps, fs_steps = t.get("steps"), get(t, "first_stage", "steps")
    all_steps = None if ce_steps is None and fs_steps is None else (ce_steps or 0) + (fs_steps or 0)
    rows["train"] = (
        f"{fmt(ce_steps, 'd')} cross-encoder steps + {fmt(fs_steps, 'd')} first-stage steps "
        f"({fmt(get(t, 'first_stage', 'triplets'), 'd')} triplets): "
        f"{fmt(per(all_steps, secs.get('train')), '.3f')} steps/s"
    )
    for name in STAGES:
        print(f"  {name:<9}{fmt(secs.get(name), '.1f'):>9}  {rows.get(name, '')}".rstrip())

    stats = [run.get("llm_stats") or {} for run in runs]
    total = {k: sum(s.get(k) or 0 for s in stats) for k in ("calls", "cache_hits", "prompt_tokens", "output_tokens")}
    by_stage: dict[str, int] = {}
    for s in stats:
        for stage, n in (s.get("by_stage") or {}).items():
            by_stage[stage] = by_stage.get(stage, 0) + n
    # tokens of every run over the LLM stages' seconds of every run, so the two sides cover the same runs
    llm_secs_all = sum(
        float(st.get("seconds") or 0)
        for run in runs
        for st in run.get("stages", [])
        if st.get("status") == "ran" and st.get("name") in ("queries", "grade")
    )
    tok_s = [fmt(per(total[k], llm_secs_all), ".1f") for k in ("prompt_tokens", "output_tokens")]
    if any(stats):
        print(
            f"  LLM, summed over all {len(runs)} run(s): {total['calls']} calls {by_stage}, "
            f"{total['cache_hits']} cache hits, {total['prompt_tokens']} prompt + {total['output_tokens']} output "
            f"tokens over {llm_secs_all:.1f} s of queries+grade: {tok_s[0]} prompt tok/s, {tok_s[1]} output tok/s"
        )
    else:
        print("  LLM: n/a (no llm_stats in build.json)")
    if any("busy_seconds" in s for s in stats):  # builds since the LLM's busy time and prefix cache are recorded
        busy = sum(float(s.get("busy_seconds") or 0) for s in stats)
        all_secs = sum(
            float(st.get("seconds") or 0) for run in runs for st in run.get("stages", []) if st.get("status") == "ran"
        )
        cached = sum(int(s.get("cached_prompt_tokens") or 0) for s in stats)
        print(
            f"  measured: {busy:.1f} s waiting on LLM calls of {all_secs:.1f} s of stages that ran, over all runs: "
            f"LLM share {fmt(per(100 * busy, all_secs), '.1f')}%; prefix cache "
            f"{fmt(per(100 * cached, total['prompt_tokens']), '.1f')}% of prompt tokens"
        )

    if per_call and sampled and "queries" in secs:  # as if every call had been asked (none from the cache)
        secs["queries"] = per_call * sampled
    stage_secs = sum(secs.values()) if secs else None
    llm_secs = None if "queries" not in secs and "grade" not in secs else secs.get("queries", 0) + secs.get("grade", 0)
    judged = None if judgments is None else len({get(parse(line), "query_id") for line in judgments} - {None})
    trained = judged if judged is not None else kept
    rate = per(trained, per(stage_secs, 3600))
    share = per(llm_secs, stage_secs)
    print(
        f"  summary (queries at every call asked): stages {fmt(stage_secs, '.1f')} s over "
        f"{', '.join(secs) or 'none'}; LLM share "
        f"{fmt(None if share is None else 100 * share, '.1f')}%; {fmt(trained, 'd')} training queries "
        f"(kept {fmt(kept, 'd')}, judged {fmt(judged, 'd')}) -> {fmt(rate, '.1f')} training queries per CPU hour"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="finished run folders")
    args = parser.parse_args()
    rates = [report(run_dir) for run_dir in args.run_dirs]
    if len(rates) == 2:
        ratio = fmt(per(rates[1], rates[0]))
        print(f"\ntraining queries per CPU hour, {args.run_dirs[1]} / {args.run_dirs[0]}: {ratio}")


if __name__ == "__main__":
    main()
