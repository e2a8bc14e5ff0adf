"""``kill -9`` of real build processes at points in every stage: the rerun finishes with the artifacts of an
uninterrupted build, no artifact is ever half-written, and no answered LLM call is paid for twice.

The builds run as child processes with the FakeLLM (the test is about the pipeline, not the model), which
logs each prompt it is asked and takes 50 ms to answer, as a small real LLM would. The test watches the run
folder from outside and sends SIGKILL to the build's process group when a kill point is reached; the next
build resumes where the killed one stopped, and is killed at the next point, until one runs to the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rerankforge.artifacts import file_sha256
from rerankforge.pipeline import STAGE_NAMES
from tests.netguard import guarded_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# one LLM call at a time: the bound below (a kill repeats at most the one call in flight) assumes it; calls
# in flight under concurrency are covered by tests/test_llm_concurrency.py and tests/test_llm_data.py
SETTINGS = {
    "parse": {"workers": 1},
    "queries": {"max_queries": 8},
    "llm": {"concurrency": 1},
    # the export's kill points need fp32 and dynamic int8 only; the calibrated variants' resume is the same code
    "export": {"openvino": False, "static_int8": False, "first_stage_variants": []},
}
CHILD_DEADLINE_S = 600

_BUILD_IN_CHILD = """
import json, sys
from pathlib import Path
from rerankforge import build
from tests.conftest import fake_build_config
from tests.fake_llm import LoggedFakeLLM
if __name__ == "__main__":
    docs, run_dir, log = map(Path, sys.argv[1:4])
    build(fake_build_config(docs, run_dir, **json.loads(sys.argv[4])), llm=LoggedFakeLLM(log, delay_s=0.05))
"""


def _start_build(docs: Path, run_dir: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _BUILD_IN_CHILD, str(docs), str(run_dir), str(log), json.dumps(SETTINGS)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@dataclass(frozen=True)
class KillPoint:
    stage: str
    what: str
    reached: Callable[[Path], bool]


def _kill_points(queries_calls: int) -> list[KillPoint]:
    """Where to kill, in build order; the LLM points count answers in the run folder's LLM cache."""
    cache = "llm_cache.jsonl"
    return [
        KillPoint("parse", "as the stage starts", lambda run: (run / "parse").is_dir()),
        KillPoint("parse", "after the first parsed file", lambda run: _lines(run / "parse" / "files.jsonl") >= 1),
        KillPoint("queries", "after 3 answers", lambda run: _lines(run / cache) >= 3),
        KillPoint("mine", "while Qdrant indexes", lambda run: (run / "mine" / "qdrant").is_dir()),
        KillPoint("grade", "after 5 grades", lambda run: _lines(run / cache) >= queries_calls + 5),
        KillPoint("grade", "after 20 grades", lambda run: _lines(run / cache) >= queries_calls + 20),
        KillPoint("train", "before any checkpoint", lambda run: (run / "train" / "split.json").is_file()),
        KillPoint(
            "train",
            "after the first checkpoint",
            lambda run: any((run / "train" / "checkpoints").glob("checkpoint-*/trainer_state.json")),
        ),
        KillPoint("evaluate", "as the stage starts", lambda run: (run / "evaluate").is_dir()),
        KillPoint("export", "after the fp32 ONNX file", lambda run: (run / "model" / "onnx" / "model.onnx").is_file()),
        KillPoint(
            "export", "after the int8 ONNX file", lambda run: (run / "model" / "onnx" / "model_qint8.onnx").is_file()
        ),
    ]


def _kill_at(child: subprocess.Popen[bytes], run_dir: Path, point: KillPoint) -> str:
    """SIGKILL the build's process group when ``point`` is reached; returns the stage it died in."""
    deadline = time.monotonic() + CHILD_DEADLINE_S
    try:
        while not point.reached(run_dir):
            assert child.poll() is None, f"the build ended before {point}: {child.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, f"{point} not reached in {CHILD_DEADLINE_S} s"
            time.sleep(0.01)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    return next(s for s in STAGE_NAMES if not (run_dir / s / "manifest.json").is_file())


def _assert_nothing_half_written(run_dir: Path) -> None:
    """Every finished stage's files match its manifest, and every JSONL artifact is whole.

    The two append-only logs (the LLM cache and the parser's per-file record) may end in a torn line by
    design: their readers skip it.
    """
    for stage in STAGE_NAMES:
        manifest_path = run_dir / stage / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            for relative, digest in manifest["files"].items():
                assert file_sha256(run_dir / relative) == digest, f"{relative} changed after its manifest"
    appended = {run_dir / "llm_cache.jsonl", run_dir / "parse" / "files.jsonl"}
    for path in run_dir.rglob("*.jsonl"):
        if path not in appended and not path.name.startswith("."):
            for line in path.read_text(encoding="utf-8").splitlines():
                json.loads(line)


