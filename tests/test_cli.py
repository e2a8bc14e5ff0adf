"""The CLI through typer's CliRunner, and as real subprocesses (one of them a whole build on a real LLM)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankforge.cli.main import app
from tests.netguard import guarded_env

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", ["build", "eval", "report", "export", "serve"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rerankforge.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_missing_folder_prints_one_clean_line(tmp_path: Path) -> None:
    proc = _cli("build", str(tmp_path / "missing"), "--yes")
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_env_shows_the_traceback(tmp_path: Path) -> None:
    proc = _cli("build", str(tmp_path / "missing"), "--yes", env={"RERANKFORGE_DEBUG": "1"})
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr + proc.stdout


def test_bad_option_value_names_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\nSome text about alpha that is long enough to keep.\n")
    proc = _cli("build", str(tmp_path / "docs"), "--loss", "hinge", "--yes")
    assert proc.returncode == 1
    assert "train.loss" in proc.stderr


def test_eval_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code != 0
    assert "not the run folder of a finished build" in str(result.exception)


@pytest.mark.slow
def test_real_build_end_to_end_offline_then_a_rerun_that_does_nothing(tmp_path: Path, small_docs: Path) -> None:
    """The whole chain with the packaged Qwen2.5 1.5B in llama.cpp: it opens no internet socket at all (an audit
    hook logs every connection and name lookup made from Python, loopback included, and refuses any other)."""
    guard_env, netlog = guarded_env(tmp_path, ROOT)
    config = tmp_path / "build.toml"
    config.write_text(
        textwrap.dedent(
            """
            [llm]
            provider = "embedded"
            [parse]
            max_characters = 600
            new_after_n_characters = 400
            [queries]
            max_queries = 4
            [mine]
            top_k = 4
            [grade]
            # this test grades (a default build without a cross-encoder grades nothing): the source passage and
            # the best other candidate of each query, so both sides of the thresholds below occur
            source = true
            top_k = 1
            # the 1.5B grader is lenient (few grade 0s): exact answers against the rest gives both sides
            positive_min_grade = 3
            negative_max_grade = 2
            [train]
            epochs = 3
            max_length = 192
            dev_fraction = 0.3
            first_stage_folds = 1  # the folds are tested in test_scorer.py: here, three tunings less
            """
        )
    )
    run_dir = tmp_path / "run"
    env = {**guard_env, "COLUMNS": "200"}
    args = ("build", str(small_docs), "--config", str(config), "--run-dir", str(run_dir), "--yes")
    first = _cli(*args, env=env, timeout=1500)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "held-out synthetic queries" in first.stdout
    assert "The reranker is" in first.stdout
    assert netlog.read_text() == ""

    queries = [json.loads(x) for x in (run_dir / "queries" / "queries.jsonl").read_text().splitlines()]
    chunks = {
        c["id"]: c["text"] for c in map(json.loads, (run_dir / "parse" / "chunks.jsonl").read_text().splitlines())
    }
    assert queries
    assert all(q["text"].lower() not in chunks[q["chunk_id"]].lower() for q in queries)
    judgments = [json.loads(x) for x in (run_dir / "grade" / "judgments.jsonl").read_text().splitlines()]
    assert judgments and all(0 <= j["grade"] <= 3 for j in judgments)
    # the default backbone is a plain encoder: no cross-encoder is trained, the scorer is the first stage
    train = json.loads((run_dir / "train" / "manifest.json").read_text())["summary"]
    assert train["cross_encoder"].startswith("not trained")
    assert (run_dir / "model" / "first_stage" / "onnx" / "model.onnx").is_file()
    assert not (run_dir / "model" / "onnx").exists()
    export = json.loads((run_dir / "export" / "manifest.json").read_text())["summary"]
    assert export["first_stage"]["max_abs_diff"] < 1e-4
    assert f"ONNX in {run_dir / 'model' / 'first_stage' / 'onnx'}" in " ".join(first.stdout.split())
    cache_lines = (run_dir / "llm_cache.jsonl").read_text().count("\n")
    assert cache_lines >= len(queries)

    second = _cli(*args, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("skipped") >= 7
    assert "LLM:" not in second.stdout  # no provider was even started
    assert (run_dir / "llm_cache.jsonl").read_text().count("\n") == cache_lines
    assert netlog.read_text() == ""


def _run_in_terminal(args: list[str], answers: list[tuple[str, str]], env: dict[str, str]) -> str:
    """Run the CLI under a pseudo-terminal, answering each prompt (by a text it must show) in turn."""
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # child: become the CLI
        os.execvpe(sys.executable, [sys.executable, "-m", "rerankforge.cli.main", *args], {**os.environ, **env})
    output, deadline = "", time.monotonic() + 120
    pending = list(answers)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    break
                if not data:
                    break
                output += data.decode(errors="replace")
            if pending and pending[0][0] in output:
                os.write(fd, (pending.pop(0)[1] + "\r").encode())
        assert not pending, f"never asked: {pending}\n{output}"
    finally:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):  # still waiting at a prompt nobody answers: end it
            if pending or time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output)  # drop colours
    return re.sub(r"[\s│╭╮╰╯─]+", " ", plain)  # and panel borders and line breaks


def test_in_a_terminal_without_options_the_build_is_a_wizard(tmp_path: Path, small_docs: Path) -> None:
    screen = _run_in_terminal(
        ["build", str(small_docs), "--run-dir", str(tmp_path / "run")],
        answers=[("Time budget", "soon"), ("not a duration", "30m"), ("Loss", "wasserstein"), ("Run it?", "n")],
        env={"OLLAMA_HOST": "http://127.0.0.1:9", "COLUMNS": "200"},  # nothing listens there
    )
    assert "No Ollama server at http://127.0.0.1:9" in screen
    assert "'soon' is not a duration: write e.g. 2h" in screen  # asked again, not a traceback
    assert "time budget 30m" in screen and "wasserstein" in screen
    assert "0 grading calls per kept query" in screen  # the default: no cross-encoder, nothing to grade
    assert not (tmp_path / "run" / "parse").exists()  # declined: nothing ran


def test_the_wizard_lists_the_models_of_an_ollama_server(tmp_path: Path, small_docs: Path, gemma_provider) -> None:
    from tests.ollama_api_server import OllamaAPIServer

    models = ["nomic-embed-text:latest", "qwen2.5:7b-instruct", "llama3.2:3b"]
    with OllamaAPIServer(gemma_provider, models=models, max_lifetime_s=120) as server:
        screen = _run_in_terminal(
            ["build", str(small_docs), "--run-dir", str(tmp_path / "run")],
            answers=[("LLM", "2"), ("Time budget", "20m"), ("Loss", "lce"), ("Run it?", "n")],
            env={"OLLAMA_HOST": server.host, "COLUMNS": "200"},
        )
    assert "with 2 chat models" in screen  # the embedding model is not offered
    assert "1. qwen2.5:7b-instruct" in screen and "2. llama3.2:3b" in screen and "3. embedded llama.cpp" in screen
    assert "LLM: ollama llama3.2:3b" in screen
    assert not (tmp_path / "run" / "parse").exists()


def test_usage_errors_exit_2_through_main_with_click_blocked() -> None:
    """typer vendors click and no longer installs it: the entry point must not need ``import click``."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["click"] = None  # what Python does for a package that is not installed
        sys.argv = ["rerankforge", "nosuchcommand"]
        from rerankforge.cli.main import main
        main()
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "No such command" in done.stderr and "ModuleNotFoundError" not in done.stderr


def test_a_library_that_sets_its_logger_to_debug_prints_nothing_in_the_cli() -> None:
    code = textwrap.dedent(
        """
        import logging
        from rerankforge.cli.main import _quiet_libraries
        _quiet_libraries()
        import bm25s  # sets its own logger to DEBUG on import
        bm25s.BM25().index([[0, 1], [1, 2]])  # logs "Building index from IDs" at DEBUG
        logging.getLogger("bm25s").warning("a warning still shows")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "DEBUG" not in done.stderr and "a warning still shows" in done.stderr
