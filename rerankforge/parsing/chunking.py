"""Chunks that fit the reranker: unstructured's ``chunk_by_title``, then a hard limit in backbone tokens.

unstructured counts tokens only with tiktoken (whose encodings are downloaded at run time), so the sections
are cut by characters first and every chunk is measured with the cross-encoder's own tokenizer; a chunk over
the limit, which the cross-encoder would truncate, is split at sentence or word boundaries by
``semantic-text-splitter`` with that tokenizer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rerankforge.artifacts import Chunk, file_sha256
from rerankforge.config import BuildConfig, ParseConfig
from rerankforge.errors import ConfigError


@dataclass(frozen=True)
class TokenLimit:
    """The tokenizer chunks are measured with (a ``tokenizer.json`` file) and the limit of a chunk in its tokens."""

    tokenizer_file: str
    max_tokens: int
    tokenizer_sha256: str  # keys the workers' tokenizer cache and the per-file signature


@lru_cache(maxsize=4)
def load_tokenizer(tokenizer_file: str, tokenizer_sha256: str) -> Any:
    """A ``tokenizers.Tokenizer`` from its JSON file: no transformers import in the worker processes."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(tokenizer_file)


def token_limit(cfg: BuildConfig, folder: Path | None) -> TokenLimit:
    """Resolve ``train.backbone``'s tokenizer (offline), save it to ``folder`` for the workers, derive the limit.

    The saved copy neither truncates nor pads, whatever the model's own tokenizer.json says. With ``folder``
    None nothing is saved and the hash is of the tokenizer's JSON text.
    """
    from transformers import AutoTokenizer

    from rerankforge.models import resolve_model

    path = resolve_model(cfg.train.backbone)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Chunks are measured in tokens of train.backbone '{cfg.train.backbone}', but its tokenizer could not "
            f"be loaded offline ({exc}). Pass a local model folder, or set HF_HUB_OFFLINE=0 to let the hub fetch it."
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"train.backbone '{cfg.train.backbone}' has no fast (Rust) tokenizer, which chunking needs. "
            "Use a model folder with a tokenizer.json."
        )
    pair_specials = tokenizer.num_special_tokens_to_add(pair=True)
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    limit = cfg.parse.token_limit(cfg.train.max_length, pair_specials)
    if folder is None:  # only what the chunks depend on, nothing written (a stage key)
        return TokenLimit("", limit, hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest())
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / "tokenizer.json"
    backend.save(str(saved))
    return TokenLimit(str(saved), limit, file_sha256(saved))


def count_tokens(text: str, tokenizer: Any) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


@lru_cache(maxsize=256)
def _splitter(tokenizer: Any, tokens: int) -> Any:
    """A splitter to ``tokens`` tokens: building one copies the tokenizer (about 18 ms), so each size is built once
    per worker (sizes differ only by the section title's length)."""
    from semantic_text_splitter import TextSplitter

    specials = len(tokenizer.encode("").ids)  # the splitter counts the single-sequence special tokens too
    return TextSplitter.from_huggingface_tokenizer(tokenizer, tokens + specials)


def _split(text: str, tokens: int, tokenizer: Any) -> list[str]:
    """Pieces of at most ``tokens`` tokens, cut at the largest boundary that fits (paragraph, sentence, word)."""
    pieces = []
    for piece in _splitter(tokenizer, tokens).chunks(text):
        # The splitter can return an over-long piece when it finds no boundary inside it (a long "=====" rule
        # measured differently): cut that one at token offsets.
        pieces.extend(_cut_at_tokens(piece, tokens, tokenizer) if count_tokens(piece, tokenizer) > tokens else [piece])
    return pieces


def _cut_at_tokens(text: str, tokens: int, tokenizer: Any) -> list[str]:
    offsets = tokenizer.encode(text, add_special_tokens=False).offsets
    pieces = []
    start = 0
    while start < len(offsets):
        end = min(start + tokens, len(offsets))
        while end > start + 1 and count_tokens(text[offsets[start][0] : offsets[end - 1][1]], tokenizer) > tokens:
            end -= 1  # a substring can tokenize into more pieces than it had in context
        pieces.append(text[offsets[start][0] : offsets[end - 1][1]].strip())
        start = end
    return [p for p in pieces if p]


@dataclass
class ChunkStats:
    over_limit: int = 0


def chunk_elements(
    elements: list[Any], relative: str, cfg: ParseConfig, limit: TokenLimit
) -> tuple[list[Chunk], ChunkStats]:
    """Cut a file's elements into :class:`Chunk` records of at most ``limit.max_tokens`` tokens.

    Each chunk carries its section title (the last heading at or before it, so the continuation of a long
    section keeps it), the headings inside it, element types and page numbers.
    """
    from unstructured.chunking.title import chunk_by_title

    tokenizer = load_tokenizer(limit.tokenizer_file, limit.tokenizer_sha256)
    sections = chunk_by_title(
        elements,
        max_characters=cfg.max_characters,
        new_after_n_chars=cfg.new_after_n_characters,
        combine_text_under_n_chars=cfg.combine_under_n_characters,
    )
    records: list[Chunk] = []
    stats = ChunkStats()
    current_title: str | None = None
    for section in sections:
        originals = getattr(section.metadata, "orig_elements", None) or []
        headings = [e.text.strip() for e in originals if type(e).__name__ == "Title" and e.text.strip()]
        title = headings[0] if headings else current_title
        current_title = headings[-1] if headings else current_title
        body = section.text.strip()
        if len(body) < cfg.min_chunk_characters:
            continue
        prefix = ""
        if cfg.title_prefix and title:
            prefix = f"{title}\n\n"  # on every piece of the section, so the heading leads each one once
            body = body.removeprefix(title).lstrip() or body
        budget = limit.max_tokens - (count_tokens(prefix, tokenizer) if prefix else 0)
        pieces = [body]
        if count_tokens(prefix + body, tokenizer) > limit.max_tokens:
            stats.over_limit += 1
            pieces = [p for p in _split(body, max(budget, 8), tokenizer) if len(p) >= cfg.min_chunk_characters]
        pages = sorted({e.metadata.page_number for e in originals if e.metadata.page_number is not None})
        metadata: dict[str, Any] = {"filetype": section.metadata.filetype}
        if pages:
            metadata["pages"] = pages
        if headings:
            metadata["headings"] = headings
        for piece in pieces:
            text = prefix + piece
            records.append(
                Chunk(
                    id=f"{relative}#{len(records)}",
                    text=text,
                    source=relative,
                    title=title,
                    element_types=sorted({type(e).__name__ for e in originals}),
                    metadata=dict(metadata),
                    tokens=count_tokens(text, tokenizer),
                )
            )
    return records, stats
