"""Micro-batching: pairs of concurrent requests scored together in one worker thread, and the texts of
concurrent embedding requests embedded together by the same worker.

A request's pairs wait at most ``max_wait_ms`` for others to join; the worker then scores everything
waiting (up to ``max_pairs``) in length-sorted batches, so many small concurrent requests cost about what one
large request costs. One worker owns the ONNX session, which already uses every core for one batch.
With the dynamic int8 model, whose activation scales are computed per batch (so a pair's score depends on
the pairs batched with it), requests are queued together but each is scored on its own.

Example:
    >>> from rerankforge.serve.batcher import MicroBatcher
    >>> batcher = MicroBatcher(reranker)  # doctest: +SKIP
    >>> batcher.submit([("battery life", "It runs 9 h.")]).result().logits  # doctest: +SKIP
    array([4.2], dtype=float32)
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from rerankforge.config import ServeConfig
from rerankforge.serve.runtime import PairScores, Reranker


@dataclass
class _Job:
    pairs: Sequence[Any]  # (query, document) pairs to score, or texts to embed
    future: Future[Any]
    embed: str | None = None  # None: score pairs; "query" or "document": embed texts as that kind


class MicroBatcher:
    """Collects pairs from concurrent callers and scores them together.

    Args:
        reranker: the runtime that scores pairs.
        max_wait_ms: how long the first waiting request waits for company.
        max_pairs: a batch stops taking requests at this many pairs (a larger request still runs alone).
        on_batch: called after each batch with (requests, pairs or texts, seconds) — the server's metrics.
    """

    def __init__(
        self,
        reranker: Reranker,
        *,
        max_wait_ms: float | None = None,
        max_pairs: int | None = None,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        defaults = ServeConfig()  # not passed: the serve config's default (one home for each)
        self.reranker = reranker
        self.max_wait = (defaults.max_wait_ms if max_wait_ms is None else max_wait_ms) / 1000
        self.max_pairs = defaults.max_batch_pairs if max_pairs is None else max_pairs
        self.on_batch = on_batch
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="rerankforge-batcher", daemon=True)
        self._thread.start()

    def submit(self, pairs: Sequence[tuple[str, str]]) -> Future[PairScores]:
        """Queue pairs; the future holds their scores (in order) once a batch has run."""
        future: Future[PairScores] = Future()
        self._jobs.put(_Job(pairs, future))
        return future

    def submit_embedding(self, texts: Sequence[str], kind: str = "document") -> Future[np.ndarray]:
        """Queue texts to embed (see :meth:`Reranker.embed`); the future holds their vectors, in order."""
        future: Future[np.ndarray] = Future()
        self._jobs.put(_Job(texts, future, embed=kind))
        return future

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=10)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, size = [first], len(first.pairs)
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_pairs:
            remaining = deadline - time.perf_counter()
            try:
                job = self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            size += len(job.pairs)
        return jobs, False

    def _loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            jobs, closing = self._collect(first)
            self._score(jobs)
            if closing:
                return

    def _score(self, jobs: list[_Job]) -> None:
        for kind in ("query", "document"):  # the first stage's vectors do not depend on their batch-mates
            self._embed([job for job in jobs if job.embed == kind], kind)
        jobs = [job for job in jobs if job.embed is None]
        if not jobs:
            return
        started = time.perf_counter()
        pairs = [pair for job in jobs for pair in job.pairs]
        if not self.reranker.batch_invariant:
            # a pair's score depends on its batch-mates (dynamic int8): score each request on its own, so a
            # request's scores never depend on who else was asking
            for job in jobs:
                self._settle([job], job.pairs)
        else:
            self._settle(jobs, pairs)
        if self.on_batch:
            self.on_batch(len(jobs), len(pairs), time.perf_counter() - started)

    def _embed(self, jobs: list[_Job], kind: str) -> None:
        if not jobs:
            return
        started = time.perf_counter()
        try:
            vectors = self.reranker.embed([text for job in jobs for text in job.pairs], kind)
        except Exception as exc:  # handed to every waiting request; the worker keeps serving
            for job in jobs:
                job.future.set_exception(exc)
            return
        start = 0
        for job in jobs:
            job.future.set_result(vectors[start : start + len(job.pairs)])
            start += len(job.pairs)
        if self.on_batch:
            self.on_batch(len(jobs), start, time.perf_counter() - started)

    def _settle(self, jobs: list[_Job], pairs: Sequence[tuple[str, str]]) -> None:
        try:
            result = self.reranker.score_pairs(pairs)
        except Exception as exc:  # handed to every waiting request; the worker keeps serving
            for job in jobs:
                job.future.set_exception(exc)
            return
        start = 0
        for job in jobs:  # each request gets its own slice, in its own order
            end = start + len(job.pairs)
            job.future.set_result(PairScores(result.logits[start:end], result.cut[start:end], batches=result.batches))
            start = end
