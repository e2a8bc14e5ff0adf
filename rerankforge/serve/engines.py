"""The engines that run an exported graph on the CPU (onnxruntime, OpenVINO) and the variants of a graph that an
export writes: the cross-encoder's and the first stage's files have the same names inside their folders.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Engine = Literal["onnxruntime", "openvino"]


@dataclass(frozen=True)
class Variant:
    """One servable form of the exported model."""

    path: str  # relative to the model folder
    engine: Engine
    # False: a pair's score depends on its batch-mates (activation scales per batch; OpenVINO's kernels
    # accumulate in a shape-dependent order, about 4e-4 on a logit), so the server scores requests apart
    batch_invariant: bool


VARIANTS = {
    "fp32": Variant("onnx/model.onnx", "onnxruntime", True),
    # dynamic quantization: int8 weights, activations quantized per batch
    "int8": Variant("onnx/model_qint8.onnx", "onnxruntime", False),
    # static QDQ: activation ranges calibrated on the build's pairs
    "int8_static": Variant("onnx/model_qint8_static.onnx", "onnxruntime", True),
    # the fp32 ONNX file compiled by OpenVINO at its default CPU precision (bf16 where the CPU has it)
    "openvino": Variant("onnx/model.onnx", "openvino", False),
    # NNCF static int8 (calibrated on the build's pairs) as OpenVINO IR, in the file name sentence-transformers'
    # OpenVINO backend reads
    "openvino_int8": Variant("openvino/openvino_model_qint8_quantized.xml", "openvino", False),
}
# The ONNX files an export writes (sentence-transformers' ONNX backend reads them with model_kwargs file_name).
ONNX_VARIANTS = {name: Path(v.path).name for name, v in VARIANTS.items() if v.engine == "onnxruntime"}


@contextlib.contextmanager
def telemetry_off() -> Iterator[None]:
    """For imports of OpenVINO and NNCF: on import they report usage to Google Analytics unless a consent file
    says no or they believe they run in CI. rerankforge opens no connection of its own accord."""
    saved = {key: os.environ.get(key) for key in ("CI", "NNCF_CI")}
    os.environ.update({"CI": "true", "NNCF_CI": "1"})  # read once, when the packages and their telemetry load
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def import_openvino() -> Any:
    """``import openvino`` with its telemetry off (a caller's own earlier import is left as it was)."""
    if sys.modules.get("openvino") is None:
        with telemetry_off():
            import openvino  # noqa: F401
    import openvino

    return openvino


def engine_installed(engine: Engine) -> bool:
    return importlib.util.find_spec(engine) is not None


class OnnxRuntimeEngine:
    """One onnxruntime CPU session; ``run`` is safe to call from several threads."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.precision = "int8" if "qint8" in path.name else "fp32"

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feed)[0]


class OpenVINOEngine:
    """An OpenVINO model compiled for the CPU, latency-tuned; one infer request per calling thread."""

    def __init__(self, path: Path, threads: int) -> None:
        ov = import_openvino()
        core = ov.Core()
        self.compiled = core.compile_model(
            core.read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        )
        self.input_names = {name for port in self.compiled.inputs for name in port.get_names()}
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # bf16 or f32
        self._local = threading.local()

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:  # an infer request is not thread-safe: each thread gets its own
            request = self._local.request = self.compiled.create_infer_request()
        return np.array(request.infer(feed)[0])  # a copy: the request reuses its output memory


def open_engine(spec: Variant, path: Path, threads: int) -> OnnxRuntimeEngine | OpenVINOEngine:
    """The engine that runs ``spec``'s graph at ``path``. Raises ImportError when it is not installed."""
    if spec.engine == "openvino":
        return OpenVINOEngine(path, threads)
    return OnnxRuntimeEngine(path, threads)
