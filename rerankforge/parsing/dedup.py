"""Remove exact and near-duplicate chunks (boilerplate headers, repeated disclaimers, copies of a file).

Exact: the same text after lower-casing and collapsing punctuation and whitespace. Near: MinHash LSH
(``datasketch``) over word 3-gram shingles finds candidates, and the true Jaccard similarity of the shingle
sets decides, so the outcome does not depend on hash luck. The first chunk in corpus order (by path, then
position) is kept, so a rerun keeps the same ones.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from rerankforge.artifacts import Chunk

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
SHINGLE_WORDS = 3
NUM_PERM = 128


@dataclass
class Duplicate:
    id: str
    duplicate_of: str
    kind: str  # "exact" or "near"
    similarity: float


def normalise(text: str) -> str:
    """Lower case, punctuation and whitespace runs collapsed to one space.

    Example:
        >>> normalise("  CONFIDENTIAL:  do not   share! ")
        'confidential do not share'
    """
    return _NON_WORD.sub(" ", text.lower()).strip()


def shingles(text: str, n: int = SHINGLE_WORDS) -> set[str]:
    words = normalise(text).split()
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def remove_duplicates(chunks: list[Chunk], near_threshold: float | None) -> tuple[list[Chunk], list[Duplicate]]:
    """Keep the first of each group of exact (and, with a threshold, near) duplicates.

    Example:
        >>> a = Chunk(id="a#0", text="Confidential. Do not share.", source="a")
        >>> b = Chunk(id="b#0", text="CONFIDENTIAL - do not share", source="b")
        >>> kept, removed = remove_duplicates([a, b], None)
        >>> [c.id for c in kept], removed[0].duplicate_of
        (['a#0'], 'a#0')
    """
    kept: list[Chunk] = []
    removed: list[Duplicate] = []
    by_hash: dict[str, str] = {}
    lsh: Any = None
    kept_shingles: dict[str, set[str]] = {}
    if near_threshold is not None:
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=near_threshold, num_perm=NUM_PERM)
    for chunk in chunks:
        digest = hashlib.sha256(normalise(chunk.text).encode("utf-8")).hexdigest()
        if digest in by_hash:
            removed.append(Duplicate(chunk.id, by_hash[digest], "exact", 1.0))
            continue
        if lsh is not None and near_threshold is not None:
            match = _near_match(chunk, lsh, kept_shingles, near_threshold)
            if match is not None:
                removed.append(Duplicate(chunk.id, match[0], "near", round(match[1], 4)))
                continue
        by_hash[digest] = chunk.id
        kept.append(chunk)
    return kept, removed


def _near_match(
    chunk: Chunk, lsh: Any, kept_shingles: dict[str, set[str]], threshold: float
) -> tuple[str, float] | None:
    from datasketch import MinHash

    own = shingles(chunk.text)
    signature = MinHash(num_perm=NUM_PERM, seed=1)
    signature.update_batch([s.encode("utf-8") for s in own])
    best: tuple[str, float] | None = None
    for candidate in sorted(lsh.query(signature)):
        similarity = jaccard(own, kept_shingles[candidate])
        if similarity >= threshold and (best is None or similarity > best[1]):
            best = (candidate, similarity)
    if best is None:
        lsh.insert(chunk.id, signature)
        kept_shingles[chunk.id] = own
    return best
