"""HTTP API for an exported reranker, in the dialects RAG frameworks already speak. No torch.

- **Cohere v2** (and v1): ``POST /v2/rerank``, ``/v1/rerank`` and ``/rerank`` with ``{query, documents, top_n,
  return_documents, max_tokens_per_doc}`` → ``{id, results: [{index, relevance_score, document?}], meta}``.
- **Text Embeddings Inference**: ``POST /rerank`` with ``{query, texts, raw_scores, return_text}`` → a bare
  array ``[{index, score, text?}]``, best first; ``POST /embed`` with ``{inputs, normalize, truncate,
  prompt_name}`` → ``[[float, ...], ...]``.
- **OpenAI embeddings**: ``POST /v1/embeddings`` with ``{input, model, encoding_format, dimensions}`` →
  ``{object: "list", data: [{object: "embedding", index, embedding}], model, usage}``.
- ``GET /health`` (always open), ``GET /metrics`` (Prometheus text), ``GET /openapi.json`` and ``/docs``.

Scores are the sigmoid of the model's logit (as ``CrossEncoder.predict``), raw logits with ``raw_scores``.
The embedding routes serve the scorer's first stage (the bi-encoder the build tuned, where the build kept the
tuning; else the untuned one): a retriever that embeds with it finds what the reranker was tuned to rank, and a
document's vector is the one the reranker scores with. Concurrent requests are scored (and embedded) together
by a :class:`~rerankforge.serve.batcher.MicroBatcher`.

Example:
    >>> from rerankforge.serve.app import create_app
    >>> app = create_app("run/model")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

from rerankforge.config import ServeConfig
from rerankforge.errors import MissingDependencyError
from rerankforge.serve.batcher import MicroBatcher
from rerankforge.serve.runtime import PairScores, Reranker

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
OPEN_PATHS = frozenset({"/health"})


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: valid JSON escapes, but no tokenizer takes them
        raise ValueError(f"text is not valid unicode at position {exc.start} (a lone surrogate)") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class Document(BaseModel):
    text: Text


class CohereRerankRequest(BaseModel):
    """Cohere's rerank body (v1 and v2), plus two optional rerankforge fields. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    query: Text = Field(min_length=1)
    documents: list[Text | Document] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    max_tokens_per_doc: int | None = Field(None, ge=1, description="Cut each document to this many tokens first.")
    model: str | None = Field(
        None, description="Accepted, not checked: Cohere's clients require it, and the server has one model."
    )
    raw_scores: bool = Field(False, description="rerankforge: raw logits instead of sigmoid relevance scores.")
    first_stage_scores: list[FiniteFloat] | None = Field(
        None, description="rerankforge: your retriever's scores, one per document, fused with the reranker's."
    )


class TEIRerankRequest(BaseModel):
    """Text Embeddings Inference's rerank body. ``truncate: false`` refuses (422) a text that does not fit beside
    the query, as TEI does; otherwise such a text is cut (or scored by windows, ``serve.long_documents``)."""

    model_config = ConfigDict(extra="ignore")
    query: Text = Field(min_length=1)
    texts: list[Text] = Field(min_length=1)
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = None


class TEIEmbedRequest(BaseModel):
    """Text Embeddings Inference's embed body. ``truncate: false`` refuses (422) a text longer than the model's
    window, as TEI does; otherwise such a text is cut to its first ``max_length`` tokens."""

    model_config = ConfigDict(extra="ignore")
    inputs: Text | list[Text] = Field(min_length=1)
    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: Literal["Right", "right"] = "Right"
    prompt_name: Literal["query", "document"] | None = Field(
        None, description="The model's own prompt for this kind of text, if it has one (default: document)."
    )


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI's embeddings body. Token arrays as ``input`` are refused: send text."""

    model_config = ConfigDict(extra="ignore")
    input: Text | list[Text] = Field(min_length=1)
    model: str | None = Field(None, description="Accepted, not checked: the server has one model.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    input_type: Literal["query", "document"] = Field(
        "document", description="rerankforge: the model's own prompt for this kind of text, if it has one."
    )


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: dict[str, int]


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: Document | None = None


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereResult]
    meta: dict[str, Any]


