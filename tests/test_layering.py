"""The package's floors: the stage contract below the stages, the stages below the pipeline, shared helpers
in ``index/``, ``training/`` and ``evaluation/`` (never in a stage), so no import runs in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rerankforge"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_a_stage_imports_neither_another_stage_nor_the_pipeline() -> None:
    stages = sorted(p for p in (PACKAGE / "stages").glob("*.py") if p.name != "__init__.py")
    assert len(stages) == 7
    for path in stages:
        own = f"rerankforge.stages.{path.stem}"
        wrong = {m for m in _imports(path) if m.startswith("rerankforge.stages.") and m != own}
        wrong |= {m for m in _imports(path) if m == "rerankforge.pipeline"}
        assert not wrong, f"{path.name} imports {sorted(wrong)}: move the shared part below the stages"


def test_the_floors_below_the_stages_import_no_stage() -> None:
    below = [PACKAGE / "stage.py", *(PACKAGE / d for d in ("index", "training", "evaluation", "llm", "serve"))]
    files = [p for entry in below for p in ([entry] if entry.is_file() else sorted(entry.rglob("*.py")))]
    assert len(files) > 20
    for path in files:
        wrong = {m for m in _imports(path) if m.startswith("rerankforge.stages") or m == "rerankforge.pipeline"}
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"
