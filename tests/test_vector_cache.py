"""Chunk vectors cached across builds by (bi-encoder, text)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from rerankforge.index.vector_cache import VectorCache


def _fake_encoder(calls: list[list[str]]):
    def compute(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)

    return compute


def test_only_new_texts_are_embedded_and_vectors_come_back_in_order(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    first = VectorCache("some-model", tmp_path).embed(["alpha", "beta", "alpha"], _fake_encoder(calls))
    assert calls == [["alpha", "beta"]] and first.shape == (3, 3)
    assert np.array_equal(first[0], first[2])
    cache = VectorCache("some-model", tmp_path)
    again = cache.embed(["beta", "gamma", "alpha"], _fake_encoder(calls))
    assert calls[-1] == ["gamma"] and (cache.hits, cache.computed) == (2, 1)
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[2], first[0])


def test_another_model_or_a_model_saved_again_does_not_reuse_vectors(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"v1")
    VectorCache(str(folder), tmp_path / "cache").embed(["alpha"], _fake_encoder(calls))
    VectorCache("other-model", tmp_path / "cache").embed(["alpha"], _fake_encoder(calls))
    weights.write_bytes(b"v2, saved again")
    os.utime(weights, ns=(1, 1))
    VectorCache(str(folder), tmp_path / "cache").embed(["alpha"], _fake_encoder(calls))
    assert len(calls) == 3


def test_a_cache_that_cannot_be_written_still_gives_the_vectors(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    calls: list[list[str]] = []
    vectors = VectorCache("some-model", blocked / "embeddings").embed(["alpha", "beta"], _fake_encoder(calls))
    assert vectors.shape == (2, 3) and calls == [["alpha", "beta"]]


def test_chunks_are_embedded_by_the_bi_encoders_onnx_export_as_torch_would(
    minilm_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rerankforge.config import MineConfig
    from rerankforge.index.embedding import embed, embed_documents, load_bi_encoder

    monkeypatch.setenv("RERANKFORGE_HOME", str(tmp_path))
    cfg = MineConfig(bi_encoder=minilm_path, batch_size=4)
    texts = ["The dock needs a 16 A circuit.", "Leave policy", "Glaucoma damages the optic nerve " * 12, "x"]

    fast = embed_documents(cfg, texts)
    exported = list((tmp_path / "first_stage").iterdir())  # made once, reused by later builds and the export
    torch_vectors = embed(load_bi_encoder(minilm_path).encode_document, texts, 4)

    assert len(exported) == 1 and (exported[0] / "onnx" / "model.onnx").is_file()
    assert fast.shape == torch_vectors.shape == (4, 384)
    assert np.abs(fast - torch_vectors).max() < 1e-4
    assert np.array_equal(np.argsort(-(fast @ fast[2])), np.argsort(-(torch_vectors @ torch_vectors[2])))
