"""Rerank in-process with the exported ONNX model: onnxruntime + tokenizers, no torch, no server.

python examples/serve/python_api.py RUN_DIR/model
"""

from __future__ import annotations

import json
import sys

from rerankforge import Reranker

reranker = Reranker(sys.argv[1])  # the variant the export recommended (int8 when it kept the quality)
documents = [
    "The AR-200 scanner runs about nine hours on a full charge.",
    "Expense reports are due within thirty days of travel.",
    "Charge the AR-200 in its dock; the LED turns green when full.",
]
for index, score in reranker.rerank("AR-200 battery life", documents, top_n=2):
    print(json.dumps({"index": index, "relevance_score": score, "variant": reranker.variant}))
