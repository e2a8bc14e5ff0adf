"""``rerankforge eval``, ``report``, ``export`` and ``serve``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from rerankforge.cli.common import (
    StageProgress,
    console,
    labelled_table,
    metrics_table,
    print_report,
    print_verdict,
    retrieval_table,
)
from rerankforge.config import TrainConfig
from rerankforge.errors import InputError


def _is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "parse").is_dir()


def eval_command(
    path: Annotated[
        Path, typer.Argument(help="A run folder of a finished build, or (with --data) a model folder or HF id.")
    ],
    model: Annotated[Path | None, typer.Option(help="Model folder (default: RUN_DIR/model).")] = None,
    onnx: Annotated[bool, typer.Option(help="Score with the exported ONNX model instead of torch.")] = False,
    int8: Annotated[bool, typer.Option(help="With --onnx: the int8 model.")] = False,
    k: Annotated[int | None, typer.Option(help="Cut-off of nDCG and MRR (default: evaluate.k).")] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Your labelled queries: a BEIR folder, or a CSV/JSONL file (query, document[, grade])."),
    ] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(help="With --data: a BEIR corpus.jsonl the labels point into (default: the run's chunks)."),
    ] = None,
    compare: Annotated[
        list[str] | None, typer.Option(help="With --data: another reranker to compare (folder or HF id); repeatable.")
    ] = None,
    first_stage: Annotated[
        str | None, typer.Option(help="With --data: dense or bm25, the candidates reranked.")
    ] = None,
    top_k: Annotated[int | None, typer.Option(help="With --data: first-stage candidates reranked per query.")] = None,
    max_queries: Annotated[int | None, typer.Option(help="With --data: evaluate a seeded sample of this many.")] = None,
    bi_encoder: Annotated[str | None, typer.Option(help="With --data: the dense first stage's model.")] = None,
    retriever: Annotated[
        bool,
        typer.Option(
            "--retriever",
            help="The build's tuned first stage against the untuned one as retrievers over the whole corpus "
            "(nDCG, Recall@20/50/100): on its held-out queries, and on --data when given.",
        ),
    ] = False,
) -> None:
    """Compare a reranker with the first stage: on a build's held-out synthetic queries, or on your labelled queries."""
    if retriever:
        _eval_retriever(path, data=data, corpus=corpus, k=k)
        return
    if data is not None:
        _eval_labelled(
            path,
            model=model,
            onnx=onnx,
            int8=int8,
            data=data,
            corpus=corpus,
            compare=compare or [],
            overrides={"k": k, "first_stage": first_stage, "rerank_top_k": top_k, "max_queries": max_queries},
            bi_encoder=bi_encoder,
        )
        return
    from rerankforge.artifacts import read_json
    from rerankforge.evaluation.on_dev import compare_on_dev

    run_dir = path
    if not (run_dir / "train" / "split.json").is_file():
        raise InputError(
            f"{run_dir} is not the run folder of a finished build (no train/split.json). To evaluate a model "
            "folder on your own labelled queries, pass --data."
        )
    cfg = read_json(run_dir / "config.json")
    from rerankforge.evaluation.scorers import load_scorer

    # the same rule as the labelled evaluation: a build's folder is scored as it is served (its scorer in ONNX)
    scorer = load_scorer(
        model or run_dir / "model",
        onnx=True if onnx else None,
        int8=int8 if onnx else None,
        max_length=cfg["train"]["max_length"],
    )
    cutoff = k or cfg["evaluate"]["k"]
    result = compare_on_dev(
        run_dir,
        scorer.score,
        k=cutoff,
        relevant_min=cfg["grade"]["positive_min_grade"],
        alpha=scorer.fusion_alpha,  # the build's weight; None: choose one here
    )
    console.print(metrics_table({**result["metrics"], "fusion": result["fusion"]}))
    console.print(f"The reranker is {result['verdict']}")


def _eval_retriever(run_dir: Path, *, data: Path | None, corpus: Path | None, k: int | None) -> None:
    from rerankforge.artifacts import Chunk, read_jsonl
    from rerankforge.evaluation.labels import load_corpus, load_labels
    from rerankforge.evaluation.retrieval import RETRIEVAL_RESULT, evaluate_retrieval

    if not _is_run_dir(run_dir):
        raise InputError(f"{run_dir} is not a build's run folder: --retriever compares the first stages of a build.")
    labels = None
    if data is not None:
        cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        documents = load_corpus(corpus) if corpus is not None else None
        if documents is None and not data.is_dir():
            documents = {c.id: c.text for c in read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)}
        labels = load_labels(data, documents, match_threshold=cfg["evaluate"]["match_threshold"])
    with StageProgress() as progress:
        result = evaluate_retrieval(
            run_dir, labels, k=k, progress=lambda done, total, note: progress("eval", done, total, note)
        )
    for name, title in (("synthetic", "the build's held-out queries"), ("labelled", "your labelled queries")):
        if name in result:
            console.print(retrieval_table(result[name], f"{title}, over the whole corpus"))
    console.print(f"Tuned first stage: {result['tuned']}. Saved to {run_dir / RETRIEVAL_RESULT}")


