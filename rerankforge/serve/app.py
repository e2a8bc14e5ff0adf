"""HTTP API for an exported reranker: ``POST /rerank`` (Cohere-style body), ``GET /health``. No torch.

Example:
    >>> from rerankforge.serve.app import create_app
    >>> app = create_app("run/model")  # doctest: +SKIP
"""

# No `from __future__ import annotations` here: FastAPI must resolve the request models, defined inside
# create_app, from real annotations rather than strings.
import hmac
import time
import uuid
from pathlib import Path
from typing import Any

from rerankforge.errors import MissingDependencyError
from rerankforge.serve.runtime import Reranker

MAX_DOCUMENTS = 1000
MAX_DOCUMENT_CHARS = 100_000


def create_app(model_dir: str | Path, *, api_key: str | None = None, quantized: bool | None = None) -> Any:
    try:
        from fastapi import Depends, FastAPI, HTTPException, Request
        from pydantic import BaseModel, Field
    except ImportError as exc:
        raise MissingDependencyError("fastapi", "serve", "The HTTP server") from exc

    reranker = Reranker(model_dir, quantized=quantized)

    class Document(BaseModel):
        text: str

    class RerankRequest(BaseModel):
        query: str = Field(min_length=1)
        documents: list[str | Document] = Field(min_length=1, max_length=MAX_DOCUMENTS)
        top_n: int | None = Field(None, ge=1)
        return_documents: bool = False
        model: str | None = None
        first_stage_scores: list[float] | None = Field(
            None, description="Your retriever's scores, one per document: fused with the reranker's when given."
        )

    class Result(BaseModel):
        index: int
        relevance_score: float
        document: Document | None = None

    class RerankResponse(BaseModel):
        id: str
        results: list[Result]
        meta: dict[str, Any]

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token")

    app = FastAPI(title="rerankforge", version="1")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": str(reranker.onnx_path)}

    @app.post(
        "/rerank",
        response_model=RerankResponse,
        response_model_exclude_none=True,
        dependencies=[Depends(check_key)],
    )
    def rerank(body: RerankRequest) -> RerankResponse:
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        too_long = [i for i, t in enumerate(texts) if len(t) > MAX_DOCUMENT_CHARS]
        if too_long:
            raise HTTPException(
                status_code=422, detail=f"documents {too_long[:5]} exceed {MAX_DOCUMENT_CHARS} characters"
            )
        if body.first_stage_scores is not None and len(body.first_stage_scores) != len(texts):
            raise HTTPException(
                status_code=422,
                detail=f"first_stage_scores has {len(body.first_stage_scores)} scores for {len(texts)} documents",
            )
        started = time.perf_counter()
        ranked = reranker.rerank(body.query, texts, top_n=body.top_n, first_stage_scores=body.first_stage_scores)
        fused = body.first_stage_scores is not None and reranker.fusion_alpha is not None
        results = [
            Result(
                index=i,
                relevance_score=s,
                document=Document(text=texts[i]) if body.return_documents else None,
            )
            for i, s in ranked
        ]
        meta: dict[str, Any] = {
            "billed_units": {"search_units": 1},
            "latency_ms": round((time.perf_counter() - started) * 1e3, 2),
            "fusion": {"applied": fused, "alpha": reranker.fusion_alpha if fused else None},
        }
        return RerankResponse(id=str(uuid.uuid4()), results=results, meta=meta)

    return app
