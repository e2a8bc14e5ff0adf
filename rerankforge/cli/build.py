"""``rerankforge build DOCS``: a wizard in a terminal, silent and non-interactive with --yes or options."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.prompt import Confirm, IntPrompt, Prompt

from rerankforge.budget import expected_gain, parse_duration
from rerankforge.cli.common import (
    StageProgress,
    console,
    parse_table,
    print_report,
    print_verdict,
    summary_table,
)
from rerankforge.config import BuildConfig, load_config
from rerankforge.distributed import Launch
from rerankforge.errors import MissingDependencyError
from rerankforge.pipeline import STAGE_NAMES

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file (see examples/).")]
RunDirOpt = Annotated[Path | None, typer.Option("--run-dir", help="Folder for artifacts and the model.")]


def _overrides(**options: Any) -> dict[str, Any]:
    """CLI options (None = not given) as nested config overrides."""
    sections: dict[str, Any] = {}
    for dotted, value in options.items():
        if value is None:
            continue
        section, _, key = dotted.partition("__")
        if key:
            sections.setdefault(section, {})[key] = value
        else:
            sections[section] = value
    return sections


def _wizard(cfg: BuildConfig) -> BuildConfig:
    """Ask for the LLM, the query budget and the loss; show the plan; confirm."""
    from rerankforge.llm.ollama import list_ollama_models, ollama_host
    from rerankforge.llm.packaged import DEFAULT_EMBEDDED_MODEL

    console.print(Panel.fit("rerankforge: build a reranker from your documents", style="bold"))
    host = ollama_host(cfg.llm.host)
    models = list_ollama_models(cfg.llm.host)
    choices = [m for m in (models or []) if "embed" not in m.lower()]
    if choices:
        console.print(f"Ollama answers at {host} with {len(choices)} chat models:")
        for i, name in enumerate(choices, start=1):
            console.print(f"  {i}. {name}")
        console.print(f"  {len(choices) + 1}. embedded llama.cpp ({DEFAULT_EMBEDDED_MODEL}, no server)")
        pick = IntPrompt.ask("LLM", default=1, choices=[str(i) for i in range(1, len(choices) + 2)])
        llm = (
            {"provider": "ollama", "model": choices[pick - 1]}
            if pick <= len(choices)
            else {"provider": "embedded", "model": None}
        )
    else:
        console.print(f"No Ollama server at {host}; using the embedded llama.cpp model {DEFAULT_EMBEDDED_MODEL}.")
        llm = {"provider": "embedded"}
    while True:
        budget = Prompt.ask("Time budget for the whole build (e.g. 30m, 2h)", default=cfg.time_budget or "2h")
        try:
            parse_duration(budget)
            break
        except ValueError as exc:
            console.print(f"[red]{exc}[/]")
    loss = Prompt.ask("Loss", choices=["lce", "wasserstein", "bce", "listnet", "lambda"], default=cfg.train.loss)
    cfg = cfg.model_copy(
        update={
            "llm": cfg.llm.model_copy(update=llm),
            "time_budget": budget,
            "train": cfg.train.model_copy(update={"loss": loss}),
        }
    )
    from rerankforge.stages import grade_pairs_per_query

    cap = f", at most {cfg.queries.max_queries} query-writing calls" if cfg.queries.max_queries else ""
    console.print(
        Panel.fit(
            f"docs: {cfg.docs}\nrun folder: {cfg.resolved_run_dir()}\n"
            f"LLM: {cfg.llm.provider} {cfg.llm.model or ''}\n"
            f"time budget {budget}: queries are written until the rest of the build would not fit{cap}; "
            f"{grade_pairs_per_query(cfg)} grading calls per kept query (--dry-run shows what it buys)\n"
            f"train: the cross-encoder {cfg.train.backbone} with {cfg.train.loss} (train.cross_encoder = "
            f"{str(cfg.train.cross_encoder).lower()})"
            + (f", and the first stage {cfg.mine.bi_encoder}" if cfg.train.tune_first_stage else "")
            + "\nserve: the first stage's own order unless what was learned measurably beats it on held-out queries",
            title="plan",
        )
    )
    if not Confirm.ask("Run it?", default=True):
        raise typer.Exit(0)
    return cfg


def build(
    docs: Annotated[Path, typer.Argument(help="Folder of documents (searched recursively).")],
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    llm_provider: Annotated[str | None, typer.Option(help="auto, ollama, openai or embedded.")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name, or a GGUF path for embedded.")] = None,
    llm_host: Annotated[
        list[str] | None,
        typer.Option(help="LLM server URL (Ollama / OpenAI-compatible); repeat it to spread calls over servers."),
    ] = None,
    llm_concurrency: Annotated[
        int | None, typer.Option(help="LLM calls in flight (default: $OLLAMA_NUM_PARALLEL per host, else 4).")
    ] = None,
    time_budget: Annotated[
        str | None,
        typer.Option(help="Wall time of the whole build, e.g. 2h or 30m (default: time_budget in the config, 2h)."),
    ] = None,
    max_queries: Annotated[int | None, typer.Option(help="At most this many query-writing calls (chunks).")] = None,
    top_k: Annotated[int | None, typer.Option(help="First-stage candidates graded per query.")] = None,
    loss: Annotated[str | None, typer.Option(help="lce, wasserstein, bce, listnet or lambda.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Cross-encoder to fine-tune (HF id or path).")] = None,
    bi_encoder: Annotated[str | None, typer.Option(help="First-stage bi-encoder (HF id or path).")] = None,
    qdrant_url: Annotated[str | None, typer.Option(help="Qdrant server; default: embedded in the run folder.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs.")] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Only read files matching this gitignore-style pattern (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Leave out files matching this pattern (repeatable).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Parser processes (default: one per CPU core).")] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(help="Your labelled queries (BEIR folder, CSV or JSONL), evaluated after the build."),
    ] = None,
    until: Annotated[str | None, typer.Option(help=f"Stop after this stage ({', '.join(STAGE_NAMES)}).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage, even finished ones.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Parse, then print LLM calls, tokens and time per stage; call nothing else."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Never prompt (CI, Docker).")] = False,
) -> None:
    """Build a reranker from DOCS: parse, queries, mine, grade, train, evaluate, export."""
    from rerankforge.pipeline import build as run_build
    from rerankforge.report import write_report

    options = {
        "llm__provider": llm_provider, "llm__model": llm_model, "llm__concurrency": llm_concurrency,
        "llm__host": llm_host[0] if llm_host and len(llm_host) == 1 else None,
        "llm__hosts": llm_host if llm_host and len(llm_host) > 1 else None,
        "time_budget": time_budget, "queries__max_queries": max_queries, "mine__top_k": top_k,
        "mine__bi_encoder": bi_encoder,
        "mine__qdrant_url": qdrant_url, "train__loss": loss, "train__backbone": backbone, "train__epochs": epochs,
        "parse__include": include or None, "parse__exclude": exclude or None, "parse__workers": workers,
        "evaluate__eval_data": str(eval_data.resolve()) if eval_data else None,
    }  # fmt: skip
    cfg = load_config(config, docs=str(docs), run_dir=str(run_dir) if run_dir else None, **_overrides(**options))
    if Launch.from_env().follower:  # under torchrun every rank trains; rank 0 alone asks, shows and writes
        run_build(cfg, force=force, until=until)
        return
    if dry_run:
        _dry_run(cfg)
        return
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not yes
    if interactive and all(v is None for v in options.values()) and config is None:
        cfg = _wizard(cfg)
    with StageProgress() as progress:
        result = run_build(cfg, force=force, progress=progress, until=until)
    console.print(summary_table(result))
    parsed = next((s for s in result.stages if s.name == "parse" and s.status == "ran"), None)
    if parsed is not None:
        console.print(parse_table(parsed.summary))
    if result.llm_stats:
        s = result.llm_stats
        prefix = s.get("cached_prompt_tokens", 0) / s["prompt_tokens"] if s["prompt_tokens"] else 0
        reused = f" ({prefix:.0%} read from the server's prefix cache)" if prefix else ""
        console.print(
            f"LLM: {s['calls']} calls ({s['cache_hits']} answered from cache), {s['prompt_tokens']} prompt{reused} + "
            f"{s['output_tokens']} output tokens, {s['invalid_outputs']} invalid outputs, {s['failed']} failed, "
            f"{s['retries']} retried faults; {s.get('busy_seconds', 0):.0f} s waiting on the LLM"
        )
    exported = any(s.name == "export" for s in result.stages)
    if exported and cfg.evaluate.eval_data:
        _evaluate_on_labels(cfg, result.run_dir)
    try:
        report = write_report(result.run_dir, latency=exported)
    except MissingDependencyError as exc:  # the build itself succeeded: say what the report needs, keep going
        console.print(f"[yellow]No report written:[/] {exc}")
    else:
        print_report(report)
        if report.verdict is not None:
            print_verdict(report.verdict, bool(report.better))
    trained = next((s.summary for s in result.stages if s.name == "train"), None)
    if trained and trained.get("train_queries") is not None:
        _what_more_buys(cfg, int(trained["train_queries"]))
    if exported:
        onnx_dir = result.model_dir / "onnx"
        if not onnx_dir.is_dir():  # no cross-encoder was trained: the scorer is the first stage
            onnx_dir = result.model_dir / "first_stage" / "onnx"
        console.print(f"Model: [bold]{result.model_dir}[/] (ONNX in {onnx_dir})")
        console.print(f"Serve it: rerankforge serve {result.model_dir}")


def _what_more_buys(cfg: BuildConfig, train_queries: int) -> None:
    """What a larger budget buys, from the learning curve measured on MedQuAD (rerankforge.budget)."""
    from rerankforge.budget import DEFAULT_BUILD

    most, gain = DEFAULT_BUILD
    if train_queries >= most:
        return
    cap = f", at most {cfg.queries.max_queries} query calls" if cfg.queries.max_queries else ""
    console.print(
        f"This build trained on {train_queries} synthetic queries. On MedQuAD (2 cores, the packaged 1.5B model) "
        f"{train_queries} training queries changed nDCG@10 on real questions by about "
        f"{expected_gain(train_queries):+.3f} against the dense first stage, and a bare 2h build ({most} "
        f"training queries) by {gain:+.3f}: a larger --time-budget (now {cfg.time_budget}{cap}) buys more."
    )


def _evaluate_on_labels(cfg: BuildConfig, run_dir: Path) -> None:
    """The served model (ONNX, int8 when the export recommended it) on the user's labelled queries."""
    from rerankforge.evaluation import LabelledEvalSpec, run_labelled_evaluation

    corpus = cfg.evaluate.eval_corpus
    spec = LabelledEvalSpec(
        data=Path(cfg.evaluate.eval_data or ""), model=str(run_dir / "model"), evaluate=cfg.evaluate,
        bi_encoder=cfg.mine.bi_encoder, run_dir=run_dir, corpus=Path(corpus) if corpus else None, onnx=True,
        max_length=cfg.train.max_length, seed=cfg.train.seed,
    )  # fmt: skip
    with StageProgress() as progress:
        run_labelled_evaluation(spec, progress=lambda done, total, note: progress("eval", done, total, note))


