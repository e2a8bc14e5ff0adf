"""Several servers of one model behind one provider, and the bounded thread pool that keeps them busy.

Each call goes to the host with the fewest calls in flight (ties: the one asked longest ago), so a slow or
busy host gets less work. A retry after a transient fault goes through the same choice, so it usually
lands on another host.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from rerankforge.llm.base import LLMProvider, LLMReply, Message

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

DEFAULT_SLOTS_PER_HOST = 4  # Ollama's own default of parallel requests per model when memory allows


class MultiHostProvider(LLMProvider):
    """One model served by several hosts; calls go to the least busy one.

    The cache keys on provider and model only, so answers from any host are interchangeable.
    """

    def __init__(self, providers: list[LLMProvider], *, retries: int = 2) -> None:
        if not providers:
            raise ValueError("MultiHostProvider needs at least one provider")
        first = providers[0]
        super().__init__(first.model, seed=first.seed, temperature=first.temperature, retries=retries)
        self.name = first.name
        self.supports_logprobs = all(p.supports_logprobs for p in providers)
        self.providers = providers
        self.in_flight = [0] * len(providers)
        self.asked = [0] * len(providers)  # calls sent to each host, for the report and the tests
        self._last_used = [0] * len(providers)
        self._tick = 0
        self._lock = threading.Lock()

    def sampling_options(self) -> dict[str, Any]:
        return self.providers[0].sampling_options()

    def _pick(self) -> int:
        with self._lock:
            self._tick += 1
            index = min(range(len(self.providers)), key=lambda i: (self.in_flight[i], self._last_used[i]))
            self.in_flight[index] += 1
            self.asked[index] += 1
            self._last_used[index] = self._tick
            return index

    def _chat(self, messages: list[Message], schema: dict[str, Any], max_tokens: int, **request: Any) -> LLMReply:
        index = self._pick()
        try:
            return self.providers[index]._chat(messages, schema, max_tokens, **request)
        finally:
            with self._lock:
                self.in_flight[index] -= 1

    def close(self) -> None:
        for provider in self.providers:
            provider.close()


def default_concurrency(provider: str, hosts: int) -> int:
    """Calls in flight when ``llm.concurrency`` is not set.

    Ollama and OpenAI-compatible servers: ``$OLLAMA_NUM_PARALLEL`` (the server's parallel slots) per host when
    set, else 4 per host. The embedded runtime answers one call at a time.

    Example:
        >>> default_concurrency("embedded", 1)
        1
    """
    if provider == "embedded":
        return 1
    slots = os.environ.get("OLLAMA_NUM_PARALLEL", "")
    per_host = int(slots) if slots.isdigit() and int(slots) > 0 else DEFAULT_SLOTS_PER_HOST
    return per_host * max(hosts, 1)


def map_ordered(fn: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[R]:
    """``fn`` over ``items`` with at most ``concurrency`` calls running; results in the order of ``items``.

    Work is submitted lazily (never more than ``2 * concurrency`` queued), so an interrupted run has started
    only a few calls beyond those it finished. An exception in ``fn`` stops the run and is raised here.

    Example:
        >>> list(map_ordered(lambda x: x * x, range(5), concurrency=3))
        [0, 1, 4, 9, 16]
    """
    if concurrency <= 1:
        yield from map(fn, items)
        return
    iterator = iter(items)
    pending: dict[int, Future[R]] = {}
    done: dict[int, R] = {}
    submitted = emitted = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm") as pool:
        try:
            while True:
                while len(pending) < 2 * concurrency:
                    try:
                        item = next(iterator)
                    except StopIteration:
                        break
                    pending[submitted] = pool.submit(fn, item)
                    submitted += 1
                if not pending:
                    return
                finished, _ = wait(pending.values(), return_when=FIRST_COMPLETED)
                for index in [i for i, f in pending.items() if f in finished]:
                    done[index] = pending.pop(index).result()
                while emitted in done:
                    yield done.pop(emitted)
                    emitted += 1
        finally:
            for future in pending.values():
                future.cancel()
