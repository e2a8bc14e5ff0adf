"""The first stage's index in embedded Qdrant on disk: what the mine stage writes, evaluate reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rerankforge.index.qdrant import QdrantIndex


def test_a_rebuilt_collection_on_disk_is_whole_when_reopened(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(700, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"doc.md#{i}" for i in range(700)]
    index = QdrantIndex(path=tmp_path / "qdrant", url=None, collection="chunks")
    index.rebuild(vectors[::-1], ids[::-1])  # an earlier build's collection, replaced below
    index.rebuild(vectors, ids, batch=256)  # three batches: two written without a flush, the last with one
    # The fast path reaches the collection's SQLite file through qdrant-client's internals: fail loudly if
    # they moved, rather than go back to a flush per point unnoticed.
    assert index._local_storage() is not None
    index.close()

    reopened = QdrantIndex(path=tmp_path / "qdrant", url=None, collection="chunks")
    try:
        assert reopened.client.count("chunks").count == 700
        hits = reopened.search(vectors[[0, 255, 256, 699]], k=2)
    finally:
        reopened.close()
    assert [h[0][0] for h in hits] == [ids[0], ids[255], ids[256], ids[699]]
    assert all(abs(h[0][1] - 1.0) < 1e-5 for h in hits)
