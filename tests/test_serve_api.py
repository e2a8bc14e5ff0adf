"""The server's dialects (Cohere v1/v2, TEI), metrics, OpenAPI, limits and micro-batching, on a real ONNX model."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from rerankforge.config import ServeConfig
from rerankforge.serve.app import create_app
from rerankforge.serve.runtime import Reranker
from tests.serve_data import LONG_DOC, QUERY, SHORT_DOCS

DOCS = SHORT_DOCS[:4]
LONG = LONG_DOC
API_KEY = "s3cret-token"


@pytest.fixture(scope="module")
def reranker(onnx_model_dir: Path) -> Reranker:
    return Reranker(onnx_model_dir, variant="fp32")


@pytest.fixture(scope="module")
def client(onnx_model_dir: Path) -> TestClient:
    return TestClient(create_app(onnx_model_dir, variant="fp32"))


def metric_samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@pytest.mark.parametrize("path", ["/v2/rerank", "/v1/rerank", "/rerank"])
def test_cohere_dialect_on_every_path(client: TestClient, reranker: Reranker, path: str) -> None:
    response = client.post(path, json={"model": "any", "query": QUERY, "documents": DOCS, "top_n": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = reranker.score(QUERY, DOCS)
    order = list(np.argsort(-expected, kind="stable")[:3])
    assert [r["index"] for r in body["results"]] == order
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx([float(expected[i]) for i in order])
    assert body["meta"]["api_version"]["version"] == ("1" if path == "/v1/rerank" else "2")
    assert body["meta"]["billed_units"] == {"search_units": 1}


def test_search_units_count_each_hundred_documents(client: TestClient) -> None:
    for n, units in ((100, 1), (101, 2), (250, 3)):
        body = client.post("/v2/rerank", json={"query": QUERY, "documents": [DOCS[i % 4] for i in range(n)]}).json()
        assert body["meta"]["billed_units"] == {"search_units": units}, n


def test_tei_dialect_returns_a_bare_sorted_array(client: TestClient, reranker: Reranker) -> None:
    response = client.post("/rerank", json={"query": QUERY, "texts": DOCS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list) and len(body) == len(DOCS)
    assert all(set(r) == {"index", "score"} for r in body)  # no text unless asked
    expected = reranker.score(QUERY, DOCS)
    assert [r["index"] for r in body] == list(np.argsort(-expected, kind="stable"))
    assert [r["score"] for r in body] == pytest.approx(sorted(expected.tolist(), reverse=True))


def test_tei_raw_scores_and_return_text(client: TestClient, reranker: Reranker) -> None:
    body = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True}).json()
    logits = reranker.logits(QUERY, DOCS)
    assert {r["index"]: r["score"] for r in body} == pytest.approx({i: float(x) for i, x in enumerate(logits)})
    assert all(r["text"] == DOCS[r["index"]] for r in body)
    assert not np.allclose(logits, reranker.score(QUERY, DOCS), atol=1e-3)  # raw means not the sigmoid


def test_cohere_raw_scores_are_the_logits(client: TestClient, reranker: Reranker) -> None:
    body = client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS, "raw_scores": True}).json()
    logits = reranker.logits(QUERY, DOCS)
    assert {r["index"]: r["relevance_score"] for r in body["results"]} == pytest.approx(
        {i: float(x) for i, x in enumerate(logits)}
    )


def test_max_tokens_per_doc_cuts_documents_first(client: TestClient, reranker: Reranker) -> None:
    docs = [LONG, DOCS[1]]
    body = client.post("/v2/rerank", json={"query": QUERY, "documents": docs, "max_tokens_per_doc": 12}).json()
    cut = reranker.truncate_to_tokens([LONG], 12)[0]
    assert reranker.count_tokens([cut]) == [12] and LONG.startswith(cut)
    scores = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert scores[0] == pytest.approx(float(reranker.score(QUERY, [cut])[0]))
    assert scores[0] != pytest.approx(float(reranker.score(QUERY, [LONG])[0]), abs=1e-6)
    assert body["meta"]["truncated_documents"] == 0  # 12 tokens fit the window


def test_truncated_documents_are_counted_in_meta_and_metrics(onnx_model_dir: Path) -> None:
    client = TestClient(create_app(onnx_model_dir, variant="fp32"))
    body = client.post("/v2/rerank", json={"query": QUERY, "documents": [LONG, DOCS[0], LONG]}).json()
    assert body["meta"]["truncated_documents"] == 2
    samples = metric_samples(client)
    assert samples[("rerankforge_truncated_documents_total", ())] == 2
    assert samples[("rerankforge_documents_total", ())] == 3


def test_tei_truncate_false_refuses_a_text_that_does_not_fit(client: TestClient) -> None:
    refused = client.post("/rerank", json={"query": QUERY, "texts": [DOCS[0], LONG], "truncate": False})
    assert refused.status_code == 422 and "texts [1] do not fit" in refused.text
    for truncate in (True, None):
        body = {"query": QUERY, "texts": [DOCS[0], LONG]} | ({} if truncate is None else {"truncate": truncate})
        assert client.post("/rerank", json=body).status_code == 200
    assert client.post("/rerank", json={"query": QUERY, "texts": DOCS, "truncate": False}).status_code == 200


def test_window_mode_scores_long_documents_by_their_best_window(onnx_model_dir: Path, reranker: Reranker) -> None:
    windowed = Reranker(onnx_model_dir, variant="fp32", long_documents="window")
    short = windowed.score_pairs([(QUERY, d) for d in DOCS])
    assert short.windows == 0 and short.truncated == 0
    assert np.allclose(short.logits, reranker.logits(QUERY, DOCS), atol=1e-5)  # what fits is scored as before
    long_doc = "Unrelated filler about parking permits and badge renewals. " * 30 + DOCS[1]
    result = windowed.score_pairs([(QUERY, long_doc), (QUERY, DOCS[0])])
    assert result.cut.tolist() == [True, False] and result.windows >= 2
    pieces = windowed._windows(long_doc, 128 - 3 - windowed.count_tokens([QUERY])[0])
    assert pieces[-1].endswith(DOCS[1]) and all(windowed.count_tokens(pieces)[i] <= 125 for i in range(len(pieces)))
    assert result.logits[0] == pytest.approx(float(reranker.logits(QUERY, pieces).max()), abs=1e-5)
    truncated = reranker.logits(QUERY, [long_doc])[0]
    assert result.logits[0] >= truncated - 1e-5  # the first window is the truncated text; max can only rise


def test_pairs_of_mixed_queries_and_lengths_score_as_if_alone(reranker: Reranker) -> None:
    pairs = [("battery", LONG), (QUERY, DOCS[0]), ("tax", DOCS[2]), (QUERY, "x"), ("dock", DOCS[3] * 5)]
    together = reranker.score_pairs(pairs).logits
    alone = np.array([reranker.score_pairs([pair]).logits[0] for pair in pairs])
    assert np.allclose(together, alone, atol=1e-5)
    assert len(set(np.round(together, 4))) == len(pairs)


def test_metrics_count_requests_by_path_and_status(onnx_model_dir: Path) -> None:
    client = TestClient(create_app(onnx_model_dir, variant="int8"))
    client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS})
    client.post("/rerank", json={"query": QUERY, "texts": DOCS})
    client.post("/rerank", json={"query": QUERY, "texts": []})
    samples = metric_samples(client)
    assert samples[("rerankforge_requests_total", (("path", "/v2/rerank"), ("status", "200")))] == 1
    assert samples[("rerankforge_requests_total", (("path", "/rerank"), ("status", "200")))] == 1
    assert samples[("rerankforge_requests_total", (("path", "/rerank"), ("status", "422")))] == 1
    assert samples[("rerankforge_model_info", (("onnx", "model_qint8.onnx"), ("variant", "int8")))] == 1
    assert samples[("rerankforge_request_seconds_count", (("path", "/v2/rerank"),))] == 1


def test_openapi_documents_both_dialects(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v2/rerank", "/v1/rerank", "/rerank", "/health", "/metrics"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert {"CohereRerankRequest", "TEIRerankRequest", "CohereRerankResponse", "TEIResult"} <= set(schemas)
    rerank_body = str(spec["paths"]["/rerank"]["post"]["requestBody"])
    assert "CohereRerankRequest" in rerank_body and "TEIRerankRequest" in rerank_body


@pytest.mark.parametrize(
    "body, message",
    [
        ({"query": QUERY}, "Field required"),
        ({"query": QUERY, "texts": "not a list"}, "valid list"),
        ({"query": 5, "documents": DOCS}, "valid string"),
        ({"query": QUERY, "documents": [None]}, ""),
        ({"query": QUERY, "documents": DOCS, "max_tokens_per_doc": 0}, "greater than or equal to 1"),
    ],
)
def test_malformed_bodies_are_422_with_a_message(client: TestClient, body: dict, message: str) -> None:
    response = client.post("/rerank", json=body)
    assert response.status_code == 422
    assert message in str(response.json()["detail"])


def test_invalid_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v2/rerank", content=b'{"query": "x", "documents": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON decode error" in str(response.json()["detail"])


def test_limits_come_from_the_serve_config(onnx_model_dir: Path) -> None:
    cfg = ServeConfig(max_documents=3, max_document_chars=50, max_body_mb=0.002)
    client = TestClient(create_app(onnx_model_dir, variant="fp32", config=cfg))
    many = client.post("/rerank", json={"query": QUERY, "texts": ["a"] * 4})
    assert many.status_code == 422 and "at most 3 items, not 4 (serve.max_documents)" in many.text
    long = client.post("/v2/rerank", json={"query": QUERY, "documents": ["a", "b" * 51]})
    assert long.status_code == 422 and "documents [1] exceed 50 characters" in long.text
    big = client.post("/v2/rerank", json={"query": QUERY, "documents": ["c" * 40] * 60})
    assert big.status_code == 413 and "over the limit of 2097 bytes" in big.text

    def chunked() -> object:  # no content-length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1000

    streamed = client.post("/v2/rerank", content=chunked(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/v2/rerank", json={"query": QUERY, "documents": ["ok"]}).status_code == 200


@pytest.mark.parametrize("path", ["/v2/rerank", "/v1/rerank", "/rerank", "/metrics", "/openapi.json", "/docs", "/x"])
def test_every_route_but_health_needs_the_token(onnx_model_dir: Path, path: str) -> None:
    client = TestClient(create_app(onnx_model_dir, variant="fp32", api_key=API_KEY))
    method = client.post if "rerank" in path else client.get
    kwargs = {"json": {"query": QUERY, "documents": DOCS}} if "rerank" in path else {}
    refused = method(path, **kwargs, headers={"Authorization": f"Bearer {API_KEY}x"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    accepted = method(path, **kwargs, headers={"Authorization": f"Bearer {API_KEY}"})
    assert accepted.status_code == (404 if path == "/x" else 200)
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("variant", ["fp32", "int8_static", "int8", "openvino_int8"])
def test_concurrent_requests_get_the_results_they_get_alone(onnx_model_dir: Path, variant: str) -> None:
    """fp32 and static int8 share batches across requests; dynamic int8 (activation scales computed per batch)
    and OpenVINO (shape-dependent accumulation) score each request on its own, so results never depend on who
    else was asking."""
    # a wide window: on a loaded machine twelve released threads can take far more than 50 ms to all arrive
    client = TestClient(create_app(onnx_model_dir, variant=variant, config=ServeConfig(max_wait_ms=1000)))
    queries = [f"{QUERY} {i}" for i in range(12)]
    docs_for = {q: DOCS[i % 4 :] + DOCS[: i % 4] + [LONG[: 40 * i]] for i, q in enumerate(queries)}
    sequential = {q: client.post("/v2/rerank", json={"query": q, "documents": docs_for[q]}).json() for q in queries}
    before = metric_samples(client)
    results: dict[str, dict] = {}
    barrier = threading.Barrier(len(queries))

    def worker(query: str) -> None:
        barrier.wait(timeout=30)
        results[query] = client.post("/v2/rerank", json={"query": query, "documents": docs_for[query]}).json()

    threads = [threading.Thread(target=worker, args=(q,)) for q in queries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    exact = 0.0 if variant in ("int8", "openvino_int8") else 1e-5
    for query in queries:
        got, want = results[query]["results"], sequential[query]["results"]
        assert [r["index"] for r in got] == [r["index"] for r in want]
        assert [r["relevance_score"] for r in got] == pytest.approx([r["relevance_score"] for r in want], abs=exact)
    after = metric_samples(client)
    batches = after[("rerankforge_batches_total", ())] - before[("rerankforge_batches_total", ())]
    assert batches < len(queries), f"{len(queries)} concurrent requests ran in {batches} micro-batches"
    assert Reranker(onnx_model_dir, variant=variant).batch_invariant == (variant in ("fp32", "int8_static"))


def test_a_recommended_openvino_variant_falls_back_when_openvino_is_missing(
    onnx_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A serving image without OpenVINO still serves: the fastest variant within a point that it can run."""
    import json
    import shutil
    import sys

    from rerankforge.errors import MissingDependencyError

    model_dir = tmp_path / "model"
    shutil.copytree(onnx_model_dir, model_dir)
    meta_path = model_dir / "rerankforge.json"
    meta = json.loads(meta_path.read_text())
    meta["recommended_variant"] = "openvino_int8"
    meta["variants"] = {
        "fp32": {"pairs_per_s": 20.0, "ndcg_loss": 0.0},
        "int8": {"pairs_per_s": 40.0, "ndcg_loss": 0.05},  # fast but loses 5 points: not eligible
        "int8_static": {"pairs_per_s": 30.0, "ndcg_loss": 0.004},
        "openvino_int8": {"pairs_per_s": 70.0, "ndcg_loss": 0.0},
    }
    meta_path.write_text(json.dumps(meta))
    assert Reranker(model_dir).variant == "openvino_int8"
    monkeypatch.setitem(sys.modules, "openvino", None)  # what Python does for a package that is not installed
    assert Reranker(model_dir).variant == "int8_static"
    assert "openvino is not installed" in caplog.text
    with pytest.raises(MissingDependencyError, match=r"pip install 'rerankforge\[serve\]'"):
        Reranker(model_dir, variant="openvino")
