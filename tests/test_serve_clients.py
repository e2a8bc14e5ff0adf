"""The examples in examples/serve run against a real `rerankforge serve` process: Cohere's client, LangChain's
Cohere reranker (base_url pointed at the server), and the in-process Python API."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerankforge.serve.runtime import Reranker
from tests.serve_process import serve_process

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "serve"
QUERY = "AR-200 battery life"
DOCUMENTS = [
    "The AR-200 scanner runs about nine hours on a full charge.",
    "Expense reports are due within thirty days of travel.",
    "Charge the AR-200 in its dock; the LED turns green when full.",
]
KEY = "example-key"


@pytest.fixture(scope="module")
def server(onnx_model_dir: Path) -> Iterator[str]:
    with serve_process(onnx_model_dir, "--variant", "int8", env={"RERANKFORGE_API_KEY": KEY}) as base:
        yield base


@pytest.fixture(scope="module")
def expected(onnx_model_dir: Path) -> list[tuple[int, float]]:
    return Reranker(onnx_model_dir, variant="int8").rerank(QUERY, DOCUMENTS, top_n=2)


def run_example(name: str, *args: str, key: str = KEY) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"RERANKFORGE_API_KEY": key, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_cohere_client_example(server: str, expected: list[tuple[int, float]]) -> None:
    results = run_example("cohere_client.py", server)
    assert [(r["index"], pytest.approx(r["relevance_score"], abs=1e-6)) for r in results] == expected


def test_cohere_client_with_a_wrong_key_is_refused(server: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "cohere_client.py"), server],
        capture_output=True,
        text=True,
        timeout=120,
        env={"RERANKFORGE_API_KEY": "wrong", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode != 0 and "401" in done.stderr


def test_langchain_cohere_rerank_example(server: str, expected: list[tuple[int, float]]) -> None:
    results = run_example("langchain_rerank.py", server)
    assert [r["text"] for r in results] == [DOCUMENTS[i] for i, _ in expected]
    assert [r["relevance_score"] for r in results] == pytest.approx([s for _, s in expected], abs=1e-6)


def test_python_api_example(onnx_model_dir: Path) -> None:
    results = run_example("python_api.py", str(onnx_model_dir))
    reference = Reranker(onnx_model_dir).rerank(QUERY, DOCUMENTS, top_n=2)
    assert [(r["index"], pytest.approx(r["relevance_score"])) for r in results] == reference
    assert {r["variant"] for r in results} == {"fp32"}  # no recommendation in this export's metadata
