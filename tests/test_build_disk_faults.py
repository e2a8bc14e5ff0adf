"""A disk that refuses writes and a run folder that was damaged: a clear error or a redo, never bad output.

The write faults are real, made by the kernel in a child process: a full disk (a small tmpfs, where the test
may mount one: as root), a file size limit (``RLIMIT_FSIZE``: a growing file's write fails part-way, as on a
full disk or quota) and a run folder without write permission (as root, the child drops the capabilities
that ignore file modes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerankforge import build
from rerankforge.artifacts import file_sha256
from tests.conftest import fake_build_config
from tests.fake_llm import FakeLLM

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "parse": {"workers": 1},
    "queries": {"max_queries": 6},
    "mine": {"top_k": 4},
    "train": {"epochs": 1, "max_length": 128, "batch_size": 4},
}

_BUILD_IN_CHILD = """
import json, resource, signal, sys
from pathlib import Path
from rerankforge import build
from rerankforge.errors import RerankforgeError
from tests.conftest import fake_build_config
from tests.fake_llm import FakeLLM
docs, run_dir, settings, limit = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
until = sys.argv[5]
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    build(fake_build_config(docs, run_dir, **settings), llm=FakeLLM(), until=until)
except RerankforgeError as exc:
    print(f"error: {exc}")
    sys.exit(1)
"""


def _build_in_child(
    docs: Path, run_dir: Path, *, size_limit: int = 0, without_root_powers: bool = False, until: str = "grade"
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", _BUILD_IN_CHILD, str(docs), str(run_dir), json.dumps(SETTINGS), str(size_limit)]
    command.append(until)
    if without_root_powers and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux): root writes into any folder")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    return subprocess.run(
        command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Documents and a run folder with parse, queries and mine done (grade is next: it writes as it goes)."""
    from tests.conftest import EXAMPLE_DOCS

    base = tmp_path_factory.mktemp("disk")
    docs = base / "docs"
    docs.mkdir()
    shutil.copy(EXAMPLE_DOCS / "charging-dock-installation.md", docs)
    shutil.copy(EXAMPLE_DOCS / "maintenance-schedule.html", docs)
    build(fake_build_config(docs, base / "run", **SETTINGS), llm=FakeLLM(), until="mine")
    return docs, base / "run"


