"""First stages for labelled evaluation: BM25 (bm25s) and dense (the build's bi-encoder, searched in Qdrant).

Both return a run: ``{query_id: {doc_id: score}}`` with the top ``k`` documents of each query.
"""

from __future__ import annotations

from rerankforge.errors import MissingDependencyError

Run = dict[str, dict[str, float]]


def bm25_search(corpus: dict[str, str], queries: dict[str, str], k: int) -> Run:
    """BM25 (bm25s, English stopwords) top-``k``; documents sharing no term with the query are left out.

    Example:
        >>> run = bm25_search({"a": "the cat sat", "b": "dogs bark"}, {"q": "cat"}, k=2)
        >>> list(run["q"])
        ['a']
    """
    try:
        import bm25s
    except ImportError as exc:
        raise MissingDependencyError("bm25s", "eval", "The BM25 first stage") from exc
    ids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([corpus[i] for i in ids], stopwords="en", show_progress=False), show_progress=False)
    query_ids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in query_ids], stopwords="en", show_progress=False)
    docs, scores = retriever.retrieve(tokens, k=min(k, len(ids)), show_progress=False, n_threads=1)
    return {
        query_id: {ids[int(d)]: float(s) for d, s in zip(row_docs, row_scores, strict=True) if s > 0}
        for query_id, row_docs, row_scores in zip(query_ids, docs, scores, strict=True)
    }


def dense_search(corpus: dict[str, str], queries: dict[str, str], k: int, bi_encoder: str, batch_size: int = 32) -> Run:
    """Cosine top-``k`` of a sentence-transformers bi-encoder, in an in-memory Qdrant collection."""
    from rerankforge.config import MineConfig
    from rerankforge.index.embedding import embed, embed_chunks, load_bi_encoder
    from rerankforge.index.qdrant import index_and_search

    model = load_bi_encoder(bi_encoder)
    ids, query_ids = list(corpus), list(queries)
    # the documents as the build's mine stage embeds them: ONNX on a CPU, from the cross-build vector cache
    doc_vectors, _ = embed_chunks(MineConfig(bi_encoder=bi_encoder, batch_size=batch_size), [corpus[i] for i in ids])
    query_vectors = embed(model.encode_query, [queries[q] for q in query_ids], batch_size)
    hits = index_and_search(doc_vectors, ids, query_vectors, k, path=None, url=None, collection="rerankforge_eval")
    return {query_id: dict(query_hits) for query_id, query_hits in zip(query_ids, hits, strict=True)}
