"""Console, progress display and result tables shared by the commands."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second (or seconds per item when slower than one a second)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("")
        return Text(f"{speed:.1f}/s" if speed >= 1 else f"{1 / speed:.1f} s/it", style="cyan")


class StageProgress:
    """A rich progress bar per stage (count, rate via elapsed/ETA), fed by the pipeline's callback."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("[dim]{task.fields[note]}", justify="left"),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> StageProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int, note: str) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task("", stage=stage, note="", total=total or None)
        self.progress.update(self.tasks[stage], completed=done, total=total or None, note=note[:40])


def stage_detail(name: str, s: dict[str, Any]) -> str:
    """One line of what a stage produced, for the summary table."""
    if name == "parse":
        skipped = f", {s['files_skipped']} skipped" if s.get("files_skipped") else ""
        return f"{s.get('files_parsed')}/{s.get('files_seen')} files, {s.get('chunks')} chunks{skipped}"
    if name == "queries":
        dropped = {k: v for k, v in s.get("dropped", {}).items() if v}
        return f"{s.get('queries_kept')} queries from {s.get('chunks_sampled')} chunks; dropped {dropped or 0}"
    if name == "mine":
        return f"top-{s.get('top_k')} of {s.get('chunks_indexed')} chunks; source in top-k {s.get('source_in_top_k')}"
    if name == "grade" and s.get("pairs") == 0:
        return "nothing to grade: each query's source passage is its positive (grade.source, grade.top_k)"
    if name == "grade":
        return f"{s.get('graded')} pairs graded; grades 0-3: {list(s.get('grade_histogram', {}).values())}"
    if name == "train" and isinstance(s.get("cross_encoder"), str):  # no cross-encoder: the first stage's tuning
        tuned = s.get("first_stage") or {}
        if not tuned.get("steps"):
            return "nothing tuned: the scorer is the untuned first stage"
        return (
            f"first stage: {tuned['triplets']} rows, {tuned['steps']} steps, loss {tuned.get('loss_first')} -> "
            f"{tuned.get('loss_last')}; no cross-encoder"
        )
    if name == "train":
        held_out = (
            f"; held-out {s['held_out_loss_first']} -> {s['held_out_loss_last']}"
            if s.get("held_out_loss_first") is not None
            else ""
        )
        return (
            f"{s.get('loss')}, {s.get('groups')} groups, {s.get('steps')} steps, "
            f"loss {s.get('loss_first')} -> {s.get('loss_last')}{held_out}"
        )
    if name == "evaluate":
        scorer = s.get("scorer") or {}
        if not scorer:
            return f"{s.get('dev_queries')} held-out queries"
        served = "tuned first stage" if scorer.get("first_stage") == "tuned" else "untuned first stage"
        if scorer.get("cross_encoder_weight"):
            served += f" + cross-encoder x{scorer['cross_encoder_weight']:.3g}"
        return f"{s.get('dev_queries')} held-out queries; serves the {served}"
    if name == "export" and "cross_encoder" in s:
        first = s.get("first_stage") or {}
        variant = first.get("recommended_variant", "fp32")
        return (
            f"the first stage only ({first.get('model')}), served as {variant}; "
            f"max |onnx - torch| {first.get('max_abs_diff', 0):.1e}"
        )
    if name == "export":
        diffs = ", ".join(f"{k[13:]} {v:.1e}" for k, v in s.items() if k.startswith("max_abs_diff_"))
        served = f"; serving {s['recommended_variant']}" if "recommended_variant" in s else ""
        return f"max |onnx - torch|: {diffs}{served}"
    return ""


def summary_table(result: Any) -> Table:
    table = Table(title="rerankforge build")
    for column in ("stage", "status", "time", "result"):
        table.add_column(column, justify="right" if column == "time" else "left")
    for stage in result.stages:
        table.add_row(stage.name, stage.status, f"{stage.seconds:.0f} s", stage_detail(stage.name, stage.summary))
    return table