def _dry_run(cfg: BuildConfig) -> None:
    """The budget planner's table: LLM calls, tokens and estimated time per stage."""
    from rich.table import Table

    from rerankforge.planner import plan_build

    with StageProgress() as progress:
        plan = plan_build(cfg, progress=progress)
    table = Table(title=f"LLM budget ({plan.chunks} chunks, {plan.concurrency} calls in flight)")
    for column in ("stage", "calls", "prompt tokens", "output tokens", "estimated time"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in plan.stages:
        seconds = "?" if stage.seconds is None else f"{stage.seconds:.0f} s"
        table.add_row(stage.stage, str(stage.calls), str(stage.prompt_tokens), str(stage.output_tokens), seconds)
    total = plan.total_seconds
    table.add_row(
        "total",
        str(sum(s.calls for s in plan.stages)),
        str(sum(s.prompt_tokens for s in plan.stages)),
        str(sum(s.output_tokens for s in plan.stages)),
        "?" if total is None else f"{total / 60:.1f} min",
    )
    console.print(table)
    c = plan.calibration
    if c:
        console.print(
            f"Calibrated on {cfg.llm.provider} {cfg.llm.model or ''}: one query call {c['query_seconds']} s, one "
            f"grading call {c['grade_seconds']} s, {c['chars_per_token']:.1f} characters per token, model load "
            f"{c['load_seconds']} s. Grading assumes every query is kept."
        )
    per_hour = plan.training_queries_per_hour()
    if per_hour is not None:
        kept = (
            f"{plan.kept_per_call:.2f} kept per call, as this run folder's last queries stage measured"
            if plan.kept_per_call is not None
            else f"all {plan.per_chunk} written per call kept, an upper bound: the filters drop some"
        )
        console.print(f"About {per_hour:.0f} training queries per hour of LLM time ({kept}).")
    if plan.budget_seconds is not None and total is not None:
        kept_queries = plan.expected_kept()
        training = kept_queries * (1 - cfg.train.dev_fraction)
        console.print(
            f"The time budget {cfg.time_budget} buys about {plan.stages[0].calls} query-writing calls and "
            f"{kept_queries:.0f} kept queries ({training:.0f} to train on, the rest held out). On MedQuAD, with "
            f"the packaged 1.5B model, that many training queries changed nDCG@10 on real questions by about "
            f"{expected_gain(training):+.3f} against the dense first stage (the measured learning curve, "
            "benchmarks/RESULTS.md): a guide, not a promise for your documents."
        )
