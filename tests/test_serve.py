"""The HTTP app over a real exported MiniLM reranker: Cohere-style /rerank, limits, auth, threads, no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rerankforge.config import ServeConfig
from rerankforge.errors import InputError
from rerankforge.serve.app import create_app
from rerankforge.serve.runtime import Reranker
from tests.serve_data import LONG_DOC, QUERY, SHORT_DOCS

pytestmark = [
    pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean"),
    pytest.mark.filterwarnings("ignore:Exporting aten::index"),
]

DOCS = [*SHORT_DOCS, LONG_DOC]
API_KEY = "s3cret-token"
MAX_DOCUMENTS = ServeConfig().max_documents
MAX_DOCUMENT_CHARS = ServeConfig().max_document_chars


@pytest.fixture(scope="module")
def model_dir(onnx_model_dir: Path) -> Path:
    return onnx_model_dir


@pytest.fixture(scope="module")
def reranker(model_dir: Path) -> Reranker:
    return Reranker(model_dir)


@pytest.fixture(scope="module")
def client(model_dir: Path) -> TestClient:
    return TestClient(create_app(model_dir))


@pytest.fixture(scope="module")
def secured_client(model_dir: Path) -> TestClient:
    return TestClient(create_app(model_dir, api_key=API_KEY))


def _check_ranked(results: list[dict], reranker: Reranker, query: str, docs: list[str]) -> None:
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["index"] for r in results) == list(range(len(docs)))
    assert all(0.0 < s < 1.0 for s in scores)
    expected = reranker.score(query, docs)
    for r in results:
        assert r["relevance_score"] == pytest.approx(float(expected[r["index"]]), abs=1e-7)


def test_health(client: TestClient, model_dir: Path) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": str(model_dir / "onnx" / "model.onnx")}


def test_rerank_string_documents(client: TestClient, reranker: Reranker) -> None:
    response = client.post("/rerank", json={"query": QUERY, "documents": DOCS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] and set(body["meta"]) >= {"billed_units", "latency_ms"}
    assert len(body["results"]) == len(DOCS)
    assert all("document" not in r for r in body["results"])  # return_documents defaults to False
    _check_ranked(body["results"], reranker, QUERY, DOCS)
    # scores are not all equal: the order above is a real ordering
    assert len({r["relevance_score"] for r in body["results"]}) == len(DOCS)


def test_rerank_text_object_documents(client: TestClient, reranker: Reranker) -> None:
    as_objects = client.post("/rerank", json={"query": QUERY, "documents": [{"text": d} for d in DOCS]})
    as_strings = client.post("/rerank", json={"query": QUERY, "documents": DOCS})
    assert as_objects.status_code == 200, as_objects.text
    _check_ranked(as_objects.json()["results"], reranker, QUERY, DOCS)
    assert as_objects.json()["results"] == as_strings.json()["results"]


def test_top_n_truncates_and_return_documents_includes_text(client: TestClient) -> None:
    full = client.post("/rerank", json={"query": QUERY, "documents": DOCS}).json()["results"]
    response = client.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": True})
    assert response.status_code == 200, response.text
    top = response.json()["results"]
    assert [(r["index"], r["relevance_score"]) for r in top] == [(r["index"], r["relevance_score"]) for r in full[:2]]
    assert [r["document"] for r in top] == [{"text": DOCS[r["index"]]} for r in top]


def test_top_n_larger_than_the_documents_returns_them_all(client: TestClient) -> None:
    response = client.post("/rerank", json={"query": QUERY, "documents": DOCS[:3], "top_n": 50})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 3


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"query": QUERY, "documents": []}, "documents", "at least 1 item"),
        ({"documents": DOCS}, "query", "Field required"),
        ({"query": "", "documents": DOCS}, "query", "at least 1 character"),
        ({"query": QUERY, "documents": DOCS, "top_n": 0}, "top_n", "greater than or equal to 1"),
        ({"query": QUERY, "documents": [{"txt": "wrong key"}]}, "documents", ""),
    ],
)
def test_invalid_requests_are_422_with_a_message(client: TestClient, body: dict, field: str, message: str) -> None:
    response = client.post("/rerank", json=body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(field in e["loc"] and message in e["msg"] for e in errors), errors


def test_more_than_the_document_limit_is_422(client: TestClient) -> None:
    response = client.post("/rerank", json={"query": QUERY, "documents": ["d"] * (MAX_DOCUMENTS + 1)})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any("documents" in e["loc"] and f"at most {MAX_DOCUMENTS} items" in e["msg"] for e in errors), errors


@pytest.mark.slow  # 1000 forward passes' worth of documents: ~10 s on a small CPU
def test_exactly_the_document_limit_is_served(client: TestClient) -> None:
    docs = [f"doc {i}" for i in range(MAX_DOCUMENTS)]
    response = client.post("/rerank", json={"query": QUERY, "documents": docs, "top_n": 3})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 3


def test_an_overlong_document_is_422_naming_it(client: TestClient) -> None:
    docs = ["short", "x" * (MAX_DOCUMENT_CHARS + 1)]
    response = client.post("/rerank", json={"query": QUERY, "documents": docs})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "documents"]
    assert error["msg"] == f"documents [1] exceed {MAX_DOCUMENT_CHARS} characters (serve.max_document_chars)"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": API_KEY}, {"Authorization": f"Basic {API_KEY}"}],
    ids=["no-header", "wrong-token", "no-bearer-prefix", "basic-scheme"],
)
def test_api_key_refuses_missing_or_wrong_tokens(secured_client: TestClient, headers: dict) -> None:
    response = secured_client.post("/rerank", json={"query": QUERY, "documents": DOCS}, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "missing or wrong bearer token"


def test_api_key_accepts_the_right_token_and_leaves_health_open(secured_client: TestClient) -> None:
    response = secured_client.post(
        "/rerank", json={"query": QUERY, "documents": DOCS}, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 200
    assert len(response.json()["results"]) == len(DOCS)
    assert secured_client.get("/health").status_code == 200


def test_concurrent_requests_match_sequential_ones(client: TestClient) -> None:
    queries = [
        f"question {i}: {topic}"
        for i, topic in enumerate(
            [
                "battery life",
                "charging dock",
                "expense deadline",
                "cafeteria hours",
                "green LED",
                "travel policy",
                "reset password",
                "undocking",
                "nine hours",
                "weekday opening",
                "tax filing",
                "contractors",
                "normal operation",
                "zzz",
                "room number",
                "toner",
            ]
        )
    ]
    docs = DOCS[:5]  # the short ones: 32 requests stay quick on a small CPU
    sequential = {q: client.post("/rerank", json={"query": q, "documents": docs}).json()["results"] for q in queries}
    concurrent: dict[str, list[dict]] = {}
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(queries))

    def worker(query: str) -> None:
        try:
            barrier.wait(timeout=30)
            response = client.post("/rerank", json={"query": query, "documents": docs})
            response.raise_for_status()
            concurrent[query] = response.json()["results"]
        except BaseException as exc:  # re-raised below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(q,)) for q in queries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert concurrent == sequential
    # different queries really gave different rankings or scores: the comparison is not trivial
    assert len({tuple(r["relevance_score"] for r in res) for res in sequential.values()}) == len(queries)


def test_missing_model_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"has no onnx/model\.onnx or tokenizer\.json.*rerankforge export MODEL_DIR"):
        create_app(tmp_path)
    with pytest.raises(InputError, match=r"has no onnx/model_qint8\.onnx or tokenizer\.json"):
        Reranker(tmp_path, quantized=True)


def test_reranker_rerank_orders_by_score(reranker: Reranker) -> None:
    ranked = reranker.rerank(QUERY, DOCS, top_n=4)
    scores = reranker.score(QUERY, DOCS)
    assert [i for i, _ in ranked] == list(np.argsort(-scores, kind="stable")[:4])
    assert [s for _, s in ranked] == sorted((float(s) for s in scores), reverse=True)[:4]


def test_serving_imports_no_torch(model_dir: Path) -> None:
    modules_only = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; import rerankforge.serve.runtime, rerankforge.serve.app; print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert modules_only.stdout.strip() == "False", modules_only.stderr
    # and after building the app and scoring a request (onnxruntime, tokenizers, fastapi all loaded)
    script = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from rerankforge.serve.app import create_app
        client = TestClient(create_app({str(model_dir)!r}))
        response = client.post("/rerank", json={{"query": "battery", "documents": ["nine hours", "cafeteria"]}})
        assert response.status_code == 200, response.text
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
    """)
    serving = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert serving.stdout.strip() == "[]", serving.stderr


