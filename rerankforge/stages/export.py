"""Stage 7: export what the build serves to ONNX, with a parity check: the first stage's bi-encoder always, and a
trained cross-encoder (fp32, int8 and OpenVINO int8) when there is one.

Layout (what sentence-transformers' ONNX and OpenVINO backends and other ONNX servers read)::

    model/                 tokenizer + config + torch weights
    model/onnx/model.onnx  fp32
    model/onnx/model_qint8.onnx          dynamic int8
    model/onnx/model_qint8_static.onnx   static int8 (QDQ), calibrated on the build's pairs
    model/openvino/openvino_model_qint8_quantized.xml (+ .bin)   NNCF static int8, calibrated likewise
    model/first_stage/     the scorer's first stage: a sentence-transformers bi-encoder + onnx/model.onnx,
                           its variants under the same names (onnx/model_qint8.onnx, openvino/...) and
                           chunk_vectors.npz, the served variant's vectors of the build's chunks
    model/rerankforge.json max length, parity figures, the variant to serve, the scorer
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.artifacts import Chunk, Query, atomic_path, read_jsonl, write_json
from rerankforge.errors import MissingDependencyError, StageError
from rerankforge.onnx_trace import trace_to_onnx
from rerankforge.serve.runtime import (
    METADATA_FILE,
    ONNX_VARIANTS,
    VARIANTS,
    Reranker,
    available_variants,
    engine_installed,
    import_openvino,
    telemetry_off,
)
from rerankforge.stage import StageContext, StageResult
from rerankforge.training import card
from rerankforge.training.models import TUNED_CROSS_ENCODER

VERSION = "9"  # 9: model/ holds the served cross-encoder (the tuned one or the brought backbone)
# 8: the first stage's variants; 7: the chunk vectors beside the first stage
# 6: a model folder without a cross-encoder; 5: the scorer's first stage in model/first_stage
FIRST_STAGE_DIR = "first_stage"


def export_onnx(model: Any, out_dir: Path, opset: int) -> Path:
    """``torch.onnx.export`` of the CrossEncoder's sequence-classification network, dynamic batch and length."""
    import torch

    hf_model = model.model.eval().to("cpu")
    tokenizer = model.tokenizer
    sample = tokenizer([("query", "a document")], return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = hf_model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args, strict=True))).logits

    # Eager attention traces to plain MatMul/Softmax, which onnxruntime runs (and int8-quantizes) faster than
    # the graph SDPA attention traces to (one run of benchmarks/serve_speed.py: int8 39.5 against about 32
    # pairs/s); the scores are the same (parity is checked below).
    previous = getattr(hf_model.config, "_attn_implementation", None)
    with contextlib.suppress(ValueError, AttributeError):
        hf_model.set_attn_implementation("eager")
    trace_to_onnx(Logits(), tuple(sample[n] for n in names), names, "logits", path, opset)
    if previous and previous != "eager":
        with contextlib.suppress(ValueError, AttributeError):
            hf_model.set_attn_implementation(previous)
    return path


def quantize_int8(fp32: Path, calibration: list[dict[str, np.ndarray]] | None = None) -> list[Path]:
    """int8 variants of ``fp32``, after onnxruntime's recommended pre-processing.

    Always dynamic quantization (per-channel int8 weights, activations quantized per batch at run time);
    with ``calibration`` feeds (the build's own tokenized pairs), also static QDQ quantization of the MatMuls,
    whose activation ranges are fixed from those feeds: faster on CPU, and checked for quality by the caller.
    """
    try:
        from onnx import TensorProto
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "build", "int8 quantization") from exc

    class Feeds(CalibrationDataReader):
        def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    prepared = fp32.with_name(".model_prepared.onnx")
    written = []
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # dynamic axes defeat it
        with _quiet_root_logger():  # the quantizer logs every tensor it skips on the root logger
            target = fp32.with_name(ONNX_VARIANTS["int8"])
            # DefaultTensorType: types that shape inference cannot give (fused ops of optimized graphs) are float
            float_default = {"DefaultTensorType": TensorProto.FLOAT}
            with atomic_path(target) as tmp:
                quantize_dynamic(
                    str(prepared), str(tmp), weight_type=QuantType.QInt8, per_channel=True, extra_options=float_default
                )
            written.append(target)
            if calibration:
                target = fp32.with_name(ONNX_VARIANTS["int8_static"])
                with atomic_path(target) as tmp:
                    quantize_static(
                        str(prepared),
                        str(tmp),
                        Feeds(calibration),
                        quant_format=QuantFormat.QDQ,
                        per_channel=True,
                        weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8,
                        op_types_to_quantize=["MatMul"],
                        extra_options=float_default,
                    )
                written.append(target)
    finally:
        prepared.unlink(missing_ok=True)
    return written


