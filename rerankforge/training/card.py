"""The rerankforge section of the model card (``model/README.md``): data, grades, loss, settings, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKER = "<!-- rerankforge -->"


def render(summary: dict[str, Any], hyper: dict[str, Any], histogram: dict[str, int]) -> str:
    """Markdown for the card; ``summary`` is the train stage's summary, ``hyper`` its TrainConfig."""
    dev = summary.get("dev") or {}
    lines = [
        MARKER,
        "## Built by rerankforge",
        "",
        "A reranker built from the builder's own documents: synthetic queries and LLM relevance grades, no human "
        "labels. `rerankforge serve MODEL_DIR` and `rerankforge.Reranker` serve the build's scorer (see "
        '"What is served" below); sentence-transformers\' `CrossEncoder` loads the cross-encoder part alone.',
        "",
        "### Training data",
        "",
        "| | |",
        "|---|---|",
        f"| training queries | {summary['train_queries']} |",
        f"| held-out (dev) queries | {summary['dev_queries']} |",
        f"| training groups | {summary['groups']} of {summary['group_size']} documents |",
        f"| max length | {summary['max_length']['max_length']} tokens "
        f"({summary['max_length']['truncated_pairs']} of {summary['max_length']['pairs']} pairs truncated) |",
        "",
        "LLM grade histogram (0 unrelated ... 3 answers the query): "
        + ", ".join(f"{g}: {n}" for g, n in sorted(histogram.items())),
        "",
        "### Loss and hyper-parameters",
        "",
        f"Loss: `{summary['loss']}`. Steps: {summary['steps']} on {summary['device']} ({summary['precision']}).",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| `{k}` | `{v}` |" for k, v in hyper.items()),
        "",
        "### Metrics on the held-out synthetic queries",
        "",
    ]
    if dev:
        lines += [
            f"nDCG@10 reranked: **{dev['best_ndcg@10']:.4f}** (checkpoint of step {dev['best_step']}), "
            f"first stage on the same candidates: {dev['first_stage_ndcg@10']:.4f}.",
            "",
            "The build's `evaluate` stage adds the fusion weight with the first stage and the verdict; "
            "`rerankforge report RUN_DIR` shows both, and real-label results when given `--eval-data`.",
        ]
    else:
        lines.append("No held-out evaluation was run.")
    return "\n".join(lines) + "\n"


def render_first_stage_only(summary: dict[str, Any], histogram: dict[str, int]) -> str:
    """Markdown for the card of a build that trained no cross-encoder: the scorer is the first stage alone."""
    tuned = summary.get("first_stage") or {}
    tuning = (
        f"The first stage's bi-encoder was tuned on {tuned['triplets']} (query, source passage, hard negatives) "
        f"rows in {tuned['steps']} steps on {summary['device']}."
        if tuned.get("steps")
        else "The first stage was not tuned."
    )
    return (
        "\n".join(
            [
                MARKER,
                "## Built by rerankforge",
                "",
                "A scorer built from the builder's own documents: synthetic queries and LLM relevance grades, no human "
                'labels. `rerankforge serve MODEL_DIR` and `rerankforge.Reranker` serve it (see "What is served" '
                f"below). This folder holds no cross-encoder: {summary['cross_encoder']}.",
                "",
                "### Training data",
                "",
                f"{summary['train_queries']} training queries, {summary['dev_queries']} held out. {tuning}",
                "",
                "LLM grade histogram (0 unrelated ... 3 answers the query): "
                + ", ".join(f"{g}: {n}" for g, n in sorted(histogram.items()))
                if any(histogram.values())
                else "No passage was graded (grade.source, grade.top_k): each query's positive is the passage it "
                "was written from.",
            ]
        )
        + "\n"
    )


SERVED_MARKER = "<!-- rerankforge served -->"


def render_served(scorer: dict[str, Any], verdict: str, systems: dict[str, float]) -> str:
    """The card's last section: which scorer is served and the held-out figures that chose it."""
    alone = scorer.get("cross_encoder_alone")
    if alone:
        what = (
            "**the reranker this build was given as its backbone, as it came**: the cross-encoder tuned on this "
            "build's queries did not beat it on the held-out queries, so this folder holds the original weights "
            "(`CrossEncoder(folder)` loads them)."
            if alone == "brought"
            else "**the cross-encoder tuned on this build's queries, alone** (`CrossEncoder(folder)` loads it)."
        )
        what += f" Its logit plus {scorer['bias']:g} is the score."
    elif scorer.get("first_stage_tuned") or scorer.get("cross_encoder_weight"):
        what = f"`{scorer['first_stage_weight']:g} * cos(first_stage(q), first_stage(d))"
        if scorer.get("cross_encoder_weight"):
            what += f" + {scorer['cross_encoder_weight']:.4g} * cross_encoder(q, d)"
        what += f" + {scorer['bias']:g}`, with the first stage `{scorer['first_stage_model']}`."
    else:
        what = (
            f"**the first stage alone**: the cosine of the untuned `{scorer['first_stage_model']}`, so the served "
            "order is exactly the first stage's. Nothing this build learned beat it on its held-out queries; "
            "the cross-encoder is in the folder but unweighted."
            if scorer.get("cross_encoder", True)
            else "no cross-encoder was trained."
        )
    return (
        "\n".join(
            [
                SERVED_MARKER,
                "### What is served",
                "",
                f"The score `rerankforge serve` returns is {what} The first stage is in `first_stage/` (a "
                "sentence-transformers folder with `onnx/model.onnx`): use it as your retriever's embedder too. "
                f"It is served as its {scorer.get('first_stage_variant', 'fp32')} variant (the fastest within 1 nDCG "
                "point of fp32 on the held-out queries).",
                "",
                f"Verdict: the reranker is {verdict}.",
                "",
                "| scorer | nDCG@10, held-out queries judged by their source passage |",
                "|---|---|",
                *(f"| {name} | {value:.4f} |" for name, value in systems.items()),
            ]
        )
        + "\n"
    )


def write_served(model_dir: Path, text: str) -> None:
    """Append (or replace) the card's "What is served" section."""
    path = model_dir / "README.md"
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    existing = existing.split(SERVED_MARKER, 1)[0].rstrip()
    path.write_text((existing + "\n\n" if existing else "") + text, encoding="utf-8")


def write(model_dir: Path, text: str) -> None:
    """Append the section to the card sentence-transformers wrote (replacing an older rerankforge section)."""
    path = model_dir / "README.md"
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    existing = existing.split(MARKER, 1)[0].rstrip()
    path.write_text((existing + "\n\n" if existing else "") + text, encoding="utf-8")