def test_first_stage_scores_are_ignored_without_a_fusion_weight(client: TestClient) -> None:
    body = {"query": "battery", "documents": ["battery lasts 9 h", "leave policy"], "first_stage_scores": [0.1, 0.9]}
    response = client.post("/rerank", json=body)
    assert response.status_code == 200
    assert response.json()["meta"]["fusion"] == {"applied": False, "alpha": None}


def test_fusion_weight_from_the_build_is_applied_to_first_stage_scores(model_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    fused_dir = tmp_path / "model"
    shutil.copytree(model_dir, fused_dir)
    meta = json.loads((fused_dir / "rerankforge.json").read_text())
    (fused_dir / "rerankforge.json").write_text(json.dumps({**meta, "fusion_alpha": 0.0}))
    client = TestClient(create_app(fused_dir))
    docs = ["the charging dock needs a 32 A breaker", "battery runtime is 9 hours", "bereavement leave"]
    body = {"query": "battery runtime", "documents": docs, "first_stage_scores": [0.2, 0.1, 0.9]}
    response = client.post("/rerank", json=body).json()
    # alpha 0: the first stage's order, whatever the reranker thinks
    assert [r["index"] for r in response["results"]] == [2, 0, 1]
    assert response["meta"]["fusion"] == {"applied": True, "alpha": 0.0}
    bad = client.post("/rerank", json={**body, "first_stage_scores": [0.2]})
    assert bad.status_code == 422 and "1 scores for 3 documents" in bad.text