def _import_nncf() -> Any:
    """NNCF (and OpenVINO) with their usage telemetry off: a build opens no connection of its own accord."""
    import_openvino()
    with telemetry_off():
        import nncf
        from nncf.telemetry import decorator, wrapper
    stub = wrapper.NNCFTelemetryStub()
    wrapper.telemetry = decorator.telemetry = stub  # in case NNCF was imported earlier without the switch
    return nncf


def openvino_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def quantize_openvino(fp32: Path, calibration: list[dict[str, np.ndarray]]) -> Path:
    """NNCF static int8 quantization of ``fp32`` for OpenVINO, calibrated on the build's own tokenized pairs.

    MatMuls get int8 weights and activations with ranges fixed from ``calibration``; the other ops keep float
    (OpenVINO runs them in bf16 where the CPU has it). Written as IR next to the ONNX files.
    """
    try:
        ov = import_openvino()
    except ImportError as exc:
        raise MissingDependencyError("openvino", "build", "OpenVINO int8 export") from exc
    nncf = _import_nncf()
    target = fp32.parent.parent / VARIANTS["openvino_int8"].path
    target.parent.mkdir(parents=True, exist_ok=True)
    model = ov.Core().read_model(str(fp32))
    with _quiet_root_logger(), _quiet_nncf():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(calibration),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration),
        )
    # staged, then renamed: weights first, the .xml that names the model last, so no half-written pair is found
    staging = target.parent / f".openvino.{os.getpid()}.tmp"
    try:
        staging.mkdir(exist_ok=True)
        # fp32 for the weights that stay float (embeddings, norms): fp16 storage would cost parity for no speed
        ov.save_model(quantized, str(staging / target.name), compress_to_fp16=False)
        os.replace(staging / target.with_suffix(".bin").name, target.with_suffix(".bin"))
        os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def calibration_feeds(model_dir: Path, pairs: list[tuple[str, str]]) -> list[dict[str, np.ndarray]]:
    """One model input per pair (batch of one, no padding), tokenized exactly as the runtime does."""
    reranker = Reranker(model_dir, variant="fp32")
    feeds = []
    for enc in reranker.tokenizer.encode_batch(pairs):
        feed = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
        feeds.append({k: np.array([v], dtype=np.int64) for k, v in feed.items() if k in reranker.input_names})
    return feeds


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs at INFO and draws rich progress bars on stdout; library code must not print."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _parity_pairs(ctx: StageContext, limit: int = 32) -> list[tuple[str, str]]:
    chunks = read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)
    queries = read_jsonl(ctx.dir("queries") / "queries.jsonl", Query)
    texts = {c.id: c.text for c in chunks}
    # each query with its own chunk and two others, so the check covers high and low scores and padding
    return [
        (q.text, text)
        for i, q in enumerate(queries[:limit])
        for text in (texts[q.chunk_id], chunks[(i * 7 + 3) % len(chunks)].text, chunks[(i * 5 + 1) % len(chunks)].text)
    ]


DEFAULT_PARITY_PAIRS = [
    ("how do I reset my password", "To reset your password, open Settings and choose Security."),
    ("how do I reset my password", "The cafeteria opens at 8 am on weekdays."),
    ("battery life", "A full charge lasts about nine hours of normal operation."),
    ("battery life", "Expense reports are due within thirty days."),
]


