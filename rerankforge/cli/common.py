"""Console, progress display and result tables shared by the commands."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class StageProgress:
    """A rich progress bar per stage (count, rate via elapsed/ETA), fed by the pipeline's callback."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
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


def summary_table(result: Any) -> Table:
    table = Table(title="rerankforge build", show_lines=False)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("result")
    for stage in result.stages:
        s = stage.summary
        detail = {
            "parse": lambda: f"{s.get('files_parsed')}/{s.get('files_seen')} files, {s.get('chunks')} chunks"
            + (f", {s.get('files_skipped')} skipped" if s.get("files_skipped") else ""),
            "queries": lambda: f"{s.get('queries_kept')} queries kept of {s.get('chunks_sampled')} chunks; "
            f"dropped {s.get('dropped')}",
            "mine": lambda: f"top-{s.get('top_k')} of {s.get('chunks_indexed')} chunks; source in top-k "
            f"{s.get('source_in_top_k')}",
            "grade": lambda: f"{s.get('graded')} pairs graded, histogram {s.get('grade_histogram')}",
            "train": lambda: f"{s.get('loss')} loss, {s.get('groups')} groups, {s.get('steps')} steps, "
            f"loss {s.get('loss_first')} -> {s.get('loss_last')}",
            "evaluate": lambda: f"{s.get('dev_queries')} held-out queries",
            "export": lambda: f"fp32 max diff {s.get('max_abs_diff_fp32', 0):.1e}"
            + (f", int8 max diff {s['max_abs_diff_int8']:.1e}" if "max_abs_diff_int8" in s else ""),
        }.get(stage.name, lambda: "")()
        table.add_row(stage.name, stage.status, f"{stage.seconds:.0f} s", detail)
    return table


def metrics_table(summary: dict[str, Any]) -> Table:
    table = Table(title="held-out synthetic queries")
    table.add_column("system")
    metric_names = list(summary["first_stage"])
    for name in metric_names:
        table.add_column(name, justify="right")
    for system, label in (("first_stage", "first stage (bi-encoder)"), ("reranked", "reranked (your model)")):
        table.add_row(label, *(f"{summary[system][m]:.4f}" for m in metric_names))
    return table
