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
    host: Annotated[str, typer.Option(help="Interface to bind; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer KEY' (or set RERANKFORGE_API_KEY).")
    ] = None,
    int8: Annotated[bool | None, typer.Option("--int8/--fp32", help="Which ONNX model to serve.")] = None,
) -> None:
    """Serve the reranker over HTTP: POST /rerank {query, documents, top_n}."""
    import uvicorn

    from rerankforge.serve.app import create_app

    app = create_app(model_dir, api_key=api_key or os.environ.get("RERANKFORGE_API_KEY"), quantized=int8)
    console.print(f"Serving {model_dir} on http://{host}:{port}/rerank")
    uvicorn.run(app, host=host, port=port, log_level="warning")
