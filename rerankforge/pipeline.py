"""The ordered stages of a build, their cache keys, resume and ``--force``.

A stage is skipped only when the hash of (stage version, its config section, the upstream stages' keys,
its own extra inputs: documents, templates, model ids) equals the key its manifest recorded, and every
file the manifest lists still has the recorded sha256. Manifests are written last, atomically.

Example:
    >>> from rerankforge import build, load_config
    >>> result = build(load_config("examples/rerankforge.toml"))  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerankforge.artifacts import file_sha256, read_json, text_sha256, write_json
from rerankforge.config import BuildConfig
from rerankforge.distributed import SIGNAL, Launch, tell_followers, wait_for_leader
from rerankforge.errors import InputError, RerankforgeError, StageError
from rerankforge.stage import ProgressCallback, Stage, StageContext, StageResult, no_progress

__all__ = [
    "BUILD_RECORD",
    "STAGE_NAMES",
    "BuildResult",
    "ProgressCallback",
    "Stage",
    "StageContext",
    "StageResult",
    "build",
]

logger = logging.getLogger(__name__)

BUILD_RECORD = "build.json"  # one record per build run: stage statuses, times, LLM stats (read by the report)


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" or "skipped"
    seconds: float
    summary: dict[str, Any]


@dataclass
class BuildResult:
    run_dir: Path
    stages: list[StageOutcome]
    llm_stats: dict[str, Any] | None

    def summary(self, stage: str) -> dict[str, Any]:
        return next(s.summary for s in self.stages if s.name == stage)

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    def record(self) -> dict[str, Any]:
        """What the report needs from this build run: each stage's status and time, and the LLM's calls."""
        return {
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "stages": [{"name": s.name, "status": s.status, "seconds": round(s.seconds, 2)} for s in self.stages],
            "llm_stats": self.llm_stats,
        }


# The stages in build order, each with the stages whose output it reads. A stage ``name`` is the module
# ``rerankforge.stages.<name>``, keyed by the config section of its name, and writes the folder of its name.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "parse": (),
    "queries": ("parse",),
    "mine": ("parse", "queries"),
    "grade": ("parse", "queries", "mine"),
    "train": ("parse", "grade"),
    "evaluate": ("parse", "mine", "grade", "train"),
    "export": ("train", "evaluate"),
}
STAGE_NAMES = tuple(STAGE_INPUTS)


def _stages() -> list[Stage]:
    import importlib

    stages = []
    for name, inputs in STAGE_INPUTS.items():
        module = importlib.import_module(f"rerankforge.stages.{name}")
        extra = getattr(module, "cache_inputs", None)
        stages.append(Stage(name, module.VERSION, module.run, (name,), inputs, *([extra] if extra else [])))
    return stages


def _section_for_key(section: Any) -> dict[str, Any]:
    """A config section as it enters a stage key: without settings the stage does not read."""
    return section.model_dump(mode="json", exclude=getattr(section, "NOT_IN_STAGE_KEY", None) or None)


def stage_key(stage: Stage, cfg: BuildConfig, upstream_keys: dict[str, str]) -> str:
    material = {
        "stage": stage.name,
        "version": stage.version,
        "config": {s: _section_for_key(getattr(cfg, s)) for s in stage.config_sections},
        "upstream": {d: upstream_keys[d] for d in stage.depends},
        "extra": stage.extra_key(cfg),
    }
    return text_sha256(json.dumps(material, sort_keys=True, default=str))


def _manifest_path(run_dir: Path, stage: str) -> Path:
    return run_dir / stage / "manifest.json"


def is_fresh(run_dir: Path, stage: str, key: str) -> bool:
    """True when the stage's manifest records ``key`` and every listed file is intact."""
    path = _manifest_path(run_dir, stage)
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        logger.warning("Manifest %s is damaged; the stage will run again", path)
        return False
    if manifest.get("key") != key:
        return False
    for relative, digest in manifest["files"].items():
        file = run_dir / relative
        if not file.is_file() or file_sha256(file) != digest:
            logger.warning("%s changed since it was written; the stage will run again", file)
            return False
    return True


def _write_manifest(run_dir: Path, stage: str, key: str, result: StageResult, seconds: float) -> None:
    files = {}
    for relative in result.files:
        file = run_dir / relative
        if not file.is_file():
            raise StageError(f"Stage {stage} reported {file} but did not write it (a bug: please report it).")
        files[relative] = file_sha256(file)
    write_json(
        _manifest_path(run_dir, stage),
        {"stage": stage, "key": key, "files": files, "summary": result.summary, "seconds": round(seconds, 2)},
    )


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
# how libraries that write files in native code (safetensors, SQLite under Qdrant) report a full disk
_DISK_FULL_TEXTS = (*(os.strerror(code) for code in _DISK_FULL), "database or disk is full")
_FREE_SPACE = (
    "Free disk space (or pass a --run-dir on a larger disk), then run the same command again: finished stages are kept."
)


