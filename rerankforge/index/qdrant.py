"""Chunk embeddings in Qdrant: embedded local mode in the run folder by default, or a server URL."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.errors import MissingDependencyError, RerankforgeError


class QdrantIndex:
    """A cosine index of vectors with chunk ids as payload.

    Example:
        >>> index = QdrantIndex(path=None, url=None, collection="demo")  # in memory
        >>> index.rebuild(np.eye(3, dtype="float32"), ["a", "b", "c"])
        >>> index.search(np.eye(3, dtype="float32")[:1], k=1)[0][0][0]
        'a'
    """

    def __init__(self, *, path: Path | None, url: str | None, collection: str) -> None:
        try:
            from qdrant_client import QdrantClient
        except ImportError as exc:
            raise MissingDependencyError("qdrant-client", "build", "Candidate mining") from exc
        self.collection = collection
        self.where = url or (str(path) if path else ":memory:")
        try:
            if url:
                self.client = QdrantClient(url=url, timeout=60)
            elif path:
                path.mkdir(parents=True, exist_ok=True)
                self.client = QdrantClient(path=str(path))
            else:
                self.client = QdrantClient(location=":memory:")
        except Exception as exc:
            raise RerankforgeError(f"Cannot open Qdrant at {self.where}: {exc}. Check --qdrant-url.") from exc

    def rebuild(self, vectors: np.ndarray, ids: list[str], batch: int = 256) -> None:
        from qdrant_client import models

        try:
            if self.client.collection_exists(self.collection):
                self.client.delete_collection(self.collection)
            self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=int(vectors.shape[1]), distance=models.Distance.COSINE),
            )
            storage = self._local_storage()
            starts = range(0, len(ids), batch)
            for start in starts:
                if storage is not None:  # flushed to disk with the last batch only, see _local_storage
                    storage.execute(f"PRAGMA synchronous = {'FULL' if start == starts[-1] else 'OFF'}")
                self.client.upsert(
                    self.collection,
                    points=[
                        models.PointStruct(id=i, vector=vectors[i].tolist(), payload={"chunk_id": ids[i]})
                        for i in range(start, min(start + batch, len(ids)))
                    ],
                )
        except RerankforgeError:
            raise
        except Exception as exc:
            raise RerankforgeError(f"Qdrant at {self.where} failed while indexing: {exc}") from exc

    def _local_storage(self) -> sqlite3.Connection | None:
        """The SQLite file of an embedded collection on disk, else None.

        Local mode commits every point in its own transaction, each flushed to disk: 46 s for MedQuAD's 21,602
        chunks here, most of the mine stage. While the collection is rebuilt, the commits before the last batch
        skip the flush (``synchronous = OFF``); the last batch's commits flush the file, and with it every page
        written before. A crash in between leaves a collection the stage rebuilds anyway (its manifest comes
        last). Reached through qdrant-client's internals; when they change, writes stay as they were.
        """
        collections = getattr(getattr(self.client, "_client", None), "collections", None)
        persistence = (
            getattr(collections.get(self.collection), "storage", None) if isinstance(collections, dict) else None
        )
        connection = getattr(persistence, "storage", None)
        return connection if isinstance(connection, sqlite3.Connection) else None

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Top-``k`` (chunk id, cosine score) per query vector, best first."""
        from qdrant_client import models

        requests = [models.QueryRequest(query=q.tolist(), limit=k, with_payload=True) for q in queries]
        responses: list[Any] = self.client.query_batch_points(self.collection, requests=requests)
        return [[(p.payload["chunk_id"], float(p.score)) for p in r.points] for r in responses]

    def close(self) -> None:
        self.client.close()


def index_and_search(
    vectors: np.ndarray,
    ids: list[str],
    queries: np.ndarray,
    k: int,
    *,
    path: Path | None,
    url: str | None,
    collection: str,
) -> list[list[tuple[str, float]]]:
    """Put ``vectors`` (with ``ids``) into a fresh collection, and the top-``k`` of each query vector from it
    (``k`` is capped at the collection's size). ``path`` and ``url`` None: an in-memory collection."""
    index = QdrantIndex(path=path, url=url, collection=collection)
    try:
        index.rebuild(vectors, ids)
        return index.search(queries, k=min(k, len(ids)))
    finally:
        index.close()
