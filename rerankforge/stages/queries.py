"""Stage 2: the LLM writes search queries for a budgeted sample of chunks, few-shot, as JSON.

The sample spreads over files and their sections; each chunk is asked for one style of query (question,
keywords, paraphrase) in a configured mix, ``queries.per_chunk`` of them in one call. Few-shot examples are
only the user's (``queries.examples_file``), plus, when ``queries.dynamic_examples`` is set, queries this
build already kept for other files (asked in rounds, so the order of calls never changes the result).
Duplicates, queries of the wrong length, copies of the chunk, queries that speak of "the passage", echoes
of the examples, and queries whose source chunk the bi-encoder does not find (the round trip) are dropped
and counted.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import Chunk, Query, read_jsonl, write_jsonl
from rerankforge.config import BuildConfig, MineConfig, QueriesConfig
from rerankforge.errors import ConfigError, StageError
from rerankforge.stage import StageContext, StageResult
from rerankforge.stages import cross_encoder_epochs, first_stage_folds, grade_pairs_per_query, llm_cache_inputs
from rerankforge.templates import load_template

VERSION = "5"  # 5: passage last (a cached prompt prefix), no built-in examples, queries naming "the passage" dropped
# 4: built-in examples only until the corpus has its own
# 3: styles, dynamic examples, round-trip filter, sampling over sections
# 2: queries that echo the few-shot examples are dropped
ECHO_THRESHOLD = 0.5  # share of content words taken from the examples (not the passage)
ROUND = 16  # chunks asked together; a round's few-shot examples come from the rounds before it
# A query that speaks of its passage ("the cancer mentioned in the passage") means nothing to a searcher.
_SELF_REFERENCE = re.compile(r"\b(?:the|this|that|given|above)\s+(?:passage|text|document|article|excerpt)\b", re.I)


def load_examples(cfg: QueriesConfig) -> list[str]:
    """The user's example queries (``queries.examples_file``), or none: a small model copies examples verbatim,
    and examples from another domain teach it nothing about this one."""
    if cfg.examples_file is None:
        return []
    path = Path(cfg.examples_file)
    if not path.is_file():
        raise ConfigError(f"Examples file {path} does not exist. Pass a text file with one query per line.")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"Examples file {path} has no queries. Write one example query per line.")
    return lines[:8]


def cache_inputs(cfg: BuildConfig) -> dict[str, Any]:
    from rerankforge.models import resolve_model

    round_trip = cfg.queries.round_trip_top_k > 0
    return {
        **llm_cache_inputs(cfg, cfg.queries.template),
        "examples": load_examples(cfg.queries),
        "bi_encoder": resolve_model(cfg.mine.bi_encoder) if round_trip else None,
        "seed": cfg.train.seed,
        "time_budget_s": cfg.time_budget_seconds(),  # it decides where query writing stops
    }


def queries_schema(cfg: QueriesConfig) -> dict[str, Any]:
    """The JSON the model must write: only the list of queries, each of a bounded length, so a grammar-constrained
    model cannot ramble on in extra keys until ``max_tokens`` (which costs time and truncates the JSON)."""
    query = {"type": "string", "minLength": 1, "maxLength": 12 * cfg.max_words}
    return {
        "type": "object",
        "properties": {"queries": {"type": "array", "items": query, "minItems": 1, "maxItems": cfg.per_chunk}},
        "required": ["queries"],
        "additionalProperties": False,
    }


def _rank(seed: int, name: str) -> str:
    """A seeded order that does not depend on the other names: adding a file leaves the others' order alone."""
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def _interleave(queues: list[list[Chunk]]) -> list[Chunk]:
    """One from each queue in turn, until all are empty."""
    out: list[Chunk] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def sample_chunks(chunks: list[Chunk], budget: int, seed: int) -> list[Chunk]:
    """Spread the budget across files, and within a file across its sections (GPL's rule: few queries per
    passage, many passages): one chunk per file in turn, each file taking its sections in turn.

    The order is a seeded hash of file names and chunk ids, so adding files keeps the others' order.
    """
    by_file: dict[str, dict[str, list[Chunk]]] = defaultdict(lambda: defaultdict(list))
    for chunk in chunks:
        by_file[chunk.source][chunk.title or ""].append(chunk)
    queues = []
    for source in sorted(by_file, key=lambda name: _rank(seed, name)):
        sections = by_file[source]
        ordered = [
            sorted(sections[title], key=lambda c: _rank(seed, c.id))
            for title in sorted(sections, key=lambda t: _rank(seed, f"{source}#{t}"))
        ]
        queues.append(_interleave(ordered))
    return _interleave(queues)[:budget]


def assign_styles(n: int, styles: dict[str, float], seed: int) -> list[str]:
    """``n`` styles in the configured proportions (largest remainder), in a seeded order.

    Example:
        >>> sorted(assign_styles(4, {"question": 2.0, "keyword": 1.0, "paraphrase": 1.0}, seed=0))
        ['keyword', 'paraphrase', 'question', 'question']
    """
    total = sum(styles.values())
    shares = {name: n * weight / total for name, weight in styles.items()}
    counts = {name: int(share) for name, share in shares.items()}
    for name in sorted(shares, key=lambda k: (counts[k] - shares[k], k))[: n - sum(counts.values())]:
        counts[name] += 1
    picked = [name for name in sorted(counts) for _ in range(counts[name])]
    random.Random(seed).shuffle(picked)
    return picked


