"""The budget planner's counts against a real build of a tiny corpus (its time estimate against the real time is
``benchmarks/planner_accuracy.py``'s measurement).

Grading runs on a real model (the packaged Gemma 3 270M in llama.cpp): its calls are what the estimate
times and counts. Queries come from the deterministic FakeLLM, because a 270M model cannot write usable
queries and a build needs some; the writer's calls cost next to nothing on both sides of the comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rerankforge import build
from rerankforge.llm.base import LLMProvider, LLMReply, Message
from rerankforge.planner import plan_build
from tests.conftest import fake_build_config
from tests.fake_llm import FakeLLM


class FakeWriterRealGrader(LLMProvider):
    """Query-writing calls go to the FakeLLM, grading calls to a real model."""

    name = "fake-writer"

    def __init__(self, grader: LLMProvider) -> None:
        super().__init__(f"fake+{grader.model}")
        self.writer, self.grader = FakeLLM(), grader
        self.supports_logprobs = grader.supports_logprobs

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        if "grade" in schema["properties"]:
            return self.grader._chat(messages, schema, max_tokens, **request)
        return self.writer._chat(messages, schema, max_tokens)


@pytest.mark.slow  # about 15 real grading calls
def test_the_dry_run_counts_the_real_calls_and_estimates_their_time(
    small_docs: Path, tmp_path: Path, gemma_provider: LLMProvider
) -> None:
    cfg = fake_build_config(
        small_docs,
        tmp_path / "run",
        llm={"concurrency": 1},
        queries={"max_queries": 5, "round_trip_top_k": 0, "per_chunk": 1},  # the FakeLLM writes one per call
        mine={"top_k": 2},
        parse={"workers": 1},  # no fork next to a loaded llama.cpp
    )
    llm = FakeWriterRealGrader(gemma_provider)

    plan = plan_build(cfg, llm=llm)
    result = build(cfg, llm=llm, until="grade")

    # the estimate is the planned calls at the seconds a call took in the calibration, on real calls; how close
    # it comes to a real build's time is measured by benchmarks/planner_accuracy.py, not asserted here
    assert plan.calibration["grade_seconds"] > 0 and plan.calibration["query_seconds"] >= 0  # the FakeLLM: ~0 s
    assert plan.total_seconds is not None and plan.total_seconds >= sum(s.seconds for s in plan.stages) > 0
    planned = {s.stage: s.calls for s in plan.stages}
    assert result.llm_stats is not None and result.llm_stats["by_stage"]["queries"] == planned["queries"]
    graded = result.llm_stats["by_stage"]["grade"]
    assert planned["grade"] <= graded <= planned["grade"] + planned["queries"]  # plus sources the top-k missed
    kept = result.summary("queries")["queries_kept"]
    per_hour = plan.training_queries_per_hour()
    assert kept > 0 and plan.kept_per_call is None and per_hour is not None and per_hour > 0
    again = plan_build(cfg, calibrate=False, llm=llm)  # the run folder now holds a measured yield
    assert again.kept_per_call == result.summary("queries")["kept_per_call"]
