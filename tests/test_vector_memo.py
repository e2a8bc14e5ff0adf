"""The first stage's document vectors kept in memory: the same scores, a hard memory cap, LRU order, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from rerankforge.serve.embedder import VectorMemo, padded_batches

DOCS = [
    "The charging dock needs a dedicated 32 A breaker.",
    "Parental leave is sixteen weeks at full pay.",
    "Replace the battery when it holds less than 70% of its charge.",
    "Expenses above 500 EUR need a manager's approval.",
]


def _vectors(n: int, dim: int = 4) -> np.ndarray:
    return np.arange(n * dim, dtype=np.float32).reshape(n, dim)


def test_the_memo_keeps_the_most_recently_used_within_its_cap() -> None:
    memo = VectorMemo(max_bytes=3 * 16)  # three 4-dim float32 vectors
    keys = [("m", f"d{i}") for i in range(4)]
    memo.store(keys[:3], _vectors(3))
    assert memo.lookup([keys[0]])[0] is not None  # d0 is now the most recently used
    memo.store(keys[3:], _vectors(1))  # over the cap: the least recently used (d1) goes
    found = memo.lookup(keys)
    assert [v is not None for v in found] == [True, False, True, True]
    assert memo.stats() == {"hits": 4, "misses": 1, "bytes": 48, "entries": 3, "evictions": 1, "max_bytes": 48}
    np.testing.assert_array_equal(found[3], _vectors(1)[0])
    assert memo.lookup([("other model", "d0")]) == [None]  # the model's fingerprint is part of the key


class _Encoding:
    def __init__(self, n: int) -> None:
        self.ids, self.attention_mask, self.type_ids = [7] * n, [1] * n, [0] * n


def test_inputs_padded_to_a_width_step_are_batched_only_with_inputs_of_their_width() -> None:
    lengths = [3, 40, 31, 33, 64, 5, 65]
    seen = []
    for idx, feed in padded_batches([_Encoding(n) for n in lengths], 3, 0, {"input_ids", "attention_mask"}, 32):
        width = feed["input_ids"].shape[1]
        assert width % 32 == 0 and all(lengths[i] <= width < lengths[i] + 32 for i in idx)
        assert feed["attention_mask"].sum(axis=1).tolist() == [lengths[i] for i in idx]  # padding is masked
        assert len(idx) <= 3
        seen += idx.tolist()
    assert sorted(seen) == list(range(len(lengths)))
    encodings = [_Encoding(n) for n in lengths]
    plain = [feed["input_ids"].shape for _, feed in padded_batches(encodings, 3, 0, {"input_ids"})]
    assert plain == [(3, 31), (3, 64), (1, 65)]  # without a step: each batch padded to its own longest


def test_threads_sharing_the_memo_never_pass_its_cap_and_count_every_lookup() -> None:
    memo = VectorMemo(max_bytes=50 * 16)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for _ in range(200):
                keys = [("m", f"d{i}") for i in rng.integers(0, 120, size=8)]
                found = memo.lookup(keys)
                memo.store([k for k, v in zip(keys, found, strict=True) if v is None],
                           _vectors(sum(v is None for v in found)))  # fmt: skip
                assert memo.stats()["bytes"] <= 50 * 16
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    stats = memo.stats()
    assert stats["hits"] + stats["misses"] == 8 * 200 * 8 and stats["hits"] > 0 and stats["evictions"] > 0
    assert stats["entries"] * 16 == stats["bytes"] <= 50 * 16


@pytest.mark.slow  # the session's default build (parsing, training, export)
def test_a_first_stage_scorer_with_the_memo_scores_exactly_as_without_it(default_build) -> None:
    from rerankforge import Reranker

    _, _, run_dir = default_build
    model_dir = run_dir / "model"
    cached, plain = Reranker(model_dir), Reranker(model_dir, vector_cache_mb=0)
    assert cached.first_stage is not None and cached.vector_cache is not None and plain.vector_cache is None
    first = cached.logits("dock breaker", DOCS[:3])
    np.testing.assert_array_equal(first, plain.logits("dock breaker", DOCS[:3]))  # the same batch: bit for bit
    # documents embedded before, in another batch, and one new: the float32 vectors the memo kept, so the scores
    # differ from a fresh embedding only in the last bits that a batch's padding changes without the memo too
    mixed = cached.logits("battery replacement", DOCS[1:])
    np.testing.assert_allclose(mixed, plain.logits("battery replacement", DOCS[1:]), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(cached.logits("dock breaker", DOCS[:3]), first)  # all three from the memo
    stats = cached.vector_cache.stats()
    assert (stats["misses"], stats["hits"]) == (4, 5)  # each document embedded once, ever
    preloaded = cached.first_stage.preloaded  # the build's own chunks (below)
    assert stats["bytes"] == (preloaded + 4) * cached.first_stage.embed(["x"]).nbytes


@pytest.mark.slow  # the session's default build
def test_the_builds_own_chunks_are_in_the_memo_before_the_first_request(
    default_build, tmp_path: Path, example_docs: Path
) -> None:
    """The model folder carries its chunks' vectors (keyed by hash, no text): a request for known passages embeds
    nothing, and scores as a server without them does; over the size cap the export leaves them out."""
    import shutil

    from rerankforge import Reranker, build
    from rerankforge.artifacts import Chunk, read_jsonl
    from rerankforge.serve.embedder import CHUNK_VECTORS
    from tests.conftest import fake_build_config
    from tests.fake_llm import FakeLLM

    result, _, run_dir = default_build
    model_dir = Path(run_dir) / "model"
    texts = list(dict.fromkeys(c.text for c in read_jsonl(Path(run_dir) / "parse" / "chunks.jsonl", Chunk)))
    written = result.summary("export")["first_stage"]["chunk_vectors"]
    assert written["written"] is True and written["chunks"] == len(texts)
    with np.load(model_dir / "first_stage" / CHUNK_VECTORS) as saved:
        assert saved["vectors"].shape[0] == saved["keys"].shape[0] == len(texts)
        assert texts[0].encode() not in saved["keys"].tobytes()  # hashes, not the user's text
    served, plain = Reranker(model_dir), Reranker(model_dir, vector_cache_mb=0)
    assert served.first_stage.preloaded == len(texts)
    logits = served.logits("dock breaker", texts[:5])
    assert served.vector_cache.stats()["misses"] == 0 and served.vector_cache.stats()["hits"] == 5
    np.testing.assert_allclose(logits, plain.logits("dock breaker", texts[:5]), rtol=0, atol=1e-5)

    capped = tmp_path / "run"  # the same build with a cap below its vectors: only the export runs again
    shutil.copytree(run_dir, capped, ignore=shutil.ignore_patterns(".lock"))
    export = {"chunk_vectors_max_mb": 0.001, "first_stage_variants": []}
    config = fake_build_config(example_docs, capped, train={"epochs": 2, "max_length": 128, "batch_size": 4},
                               grade={}, export=export)  # fmt: skip
    again = build(config, llm=FakeLLM()).summary("export")["first_stage"]["chunk_vectors"]
    assert again["written"] is False and "export.chunk_vectors_max_mb" in again["reason"]
    assert not (capped / "model" / "first_stage" / CHUNK_VECTORS).exists()
    assert Reranker(capped / "model").first_stage.preloaded == 0


@pytest.mark.slow  # the session's default build
def test_metrics_report_the_memos_hits_misses_and_bytes(default_build) -> None:
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from rerankforge.serve.app import create_app

    _, _, run_dir = default_build
    client = TestClient(create_app(Path(run_dir) / "model"))
    for _ in range(2):
        assert client.post("/v2/rerank", json={"query": "dock breaker", "documents": DOCS}).status_code == 200
    samples = {s.name: s.value for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples}
    assert samples["rerankforge_vector_cache_misses"] == 4 and samples["rerankforge_vector_cache_hits"] == 4
    assert samples["rerankforge_vector_cache_bytes"] > 0 and samples["rerankforge_vector_cache_evictions"] == 0


@pytest.mark.slow  # the session's default build, exported again with the first stage's variants
def test_the_first_stage_is_served_in_its_fastest_variant_within_one_ndcg_point(
    default_build, tmp_path: Path, example_docs: Path
) -> None:
    """The export writes the first stage's int8 and OpenVINO forms beside fp32 and measures each on the held-out
    queries; a scorer that is the untuned first stage alone keeps fp32 (its order must be exactly dense's; the
    teaching build's test checks the fastest-within-a-point rule on a tuned one). A variant whose vectors depend
    on their batch-mates embeds one text at a time, so the memo stays exact; the chunk vectors are fp32's."""
    import json
    import shutil

    from rerankforge import Reranker, build
    from rerankforge.artifacts import Chunk, read_jsonl
    from rerankforge.serve.embedder import OnnxEmbedder
    from rerankforge.serve.engines import VARIANTS
    from tests.conftest import fake_build_config
    from tests.fake_llm import FakeLLM

    _, _, source = default_build
    run_dir = tmp_path / "run"  # only the export runs again
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns(".lock"))
    config = fake_build_config(example_docs, run_dir, train={"epochs": 2, "max_length": 128, "batch_size": 4},
                               grade={}, export={})  # fmt: skip
    result = build(config, llm=FakeLLM())
    assert next(s.status for s in result.stages if s.name == "export") == "ran"
    summary = result.summary("export")["first_stage"]
    stats, served = summary["variants"], summary["recommended_variant"]
    expected = {"fp32", *config.export.first_stage_variants} - set(summary.get("variants_skipped", []))
    assert set(stats) == expected and len(stats) >= 3  # fp32, int8 and OpenVINO's where it is installed
    assert stats["fp32"]["ndcg_loss"] == 0.0 and served == "fp32" and "fp32_kept" in summary
    model_dir = run_dir / "model"
    meta = json.loads((model_dir / "rerankforge.json").read_text())
    assert meta["scorer"]["first_stage_variant"] == served
    for name in stats:
        assert (model_dir / "first_stage" / VARIANTS[name].path).is_file()

    texts = list(dict.fromkeys(c.text for c in read_jsonl(run_dir / "parse" / "chunks.jsonl", Chunk)))
    reranker, fp32 = Reranker(model_dir), Reranker(model_dir, variant="fp32", vector_cache_mb=0)
    assert reranker.first_stage.variant == served and reranker.variant == f"first_stage:{served}"
    assert reranker.first_stage.preloaded == len(texts)  # the chunk vectors are the served variant's
    other = next(name for name in stats if name != "fp32")
    assert Reranker(model_dir, variant=other).first_stage.preloaded == 0  # not another variant's: its own fingerprint
    logits = reranker.logits("dock breaker", texts[:6])
    assert reranker.vector_cache.stats()["misses"] == 0
    plain = Reranker(model_dir, vector_cache_mb=0)
    np.testing.assert_allclose(logits, plain.logits("dock breaker", texts[:6]), rtol=0, atol=1e-6)
    for name in stats:  # each variant ranks as fp32 does, within quantization's error
        variant = OnnxEmbedder(model_dir / "first_stage", variant=name)
        cosines = np.sum(variant.embed(texts[:8]) * fp32.first_stage.embed(texts[:8]), axis=1)
        assert cosines.min() > 0.95, (name, cosines)
        if not VARIANTS[name].batch_invariant:  # alone or among others: the same vector, bit for bit
            together = variant.embed(texts[:8])
            np.testing.assert_array_equal(np.stack([variant.embed([t])[0] for t in texts[:8]]), together)
            np.testing.assert_array_equal(variant.embed(texts[7::-1]), together[::-1])
        if variant.width_step > 1:  # a request's query rides in its documents' passes, with its vector alone
            query, docs = variant.embed(["dock breaker"], "query")[0], variant.embed(texts[:8])
            run, passes = variant._engine.run, []
            variant._engine.run = lambda feed, run=run, seen=passes: seen.append(feed["input_ids"].shape) or run(feed)
            cosines = variant.cosine_pairs([("dock breaker", t) for t in texts[:8]])
            np.testing.assert_array_equal(cosines, np.array([float(query @ d) for d in docs], dtype=np.float32))
            widths = {-(-len(e.ids) // variant.width_step) for e in variant.tokenizer.encode_batch(texts[:8])}
            assert len(passes) == len(widths | {1}), passes  # one pass per width, none for the query alone
