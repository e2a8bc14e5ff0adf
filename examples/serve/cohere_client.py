"""Call a `rerankforge serve` server with Cohere's own Python client (pip install cohere).

rerankforge serve RUN_DIR/model &           # http://127.0.0.1:8000
python examples/serve/cohere_client.py http://127.0.0.1:8000
"""

from __future__ import annotations

import json
import os
import sys

import cohere

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
# The server ignores the key unless it was started with --api-key; Cohere's client needs one anyway.
client = cohere.ClientV2(api_key=os.environ.get("RERANKFORGE_API_KEY", "unused"), base_url=url)
documents = [
    "The AR-200 scanner runs about nine hours on a full charge.",
    "Expense reports are due within thirty days of travel.",
    "Charge the AR-200 in its dock; the LED turns green when full.",
]
response = client.rerank(model="rerankforge", query="AR-200 battery life", documents=documents, top_n=2)
for result in response.results:
    print(json.dumps({"index": result.index, "relevance_score": result.relevance_score}))
