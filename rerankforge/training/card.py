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
        "A cross-encoder reranker fine-tuned on synthetic queries and LLM relevance grades of the builder's own "
        "documents; no human labels. Serve it with `rerankforge serve MODEL_DIR` (ONNX) or load it with "
        "sentence-transformers' `CrossEncoder`.",
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


def write(model_dir: Path, text: str) -> None:
    """Append the section to the card sentence-transformers wrote (replacing an older rerankforge section)."""
    path = model_dir / "README.md"
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    existing = existing.split(MARKER, 1)[0].rstrip()
    path.write_text((existing + "\n\n" if existing else "") + text, encoding="utf-8")
