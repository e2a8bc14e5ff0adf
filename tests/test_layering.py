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


# Each part of the package and its floor: a part imports only from its own floor or below, and the parts'
# import graph has no cycle (same-floor imports included).
FLOORS = {
    0: {"errors", "config", "budget", "artifacts", "models", "ranking", "fusion", "onnx_trace", "templates",
        "distributed"},
    1: {"llm", "index", "parsing", "losses", "serve"},
    2: {"training", "evaluation"},
    3: {"stage"},
    4: {"stages"},
    5: {"pipeline"},
    6: {"planner", "cli", "report", "__init__", "__main__"},
}  # fmt: skip


def _part_graph() -> dict[str, dict[str, set[str]]]:
    """part -> imported part -> the files of ``part`` that import it (function-level imports included)."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        part = rel.parts[0].removesuffix(".py")
        for module in _imports(path):
            names = module.split(".")
            if names[0] == "rerankforge" and len(names) > 1 and names[1] != part:
                graph.setdefault(part, {}).setdefault(names[1], set()).add(str(rel))
    return graph


def test_every_part_of_the_package_has_a_floor_and_imports_nothing_above_it() -> None:
    floor_of = {part: floor for floor, parts in FLOORS.items() for part in parts}
    entries = [p for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()]
    parts = {p.name.removesuffix(".py") for p in entries}
    assert parts == set(floor_of), f"give each part a floor: {sorted(parts ^ set(floor_of))}"
    for part, imported in _part_graph().items():
        above = {other: files for other, files in imported.items() if floor_of[other] > floor_of[part]}
        assert not above, f"{part} (floor {floor_of[part]}) imports from above it: {above}"


def test_the_parts_import_graph_has_no_cycle() -> None:
    graph = {part: set(imported) for part, imported in _part_graph().items()}
    done: set[str] = set()

    def visit(part: str, path: list[str]) -> None:
        if part in path:
            cycle = path[path.index(part) :] + [part]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if part in done:
            return
        for other in sorted(graph.get(part, ())):
            visit(other, [*path, part])
        done.add(part)

    for part in sorted(graph):
        visit(part, [])
    assert {"training", "evaluation", "index"} <= set(graph)  # the graph is read, not empty
