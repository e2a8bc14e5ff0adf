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


if __name__ == "__main__":
    main(*sys.argv[1:4])