def export_model(
    model_dir: Path,
    *,
    max_length: int,
    opset: int | None = None,
    quantize: bool | None = None,
    parity_tolerance: float | None = None,
    parity_pairs: list[tuple[str, str]] | None = None,
    calibration_pairs: list[tuple[str, str]] | None = None,
    static_int8: bool | None = None,
    openvino: bool | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Export a saved CrossEncoder folder to ``onnx/model.onnx`` (+ int8 variants), check parity.

    With ``quantize``: ``onnx/model_qint8.onnx`` (dynamic); with ``calibration_pairs`` too,
    ``onnx/model_qint8_static.onnx`` (static QDQ, if ``static_int8``) and
    ``openvino/openvino_model_qint8_quantized.xml`` (NNCF static int8, if ``openvino`` and OpenVINO and NNCF
    are installed), both calibrated on those pairs. Files of variants not written this time are removed.

    Returns the parity summary, also stored in ``rerankforge.json``. Raises :class:`StageError` when the
    fp32 export differs from torch by more than ``parity_tolerance``.
    """
    import torch

    from rerankforge.config import ExportConfig
    from rerankforge.training.models import load_cross_encoder

    defaults = ExportConfig()  # a setting not passed is the config's default (one home for each)
    opset = defaults.opset if opset is None else opset
    quantize = defaults.quantize if quantize is None else quantize
    parity_tolerance = defaults.parity_tolerance if parity_tolerance is None else parity_tolerance
    static_int8 = defaults.static_int8 if static_int8 is None else static_int8
    openvino = defaults.openvino if openvino is None else openvino
    report = progress or (lambda done, total, note="": None)
    model = load_cross_encoder(str(model_dir), max_length)
    for spec in VARIANTS.values():  # an earlier export's files must not pass for this model's
        (model_dir / spec.path).unlink(missing_ok=True)
        (model_dir / spec.path).with_suffix(".bin").unlink(missing_ok=True)
    report(0, 3, "exporting fp32")
    fp32 = export_onnx(model, model_dir / "onnx", opset)
    tokenizer = model.tokenizer
    meta: dict[str, Any] = {
        "format": "rerankforge-onnx-1",
        "max_length": max_length,
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "activation": "sigmoid",
    }
    write_json(model_dir / METADATA_FILE, meta)
    pairs = parity_pairs or DEFAULT_PARITY_PAIRS
    torch_logits = np.asarray(model.predict(pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False)).reshape(
        -1
    )

    def onnx_logits(variant: str) -> np.ndarray:
        # one call per run of pairs with the same query: batches with padding, as served
        reranker = Reranker(model_dir, variant=variant)
        scores: list[np.ndarray] = []
        for query, run in itertools.groupby(pairs, key=lambda pair: pair[0]):
            scores.append(reranker.logits(query, [doc for _, doc in run]))
        return np.concatenate(scores)

    report(1, 3, "parity check")
    max_diff = float(np.max(np.abs(torch_logits - onnx_logits("fp32"))))
    if max_diff > parity_tolerance:
        raise StageError(
            f"ONNX fp32 scores differ from torch by {max_diff:.2e} (> export.parity_tolerance "
            f"{parity_tolerance}). The export is wrong; please report this with the backbone name."
        )
    summary: dict[str, Any] = {
        "file_fp32": VARIANTS["fp32"].path,
        "max_abs_diff_fp32": max_diff,
        "pairs": len(pairs),
    }
    if quantize:
        report(2, 3, "quantizing int8")
        feeds = calibration_feeds(model_dir, calibration_pairs) if calibration_pairs else None
        written = quantize_int8(fp32, feeds if static_int8 else None)
        if feeds and openvino:
            if openvino_available():
                written.append(quantize_openvino(fp32, feeds))
            else:
                summary["openvino_int8_skipped"] = "openvino or nncf is not installed: pip install 'rerankforge[build]'"
        for path in written:
            variant = next(name for name, spec in VARIANTS.items() if model_dir / spec.path == path)
            summary[f"file_{variant}"] = VARIANTS[variant].path
    for variant in available_variants(model_dir):
        if variant != "fp32":
            summary[f"max_abs_diff_{variant}"] = float(np.max(np.abs(torch_logits - onnx_logits(variant))))
    write_json(model_dir / METADATA_FILE, {**meta, "parity": summary})
    report(3, 3)
    return summary


def choose_variant(ctx: StageContext, model_dir: Path, speed_pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """nDCG@k of each ONNX variant on the held-out queries, and its speed on ``speed_pairs``.

    The recommended (served) variant is the fastest whose nDCG@k is within 1 point of fp32's.
    """
    from rerankforge.evaluation.on_dev import compare_on_dev

    k = ctx.config.evaluate.k
    variants: dict[str, dict[str, float]] = {}
    for name in available_variants(model_dir):
        reranker = Reranker(model_dir, variant=name)
        # alpha fixed: only the reranker's own ranking matters here, no need to search a fusion weight
        result = compare_on_dev(
            ctx.run_dir, reranker.logits, k=k, relevant_min=ctx.config.grade.positive_min_grade, alpha=1.0
        )
        seconds = min(_timed(reranker, speed_pairs) for _ in range(2))
        variants[name] = {
            f"ndcg@{k}": result["metrics"]["reranked"][f"ndcg@{k}"],
            "pairs_per_s": round(len(speed_pairs) / seconds, 1),
        }
    for stats in variants.values():
        stats["ndcg_loss"] = round(variants["fp32"][f"ndcg@{k}"] - stats[f"ndcg@{k}"], 4)
    eligible = [name for name, stats in variants.items() if stats["ndcg_loss"] <= 0.01]
    recommended = max(eligible, key=lambda name: variants[name]["pairs_per_s"])
    return {"variants": variants, "recommended_variant": recommended, "int8_recommended": recommended != "fp32"}


def _timed(reranker: Reranker, pairs: list[tuple[str, str]]) -> float:
    started = time.perf_counter()
    reranker.score_pairs(pairs)
    return time.perf_counter() - started


def _export_first_stage(ctx: StageContext, model_dir: Path, chosen: dict[str, Any]) -> tuple[dict, dict]:
    """The scorer's first stage (tuned or not, as the evaluate stage chose) in ``model/first_stage``, torch-free."""
    from rerankforge.index.first_stage_export import export_first_stage
    from rerankforge.training.bi_encoder import TUNED_FIRST_STAGE

    target = model_dir / FIRST_STAGE_DIR
    shutil.rmtree(target, ignore_errors=True)
    if chosen["first_stage"] == "tuned":
        from sentence_transformers import SentenceTransformer

        bi_encoder = SentenceTransformer(str(ctx.dir("train") / TUNED_FIRST_STAGE), device="cpu")
        name = f"{ctx.config.mine.bi_encoder}, tuned on this build's queries"
        parity = export_first_stage(bi_encoder, target, opset=ctx.config.export.opset)
    else:
        name = ctx.config.mine.bi_encoder
        parity = _untuned_first_stage(name, target, ctx.config.export.opset)
    variants = first_stage_variants(ctx, target)
    served = variants["recommended_variant"]
    if chosen["first_stage"] != "tuned" and not chosen.get("cross_encoder_weight"):
        # the scorer is the dense first stage itself: its order must be exactly the retriever's, which a
        # quantized variant's rounding can swap, so fp32 is served (the variants stay measured and on disk)
        served = variants["recommended_variant"] = "fp32"
        variants["fp32_kept"] = "the scorer is the untuned first stage alone: its order must be exactly dense's"
    scorer = {**chosen, "first_stage": FIRST_STAGE_DIR, "first_stage_tuned": chosen["first_stage"] == "tuned",
              "first_stage_model": name, "first_stage_variant": served}  # fmt: skip
    summary = {"model": name, **parity, **variants}
    summary["chunk_vectors"] = _chunk_vectors(ctx, target, chosen["first_stage"], served)
    return scorer, summary


def embedder_feeds(folder: Path, texts: list[str]) -> list[dict[str, np.ndarray]]:
    """One input of the first stage's graph per text (batch of one), tokenized as the runtime does."""
    from rerankforge.serve.embedder import OnnxEmbedder

    embedder = OnnxEmbedder(folder)
    feeds = []
    for enc in embedder.tokenizer.encode_batch([embedder.prompts.get("document", "") + t for t in texts]):
        feed = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
        feeds.append({k: np.array([v], dtype=np.int64) for k, v in feed.items() if k in embedder.input_names})
    return feeds


def first_stage_variants(ctx: StageContext, target: Path) -> dict[str, Any]:
    """Write the first stage's faster variants (``export.first_stage_variants``) beside its fp32 graph, measure
    each on the held-out queries (nDCG@k of its own order of their candidates) and its speed (documents per
    second, embedded cold), and name the one to serve: the fastest within 1 nDCG point of fp32."""
    from rerankforge.serve.embedder import first_stage_variants as runnable

    cfg = ctx.config.export
    wanted = [v for v in cfg.first_stage_variants if engine_installed(VARIANTS[v].engine)]
    skipped = sorted(set(cfg.first_stage_variants) - set(wanted))
    fp32 = target / VARIANTS["fp32"].path
    feeds: list[dict[str, np.ndarray]] = []
    if {"int8_static", "openvino_int8"} & set(wanted):
        chunks = read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)
        step = max(1, len(chunks) // cfg.calibration_pairs)  # spread over the corpus, in a fixed order
        feeds = embedder_feeds(target, [c.text for c in chunks[::step][: cfg.calibration_pairs]])
    if "int8" in wanted or "int8_static" in wanted:
        quantize_int8(fp32, feeds if "int8_static" in wanted else None)
        if "int8" not in wanted:
            (target / VARIANTS["int8"].path).unlink(missing_ok=True)
    if "openvino_int8" in wanted:
        if openvino_available():
            quantize_openvino(fp32, feeds)
        else:
            skipped.append("openvino_int8")
    names = [v for v in runnable(target) if v == "fp32" or v in wanted]
    if names == ["fp32"]:
        return {"variants": {}, "recommended_variant": "fp32", **({"variants_skipped": skipped} if skipped else {})}
    ctx.progress(0, len(names), "measuring the first stage's variants")
    speed_texts = [c.text for c in read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)][:64]
    stats = {name: _measure_first_stage(ctx, target, name, speed_texts) for name in names}
    k = ctx.config.evaluate.k
    for row in stats.values():
        row["ndcg_loss"] = round(stats["fp32"][f"ndcg@{k}"] - row[f"ndcg@{k}"], 4)
    eligible = [name for name, row in stats.items() if row["ndcg_loss"] <= 0.01]
    served = max(eligible, key=lambda name: stats[name]["docs_per_s"])
    return {"variants": stats, "recommended_variant": served, **({"variants_skipped": skipped} if skipped else {})}


