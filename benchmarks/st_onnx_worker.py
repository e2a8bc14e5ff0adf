"""Times sentence-transformers' own ONNX backend (fp32 and its qint8 export) on the inputs serve_speed.py wrote.

Runs inside the separate virtual environment made by ``benchmarks/setup_st_onnx_venv.sh`` (optimum pins an
older transformers than rerankforge uses), on a copy of the same model folder:

    .cache/venv-st-onnx/bin/python benchmarks/st_onnx_worker.py INPUTS.json MODEL_COPY_DIR OUT.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(inputs_path: str, model_dir: str, out_path: str) -> None:
    from sentence_transformers import CrossEncoder
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    inputs = json.loads(Path(inputs_path).read_text())
    results = {}
    fp32 = CrossEncoder(model_dir, backend="onnx", max_length=inputs["max_length"], device="cpu")
    export_dynamic_quantized_onnx_model(fp32, "avx512_vnni", model_dir)
    qint8 = CrossEncoder(
        model_dir,
        backend="onnx",
        max_length=inputs["max_length"],
        device="cpu",
        model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"},
    )
    for name, model in (("st_onnx_fp32", fp32), ("st_onnx_qint8", qint8)):
        model.predict(inputs["timing"][0][:8], batch_size=inputs["batch_size"])  # warm-up
        latencies = []
        for pairs in inputs["timing"]:
            started = time.perf_counter()
            model.predict(pairs, batch_size=inputs["batch_size"], show_progress_bar=False)
            latencies.append(time.perf_counter() - started)
        quality = [
            [float(s) for s in model.predict(pairs, batch_size=inputs["batch_size"], show_progress_bar=False)]
            for pairs in inputs["quality"]
        ]
        results[name] = {"latencies": latencies, "quality_scores": quality}
    Path(out_path).write_text(json.dumps(results))


def first_stage(inputs_path: str, model_dir: str, out_path: str) -> None:
    """The bi-encoder in sentence-transformers' own backends (ONNX fp32 and qint8, OpenVINO where installed),
    exported by sentence-transformers from a copy of the packaged model folder (the folder rerankforge's export
    starts from; its own saved copy names the newer sentence-transformers' modules)."""
    import shutil
    import tempfile

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    inputs = json.loads(Path(inputs_path).read_text())
    tmp = Path(tempfile.mkdtemp())
    plain = tmp / "model"
    shutil.copytree(model_dir, plain, ignore=shutil.ignore_patterns("onnx", "openvino", "*.npz"))
    models = {"st onnx fp32": SentenceTransformer(str(plain), backend="onnx", device="cpu")}
    export_dynamic_quantized_onnx_model(models["st onnx fp32"], "avx512_vnni", str(plain))
    models["st onnx qint8"] = SentenceTransformer(
        str(plain), backend="onnx", device="cpu", model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"}
    )
    try:
        models["st openvino"] = SentenceTransformer(str(plain), backend="openvino", device="cpu")
    except Exception as exc:  # optimum-intel not installed
        print("sentence-transformers' OpenVINO backend skipped:", exc)
    rows, rates = {}, {}
    batch = inputs["batch_size"]
    for name, model in models.items():
        model.encode(inputs.get("warm", inputs["embed"][:8]), batch_size=batch)  # warm-up: inputs of every length
        for depth, timing in inputs["timing"].items():
            latencies = []
            for query, docs in timing:
                started = time.perf_counter()
                q = model.encode([query], normalize_embeddings=True)[0]
                _ = model.encode(docs, normalize_embeddings=True, batch_size=batch) @ q
                latencies.append(time.perf_counter() - started)
            rows[f"{name}|{depth}"] = {"latencies": latencies}
        best = min(_timed(lambda m=model: m.encode(inputs["embed"], batch_size=batch)) for _ in range(2))
        rates[name] = len(inputs["embed"]) / best
    Path(out_path).write_text(json.dumps({"rows": rows, "embed_rates": rates}))
    shutil.rmtree(tmp, ignore_errors=True)


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


if __name__ == "__main__":
    if sys.argv[4:5] == ["first_stage"]:
        first_stage(*sys.argv[1:4])
    else:
        main(*sys.argv[1:4])