@contextmanager
def writes_into(run_dir: Path) -> Iterator[None]:
    """Turn a write the disk refused into an error that says what to do; finished stages are kept as they are."""
    try:
        yield
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else None
        if exc.errno in _DISK_FULL:
            raise StageError(
                f"Could not write {where or 'into ' + str(run_dir)}: {exc.strerror}. {_FREE_SPACE}"
            ) from exc
        if exc.errno in _NOT_WRITABLE and where is not None and where.resolve().is_relative_to(run_dir.resolve()):
            raise StageError(
                f"The run folder {run_dir} is not writable ({exc.strerror}: {where}). Make it writable, or pass "
                "another --run-dir."
            ) from exc
        raise
    except RerankforgeError:
        raise
    except Exception as exc:
        if any(text in str(exc) for text in _DISK_FULL_TEXTS):
            raise StageError(f"Could not write into {run_dir}: {exc}. {_FREE_SPACE}") from exc
        raise


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Refuse a second build into the same run folder instead of interleaving two."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = (run_dir / ".lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise RerankforgeError(
            f"Another build is running in {run_dir}. Wait for it, or pass a different --run-dir."
        ) from exc
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def build(
    config: BuildConfig,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    until: str | None = None,
    llm: Any = None,
) -> BuildResult:
    """Run every stage whose inputs changed; skip the rest.

    Args:
        config: the build configuration.
        force: redo every stage even when its key matches.
        progress: callback ``(stage, done, total, note)`` for progress bars.
        until: stop after this stage (e.g. ``"grade"`` to only make training data).
        llm: an :class:`~rerankforge.llm.base.LLMProvider` to use instead of the one ``config.llm`` names.
    """
    docs = Path(config.docs)
    if not docs.exists():
        raise InputError(f"Documents folder {docs} does not exist. Pass the folder that holds your files.")
    if not docs.is_dir():
        raise InputError(f"{docs} is a file, not a folder. Pass the folder that holds your documents.")
    eval_data = config.evaluate.eval_data
    if eval_data is not None and not Path(eval_data).exists():
        raise InputError(
            f"evaluate.eval_data {eval_data} does not exist. Pass a BEIR folder or a CSV/JSONL label file."
        )
    if until is not None and until not in STAGE_NAMES:
        raise InputError(f"Unknown stage '{until}'. Choose one of: {', '.join(STAGE_NAMES)}.")
    run_dir = config.resolved_run_dir()
    progress = progress or no_progress
    launch = Launch.from_env()
    if launch.follower:
        return _follow(config, run_dir)
    outcomes: list[StageOutcome] = []
    keys: dict[str, str] = {}
    with writes_into(run_dir), run_lock(run_dir):
        (run_dir / SIGNAL).unlink(missing_ok=True)
        _remove_stale_temp_files(run_dir)
        write_json(run_dir / "config.json", config.model_dump(mode="json"))
        # Every key first: a bad template or examples file fails now, not after an hour of LLM calls.
        stages = _stages()
        for stage in stages:
            keys[stage.name] = stage_key(stage, config, keys)
        ctx = StageContext(config, run_dir, progress, llm)
        told = False
        try:
            for stage in stages:
                key = keys[stage.name]
                fresh = not force and is_fresh(run_dir, stage.name, key)
                if launch.distributed and stage.name == "train":
                    tell_followers(run_dir, "none" if fresh else "run", key)
                    told = True
                if fresh:
                    manifest = read_json(_manifest_path(run_dir, stage.name))
                    outcomes.append(StageOutcome(stage.name, "skipped", 0.0, manifest.get("summary", {})))
                    progress(stage.name, 1, 1, "up to date")
                else:
                    _manifest_path(run_dir, stage.name).unlink(missing_ok=True)
                    ctx.stage = stage.name
                    (run_dir / stage.name).mkdir(parents=True, exist_ok=True)
                    started = time.perf_counter()
                    result = stage.run(ctx)
                    seconds = time.perf_counter() - started
                    _write_manifest(run_dir, stage.name, key, result, seconds)
                    outcomes.append(StageOutcome(stage.name, "ran", seconds, result.summary))
                if stage.name == until:
                    break
        finally:
            ctx.close()
            if launch.distributed and not told:  # stopped before train (--until, or an error): release them
                tell_followers(run_dir, "none", None)
        result = BuildResult(run_dir=run_dir, stages=outcomes, llm_stats=ctx.llm_stats)
        _append_build_record(run_dir, result.record())
    return result


def _remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files (and staging folders) of writes a killed build never finished; under the run lock, no live
    build owns any."""
    for stale in sorted(run_dir.rglob(".*.tmp")):
        if stale.is_file():
            logger.info("Removing %s, left by an interrupted build", stale)
            stale.unlink()
        elif stale.is_dir():
            logger.info("Removing %s, left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _follow(config: BuildConfig, run_dir: Path) -> BuildResult:
    """A follower rank: wait for the leader's word; join the train stage when it runs; write nothing else."""
    from rerankforge.stages import train

    run_dir.mkdir(parents=True, exist_ok=True)
    word = wait_for_leader(run_dir)
    outcomes = []
    if word.get("train") == "run":
        ctx = StageContext(config, run_dir, no_progress)
        ctx.stage = "train"
        started = time.perf_counter()
        result = train.run(ctx)
        outcomes.append(StageOutcome("train", "ran", time.perf_counter() - started, result.summary))
    return BuildResult(run_dir=run_dir, stages=outcomes, llm_stats=None)


def _append_build_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Keep one record per build run (a resumed build's LLM calls are spread over several)."""
    path = run_dir / BUILD_RECORD
    try:
        runs = json.loads(path.read_text(encoding="utf-8")).get("runs", []) if path.is_file() else []
    except (json.JSONDecodeError, AttributeError):
        logger.warning("%s is damaged; starting a new build record", path)
        runs = []
    write_json(path, {"runs": [*runs, record]})