def _eval_labelled(
    path: Path,
    *,
    model: Path | None,
    onnx: bool,
    int8: bool,
    data: Path,
    corpus: Path | None,
    compare: list[str],
    overrides: dict[str, Any],
    bi_encoder: str | None,
) -> None:
    from rerankforge.config import BuildConfig, load_config
    from rerankforge.evaluation import LabelledEvalSpec, run_labelled_evaluation
    from rerankforge.report import write_report

    overrides = {key: value for key, value in overrides.items() if value is not None}
    run_dir = path if _is_run_dir(path) else None
    if run_dir is not None:
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        cfg: BuildConfig = load_config(None, **{**saved, "evaluate": {**saved.get("evaluate", {}), **overrides}})
        model_name = str(model or run_dir / "model")
    else:
        cfg = load_config(None, docs=".", evaluate=overrides)
        model_name = str(model or path)
    spec = LabelledEvalSpec(
        data=data,
        model=model_name,
        evaluate=cfg.evaluate,
        bi_encoder=bi_encoder or cfg.mine.bi_encoder,
        run_dir=run_dir,
        corpus=corpus,
        compare=compare,
        onnx=True if onnx else None,
        int8=int8 if onnx else None,
        max_length=cfg.train.max_length,
        seed=cfg.train.seed,
    )
    with StageProgress() as progress:
        result = run_labelled_evaluation(spec, progress=lambda done, total, note: progress("eval", done, total, note))
    console.print(labelled_table(result))
    for note in result["data"]["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    print_verdict(result["verdict"], result["better"])
    if run_dir is not None:
        console.print(f"Saved to {run_dir / 'eval' / 'labelled.json'}")
        print_report(write_report(run_dir))


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="The run folder of a build (finished or not).")],
    latency: Annotated[bool, typer.Option(help="Measure the exported model's latency on this machine.")] = True,
) -> None:
    """Write RUN_DIR/report.html (tables, plots, data card, verdict) and print its summary."""
    from rerankforge.report import write_report

    print_report(write_report(run_dir, latency=latency))


def export_command(
    model_dir: Annotated[Path, typer.Argument(help="A saved CrossEncoder folder (e.g. RUN_DIR/model).")],
    max_length: Annotated[int, typer.Option(help="Max tokens of (query, document).")] = TrainConfig.model_fields[
        "max_length"
    ].default,
    quantize: Annotated[bool, typer.Option(help="Also write the int8 model.")] = True,
) -> None:
    """Export a cross-encoder to ONNX (fp32 + int8) beside it, with a parity check against torch."""
    from rerankforge.serve.runtime import has_no_cross_encoder
    from rerankforge.stages.export import export_model

    if has_no_cross_encoder(model_dir):
        raise InputError(
            f"{model_dir} holds no cross-encoder to export: its build trained none, and its scorer's first stage "
            "(first_stage/) is exported already. Serve it as it is."
        )
    if not (model_dir / "config.json").is_file():
        raise InputError(f"{model_dir} has no config.json: pass a folder written by CrossEncoder.save_pretrained.")
    summary = export_model(model_dir, max_length=max_length, quantize=quantize)
    console.print(f"ONNX written to {model_dir / 'onnx'}; parity {summary}")


def serve_command(
    model_dir: Annotated[Path, typer.Argument(help="Model folder with onnx/ (e.g. RUN_DIR/model).")],
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1: this machine only).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000).")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer KEY' (or set RERANKFORGE_API_KEY).")
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(help="Model variant: fp32, int8, int8_static, openvino, openvino_int8 (default: the export's)."),
    ] = None,
    int8: Annotated[bool | None, typer.Option("--int8/--fp32", help="Shorthand for --variant int8 / fp32.")] = None,
    threads: Annotated[int | None, typer.Option(help="Inference threads (default: usable cores).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per forward pass.")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Micro-batching wait for concurrent requests.")] = None,
    long_documents: Annotated[
        str | None, typer.Option(help="truncate (default) or window: score long documents by their best window.")
    ] = None,
    max_documents: Annotated[int | None, typer.Option(help="Documents per request (default 1000).")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A TOML file whose [serve] table sets any serve.* key; options win."),
    ] = None,
) -> None:
    """Serve the reranker over HTTP: Cohere-compatible /v2/rerank, /v1/rerank, /rerank; TEI-compatible /rerank."""
    import uvicorn

    from rerankforge.config import load_serve_config
    from rerankforge.serve.app import create_app

    overrides = {
        "host": host,
        "port": port,
        "threads": threads,
        "batch_size": batch_size,
        "max_wait_ms": max_wait_ms,
        "long_documents": long_documents,
        "max_documents": max_documents,
    }
    cfg = load_serve_config(config, overrides)
    key = api_key or os.environ.get("RERANKFORGE_API_KEY")
    app = create_app(model_dir, api_key=key, variant=variant, quantized=int8, config=cfg)
    reranker = app.state.reranker
    auth = "bearer token required" if key else "no auth (pass --api-key to require a token)"
    console.print(
        f"Serving {reranker.onnx_path} ({reranker.variant}, {reranker.threads} threads) on "
        f"http://{cfg.host}:{cfg.port}/v2/rerank; {auth}"
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
