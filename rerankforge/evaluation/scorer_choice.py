"""Which scorer a build serves: the first stage, the tuned first stage, and the cross-encoder as a residual.

The served score is ``SCALE * cos(E(q), E(d)) + w * CE(q, d) + bias``, where ``E`` is the untuned or the
tuned bi-encoder. Each part must earn its place on the held-out synthetic queries, judged by where their
own source chunk lands among the untuned first stage's top candidates (source-chunk qrels: the query was
written from that passage, so this needs no judgment of the LLM's grades):

1. the tuned bi-encoder replaces the untuned one only when it ranks the source chunks significantly higher
   (paired one-sided t-test over the queries);
2. the cross-encoder gets a weight above 0 only when the best weight is significantly better than none
   (at ``p / len(CE_RATIOS)``, as the best of several weights).

With neither, the scorer is the untuned first stage alone, so the served order is exactly its order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rerankforge.fusion import choose_alpha
from rerankforge.ranking import SCALE, ndcg_at_k, ndcg_of_scores, one_sided_p, significant_gain

CE_RATIOS = (0.25, 0.5, 1.0, 2.0, 4.0)  # cross-encoder weights, as multiples of the first stage's spread


@dataclass
class DevList:
    """One held-out query's candidates (the untuned first stage's top ones), in first-stage order."""

    grades: list[int]  # 1 for the query's source chunk, else 0
    first: np.ndarray  # cosine of the untuned first stage
    tuned: np.ndarray | None  # cosine of the tuned bi-encoder (None: not tuned)
    cross_encoder: np.ndarray | None  # the cross-encoder's logits (None: the build trained none)


def _per_query(lists: list[DevList], score_of: Callable[[DevList], np.ndarray], k: int) -> list[float]:
    return [ndcg_of_scores(d.grades, score_of(d), k) for d in lists]


def choose_scorer(lists: list[DevList], *, k: int, p_value: float | None, min_gain: float = 0.0) -> dict[str, object]:
    """The served scorer and the figures behind the choice (see the module doc for the rule); a part must also
    lift the held-out nDCG@k by more than ``min_gain`` (a margin, beside the p-value)."""
    first = _per_query(lists, lambda d: d.first, k)

    def better(system: list[float], baseline: list[float], tries: int = 1) -> bool:
        gain = float(np.mean(system) - np.mean(baseline)) if system else 0.0
        # Bonferroni: the best of several weights must clear p / tries, not p (a noise weight wins somewhere)
        return gain > min_gain and (p_value is None or significant_gain(system, baseline, p_value / tries))

    systems: dict[str, list[float]] = {"first stage": first}
    base = "untuned"
    if all(d.tuned is not None for d in lists) and lists:
        systems["tuned first stage"] = _per_query(lists, lambda d: d.tuned, k)
        if better(systems["tuned first stage"], first):
            base = "tuned"

    def cosine(d: DevList) -> np.ndarray:
        return d.tuned if base == "tuned" and d.tuned is not None else d.first

    base_scores = systems["tuned first stage" if base == "tuned" else "first stage"]
    weight, best = 0.0, base_scores
    if lists and all(d.cross_encoder is not None for d in lists):
        all_cos = np.concatenate([cosine(d) for d in lists])
        all_ce = np.concatenate([d.cross_encoder for d in lists])  # type: ignore[misc]
        unit = SCALE * float(np.std(all_cos)) / max(float(np.std(all_ce)), 1e-9)
        systems["cross-encoder alone"] = _per_query(lists, lambda d: d.cross_encoder, k)  # type: ignore[arg-type, return-value]
        for ratio in CE_RATIOS:
            values = _per_query(lists, lambda d, w=ratio * unit: SCALE * cosine(d) + w * d.cross_encoder, k)
            systems[f"{base} first stage + cross-encoder x{ratio}"] = values
            if np.mean(values) > np.mean(best) and better(values, base_scores, len(CE_RATIOS)):
                weight, best = round(ratio * unit, 6), values

    def served(d: DevList) -> np.ndarray:
        return SCALE * cosine(d) + (weight * d.cross_encoder if weight else 0.0)

    sources = [served(d)[i] for d in lists for i, g in enumerate(d.grades) if g > 0]
    others = [served(d)[i] for d in lists for i, g in enumerate(d.grades) if g == 0]
    # centred so that sigmoid(score) is about 0.5 between a typical source chunk and a typical other candidate
    bias = -round((float(np.mean(sources)) + float(np.mean(others))) / 2, 4) if sources and others else 0.0
    learned = base == "tuned" or weight > 0
    alpha = 0.0
    if learned:  # the weight of the served score against a client's own first-stage scores
        alpha, _ = choose_alpha([(d.grades, served(d), d.first) for d in lists], lambda g: ndcg_at_k(g, k), p_value)
    gain = round(float(np.mean(best) - np.mean(first)), 4) if lists else 0.0
    return {
        "scorer": {
            "first_stage": base,
            "first_stage_weight": SCALE,
            "cross_encoder_weight": weight,
            "bias": bias,
        },
        "learned": learned,
        "gain_ndcg": gain,
        "p_value": one_sided_p(best, first) if learned else None,
        "fusion_alpha": alpha,
        "systems": {name: round(float(np.mean(v)), 4) if v else 0.0 for name, v in systems.items()},
    }