def _measure_first_stage(ctx: StageContext, target: Path, variant: str, speed_texts: list[str]) -> dict[str, float]:
    """One variant of the first stage: nDCG@k on the held-out queries, and documents embedded per second."""
    from rerankforge.evaluation.on_dev import compare_on_dev
    from rerankforge.serve.embedder import OnnxEmbedder, VectorMemo
    from rerankforge.serve.runtime import usable_cores

    k = ctx.config.evaluate.k
    embedder = OnnxEmbedder(target, threads=usable_cores(), cache=VectorMemo(2**31), variant=variant)

    def cosine(query: str, docs: list[str]) -> np.ndarray:
        return embedder.document_vectors(docs) @ embedder.embed([query], "query")[0]

    result = compare_on_dev(ctx.run_dir, cosine, k=k, relevant_min=ctx.config.grade.positive_min_grade, alpha=1.0)
    cold = OnnxEmbedder(target, threads=usable_cores(), variant=variant)
    seconds = min(_timed_call(lambda: cold.embed(speed_texts)) for _ in range(2))
    return {f"ndcg@{k}": result["metrics"]["reranked"][f"ndcg@{k}"], "docs_per_s": round(len(speed_texts) / seconds, 1)}


def _timed_call(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _chunk_vectors(ctx: StageContext, target: Path, first_stage: str, variant: str = "fp32") -> dict[str, Any]:
    """The served first stage's vectors of the build's chunks beside it (``export.chunk_vectors``), within the
    size cap: the untuned fp32 model's from the mine stage's cache, any other embedded now by the exported graph
    it names."""
    from rerankforge.index.embedding import embed_chunks
    from rerankforge.serve.embedder import OnnxEmbedder, write_chunk_vectors
    from rerankforge.serve.runtime import usable_cores

    cfg = ctx.config.export
    if not cfg.chunk_vectors:
        return {"written": False, "reason": "export.chunk_vectors = false"}
    texts = list(dict.fromkeys(c.text for c in read_jsonl(ctx.dir("parse") / "chunks.jsonl", Chunk)))
    embedder = OnnxEmbedder(target, threads=usable_cores(), variant=variant)
    megabytes = len(texts) * embedder.dimension * 4 / 2**20
    if megabytes > cfg.chunk_vectors_max_mb:
        return {"written": False, "chunks": len(texts), "reason": f"{megabytes:.0f} MB is over "
                f"export.chunk_vectors_max_mb = {cfg.chunk_vectors_max_mb:g}"}  # fmt: skip
    ctx.progress(0, len(texts), "embedding the chunks for the server's memo")
    if first_stage == "tuned" or variant != "fp32":
        vectors = embedder.embed(texts, "document")
    else:
        vectors, _ = embed_chunks(ctx.config.mine, texts)
    path = write_chunk_vectors(target, texts, vectors, variant)
    return {"written": True, "chunks": len(texts), "bytes": path.stat().st_size, "variant": variant}


def _untuned_first_stage(name: str, target: Path, opset: int) -> dict[str, Any]:
    """The untuned bi-encoder's export, made once per model and copied from $RERANKFORGE_HOME afterwards."""
    from rerankforge.index.embedding import load_bi_encoder
    from rerankforge.index.first_stage_export import export_first_stage, untuned_export

    try:
        cached, parity = untuned_export(name, opset)
    except OSError:  # a home that cannot be written: export straight into the model folder
        return export_first_stage(load_bi_encoder(name), target, opset=opset)
    shutil.copytree(cached, target, ignore=shutil.ignore_patterns("parity.json"))
    return parity


def _served_cross_encoder(ctx: StageContext, model_dir: Path, scorer: dict[str, Any]) -> None:
    """``model/`` as a sentence-transformers CrossEncoder folder of the cross-encoder the scorer serves: the one
    this build tuned (``train/cross_encoder``), or the reranker the user brought, untuned, where the evaluate
    stage found tuning did not beat it. The tuned one's card goes with it either way."""
    tuned = ctx.dir("train") / TUNED_CROSS_ENCODER
    shutil.rmtree(model_dir, ignore_errors=True)  # an earlier export's files must not pass for this model's
    if scorer.get("cross_encoder_alone") == "brought":
        from rerankforge.training.models import load_cross_encoder

        load_cross_encoder(ctx.config.train.backbone, ctx.config.train.max_length).save_pretrained(str(model_dir))
        if (tuned / "README.md").is_file():
            shutil.copy2(tuned / "README.md", model_dir / "README.md")
    else:
        shutil.copytree(tuned, model_dir)


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.export
    model_dir = ctx.run_dir / "model"
    pairs = _parity_pairs(ctx)
    evaluated = json.loads((ctx.dir("evaluate") / "metrics.json").read_text(encoding="utf-8"))
    cross_encoder = (ctx.dir("train") / TUNED_CROSS_ENCODER / "config.json").is_file()  # else the build trained none
    if cross_encoder:
        _served_cross_encoder(ctx, model_dir, evaluated["scorer"])
        summary = export_model(
            model_dir,
            max_length=ctx.config.train.max_length,
            opset=cfg.opset,
            quantize=cfg.quantize,
            parity_tolerance=cfg.parity_tolerance,
            parity_pairs=pairs,
            calibration_pairs=pairs[: cfg.calibration_pairs],
            static_int8=cfg.static_int8,
            openvino=cfg.openvino,
            progress=ctx.progress,
        )
        meta = json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))
    else:
        summary, meta = {"cross_encoder": None}, {"format": "rerankforge-onnx-1"}
    meta["fusion_alpha"] = evaluated["fusion"]["alpha"]
    meta["scorer"], summary["first_stage"] = _export_first_stage(ctx, model_dir, evaluated["scorer"])
    if cfg.quantize and cross_encoder:
        summary.update(choose_variant(ctx, model_dir, pairs[:32]))
        meta["recommended_variant"] = summary["recommended_variant"]
        meta["int8_recommended"] = summary["int8_recommended"]
        meta["variants"] = summary["variants"]
    write_json(model_dir / METADATA_FILE, meta)
    summary["fusion_alpha"] = meta["fusion_alpha"]
    files = sorted({VARIANTS[name].path for name in available_variants(model_dir)})
    files += [f.replace(".xml", ".bin") for f in files if f.endswith(".xml")]
    first_stage = model_dir / FIRST_STAGE_DIR
    files += [str(p.relative_to(model_dir)) for p in sorted(first_stage.rglob("*")) if p.is_file()]
    choice = evaluated["scorer_choice"]
    card.write_served(model_dir, card.render_served(meta["scorer"], evaluated["verdict"], choice["systems"]))
    names = [METADATA_FILE, "README.md", *files]
    return StageResult(files=[f"model/{n}" for n in names], summary=summary)
