"""How close the dry run's time estimate comes to the build it plans, on this machine, with a real LLM.

It plans a build (``plan_build``: the dry run's calibration calls, timed), then runs that build up to the grade
stage in a fresh run folder, and prints the planned and the real calls and seconds of the two LLM stages, and
their ratio. The estimate is a measurement of this machine, so it is checked here, not in a test: run it on a
quiet machine (on a shared 2-core one the speed of the same call swings by up to 2x between minutes).

    .venv/bin/python benchmarks/planner_accuracy.py [--docs examples/docs] [--max-queries 6] [--grade-top-k 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from rerankforge import build, load_config
from rerankforge.llm import make_provider
from rerankforge.planner import plan_build

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=ROOT / "examples" / "docs")
    parser.add_argument("--max-queries", type=int, default=6, help="query-writing calls")
    parser.add_argument("--grade-top-k", type=int, default=1, help="candidates graded per query (and its source)")
    parser.add_argument("--model", default=None, help="llm.model (default: the packaged one)")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="planner-accuracy-"))
    try:
        cfg = load_config(
            None,
            docs=str(args.docs),
            run_dir=str(run_dir),
            time_budget="off",
            llm={"provider": "embedded", "concurrency": 1, **({"model": args.model} if args.model else {})},
            queries={"max_queries": args.max_queries},
            grade={"top_k": args.grade_top_k, "source": True},
        )
        llm = make_provider(cfg.llm)
        try:
            plan = plan_build(cfg, llm=llm)
            result = build(cfg, llm=llm, until="grade")
        finally:
            llm.close()
        real = {s.name: s.seconds for s in result.stages}
        calls = (result.llm_stats or {}).get("by_stage", {})
        print(f"calibration: {plan.calibration}")
        print("| stage | planned calls | real calls | planned s | real s | real / planned |")
        print("|---|---|---|---|---|---|")
        for stage in plan.stages:
            ratio = real[stage.stage] / stage.seconds if stage.seconds else float("nan")
            print(f"| {stage.stage} | {stage.calls} | {calls.get(stage.stage, 0)} | {stage.seconds or 0:.1f} | "
                  f"{real[stage.stage]:.1f} | {ratio:.2f} |")  # fmt: skip
        both = sum(real[s.stage] for s in plan.stages)
        planned = sum(s.seconds or 0 for s in plan.stages)
        print(f"queries + grade: planned {planned:.1f} s, real {both:.1f} s, real / planned {both / planned:.2f}")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
