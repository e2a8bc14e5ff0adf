"""``report.html`` (self-contained: PNGs embedded as data URIs, also saved beside it) and a markdown summary.

Example:
    >>> from rerankforge.report import write_report
    >>> report = write_report(Path("runs/examples"))  # doctest: +SKIP
    >>> report.html  # doctest: +SKIP
    PosixPath('runs/examples/report.html')
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rerankforge.artifacts import atomic_write_text, write_json
from rerankforge.evaluation.scorer_choice import HOW_FAR_TO_TRUST
from rerankforge.report import plots
from rerankforge.report.collect import collect

logger = logging.getLogger(__name__)

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
REPORT_DIR = "report"


@dataclass
class Report:
    html: Path
    markdown_path: Path
    markdown: str
    verdict: str | None
    better: bool | None
    images: list[Path] = field(default_factory=list)


def _figures(data: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """(file stem, caption, PNG) for every figure the run's artifacts allow."""
    figures = []
    evaluation, labelled, synthetic = data["evaluation"], data["labelled"], data["synthetic"]
    if labelled:
        figures.append(
            (
                "labelled_metrics",
                f"Metrics on your labelled queries ({labelled['data']['source']})",
                plots.metric_bars("Your labelled queries", labelled["metrics"], labelled["systems"]),
            )
        )
        figures.append(
            (
                "labelled_deltas",
                "Per-query change on your labelled queries",
                plots.delta_histogram("Labelled queries", labelled["deltas"], labelled["main_metric"]),
            )
        )
    if evaluation:
        labels = {
            "first_stage": "first stage (bi-encoder)",
            "reranked": "reranked (your model)",
            "fused": f"fused (alpha {evaluation['fusion']['alpha']})",
        }
        figures.append(
            (
                "synthetic_metrics",
                "Metrics on the held-out synthetic queries",
                plots.metric_bars("Held-out synthetic queries", evaluation["metrics"], labels),
            )
        )
        figures.append(
            (
                "synthetic_deltas",
                "Per-query change on the held-out synthetic queries",
                plots.delta_histogram("Synthetic queries", evaluation["deltas"], evaluation["main_metric"]),
            )
        )
    if synthetic.get("grade_counts"):
        figures.append(
            ("grades", "Grade distribution of the synthetic data", plots.grade_distribution(synthetic["grade_counts"]))
        )
    if synthetic.get("query_lengths"):
        figures.append(
            ("query_lengths", "Length of the synthetic queries", plots.query_lengths(synthetic["query_lengths"]))
        )
    if data["loss_history"]:
        figures.append(("loss", "Loss curves", plots.loss_curves(data["loss_history"])))
    if data.get("latency"):
        figures.append(("latency", "Latency of the exported model", plots.latency(data["latency"])))
    return figures


def _measure_latency(run_dir: Path) -> dict[str, Any] | None:
    from rerankforge.artifacts import Chunk, read_jsonl
    from rerankforge.evaluation.latency import measure_latency

    model_dir = run_dir / "model"
    chunks_file = run_dir / "parse" / "chunks.jsonl"
    if not (model_dir / "onnx" / "model.onnx").is_file() or not chunks_file.is_file():
        return None
    documents = [c.text for c in read_jsonl(chunks_file, Chunk)]
    return measure_latency(model_dir, "how do I reset the device", documents) if documents else None


def _without_cross_encoder(evaluation: dict[str, Any]) -> bool:
    """A build that trained no cross-encoder: its LLM-graded figures are the served scorer's own."""
    return "cross_encoder" in evaluation and evaluation["cross_encoder"] is None


def verdict_of(data: dict[str, Any]) -> tuple[str | None, bool | None]:
    """The headline: labelled data when there is some (it is the user's own evidence), else synthetic."""
    for source in (data["labelled"], data["evaluation"]):
        if source:
            return source["verdict"], bool(source["better"])
    return None, None


