"""Use a `rerankforge serve` server as LangChain's Cohere reranker (pip install langchain-cohere).

rerankforge serve RUN_DIR/model &
python examples/serve/langchain_rerank.py http://127.0.0.1:8000
"""

from __future__ import annotations

import json
import os
import sys

from langchain_cohere import CohereRerank
from langchain_core.documents import Document

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
reranker = CohereRerank(
    base_url=url, cohere_api_key=os.environ.get("RERANKFORGE_API_KEY", "unused"), model="rerankforge", top_n=2
)
retrieved = [
    Document(page_content="Expense reports are due within thirty days of travel.", metadata={"source": "hr.md"}),
    Document(page_content="The AR-200 scanner runs about nine hours on a full charge.", metadata={"source": "ar.md"}),
    Document(
        page_content="Charge the AR-200 in its dock; the LED turns green when full.", metadata={"source": "ar.md"}
    ),
]
for doc in reranker.compress_documents(retrieved, query="AR-200 battery life"):
    print(json.dumps({"text": doc.page_content, "relevance_score": doc.metadata["relevance_score"]}))