@pytest.fixture
def run_dir(mined: tuple[Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(mined[1], copy)
    return copy


def _pad_cache(cache: Path, size: int) -> int:
    """Append valid answers under keys no prompt hashes to until ``cache`` holds ``size`` bytes; returns how many."""
    from rerankforge.llm.cache import entry_checksum

    added = 0
    while cache.stat().st_size < size:
        key, text = f"padding-{added}", "an answer to no prompt " * 8
        entry = {"key": key, "text": text, "ok": True, "sum": entry_checksum(key, text, True)}
        with cache.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        added += 1
    return added


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_mid_grade_is_a_clear_error_and_the_rerun_pays_for_nothing_twice(
    mined: tuple[Path, Path], run_dir: Path
) -> None:
    docs = mined[0]
    cache = run_dir / "llm_cache.jsonl"
    # The file-size limit holds for every file the build writes: first make the cache the largest of them (its
    # config.json, build.json), with answers to prompts no build asks, so the limit falls on the cache.
    padded = _pad_cache(cache, 8192)
    room = 1500  # room for about ten more answers
    failed = _build_in_child(docs, run_dir, size_limit=cache.stat().st_size + room)

    assert failed.returncode == 1, failed.stderr[-2000:]
    assert f"error: Could not write into {run_dir}: File too large. Free disk space" in failed.stdout
    assert "finished stages are kept" in failed.stdout and "Traceback" not in failed.stderr
    assert not (run_dir / "grade" / "manifest.json").exists()
    assert [s for s in ("parse", "queries", "mine") if (run_dir / s / "manifest.json").is_file()] == [
        "parse", "queries", "mine"
    ]  # fmt: skip
    whole = [line for line in cache.read_text().splitlines() if line.endswith("}")]
    grades_kept = len(whole) - 6 - padded  # six query answers and the padding came before
    assert 0 < grades_kept and not cache.read_text().endswith("\n")  # the failed write left a torn line

    llm = FakeLLM()
    result = build(fake_build_config(docs, run_dir, **SETTINGS), llm=llm, until="grade")

    grade = result.summary("grade")
    assert [s.status for s in result.stages] == ["skipped", "skipped", "skipped", "ran"]
    assert grade["graded"] == grade["pairs"] and grade["failed"] == 0
    assert llm.calls == grade["pairs"] - grades_kept  # the grades written before the disk filled are reused


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs: far too small for the model's weights."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root; the size-limit test covers a full disk without it")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_in_training_is_a_clear_error_and_the_rerun_elsewhere_pays_for_no_llm_call(
    mined: tuple[Path, Path], small_disk: Path, tmp_path: Path
) -> None:
    run_dir = small_disk / "run"
    shutil.copytree(mined[1], run_dir)

    failed = _build_in_child(mined[0], run_dir, until="train")

    assert failed.returncode == 1, failed.stderr[-2000:]
    assert f"error: Could not write into {run_dir}:" in failed.stdout
    assert "No space left on device" in failed.stdout and "Free disk space" in failed.stdout
    assert "Traceback" not in failed.stderr
    done = [s for s in ("parse", "queries", "mine", "grade", "train") if (run_dir / s / "manifest.json").is_file()]
    assert done == ["parse", "queries", "mine", "grade"]
    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved)  # the user moves the run folder to a larger disk
    llm = FakeLLM()
    result = build(fake_build_config(mined[0], moved, **SETTINGS), llm=llm, until="train")
    assert [s.status for s in result.stages] == ["skipped"] * 4 + ["ran"]
    assert llm.calls == 0 and (moved / "train" / "first_stage" / "model.safetensors").is_file()


def test_a_read_only_run_folder_is_refused_and_left_as_it_was(mined: tuple[Path, Path], run_dir: Path) -> None:
    before = _hashes(run_dir)
    folders = [run_dir, *(p for p in run_dir.rglob("*") if p.is_dir())]
    for path in [*folders, *(p for p in run_dir.rglob("*") if p.is_file())]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        refused = _build_in_child(mined[0], run_dir, without_root_powers=True)
    finally:
        for path in folders:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)

    assert refused.returncode == 1, refused.stderr[-2000:]
    assert f"error: The run folder {run_dir} is not writable (Permission denied: {run_dir}/.lock)" in refused.stdout
    assert "Make it writable, or pass another --run-dir." in refused.stdout
    assert _hashes(run_dir) == before


@pytest.mark.parametrize(
    "damage",
    ['{"stage": "parse", "key": "', "[1, 2, 3]", '{"key": "%s", "files": "chunks.jsonl"}', "\udcff"],
    ids=["cut short", "not an object", "files not a mapping", "not utf-8"],
)
def test_a_damaged_manifest_is_not_trusted_the_stage_runs_again(
    mined: tuple[Path, Path], run_dir: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = run_dir / "parse" / "manifest.json"
    key = json.loads(manifest.read_text())["key"]
    manifest.write_bytes(damage.replace("%s", key).encode("utf-8", "surrogateescape"))
    llm = FakeLLM()

    with caplog.at_level(logging.WARNING, logger="rerankforge.pipeline"):
        result = build(fake_build_config(mined[0], run_dir, **SETTINGS), llm=llm, until="mine")

    assert [s.status for s in result.stages] == ["ran", "skipped", "skipped"]  # same chunks: queries still fresh
    assert f"Manifest {manifest} is damaged; the stage will run again" in caplog.text
    assert json.loads(manifest.read_text())["key"] == key
    assert llm.calls == 0
