"""The scorer's first stage served as a retriever's embedder: TEI's /embed and OpenAI's /v1/embeddings, called by
their own clients against a real `rerankforge serve` process, with the same auth, limits, metrics and
micro-batching as rerank."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rerankforge.config import ServeConfig
from rerankforge.serve.app import create_app
from rerankforge.serve.embedder import OnnxEmbedder
from tests.serve_process import serve_process

DOCS = [
    "The charging dock needs a dedicated 32 A breaker.",
    "Parental leave is sixteen weeks at full pay.",
    "Replace the battery when it holds less than 70% of its charge.",
]
KEY = "embed-key"


@pytest.fixture(scope="module")
def first_stage_dir(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder whose scorer is the untuned first stage alone, as a build that kept nothing leaves it."""
    from rerankforge.index.first_stage_export import untuned_export

    folder, _ = untuned_export(minilm_path)
    model_dir = tmp_path_factory.mktemp("embed-model") / "model"
    shutil.copytree(folder, model_dir / "first_stage")
    scorer = {"first_stage": "first_stage", "cross_encoder": False, "first_stage_weight": 20.0, "bias": 0.0}
    (model_dir / "rerankforge.json").write_text(json.dumps({"scorer": scorer}), encoding="utf-8")
    return model_dir


@pytest.fixture(scope="module")
def server(first_stage_dir: Path) -> Iterator[str]:
    with serve_process(first_stage_dir, env={"RERANKFORGE_API_KEY": KEY}) as base:
        yield base


def test_the_openai_client_gets_the_first_stages_vectors(server: str, first_stage_dir: Path, minilm_path: str) -> None:
    import openai
    from sentence_transformers import SentenceTransformer

    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    response = client.embeddings.create(model="rerankforge", input=DOCS)  # the client asks for base64 by default
    got = np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)], dtype=np.float32)
    reference = SentenceTransformer(minilm_path, device="cpu").encode(DOCS, normalize_embeddings=True)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    floats = client.embeddings.create(model="rerankforge", input=DOCS[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, got[0], atol=1e-7)  # base64 and floats: the same vector
    tokens = OnnxEmbedder(first_stage_dir / "first_stage").token_counts(DOCS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(tokens)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).embeddings.create(model="m", input="x")


def test_the_tei_client_gets_the_same_vectors(
    server: str, first_stage_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    # the suite runs the hub client offline, which refuses every URL; this one is the local server's
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    client = InferenceClient(model=f"{server}/embed", token=KEY)
    got = client.feature_extraction(DOCS, normalize=True)
    np.testing.assert_allclose(got, OnnxEmbedder(first_stage_dir / "first_stage").embed(DOCS), atol=1e-6)
    assert got.shape == (3, 384) and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_retriever_on_these_vectors_ranks_as_the_server_reranks(first_stage_dir: Path) -> None:
    """The dot product of the served query and document vectors orders documents as /v2/rerank does, and the
    documents embedded for the retriever are not embedded again to rerank them (one memo)."""
    client = TestClient(create_app(first_stage_dir))
    query = "how much leave do new parents get"
    docs = client.post("/embed", json={"inputs": DOCS}).json()
    q = client.post("/v1/embeddings", json={"input": query, "input_type": "query"}).json()["data"][0]["embedding"]
    by_dot = list(np.argsort(-(np.array(docs) @ np.array(q)), kind="stable"))
    reranked = client.post("/v2/rerank", json={"query": query, "documents": DOCS}).json()["results"]
    assert [r["index"] for r in reranked] == by_dot
    stats = client.app.state.reranker.vector_cache.stats()
    assert (stats["misses"], stats["hits"]) == (3, 3)


def test_embedding_requests_are_refused_clearly(first_stage_dir: Path, onnx_model_dir: Path) -> None:
    client = TestClient(create_app(first_stage_dir, config=ServeConfig(max_documents=4)))

    def refused(path: str, body: dict, status: int = 422) -> str:
        response = client.post(path, json=body)
        assert response.status_code == status, response.text
        return json.dumps(response.json())

    long_text = "battery " * 400  # beyond MiniLM's 256 tokens
    assert "truncate: true" in refused("/embed", {"inputs": [DOCS[0], long_text], "truncate": False})
    assert client.post("/embed", json={"inputs": long_text}).status_code == 200  # truncated, as TEI does by default
    assert "normalize: true" in refused("/embed", {"inputs": "x", "normalize": False})
    assert "384 dimensions" in refused("/v1/embeddings", {"input": "x", "dimensions": 256})
    assert "serve.max_documents" in refused("/v1/embeddings", {"input": ["x"] * 5})
    assert "input" in refused("/v1/embeddings", {"input": [[101, 2023, 102]]})  # token arrays: send text
    assert "input" in refused("/v1/embeddings", {"input": []})
    cross_encoder_only = TestClient(create_app(onnx_model_dir, variant="fp32"))
    response = cross_encoder_only.post("/embed", json={"inputs": "x"})
    assert response.status_code == 404 and "serves no first stage" in response.json()["detail"]


def test_concurrent_embedding_requests_share_micro_batches_and_get_what_they_get_alone(first_stage_dir: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client = TestClient(create_app(first_stage_dir, config=ServeConfig(max_wait_ms=1000, vector_cache_mb=0)))
    texts = [f"{DOCS[i % 3]} Item {i}." for i in range(10)]
    alone = {t: client.post("/embed", json={"inputs": t}).json()[0] for t in texts}

    def batches() -> float:
        families = text_string_to_metric_families(client.get("/metrics").text)
        return next(s.value for f in families for s in f.samples if s.name == "rerankforge_batches_total")

    before, got = batches(), {}
    barrier = threading.Barrier(len(texts))

    def worker(text: str) -> None:
        barrier.wait(timeout=30)
        got[text] = client.post("/embed", json={"inputs": text}).json()[0]

    threads = [threading.Thread(target=worker, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for text in texts:  # batch-mates change the padding, and so only the last bits
        np.testing.assert_allclose(got[text], alone[text], atol=1e-6)
    assert batches() - before < len(texts)
    samples = {s.name: s.value for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples}
    assert samples["rerankforge_embedded_texts_total"] == 2 * len(texts)