def markdown_summary(data: dict[str, Any], html: Path) -> str:
    """A short summary for the terminal: verdicts, metric tables, the data card's counts, the report's path."""
    lines = ["# rerankforge report", ""]
    if data["labelled"]:
        lab = data["labelled"]
        lines += [f"**Your labelled queries.** The reranker is {lab['verdict']}", ""]
        lines += _markdown_table(lab["metrics"], lab["systems"], lab.get("p_values", {}), lab["main_metric"])
        if lab["data"]["notes"]:
            lines += ["", *(f"- {note}" for note in lab["data"]["notes"])]
        lines.append("")
    if data["evaluation"]:
        ev = data["evaluation"]
        lines += [f"**Held-out synthetic queries.** The reranker is {ev['verdict']}", ""]
        lines += [f"How far to trust it: {HOW_FAR_TO_TRUST}.", ""]
        choice = ev.get("scorer_choice")
        if choice:
            systems = ", ".join(f"{n} {v:.4f}" for n, v in choice["systems"].items())
            where = f"{choice['dev_queries']} held-out queries judged by their source passage"
            if "first stage, every fold" in choice["systems"]:
                # builds evaluated before every_fold_queries was recorded judged the same queries
                kept = choice.get("every_fold_queries", choice.get("judged_queries"))
                where += f" (every fold: all {kept} kept queries)"
            lines += [f"Served-scorer choice, nDCG@10 on {where}: {systems}", ""]
        alpha = ev["fusion"].get("cross_encoder_alpha", ev["fusion"]["alpha"])
        judged = "served scorer" if _without_cross_encoder(ev) else "cross-encoder alone"
        labels = {
            "first_stage": "first stage (bi-encoder)",
            "reranked": f"{judged} (LLM grades)",
            "fused": f"{judged} fused (alpha {alpha})",
        }
        lines += [*_markdown_table(ev["metrics"], labels, {}, ev["main_metric"]), ""]
    card = [f"{s['name']} {s['seconds']:.0f} s" for s in data["stages"] if s.get("seconds") is not None]
    if card:
        lines.append(f"- time per stage: {', '.join(card)}")
    synthetic = data["synthetic"]
    if synthetic.get("queries"):
        counts = synthetic.get("grade_counts") or {}
        graded = f"grades 0-3: {counts}" if any(counts.values()) else "no passage graded"
        lines.append(f"- synthetic queries: {synthetic['queries']}; {graded}")
    if data["llm"].get("calls") is not None:
        tokens = (
            f", {data['llm']['prompt_tokens']} prompt + {data['llm']['output_tokens']} output tokens"
            if "prompt_tokens" in data["llm"]
            else ""
        )
        lines.append(f"- LLM calls: {data['llm']['calls']}{tokens}")
    lines += ["", f"Full report: {html}"]
    return "\n".join(lines) + "\n"


def _markdown_table(
    means: dict[str, dict[str, float]], labels: dict[str, str], p_values: dict[str, dict[str, float]], main: str
) -> list[str]:
    metrics = list(next(iter(means.values())))
    head = ["system", *metrics] + ([f"p ({main})"] if p_values else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system, values in means.items():
        cells = [labels.get(system, system), *(f"{values[m]:.4f}" for m in metrics)]
        if p_values:
            cells.append(f"{p_values[system][main]:.3g}" if system in p_values else "baseline")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def write_report(run_dir: Path, *, latency: bool = True) -> Report:
    """Write ``RUN_DIR/report.html``, ``RUN_DIR/report.md`` and ``RUN_DIR/report/*.png`` from the run's artifacts.

    Args:
        run_dir: a run folder (finished or not: what is there is reported).
        latency: measure the exported ONNX model's latency on this machine (a few seconds).
    """
    from jinja2 import Environment, select_autoescape

    run_dir = Path(run_dir)
    data = collect(run_dir)
    data["latency"] = _measure_latency(run_dir) if latency else None
    out = run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    images = []
    figures = []
    for stem, caption, png in _figures(data):
        path = out / f"{stem}.png"
        path.write_bytes(png)
        images.append(path)
        figures.append(
            {
                "caption": caption,
                "file": f"{REPORT_DIR}/{path.name}",
                "uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            }
        )
    write_json(out / "report.json", data)
    verdict, better = verdict_of(data)
    template_text = resources.files("rerankforge.report").joinpath("report.html.jinja").read_text(encoding="utf-8")
    template = Environment(autoescape=select_autoescape(default=True)).from_string(template_text)
    html = run_dir / REPORT_HTML
    atomic_write_text(
        html, template.render(data=data, figures=figures, verdict=verdict, better=better, trust=HOW_FAR_TO_TRUST)
    )
    html.chmod(0o644)  # a page to open and share (atomic writes create files readable by their owner only)
    markdown = markdown_summary(data, html)
    markdown_path = run_dir / REPORT_MD
    atomic_write_text(markdown_path, markdown)
    return Report(
        html=html, markdown_path=markdown_path, markdown=markdown, verdict=verdict, better=better, images=images
    )
