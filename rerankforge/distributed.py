"""Builds launched with ``torchrun`` / ``accelerate launch``: rank 0 runs the build, every rank trains.

The launcher starts one process per GPU with ``RANK`` and ``WORLD_SIZE`` set. Rank 0 (the *leader*) takes the
run folder's lock and runs the stages as a single-process build would. The other ranks (*followers*) never call
the LLM and never write a stage's files: they wait for the leader's word, written to the run folder, and when
it says the train stage runs, they join it, and the trainer's own distributed data parallel spreads the groups
over the processes. After training the followers exit; the leader evaluates and exports.

Example:
    >>> Launch.from_env({"RANK": "1", "WORLD_SIZE": "4"}).follower
    True
    >>> Launch.from_env({}).distributed
    False
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rerankforge.artifacts import write_json

SIGNAL = ".launch.json"  # the leader's word to the followers, in the run folder


@dataclass(frozen=True)
class Launch:
    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Launch:
        env = os.environ if env is None else env
        return cls(
            rank=int(env.get("RANK", "0")),
            world_size=int(env.get("WORLD_SIZE", "1")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
        )

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def follower(self) -> bool:
        return self.distributed and self.rank != 0


def process_started_at() -> float:
    """When this process started (epoch seconds): a signal older than that is from an earlier launch."""
    import psutil

    return psutil.Process().create_time()


def tell_followers(run_dir: Path, train: str, train_key: str | None) -> None:
    """The leader's word: ``train`` is ``"run"`` (join the train stage) or ``"none"`` (nothing to join)."""
    write_json(run_dir / SIGNAL, {"train": train, "key": train_key, "written_at": time.time()})


def wait_for_leader(run_dir: Path, poll_seconds: float = 0.5) -> dict[str, object]:
    """Block until the leader of this launch has written its word (the launcher ends us if the leader fails)."""
    started = process_started_at() - 2.0  # the processes of one launch start within moments of each other
    path = run_dir / SIGNAL
    while True:
        try:
            word = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            word = None
        if isinstance(word, dict) and float(word.get("written_at", 0)) >= started:
            return word
        time.sleep(poll_seconds)