class TEIResult(BaseModel):
    index: int
    score: float
    text: str | None = None


SEARCH_UNIT_DOCUMENTS = 100  # Cohere's billing unit: one query over up to 100 documents


def _base64_floats(vector: np.ndarray) -> str:
    """OpenAI's ``encoding_format: base64``: the vector's little-endian float32 bytes in base64."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def _dialect(body: Any) -> str:
    return "tei" if isinstance(body, dict) and "texts" in body and "documents" not in body else "cohere"


AnyRerankRequest = Annotated[
    Annotated[CohereRerankRequest, Tag("cohere")] | Annotated[TEIRerankRequest, Tag("tei")],
    Discriminator(_dialect),
]


class _ServerMetrics:
    """Prometheus metrics in the app's own registry (several apps in one process do not collide)."""

    def __init__(self, reranker: Reranker) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("rerankforge_requests", "HTTP requests", ["path", "status"], registry=self.registry)
        self.latency = Histogram(
            "rerankforge_request_seconds", "Rerank and embed request latency", ["path"], registry=self.registry
        )
        self.documents = Counter("rerankforge_documents", "Documents scored", registry=self.registry)
        self.embedded = Counter("rerankforge_embedded_texts", "Texts embedded", ["kind"], registry=self.registry)
        self.truncated = Counter(
            "rerankforge_truncated_documents", "Documents longer than the model's window", registry=self.registry
        )
        self.batches = Counter("rerankforge_batches", "Micro-batches run", registry=self.registry)
        self.batch_requests = Histogram(
            "rerankforge_batch_requests",
            "Requests per micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.batch_pairs = Histogram(
            "rerankforge_batch_pairs",
            "Pairs per micro-batch",
            buckets=(1, 8, 32, 128, 512, 2048),
            registry=self.registry,
        )
        info = Gauge("rerankforge_model_info", "The served model", ["onnx", "variant"], registry=self.registry)
        info.labels(onnx=reranker.onnx_path.name, variant=reranker.variant).set(1)
        cache = reranker.vector_cache
        if cache is not None and reranker.first_stage is not None:
            for stat, meaning in (("hits", "Document vectors found in memory"), ("misses", "Document vectors "
                                  "computed"), ("bytes", "Memory held by document vectors"), ("evictions",
                                  "Document vectors dropped at the memory cap")):  # fmt: skip
                gauge = Gauge(f"rerankforge_vector_cache_{stat}", meaning, registry=self.registry)
                gauge.set_function(lambda stat=stat: cache.stats()[stat])

    def on_batch(self, requests: int, pairs: int, seconds: float) -> None:
        self.batches.inc()
        self.batch_requests.observe(requests)
        self.batch_pairs.observe(pairs)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


