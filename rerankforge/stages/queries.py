"""Stage 2: the LLM writes search queries for a budgeted sample of chunks, few-shot, as JSON.

Duplicates, queries of the wrong length and copies of the chunk are dropped and counted.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from rerankforge.artifacts import Chunk, Query, read_jsonl, write_jsonl
from rerankforge.config import BuildConfig, QueriesConfig
from rerankforge.errors import ConfigError, StageError
from rerankforge.pipeline import StageContext, StageResult
from rerankforge.stages import llm_cache_inputs
from rerankforge.templates import load_template

VERSION = "2"  # 2: queries that echo the few-shot examples are dropped
ECHO_THRESHOLD = 0.5  # share of content words taken from the examples (not the passage)

# Domain-neutral few-shot examples, used when the user gives none.
BUILTIN_EXAMPLES = [
    "how long is the warranty on replacement parts",
    "What happens if I miss the deadline for submitting a claim?",
    "reset password locked account",
    "Which settings change the backup schedule?",
    "difference between standard and express shipping cost",
]


def load_examples(cfg: QueriesConfig) -> list[str]:
    if cfg.examples_file is None:
        return BUILTIN_EXAMPLES
    path = Path(cfg.examples_file)
    if not path.is_file():
        raise ConfigError(f"Examples file {path} does not exist. Pass a text file with one query per line.")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"Examples file {path} has no queries. Write one example query per line.")
    return lines[:8]


def cache_inputs(cfg: BuildConfig) -> dict[str, Any]:
    return {
        **llm_cache_inputs(cfg, cfg.queries.template),
        "examples": load_examples(cfg.queries),
    }


def sample_chunks(chunks: list[Chunk], budget: int, seed: int) -> list[Chunk]:
    """Spread the budget across files: shuffle each file's chunks, then take one per file in turn."""
    rng = random.Random(seed)
    by_source: dict[str, list[Chunk]] = defaultdict(list)
    for chunk in chunks:
        by_source[chunk.source].append(chunk)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_source.items())]
    rng.shuffle(queues)
    picked: list[Chunk] = []
    while len(picked) < budget and any(queues):
        for queue in queues:
            if queue and len(picked) < budget:
                picked.append(queue.pop())
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


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.queries
    chunks = read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)
    template = load_template(cfg.template)
    examples = load_examples(cfg)
    sample = sample_chunks(chunks, cfg.max_queries, ctx.config.train.seed)
    schema = {
        "type": "object",
        "properties": {
            "queries": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "maxItems": cfg.per_chunk,
            }
        },
        "required": ["queries"],
    }

    def validate(value: Any) -> list[str]:
        items = value["queries"] if isinstance(value, dict) else value
        if not isinstance(items, list) or not all(isinstance(q, str) for q in items):
            raise ValueError("expected a list of query strings")
        return [q.strip() for q in items if q.strip()]

    kept: list[Query] = []
    seen: set[str] = set()
    dropped = {"duplicate": 0, "length": 0, "copied_from_chunk": 0, "echoed_example": 0, "llm_failed": 0}
    for done, chunk in enumerate(sample):
        ctx.progress(done, len(sample), chunk.source)
        messages = template.render(
            passage=chunk.text, title=chunk.title, source=chunk.source, examples=examples, n=cfg.per_chunk
        )
        answer = ctx.llm.ask(
            messages,
            schema,
            template_hash=template.sha256,
            max_tokens=cfg.max_tokens,
            validate=validate,
            stage="queries",
        )
        if answer is None:
            dropped["llm_failed"] += 1
            continue
        for text in answer[: cfg.per_chunk]:
            normal = " ".join(_words(text))
            n_words = len(normal.split())
            if normal in seen:
                dropped["duplicate"] += 1
            elif not cfg.min_words <= n_words <= cfg.max_words:
                dropped["length"] += 1
            elif copy_overlap(text, chunk.text) > cfg.max_copy_overlap:
                dropped["copied_from_chunk"] += 1
            elif example_echo(text, chunk.text, examples) >= ECHO_THRESHOLD:
                dropped["echoed_example"] += 1
            else:
                seen.add(normal)
                kept.append(Query(id=f"q{len(kept)}", text=text, chunk_id=chunk.id))
    ctx.progress(len(sample), len(sample))
    if len(kept) < 4:
        raise StageError(
            f"Only {len(kept)} usable queries from {len(sample)} chunks (dropped: {dropped}). "
            "Raise queries.max_queries, or use a stronger LLM (--llm-model)."
        )
    write_jsonl(ctx.out / "queries.jsonl", kept)
    write_jsonl(ctx.out / "beir_queries.jsonl", ({"_id": q.id, "text": q.text} for q in kept))
    summary = {"chunks_sampled": len(sample), "queries_kept": len(kept), "dropped": dropped}
    return StageResult(files=["queries/queries.jsonl", "queries/beir_queries.jsonl"], summary=summary)
