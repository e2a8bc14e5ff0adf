"""The budget planner behind ``rerankforge build --dry-run``: LLM calls, tokens and time, before spending them.

It parses the documents (the parse stage, cached like any build's), draws the same sample of chunks the
queries stage would, renders the real prompts, and counts. With ``calibrate`` it times one query-writing
and one grading call on the chosen model (after one warm-up call), and turns characters into tokens with
the ratio that model's tokenizer showed. Grading calls assume every written query is kept: filters only
lower the real count.

Example:
    >>> from rerankforge import load_config
    >>> plan = plan_build(load_config("examples/rerankforge.toml"))  # doctest: +SKIP
    >>> plan.total_seconds  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from rerankforge.artifacts import Chunk, read_jsonl
from rerankforge.budget import KEPT_SHARE, seconds_after_queries, seconds_per_kept_query
from rerankforge.config import BuildConfig
from rerankforge.pipeline import ProgressCallback, build

CHARS_PER_TOKEN = 4.0  # without calibration: a common rule of thumb for English text
PLACEHOLDER_QUERY = "how do I reset the settings after an update"  # a typical query's length, for grading prompts
OTHER_QUERY = "which form do I need to claim travel costs"
MAX_TIMED_CALLS = 6


@dataclass
class StagePlan:
    stage: str
    calls: int
    prompt_tokens: int
    output_tokens: int
    seconds: float | None = None  # None without calibration


@dataclass
class BuildPlan:
    stages: list[StagePlan]
    chunks: int
    concurrency: int
    calibration: dict[str, Any] = field(default_factory=dict)
    per_chunk: int = 1  # queries written per query-writing call
    kept_per_call: float | None = None  # as the run folder's last queries stage measured it; None: not measured
    budget_seconds: float | None = None  # the build's time budget, which sized the query calls
    parse_seconds: float = 0.0  # what parsing took in this plan (0 when an earlier parse was reused)

    def expected_kept(self) -> float:
        """Kept queries the query calls should give: the run folder's measured yield, else MedQuAD's."""
        calls = next(s.calls for s in self.stages if s.stage == "queries")
        return calls * (self.kept_per_call if self.kept_per_call is not None else KEPT_SHARE * self.per_chunk)

    @property
    def total_seconds(self) -> float | None:
        times = [s.seconds for s in self.stages]
        return None if any(t is None for t in times) else sum(t for t in times if t is not None)

    def training_queries_per_hour(self) -> float | None:
        """Kept, graded queries per hour of LLM time at the calibrated rates: the measured kept share of the
        written queries where the run folder has one, else every written query (an upper bound). Grading is
        paid for kept queries only."""
        seconds = {s.stage: s.seconds for s in self.stages}
        calls = {s.stage: s.calls for s in self.stages}
        if seconds.get("queries") is None or seconds.get("grade") is None or not calls.get("queries"):
            return None
        kept = calls["queries"] * (self.per_chunk if self.kept_per_call is None else self.kept_per_call)
        spent = seconds["queries"] + seconds["grade"] * kept / max(calls["queries"] * self.per_chunk, 1)
        return 3600 * kept / spent if spent > 0 else None


def _chars(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


def plan_build(
    config: BuildConfig, *, calibrate: bool = True, llm: Any = None, progress: ProgressCallback | None = None
) -> BuildPlan:
    """Count the LLM work of a build; with ``calibrate``, time it on the configured model.

    Args:
        config: the build configuration.
        calibrate: make three real calls (warm-up, one query, one grade) to measure tokens and time.
        llm: an :class:`~rerankforge.llm.base.LLMProvider` to use instead of the one ``config.llm`` names.
        progress: callback for the parse stage's progress bar.
    """
    from rerankforge.stages import cross_encoder_epochs, first_stage_folds, grade_pairs_per_query
    from rerankforge.stages.queries import assign_styles, load_examples, queries_schema, sample_chunks
    from rerankforge.templates import load_template

    started = time.perf_counter()
    result = build(config, until="parse", progress=progress, llm=llm)
    parse_seconds = time.perf_counter() - started if result.stages[0].status == "ran" else 0.0
    chunks = read_jsonl(result.run_dir / "parse" / "chunks.jsonl", Chunk)
    qcfg, gcfg = config.queries, config.grade
    sample = sample_chunks(chunks, qcfg.max_queries or len(chunks), config.train.seed)
    styles = assign_styles(len(sample), qcfg.styles, config.train.seed)
    examples = load_examples(qcfg)
    qtemplate, gtemplate = load_template(qcfg.template), load_template(gcfg.template)
    query_prompts = [
        qtemplate.render(passage=c.text, title=c.title, source=c.source, examples=examples, n=qcfg.per_chunk, style=s)
        for c, s in zip(sample, styles, strict=True)
    ]
    # Candidates are any chunks: their mean length stands for them; the source chunk is usually among them.
    grade_chars = mean(_chars(_grade_prompt(gtemplate, c)) for c in chunks)
    grade_pairs = grade_pairs_per_query(config, len(chunks))
    chars_per_token, out_query, out_grade = CHARS_PER_TOKEN, qcfg.max_tokens / 2, gcfg.max_tokens / 2
    seconds_query = seconds_grade = None
    calibration: dict[str, Any] = {}
    provider = llm
    if calibrate and sample:
        from rerankforge.llm import make_provider

        started = time.perf_counter()
        provider = llm or make_provider(config.llm)
        calibration["load_seconds"] = round(time.perf_counter() - started, 2)
        query_call = (query_prompts, queries_schema(qcfg), qcfg.max_tokens)
        calibration.update(_calibrate(provider, query_call, gtemplate, sample, gcfg))
        chars_per_token = calibration["chars_per_token"]
        out_query, out_grade = calibration["query_output_tokens"], calibration["grade_output_tokens"]
        seconds_query, seconds_grade = calibration["query_seconds"], calibration["grade_seconds"]
        if llm is None:
            provider.close()
    from rerankforge.llm import concurrency_for

    concurrency = config.llm.concurrency or (concurrency_for(config.llm, provider) if provider else 1)
    measured = result.run_dir / "queries" / "manifest.json"
    kept_per_call = None
    if measured.is_file():  # an earlier build in this run folder: its filters' measured yield
        kept_per_call = json.loads(measured.read_text(encoding="utf-8")).get("summary", {}).get("kept_per_call")
    budget = config.time_budget_seconds()
    query_calls = len(sample)
    if budget is not None and seconds_query is not None and seconds_grade is not None:
        kept_each = kept_per_call if kept_per_call is not None else KEPT_SHARE * qcfg.per_chunk
        per_call = (seconds_query + kept_each * grade_pairs * seconds_grade) / concurrency
        epochs = cross_encoder_epochs(config)

        def calls_that_fit(folds: int) -> int:
            each = per_call + kept_each * seconds_per_kept_query(epochs, folds)
            fixed = parse_seconds + calibration.get("load_seconds", 0.0)
            fixed += seconds_after_queries(0, len(chunks), 0, 0, epochs, folds)
            return max(0, min(len(sample), int((budget - fixed) // each)))

        query_calls = calls_that_fit(1)
        query_calls = calls_that_fit(first_stage_folds(config, query_calls * kept_each))
    query_prompts = query_prompts[:query_calls]
    grade_calls = query_calls * qcfg.per_chunk * grade_pairs
    query_prompt_tokens = sum(_chars(p) for p in query_prompts) / chars_per_token
    stages = [
        StagePlan(
            "queries",
            query_calls,
            round(query_prompt_tokens),
            round(query_calls * out_query),
            None if seconds_query is None else query_calls * seconds_query / concurrency,
        ),
        StagePlan(
            "grade",
            grade_calls,
            round(grade_calls * grade_chars / chars_per_token),
            round(grade_calls * out_grade),
            None if seconds_grade is None else grade_calls * seconds_grade / concurrency,
        ),
    ]
    return BuildPlan(stages=stages, chunks=len(chunks), concurrency=concurrency, calibration=calibration,
                     per_chunk=qcfg.per_chunk, kept_per_call=kept_per_call, budget_seconds=budget,
                     parse_seconds=round(parse_seconds, 1))  # fmt: skip


def _calibrate(
    provider: Any, query_call: tuple[Any, ...], gtemplate: Any, chunks: list[Chunk], gcfg: Any
) -> dict[str, Any]:
    """A few query-writing and grading calls (not cached), timed once the model runs at its steady speed:
    the time of a call in the middle of a stage.

    Grading calls go as the stage sends them: two queries on one passage back to back (the second reuses the
    passage's cached prefix), then another passage.
    """
    from rerankforge.stages.grade import GRADE_SCHEMA, TOP_LOGPROBS

    prompts, schema, max_tokens = query_call
    query_calls = [(prompts[i % len(prompts)], schema, max_tokens, {}) for i in (-1, 0, 1)]
    request = {"top_logprobs": TOP_LOGPROBS} if gcfg.logprobs and provider.supports_logprobs else {}
    grade_calls = [
        (_grade_prompt(gtemplate, chunk, query), GRADE_SCHEMA, gcfg.max_tokens, request)
        for chunk, query in ((chunks[-1], PLACEHOLDER_QUERY), (chunks[0], PLACEHOLDER_QUERY),
                             (chunks[0], OTHER_QUERY), (chunks[1 % len(chunks)], PLACEHOLDER_QUERY))
    ]  # fmt: skip
    written, query_seconds, query_chars = _timed(provider, query_calls)
    graded, grade_seconds, grade_chars = _timed(provider, grade_calls)
    tokens = written.prompt_tokens + graded.prompt_tokens
    return {
        "chars_per_token": (query_chars + grade_chars) / tokens if tokens else CHARS_PER_TOKEN,
        "query_seconds": round(query_seconds, 3),
        "grade_seconds": round(grade_seconds, 3),
        "query_output_tokens": written.output_tokens,
        "grade_output_tokens": graded.output_tokens,
    }


def _timed(provider: Any, calls: list[tuple[Any, ...]]) -> tuple[Any, float, int]:
    """The steady time of a call: after a warm-up call, calls (cycling through ``calls``) until two in a row
    agree within 25% (a model just loaded runs its first calls several times slower), at most
    ``MAX_TIMED_CALLS``. Returns the last reply, the mean of the last two times and the last prompt's size."""
    seconds: list[float] = []
    reply = None
    for index in range(MAX_TIMED_CALLS + 1):
        messages, schema, max_tokens, request = calls[index % len(calls)]
        started = time.perf_counter()
        reply = provider.chat_json(messages, schema, max_tokens=max_tokens, **request)
        if index:
            seconds.append(time.perf_counter() - started)
        if len(seconds) >= 2 and abs(seconds[-1] - seconds[-2]) <= 0.25 * max(seconds[-2:]):
            break
    return reply, mean(seconds[-2:]), _chars(messages)


def _grade_prompt(template: Any, chunk: Chunk, query: str = PLACEHOLDER_QUERY) -> list[dict[str, str]]:
    return template.render(query=query, passage=chunk.text, title=chunk.title, source=chunk.source)
