"""``rerankforge eval``, ``export`` and ``serve``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from rerankforge.cli.common import console, metrics_table
from rerankforge.errors import InputError


def eval_command(
    run_dir: Annotated[Path, typer.Argument(help="The run folder of a finished build.")],
    model: Annotated[Path | None, typer.Option(help="Model folder (default: RUN_DIR/model).")] = None,
    onnx: Annotated[bool, typer.Option(help="Score with the exported ONNX model instead of torch.")] = False,
    int8: Annotated[bool, typer.Option(help="With --onnx: the int8 model.")] = False,
    k: Annotated[int, typer.Option(help="Cut-off of nDCG and MRR.")] = 10,
) -> None:
    """Compare a reranker with the first stage on a build's held-out synthetic queries."""
    from rerankforge.artifacts import read_json
    from rerankforge.stages.evaluate import compare_on_dev

    if not (run_dir / "train" / "split.json").is_file():
        raise InputError(f"{run_dir} is not the run folder of a finished build (no train/split.json).")
    cfg = read_json(run_dir / "config.json")
    model_dir = model or run_dir / "model"
    if onnx:
        from rerankforge.serve.runtime import Reranker

        reranker = Reranker(model_dir, quantized=int8)
        scorer = reranker.logits
    else:
        from rerankforge.stages.train import load_cross_encoder

        cross_encoder = load_cross_encoder(str(model_dir), cfg["train"]["max_length"])

        def scorer(query: str, docs: list[str]):  # type: ignore[no-untyped-def]
            return cross_encoder.predict([(query, d) for d in docs], show_progress_bar=False)

    from rerankforge.serve.runtime import read_metadata

    alpha = read_metadata(model_dir).get("fusion_alpha")  # the build's weight; None: choose one here
    result = compare_on_dev(run_dir, scorer, k=k, relevant_min=cfg["grade"]["positive_min_grade"], alpha=alpha)
    console.print(metrics_table({**result["metrics"], "fusion": result["fusion"]}))
    console.print(f"The reranker is {result['verdict']}")


def export_command(
    model_dir: Annotated[Path, typer.Argument(help="A saved CrossEncoder folder (e.g. RUN_DIR/model).")],
    max_length: Annotated[int, typer.Option(help="Max tokens of (query, document).")] = 256,
    quantize: Annotated[bool, typer.Option(help="Also write the int8 model.")] = True,
) -> None:
    """Export a cross-encoder to ONNX (fp32 + int8) beside it, with a parity check against torch."""
    from rerankforge.stages.export import export_model

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
        str | None, typer.Option(help="ONNX variant: fp32, int8, int8_static (default: the export's choice).")
    ] = None,
    int8: Annotated[bool | None, typer.Option("--int8/--fp32", help="Shorthand for --variant int8 / fp32.")] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads (default: usable cores).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per forward pass.")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Micro-batching wait for concurrent requests.")] = None,
    long_documents: Annotated[
        str | None, typer.Option(help="truncate (default) or window: score long documents by their best window.")
    ] = None,
    max_documents: Annotated[int | None, typer.Option(help="Documents per request (default 1000).")] = None,
) -> None:
    """Serve the reranker over HTTP: Cohere-compatible /v2/rerank, /v1/rerank, /rerank; TEI-compatible /rerank."""
    import uvicorn

    from rerankforge.config import ServeConfig, load_section
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
    cfg = load_section(ServeConfig, {k: v for k, v in overrides.items() if v is not None}, "the serve options")
    key = api_key or os.environ.get("RERANKFORGE_API_KEY")
    app = create_app(model_dir, api_key=key, variant=variant, quantized=int8, config=cfg)
    reranker = app.state.reranker
    auth = "bearer token required" if key else "no auth (pass --api-key to require a token)"
    console.print(
        f"Serving {reranker.onnx_path} ({reranker.variant}, {reranker.threads} threads) on "
        f"http://{cfg.host}:{cfg.port}/v2/rerank; {auth}"
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
