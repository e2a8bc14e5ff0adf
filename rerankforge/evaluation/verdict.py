"""The one sentence that says whether a reranker beat its baseline, worded to follow "The reranker is".

Every comparison a build or ``rerankforge eval`` reports (held-out synthetic queries, the served scorer's
choice, the user's labelled queries) ends in one of three outcomes, always worded the same way:

- ``better than <baseline> (<evidence>)``: a gain above the margin, and significant;
- ``NOT significantly better than <baseline> (<evidence>): <unsure>``: a gain the test cannot tell from chance;
- ``NOT better than <baseline> (<evidence>): <worse>``.

Example:
    >>> verdict(0.05, True, baseline="the first stage", evidence="nDCG@10 +0.0500", unsure="", worse="")
    'better than the first stage (nDCG@10 +0.0500)'
    >>> verdict(0.0, False, baseline="dense", evidence="p = 1", unsure="", worse="keep dense")
    'NOT better than dense (p = 1): keep dense'
"""

from __future__ import annotations


def verdict(
    gain: float,
    significant: bool,
    *,
    baseline: str,
    evidence: str,
    unsure: str,
    worse: str,
    min_gain: float = 0.0,
    then: str = "",
) -> str:
    """The verdict for a ``gain`` over ``baseline``; ``then`` follows a "better" one (e.g. what is served)."""
    if gain > min_gain and significant:
        return f"better than {baseline} ({evidence}){f': {then}' if then else ''}"
    if gain > min_gain:
        return f"NOT significantly better than {baseline} ({evidence}): {unsure}"
    return f"NOT better than {baseline} ({evidence}): {worse}"