def _artifacts(run_dir: Path) -> dict[str, str]:
    """Every file the stages' manifests list, with its sha256, but for three files that also record how the
    build went rather than what it made: the parse report counts files reused from a killed run; the model
    card has the training time and the training log that sentence-transformers keeps in memory (a resumed
    training logs only from its checkpoint on); the export metadata has measured throughputs and the fastest
    variant they point to."""
    files: dict[str, str] = {}
    for stage in STAGE_NAMES:
        files.update(json.loads((run_dir / stage / "manifest.json").read_text())["files"])
    report = json.loads((run_dir / "parse" / "report.json").read_text())
    report.pop("files_reused")
    files["parse/report.json"] = json.dumps(report, sort_keys=True)
    files["model/README.md"] = "\n".join(_card_without_log(run_dir))
    meta = json.loads((run_dir / "model" / "rerankforge.json").read_text())
    for variant in meta["variants"].values():
        variant.pop("pairs_per_s")
    # which variant is fastest is a measurement too (OpenVINO's two are close on some CPUs)
    meta.pop("recommended_variant"), meta.pop("int8_recommended")
    files["model/rerankforge.json"] = json.dumps(meta, sort_keys=True)
    return files


_TIME_OR_LOG_ROW = re.compile(r"- \*\*\w+\*\*: [\d.]+ (seconds|minutes|hours)|\| (\*\*)?[\d.]+(\*\*)? +\|")


def _card_without_log(run_dir: Path) -> list[str]:
    """The model card without its time lines and its "Training Logs" section (the table's column widths and
    the bold best row depend on which rows a resumed training still had in memory)."""
    card = (run_dir / "model" / "README.md").read_text(encoding="utf-8").splitlines()
    start = card.index("### Training Logs")
    end = next(i for i in range(start + 1, len(card)) if card[i].startswith("#"))
    return [line for line in card[:start] + card[end:] if not _TIME_OR_LOG_ROW.match(line)]


def _log_rows(run_dir: Path) -> list[tuple[str, ...]]:
    """The training log's rows as cell values (no padding, no bold)."""
    card = (run_dir / "model" / "README.md").read_text(encoding="utf-8").splitlines()
    rows = [line for line in card if line.startswith("|") and _TIME_OR_LOG_ROW.match(line)]
    return [tuple(cell.strip().strip("*") for cell in row.strip("|").split("|")) for row in rows]


def _cache(run_dir: Path) -> dict[str, str]:
    lines = (run_dir / "llm_cache.jsonl").read_text(encoding="utf-8").splitlines()
    return {entry["key"]: entry["text"] for entry in map(json.loads, lines)}


def test_builds_killed_in_every_stage_resume_to_the_same_artifacts(small_docs: Path, tmp_path: Path) -> None:
    reference, reference_log = tmp_path / "reference", tmp_path / "reference-calls.log"
    guard_env, netlog = guarded_env(tmp_path, ROOT)
    child = _start_build(small_docs, reference, reference_log, guard_env)
    assert child.wait(timeout=CHILD_DEADLINE_S) == 0, child.stderr.read().decode()[-3000:]
    assert netlog.read_text() == ""  # parsing, Qdrant, training and export opened no internet socket
    reference_calls = reference_log.read_text().splitlines()
    queries_calls = json.loads((reference / "build.json").read_text())["runs"][0]["llm_stats"]["by_stage"]["queries"]

    run_dir, log = tmp_path / "run", tmp_path / "calls.log"
    killed_in: list[str] = []
    last_call_of_killed: list[str] = []
    for point in _kill_points(queries_calls):
        child = _start_build(small_docs, run_dir, log)
        killed_in.append(_kill_at(child, run_dir, point))
        _assert_nothing_half_written(run_dir)
        last_call_of_killed.append(log.read_text().splitlines()[-1] if log.is_file() else "")
    child = _start_build(small_docs, run_dir, log)
    assert child.wait(timeout=CHILD_DEADLINE_S) == 0, child.stderr.read().decode()[-3000:]

    # each kill landed in the stage it aimed at, so every stage was killed at least once
    assert killed_in == [p.stage for p in _kill_points(queries_calls)]
    assert _artifacts(run_dir) == _artifacts(reference)
    log_rows = [_log_rows(folder) for folder in (run_dir, reference)]
    assert log_rows[0] and set(log_rows[0]) <= set(log_rows[1])  # the resumed card: the rows after the checkpoint
    assert _cache(run_dir) == _cache(reference)
    # the same prompts were asked; only a call in flight at a kill (unanswered) was asked again
    calls = log.read_text().splitlines()
    assert set(calls) == set(reference_calls) and len(set(calls)) == len(reference_calls)
    repeated = Counter(calls) - Counter(set(calls))
    assert set(repeated) <= set(last_call_of_killed), repeated
    assert sum(repeated.values()) <= killed_in.count("queries") + killed_in.count("grade")
    assert not list(run_dir.rglob(".*.tmp")), "a temp file of an interrupted write was left behind"
