"""Fuzzing the HTTP API: whatever arrives, the answer is a 2xx or a 4xx with a message, never a 5xx.

Bodies come from hypothesis: arbitrary JSON, bodies shaped like the request models (right field names, values of
the right or nearly right types, any unicode), and hand-picked edge cases (NaN, lone surrogates, 10k documents,
huge numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerankforge.config import ServeConfig
from rerankforge.serve.app import create_app

PATHS = ["/v2/rerank", "/v1/rerank", "/rerank"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LIMITS = ServeConfig(max_documents=20, max_document_chars=300, max_body_mb=0.25)


@pytest.fixture(scope="module")
def client(onnx_model_dir: Path) -> TestClient:
    return TestClient(create_app(onnx_model_dir, variant="int8_static", config=LIMITS), raise_server_exceptions=False)


def check(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["detail"], response.text  # a message, not an empty error
    else:
        json.loads(response.text)  # a valid JSON document (no NaN or Infinity in it)


def post_json(client: TestClient, path: str, body: object):  # type: ignore[no-untyped-def]
    # allow_nan: Python's json module (and so the server) reads NaN and Infinity tokens
    return client.post(path, content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
field_values = st.dictionaries(
    st.sampled_from(["query", "documents", "texts", "top_n", "raw_scores", "return_documents", "max_tokens_per_doc"]),
    json_values,
    max_size=6,
)


@FUZZ
@given(body=json_values | field_values, path=st.sampled_from(PATHS))
def test_arbitrary_json_is_never_a_server_error(client: TestClient, body: object, path: str) -> None:
    check(post_json(client, path, body))


texts = st.text(max_size=400)  # any unicode, empty strings included; some over the 300-character limit
maybe_int = st.integers(min_value=-3, max_value=10**6) | st.none() | st.floats(allow_nan=True)
cohere_bodies = st.fixed_dictionaries(
    {"query": texts, "documents": st.lists(texts | st.fixed_dictionaries({"text": texts}), max_size=25)},
    optional={
        "top_n": maybe_int,
        "max_tokens_per_doc": maybe_int,
        "return_documents": st.booleans() | st.none(),
        "raw_scores": st.booleans(),
        "model": st.text(max_size=10),
        "first_stage_scores": st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=25),
    },
)
tei_bodies = st.fixed_dictionaries(
    {"query": texts, "texts": st.lists(texts, max_size=25)},
    optional={"raw_scores": st.booleans(), "return_text": st.booleans(), "truncate": st.booleans() | st.none()},
)


@FUZZ
@given(body=cohere_bodies, path=st.sampled_from(PATHS))
def test_cohere_shaped_bodies_are_served_or_refused_cleanly(client: TestClient, body: dict, path: str) -> None:
    response = post_json(client, path, body)
    check(response)
    if response.status_code == 200:
        results = response.json()["results"]
        assert sorted(r["index"] for r in results) == sorted({r["index"] for r in results})
        assert all(0 <= r["index"] < len(body["documents"]) for r in results)


@FUZZ
@given(body=tei_bodies)
def test_tei_shaped_bodies_are_served_or_refused_cleanly(client: TestClient, body: dict) -> None:
    response = post_json(client, "/rerank", body)
    check(response)
    if response.status_code == 200:
        assert sorted(r["index"] for r in response.json()) == list(range(len(body["texts"])))


@pytest.mark.parametrize(
    "raw",
    [
        '{"query": "x", "documents": ["a", "b"], "first_stage_scores": [NaN, 1]}',
        '{"query": "x", "documents": ["a", "b"], "first_stage_scores": [Infinity, -Infinity]}',
        '{"query": "x", "documents": ["a", "b"], "first_stage_scores": [1e308, -1e308]}',
        '{"query": "\\ud800", "documents": ["lone surrogate in the query"]}',
        '{"query": "x", "documents": ["\\udfff\\ud800"]}',
        '{"query": "x", "texts": ["\\u0000", "\\ufeff", "\\u202e\\u0301"]}',
        '{"query": "x", "documents": [""], "top_n": 100000000000000000000000000000}',
        '{"query": "x", "documents": ["a"], "max_tokens_per_doc": 1}',
        '{"query": "' + "q" * 5000 + '", "documents": ["a"]}',
        '{"query": "x", "documents": ' + json.dumps(["d"] * 10_000) + "}",
        '{"query": "x", "texts": ' + json.dumps(["d"] * 10_000) + "}",
        '{"query": "x", "documents": {"0": "a"}}',
        '{"query": ["x"], "documents": ["a"]}',
        '{"query": "x", "documents": [{"text": null}]}',
        '{"query": "x", "documents": ["a"], "top_n": -1}',
        '{"query": "x", "documents": ["a"], "top_n": 1.5}',
        '[{"query": "x", "documents": ["a"]}]',
        '"just a string"',
        "",
        "{",
        "\xff\xfe garbage",
    ],
)
@pytest.mark.parametrize("path", PATHS)
def test_edge_cases_are_never_a_server_error(client: TestClient, raw: str, path: str) -> None:
    body = raw.encode("utf-8", "surrogatepass")
    check(client.post(path, content=body, headers={"content-type": "application/json"}))


def test_ten_thousand_documents_are_refused_with_the_limit(client: TestClient) -> None:
    response = client.post("/v2/rerank", json={"query": "x", "documents": ["d"] * 10_000})
    assert response.status_code in (413, 422)
    assert "limit" in response.text or "at most 20 items" in response.text


def test_non_finite_first_stage_scores_are_refused_by_name(client: TestClient) -> None:
    raw = b'{"query": "x", "documents": ["a", "b"], "first_stage_scores": [NaN, 1]}'
    response = client.post("/v2/rerank", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "first_stage_scores" in response.text
