"""What can be checked of the Docker images without a Docker engine: no masked failures in RUN lines, and the
serving image's install line in a fresh venv, torch-free, serving a build's scorer."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_lines(dockerfile: Path) -> dict[str, list[str]]:
    """RUN commands per build stage, continuation lines joined."""
    stages: dict[str, list[str]] = {}
    stage, current = "", ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += " " + line.rstrip("\\").strip() if current else line.rstrip("\\").strip()
        if line.endswith("\\"):
            continue
        words = current.split()
        if words[0].upper() == "FROM":
            stage = words[-1] if "AS" in (w.upper() for w in words) else words[1]
        elif words[0].upper() == "RUN":
            stages.setdefault(stage, []).append(current[3:].strip())
        current = ""
    return stages


def test_no_run_line_hides_a_failure() -> None:
    stages = run_lines(ROOT / "Dockerfile")
    assert {"serve"} <= set(stages) and sum(map(len, stages.values())) >= 3
    mask = re.compile(r"\|\|\s*(true|:)\b|;\s*true\b|set \+e")
    masked = [line for lines in stages.values() for line in lines if mask.search(line)]
    assert not masked, f"RUN lines whose failure is hidden: {masked}"


@pytest.mark.slow  # a fresh venv and pip install of the [serve] extra (from the package index or its cache)
def test_the_serve_images_install_line_serves_a_builds_scorer_without_torch(tmp_path: Path, fake_build) -> None:
    _, _, run_dir = fake_build
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    (line,) = [entry for entry in run_lines(ROOT / "Dockerfile")["serve"] if "pip install" in entry]
    command = line.replace("pip install", f"{python} -m pip install --quiet", 1).replace("python -c", f"{python} -c")
    done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    check = textwrap.dedent(
        f"""
        import sys
        from rerankforge import Reranker
        reranker = Reranker({str(run_dir / "model")!r})
        assert reranker.first_stage is not None
        ranked = reranker.rerank("charging dock breaker", ["a 32 A type C breaker for the dock", "parental leave"])
        assert ranked[0][0] == 0, ranked
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run([str(python), "-c", check], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.slow  # a fresh venv and pip install of the base package (from the package index or its cache)
def test_every_command_of_a_base_only_install_names_the_extra_it_needs(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, cli = venv / "bin" / "python", venv / "bin" / "rerankforge"
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", str(ROOT)], capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    labels = ROOT / "examples" / "eval-labels.csv"
    from rerankforge.models import resolve_model

    model = resolve_model("all-MiniLM-L6-v2")  # a real model folder: the command gets as far as its imports
    commands = {
        "build": [str(ROOT / "examples" / "docs"), "--run-dir", str(tmp_path / "run"), "--yes"],
        "serve": [model, "--port", "8799"],
        "eval": [str(tmp_path / "run"), "--data", str(labels)],
        "export": [model],
        "report": [str(tmp_path / "run")],
    }
    for command, args in commands.items():
        out = subprocess.run([cli, command, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        said = out.stdout + out.stderr
        assert "Traceback" not in said, f"{command} crashed in a base-only install:\n{said[-3000:]}"
        if command == "report" and out.returncode == 0:  # it works without extras (no plots)
            assert (tmp_path / "run" / "report.html").is_file()
            continue
        assert out.returncode != 0 and "pip install 'rerankforge[" in said, f"{command} said:\n{said[-2000:]}"
    assert subprocess.run([cli, "--help"], capture_output=True, timeout=120).returncode == 0
