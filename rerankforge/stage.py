"""The stage contract: what a stage's ``run(ctx)`` sees (:class:`StageContext`) and returns (:class:`StageResult`).

It sits below the stages and the pipeline: each stage imports it, the pipeline imports it and the stages,
and nothing here imports either of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankforge.config import BuildConfig

# (stage, done, total, note): the CLI turns these into rich progress bars; total 0 = unknown.
ProgressCallback = Callable[[str, int, int, str], None]


def no_progress(stage: str, done: int, total: int, note: str) -> None:
    return None


@dataclass
class StageResult:
    """What a stage returns: the files it wrote (relative to the run folder) and a summary for the report."""

    files: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


class StageContext:
    """What a running stage sees: the config, its folder, upstream folders, progress, and the LLM."""

    def __init__(self, config: BuildConfig, run_dir: Path, progress: ProgressCallback, provider: Any = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.started = time.monotonic()  # the build's clock: its time budget counts from here
        self._progress = progress
        self._provider = provider
        self._llm: Any = None
        self.stage = ""

    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    @property
    def out(self) -> Path:
        return self.dir(self.stage)

    def progress(self, done: int, total: int, note: str = "") -> None:
        self._progress(self.stage, done, total, note)

    @property
    def llm(self) -> Any:
        """The cached LLM, created on first use so a fully cached rerun never loads a model."""
        if self._llm is None:
            from rerankforge.llm import CachedLLM, LLMCache, concurrency_for, make_provider

            provider = self._provider or make_provider(self.config.llm)
            concurrency = concurrency_for(self.config.llm, provider)
            self._llm = CachedLLM(provider, LLMCache(self.run_dir / "llm_cache.jsonl"), concurrency)
        return self._llm

    @property
    def llm_stats(self) -> dict[str, Any] | None:
        """Calls, cache hits, retried faults and tokens of this build; ``None`` when no LLM was needed."""
        if self._llm is None:
            return None
        return {**self._llm.stats.as_dict(), "retries": self._llm.provider.retried}

    def close(self) -> None:
        if self._llm is not None and self._provider is None:  # a provider passed in is the caller's to close
            self._llm.provider.close()


@dataclass(frozen=True)
class Stage:
    """One stage: a module's ``run(ctx) -> StageResult`` plus what its cache key depends on."""

    name: str
    version: str
    run: Callable[[StageContext], StageResult]
    config_sections: tuple[str, ...]
    depends: tuple[str, ...]
    extra_key: Callable[[BuildConfig], Any] = lambda cfg: None