def parse_table(summary: dict[str, Any]) -> Table:
    """The parse report: files seen, parsed, reused and skipped by reason; chunks, tokens, duplicates, changes."""
    table = Table(title="parse report")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("detail")
    changes = summary.get("changes") or {}
    table.add_row("files seen", str(summary.get("files_seen")), _counts(summary.get("ignored"), "not read: "))
    table.add_row(
        "files parsed",
        str(summary.get("files_parsed")),
        f"{summary.get('files_reused', 0)} unchanged, reused; " + _counts(changes) if changes else "",
    )
    skipped = _counts(summary.get("skipped_by_reason"))
    table.add_row(
        "files skipped", str(summary.get("files_skipped", 0)), skipped and f"{skipped} (per file: parse/report.json)"
    )
    limit = summary.get("max_tokens")
    table.add_row(
        "chunks",
        str(summary.get("chunks")),
        f"{summary.get('tokens', 0)} tokens of {summary.get('tokenizer')}, at most {limit} per chunk; "
        f"{summary.get('chunks_over_token_limit', 0)} over the limit were split instead of truncated",
    )
    table.add_row("duplicates removed", str(sum((summary.get("duplicates_removed") or {}).values())),
                  _counts(summary.get("duplicates_removed")))  # fmt: skip
    return table


def _counts(counts: dict[str, int] | None, lead: str = "") -> str:
    return lead + ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else ""


def metrics_table(summary: dict[str, Any]) -> Table:
    table = Table(title="held-out synthetic queries")
    table.add_column("system")
    metric_names = list(summary["first_stage"])
    for name in metric_names:
        table.add_column(name, justify="right")
    alpha = summary.get("fusion", {}).get("alpha")
    rows = [("first_stage", "first stage (bi-encoder)"), ("reranked", "reranked (your model)")]
    if "fused" in summary and alpha is not None:
        rows.append(("fused", f"fused with the first stage (alpha {alpha})"))
    for system, label in rows:
        table.add_row(label, *(f"{summary[system][m]:.4f}" for m in metric_names))
    return table


def labelled_table(result: dict[str, Any]) -> Table:
    """Every system's metrics on the user's labelled queries, with the paired t-test against the first stage."""
    main = result["main_metric"]
    table = Table(title=f"your labelled queries ({result['data']['queries_evaluated']} queries)")
    table.add_column("system")
    metric_names = list(next(iter(result["metrics"].values())))
    for name in metric_names:
        table.add_column(name, justify="right")
    table.add_column(f"p ({main})", justify="right")
    table.add_column("W / T / L", justify="right")
    for system, values in result["metrics"].items():
        p_value = result["p_values"].get(system, {}).get(main)
        wtl = result["win_tie_loss"].get(system, {}).get(main)
        table.add_row(
            result["systems"].get(system, system),
            *(f"{values[m]:.4f}" for m in metric_names),
            "baseline" if p_value is None else f"{p_value:.3g}",
            "" if wtl is None else f"{wtl['W']} / {wtl['T']} / {wtl['L']}",
        )
    return table


def retrieval_table(result: dict[str, Any], title: str) -> Table:
    """The first stages as retrievers: each metric, and the paired t-test of the tuned one against the untuned."""
    metric_names = list(next(iter(result["means"].values())))
    table = Table(title=f"{title} ({result['queries']} queries, {result['documents']} documents)")
    table.add_column("first stage")
    for name in metric_names:
        table.add_column(name, justify="right")
    for system, values in result["means"].items():
        table.add_row(system, *(f"{values[m]:.4f}" for m in metric_names))
    for system, p_values in result["p_values"].items():
        wtl = result["win_tie_loss"][system]
        cells = [f"{p_values[m]:.3g}, {wtl[m]['W']}/{wtl[m]['T']}/{wtl[m]['L']}" for m in metric_names]
        table.add_row(f"{system}: p, W/T/L", *cells)
    return table


def print_verdict(verdict: str, better: bool) -> None:
    style = "bold green" if better else "bold white on red"
    console.print(f"[{style}]The reranker is {verdict}[/]")


def print_report(report: Any) -> None:
    """The report's markdown summary, then where the full report is."""
    from rich.markdown import Markdown

    console.print(Markdown(report.markdown))