_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def copy_overlap(query: str, passage: str, n: int = 4) -> float:
    """Share of the query's word n-grams found verbatim in the passage (short queries: whole-query match)."""
    q, p = _words(query), _words(passage)
    if len(q) < n:
        return 1.0 if " ".join(q) in " ".join(p) else 0.0
    grams = {tuple(q[i : i + n]) for i in range(len(q) - n + 1)}
    passage_grams = {tuple(p[i : i + n]) for i in range(len(p) - n + 1)}
    return len(grams & passage_grams) / len(grams)


_FUNCTION_WORDS = frozenset(
    "what which when where whom whose does have with from that this these those about there their they them "
    "your will would should could into than then some many much more most other also been being were".split()
)


def _content_stems(text: str) -> set[str]:
    """Words of 4+ letters, minus function words, cut to 5 letters (so 'submit' meets 'submitting')."""
    return {w[:5] for w in _words(text) if len(w) >= 4 and w not in _FUNCTION_WORDS}


def example_echo(query: str, passage: str, examples: list[str]) -> float:
    """Share of the query's content words that come from the few-shot examples and not from the passage.

    A small LLM sometimes answers with the examples themselves, or a paraphrase of them: those queries
    are about another collection and would teach the reranker nonsense.

    Example:
        >>> example_echo("warranty length for replacement parts", "Odontoma is a tumor.",
        ...              ["how long is the warranty on replacement parts"])
        0.75
        >>> example_echo("What are the symptoms of odontoma?", "Odontoma is a tumor of the teeth.",
        ...              ["how long is the warranty on replacement parts"])
        0.0
    """
    words = _content_stems(query)
    if not words:
        return 0.0
    from_examples = set().union(*(_content_stems(e) for e in examples)) - _content_stems(passage)
    return len(words & from_examples) / len(words)


class RoundTrip:
    """The bi-encoder's top-k over the whole corpus: a query passes when its source chunk is among them."""

    def __init__(self, chunks: list[Chunk], mine: MineConfig, top_k: int) -> None:
        from rerankforge.index.embedding import embed, embed_chunks, load_bi_encoder

        self._embed = embed
        self.model = load_bi_encoder(mine.bi_encoder)
        self.top_k = min(top_k, len(chunks))
        self.batch_size = mine.batch_size
        self.position = {c.id: i for i, c in enumerate(chunks)}
        self.vectors, _ = embed_chunks(mine, [c.text for c in chunks])  # cached: the mine stage reuses them

    def passes(self, queries: list[tuple[str, str]]) -> list[bool]:
        """For each (query text, source chunk id): is the source in the query's top-k?"""
        if not queries:
            return []
        vectors = self._embed(self.model.encode_query, [text for text, _ in queries], self.batch_size)
        scores = vectors @ self.vectors.T
        results = []
        for row, (_, chunk_id) in zip(scores, queries, strict=True):
            source = row[self.position[chunk_id]]
            results.append(int(np.sum(row > source)) < self.top_k)  # ties count in the query's favour
        return results


def pick_dynamic_examples(kept: list[Query], chunks: dict[str, Chunk], source: str, n: int, seed: int) -> list[str]:
    """``n`` kept queries written for other files than ``source``, one per file first, in a seeded order."""
    if n <= 0:
        return []
    others = [q for q in kept if chunks[q.chunk_id].source != source]
    others.sort(key=lambda q: _rank(seed, q.id))
    by_file: dict[str, list[Query]] = defaultdict(list)
    for query in others:
        by_file[chunks[query.chunk_id].source].append(query)
    return [q.text for q in _interleave(list(by_file.values()))[:n]]  # type: ignore[arg-type]


def few_shot(examples: list[str], dynamic: list[str]) -> list[str]:
    """The examples of one call: the user's own first, then queries this build kept for other files."""
    return [*examples, *dynamic]


