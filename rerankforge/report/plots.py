"""The report's figures as PNG bytes (matplotlib, headless Agg backend; no pyplot state is left behind)."""

from __future__ import annotations

import io
from typing import Any

from rerankforge.errors import MissingDependencyError

GRADE_COLOURS = ("#c0392b", "#e67e22", "#27ae60", "#1e8449")


def _figure(width: float = 6.4, height: float = 3.4) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "eval", "The build report") from exc
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def metric_bars(title: str, means: dict[str, dict[str, float]], labels: dict[str, str]) -> bytes:
    """Grouped bars: one group per metric, one bar per system."""
    figure = _figure(7.2, 3.6)
    axes = figure.add_subplot()
    systems = list(means)
    metrics = list(next(iter(means.values())))
    width = 0.8 / max(len(systems), 1)
    for i, system in enumerate(systems):
        positions = [m + i * width - 0.4 + width / 2 for m in range(len(metrics))]
        bars = axes.bar(positions, [means[system][m] for m in metrics], width, label=labels.get(system, system))
        axes.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    axes.set_xticks(range(len(metrics)), metrics)
    axes.set_ylim(0, 1.12)
    axes.set_title(title)
    axes.legend(fontsize=7, loc="lower right")
    return _png(figure)


def delta_histogram(title: str, deltas: list[float], metric: str) -> bytes:
    """Per-query change of the reranker over the first stage: right of zero it helped, left it hurt."""
    figure = _figure()
    axes = figure.add_subplot()
    bins = [round(-1 + i * 0.1, 1) for i in range(21)]
    wins = sum(d > 0 for d in deltas)
    losses = sum(d < 0 for d in deltas)
    axes.hist(deltas, bins=bins, color="#2e86c1", edgecolor="white")
    axes.axvline(0, color="black", linewidth=1)
    axes.set_xlabel(f"{metric}: reranked minus first stage, per query")
    axes.set_ylabel("queries")
    axes.set_title(f"{title}: {wins} wins, {losses} losses, {len(deltas) - wins - losses} ties")
    return _png(figure)


def grade_distribution(counts: dict[str, int]) -> bytes:
    figure = _figure(5.0, 3.0)
    axes = figure.add_subplot()
    grades = list(counts)
    bars = axes.bar(grades, [counts[g] for g in grades], color=GRADE_COLOURS[: len(grades)])
    axes.bar_label(bars, fontsize=8)
    axes.set_xlabel("LLM grade (0 unrelated, 1 on topic, 2 partly answers, 3 answers)")
    axes.set_ylabel("(query, passage) pairs")
    axes.set_title("Grades of the synthetic training data")
    return _png(figure)


def query_lengths(lengths: list[int]) -> bytes:
    figure = _figure(5.0, 3.0)
    axes = figure.add_subplot()
    axes.hist(lengths, bins=range(min(lengths), max(lengths) + 2), color="#7d3c98", edgecolor="white", align="left")
    axes.set_xlabel("words per synthetic query")
    axes.set_ylabel("queries")
    axes.set_title("Query length")
    return _png(figure)


def loss_curves(history: list[dict[str, Any]]) -> bytes:
    """Training loss per logged step, and the held-out loss where the build logged one."""
    figure = _figure()
    axes = figure.add_subplot()
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    held_out = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train:
        axes.plot(*zip(*train, strict=True), label="training loss", color="#2e86c1")
    if held_out:
        axes.plot(*zip(*held_out, strict=True), "o-", label="held-out loss", color="#c0392b")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("Training")
    axes.legend(fontsize=8)
    return _png(figure)


def latency(measured: dict[str, Any]) -> bytes:
    figure = _figure(5.0, 3.0)
    axes = figure.add_subplot()
    for label, timings in measured["ms"].items():
        axes.plot(measured["sizes"], timings, "o-", label=f"ONNX {label}")
    axes.set_xlabel("documents per query")
    axes.set_ylabel("ms per query (median)")
    axes.set_title("Latency of the exported model on this machine")
    axes.legend(fontsize=8)
    return _png(figure)
