#!/usr/bin/env bash
# A separate virtual environment with sentence-transformers' own ONNX and OpenVINO backends, for benchmarks/serve_speed.py.
# optimum (which that backend needs) pins an older transformers than rerankforge uses, so it cannot share .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.cache/venv-st-onnx}
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet "torch==2.13.0" "sentence-transformers[onnx,openvino]" "transformers<4.58"
"$VENV/bin/python" -c "import optimum, sentence_transformers as st; print('sentence-transformers', st.__version__)"