def run(ctx: StageContext) -> StageResult:
    from rerankforge.llm.hosts import map_ordered

    cfg = ctx.config.queries
    seed = ctx.config.train.seed
    chunks = read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)
    by_id = {c.id: c for c in chunks}
    template = load_template(cfg.template)
    examples = load_examples(cfg)
    sample = sample_chunks(chunks, cfg.max_queries or len(chunks), seed)
    budget = ctx.config.time_budget_seconds()
    styles = assign_styles(len(sample), cfg.styles, seed)
    schema = queries_schema(cfg)

    def validate(value: Any) -> list[str]:
        items = value["queries"] if isinstance(value, dict) else value
        if not isinstance(items, list) or not all(isinstance(q, str) for q in items):
            raise ValueError("expected a list of query strings")
        return [q.strip() for q in items if q.strip()]

    kept: list[Query] = []
    seen: set[str] = set()
    dropped = {
        "duplicate": 0, "length": 0, "copied_from_chunk": 0, "names_the_passage": 0, "echoed_example": 0,
        "round_trip": 0, "llm_failed": 0,
    }  # fmt: skip
    round_trip = None
    if cfg.round_trip_top_k:
        ctx.progress(0, len(sample), "embedding chunks for the round-trip filter")
        round_trip = RoundTrip(chunks, ctx.config.mine, cfg.round_trip_top_k)

    def ask(job: tuple[Chunk, str, list[str]]) -> list[str] | None:
        chunk, style, shots = job
        messages = template.render(
            passage=chunk.text, title=chunk.title, source=chunk.source, examples=shots, n=cfg.per_chunk, style=style
        )
        return ctx.llm.ask(
            messages,
            schema,
            template_hash=template.sha256,
            max_tokens=cfg.max_tokens,
            validate=validate,
            stage="queries",
        )

    done = written = 0
    stopped_by_budget = False
    writing_started = time.monotonic()
    for start in range(0, len(sample), ROUND):
        if budget is not None and done and not fits_another_round(ctx, budget, writing_started, done, len(kept),
                                                                  len(chunks)):  # fmt: skip
            stopped_by_budget = True
            break
        jobs = []
        for chunk, style in zip(sample[start : start + ROUND], styles[start : start + ROUND], strict=True):
            dynamic = pick_dynamic_examples(kept, by_id, chunk.source, cfg.dynamic_examples, seed + start)
            jobs.append((chunk, style, few_shot(examples, dynamic)))
        candidates: list[Query] = []
        for (chunk, style, shots), answer in zip(jobs, map_ordered(ask, jobs, ctx.llm.concurrency), strict=True):
            done += 1
            ctx.progress(done, len(sample), chunk.source)
            if answer is None:
                dropped["llm_failed"] += 1
                continue
            written += len(answer[: cfg.per_chunk])
            for text in answer[: cfg.per_chunk]:
                reason = _drop_reason(text, chunk, shots, seen, cfg)
                if reason:
                    dropped[reason] += 1
                    continue
                seen.add(" ".join(_words(text)))
                candidates.append(Query(id="", text=text, chunk_id=chunk.id, style=style))
        passes = round_trip.passes([(q.text, q.chunk_id) for q in candidates]) if round_trip else []
        for i, query in enumerate(candidates):
            if round_trip is not None and not passes[i]:
                dropped["round_trip"] += 1
                continue
            kept.append(query.model_copy(update={"id": f"q{len(kept)}"}))
    ctx.progress(done, done)
    if len(kept) < 4:
        raise StageError(
            f"Only {len(kept)} usable queries from {len(sample)} chunks (dropped: {dropped}). "
            "Raise queries.max_queries, or use a stronger LLM (--llm-model)."
        )
    write_jsonl(ctx.out / "queries.jsonl", kept)
    write_jsonl(ctx.out / "beir_queries.jsonl", ({"_id": q.id, "text": q.text} for q in kept))
    kept_by_style = {style: sum(1 for q in kept if q.style == style) for style in sorted(set(styles))}
    summary = {
        "chunks_sampled": done,
        "stopped_by_time_budget": stopped_by_budget,
        "files_sampled": len({c.source for c in sample}),
        "queries_written": written,
        "queries_kept": len(kept),
        "kept_per_call": round(len(kept) / max(len(sample), 1), 2),
        "kept_by_style": kept_by_style,
        "dropped": dropped,
    }
    return StageResult(files=["queries/queries.jsonl", "queries/beir_queries.jsonl"], summary=summary)


def fits_another_round(ctx: StageContext, budget: float, started: float, done: int, kept: int, chunks: int) -> bool:
    """Whether one more round of calls, at the rate this stage's calls so far showed, and every stage after this
    one still fit in the build's time budget (see :mod:`rerankforge.budget`)."""
    from rerankforge.budget import GRADE_CALL_SHARE, seconds_after_queries

    now = time.monotonic()
    per_call = (now - started) / done
    kept_after = kept + ROUND * kept / done
    grade_pairs = grade_pairs_per_query(ctx.config)
    epochs = cross_encoder_epochs(ctx.config)
    rest = seconds_after_queries(round(kept_after), chunks, grade_pairs, GRADE_CALL_SHARE * per_call, epochs,
                                 first_stage_folds(ctx.config, kept_after))  # fmt: skip
    return (now - ctx.started) + ROUND * per_call + rest <= budget


def _drop_reason(text: str, chunk: Chunk, examples: list[str], seen: set[str], cfg: QueriesConfig) -> str | None:
    """Why a written query is not kept, or None when it passes the text filters."""
    normal = " ".join(_words(text))
    if normal in seen:
        return "duplicate"
    if not cfg.min_words <= len(normal.split()) <= cfg.max_words:
        return "length"
    if copy_overlap(text, chunk.text) > cfg.max_copy_overlap:
        return "copied_from_chunk"
    if _SELF_REFERENCE.search(text):
        return "names_the_passage"
    if example_echo(text, chunk.text, examples) >= ECHO_THRESHOLD:
        return "echoed_example"
    return None