async def _json_response(send: Callable[[Any], Awaitable[None]], status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class GuardMiddleware:
    """Bearer-token auth (timing-safe; every path but /health) and a request-body size limit (413)."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.api_key is not None and scope.get("path") not in OPEN_PATHS:
            header = headers.get("authorization", b"")
            token = header[7:] if header[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.api_key):
                await _json_response(send, 401, {"detail": "missing or wrong bearer token"})
                return
        too_large = {"detail": f"request body over the limit of {self.max_body_bytes} bytes (serve.max_body_mb)"}
        try:
            declared = int(headers.get("content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_body_bytes:
            await _json_response(send, 413, too_large)
            return
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    from fastapi import HTTPException  # re-raised by FastAPI's body parsing, rendered as 413

                    raise HTTPException(status_code=413, detail=too_large["detail"])
            return message

        await self.app(scope, limited_receive, send)


def create_app(
    model_dir: str | Path,
    *,
    api_key: str | None = None,
    variant: str | None = None,
    quantized: bool | None = None,
    config: ServeConfig | None = None,
) -> Any:
    """The FastAPI app serving ``model_dir`` (see the module docstring for the routes)."""
    try:
        from fastapi import FastAPI, HTTPException, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, Response
    except ImportError as exc:
        raise MissingDependencyError("fastapi", "serve", "The HTTP server") from exc

    cfg = config or ServeConfig()
    reranker = Reranker(
        model_dir,
        variant=variant,
        quantized=quantized,
        threads=cfg.threads,
        batch_size=cfg.batch_size,
        long_documents=cfg.long_documents,
        vector_cache_mb=cfg.vector_cache_mb,
    )
    metrics = _ServerMetrics(reranker)
    batcher = MicroBatcher(
        reranker, max_wait_ms=cfg.max_wait_ms, max_pairs=cfg.max_batch_pairs, on_batch=metrics.on_batch
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(
        lifespan=lifespan,
        title="rerankforge",
        version="1",
        description="A cross-encoder reranker built by rerankforge: Cohere-compatible and TEI-compatible rerank.",
    )
    app.state.reranker, app.state.batcher = reranker, batcher

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Any:
        # what was wrong and where, without echoing the input back: it may be huge, or not valid JSON (NaN)
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    app.add_middleware(GuardMiddleware, api_key=api_key, max_body_bytes=int(cfg.max_body_mb * 1024 * 1024))

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        path = request.url.path if request.url.path in known_paths else "other"
        metrics.requests.labels(path=path, status=str(response.status_code)).inc()
        if path.endswith(("/rerank", "/embed", "/embeddings")):
            metrics.latency.labels(path=path).observe(time.perf_counter() - started)
        return response

    def invalid(field: str, message: str) -> RequestValidationError:
        return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])

    async def score(query: str, texts: list[str], max_tokens: int | None) -> PairScores:
        if len(texts) > cfg.max_documents:
            raise invalid(
                "documents",
                f"List should have at most {cfg.max_documents} items, not {len(texts)} (serve.max_documents)",
            )
        too_long = [i for i, t in enumerate(texts) if len(t) > cfg.max_document_chars]
        if too_long:
            raise invalid(
                "documents",
                f"documents {too_long[:5]} exceed {cfg.max_document_chars} characters (serve.max_document_chars)",
            )
        if max_tokens is not None:
            texts = reranker.truncate_to_tokens(texts, max_tokens)
        result = await asyncio.wrap_future(batcher.submit([(query, t) for t in texts]))
        metrics.documents.inc(len(texts))
        metrics.truncated.inc(result.truncated)
        return result

    async def cohere(body: CohereRerankRequest, version: str) -> CohereRerankResponse:
        started = time.perf_counter()
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        if body.first_stage_scores is not None and len(body.first_stage_scores) != len(texts):
            raise invalid(
                "first_stage_scores",
                f"first_stage_scores has {len(body.first_stage_scores)} scores for {len(texts)} documents",
            )
        result = await score(body.query, texts, body.max_tokens_per_doc)
        fused = body.first_stage_scores is not None and reranker.fusion_alpha is not None
        ranked = reranker.rank(
            result.logits, top_n=body.top_n, first_stage_scores=body.first_stage_scores, raw_scores=body.raw_scores
        )
        results = [
            CohereResult(
                index=i, relevance_score=s, document=Document(text=texts[i]) if body.return_documents else None
            )
            for i, s in ranked
        ]
        meta: dict[str, Any] = {
            "api_version": {"version": version},
            "billed_units": {"search_units": -(-len(texts) // SEARCH_UNIT_DOCUMENTS)},
            "latency_ms": round((time.perf_counter() - started) * 1e3, 2),
            "truncated_documents": result.truncated,
            "fusion": {"applied": fused, "alpha": reranker.fusion_alpha if fused else None},
        }
        return CohereRerankResponse(id=str(uuid.uuid4()), results=results, meta=meta)

    async def tei(body: TEIRerankRequest) -> list[TEIResult]:
        result = await score(body.query, body.texts, None)
        if body.truncate is False and result.truncated and reranker.long_documents == "truncate":
            cut = [i for i, c in enumerate(result.cut) if c][:5]
            raise invalid("texts", f"texts {cut} do not fit beside the query in the model's window and truncate is "
                          "false: send shorter texts, or truncate: true")  # fmt: skip
        ranked = reranker.rank(result.logits, raw_scores=body.raw_scores)
        return [TEIResult(index=i, score=s, text=body.texts[i] if body.return_text else None) for i, s in ranked]

    async def embed(texts: list[str], kind: str, truncate: bool | None, field: str) -> tuple[Any, list[int]]:
        """Vectors of ``texts`` and each one's tokens as the model reads them, after the same limits as rerank."""
        first_stage = reranker.first_stage
        if first_stage is None:
            raise HTTPException(status_code=404, detail=f"{reranker.model_dir} serves no first stage (a cross-"
                                "encoder alone), so it cannot embed: serve a build's model folder")  # fmt: skip
        if len(texts) > cfg.max_documents:
            raise invalid(field, f"List should have at most {cfg.max_documents} items, not {len(texts)} "
                          "(serve.max_documents)")  # fmt: skip
        too_long = [i for i, t in enumerate(texts) if len(t) > cfg.max_document_chars]
        if too_long:
            raise invalid(field, f"inputs {too_long[:5]} exceed {cfg.max_document_chars} characters "
                          "(serve.max_document_chars)")  # fmt: skip
        tokens = first_stage.token_counts(texts, kind)
        over = [i for i, n in enumerate(tokens) if n > first_stage.max_length]
        if over and truncate is False:
            raise invalid(field, f"inputs {over[:5]} are longer than the model's {first_stage.max_length} tokens "
                          "and truncate is false: send shorter texts, or truncate: true")  # fmt: skip
        vectors = await asyncio.wrap_future(batcher.submit_embedding(texts, kind))
        metrics.embedded.labels(kind=kind).inc(len(texts))
        metrics.truncated.inc(len(over))
        return vectors, [min(n, first_stage.max_length) for n in tokens]

    @app.post("/embed", response_model=list[list[float]], summary="Text Embeddings Inference: the first stage")
    async def embed_tei(body: TEIEmbedRequest) -> Any:
        if not body.normalize:
            raise invalid("normalize", "this model's vectors are normalised inside its graph (their dot product "
                          "is the cosine the reranker uses): send normalize: true")  # fmt: skip
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        vectors, _ = await embed(texts, body.prompt_name or "document", body.truncate, "inputs")
        return Response(json.dumps(vectors.tolist()), media_type="application/json")

    @app.post("/v1/embeddings", response_model=OpenAIEmbeddingResponse, summary="OpenAI embeddings: the first stage")
    async def embed_openai(body: OpenAIEmbeddingRequest) -> OpenAIEmbeddingResponse:
        texts = [body.input] if isinstance(body.input, str) else body.input
        dimension = reranker.first_stage.dimension if body.dimensions and reranker.first_stage else None
        if dimension is not None and body.dimensions != dimension:
            raise invalid("dimensions", f"this model's vectors have {dimension} dimensions, not "
                          f"{body.dimensions}: leave dimensions out")  # fmt: skip
        vectors, tokens = await embed(texts, body.input_type, None, "input")
        encode = _base64_floats if body.encoding_format == "base64" else np.ndarray.tolist
        data = [OpenAIEmbedding(index=i, embedding=encode(v)) for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}
        return OpenAIEmbeddingResponse(data=data, model=body.model or reranker.model_dir.name, usage=usage)

    @app.get("/health", summary="Liveness; open without a token")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": str(reranker.onnx_path)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, response_model=None)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v2/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True, summary="Cohere v2")
    async def rerank_v2(body: CohereRerankRequest) -> CohereRerankResponse:
        return await cohere(body, "2")

    @app.post("/v1/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True, summary="Cohere v1")
    async def rerank_v1(body: CohereRerankRequest) -> CohereRerankResponse:
        return await cohere(body, "1")

    @app.post(
        "/rerank",
        response_model=CohereRerankResponse | list[TEIResult],
        response_model_exclude_none=True,
        summary="Cohere body (documents) or TEI body (texts)",
    )
    async def rerank(body: AnyRerankRequest) -> CohereRerankResponse | list[TEIResult]:
        if isinstance(body, TEIRerankRequest):
            return await tei(body)
        return await cohere(body, "2")

    known_paths = {route.path for route in app.routes}
    return app
