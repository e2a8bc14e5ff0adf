"""Session-scoped real tiny parts: the packaged MiniLM, the packaged GGUFs, and a loopback-only socket guard."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# rich freezes a console's width at creation when COLUMNS is set (pytest-xdist's workers export COLUMNS=80):
# the CLI tests set COLUMNS for each invocation, so the CLI's consoles must be made without it
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DOCS = ROOT / "examples" / "docs"


@pytest.fixture(scope="session")
def example_docs() -> Path:
    return EXAMPLE_DOCS


@pytest.fixture
def small_docs(tmp_path: Path) -> Path:
    """Three of the example documents in three formats (md, html, docx), copied to a temp folder."""
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLE_DOCS / "charging-dock-installation.md", docs)
    shutil.copy(EXAMPLE_DOCS / "maintenance-schedule.html", docs / "sub")
    shutil.copy(EXAMPLE_DOCS / "policies" / "travel-and-expense-policy.docx", docs)
    return docs


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from rerankforge.models import resolve_model

    return resolve_model("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def gemma_provider() -> Iterator[object]:
    """The tiny packaged Gemma 3 270M in llama.cpp: real runtime, for plumbing (it cannot grade)."""
    from rerankforge.llm.embedded import EmbeddedProvider

    provider = EmbeddedProvider("gemma-3-270m-q4_k_m", num_ctx=2048)
    yield provider
    provider.close()


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Block every socket connection that is not to 127.0.0.1 / ::1; returns the refused addresses."""
    refused: list[object] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def allowed(address: object) -> bool:
        if isinstance(address, tuple):
            return str(address[0]) in {"127.0.0.1", "::1", "localhost"}
        return True  # unix sockets stay on this machine

    def guarded_connect(self: socket.socket, address: object) -> None:
        if not allowed(address):
            refused.append(address)
            raise ConnectionRefusedError(f"network blocked by test: {address}")
        return real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: object) -> int:
        if not allowed(address):
            refused.append(address)
            return 111
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    return refused


_RECORDERS: list[list[tuple[str, object]]] = []  # one list per test now recording (see `connections`)


def _record_sockets(event: str, args: tuple[object, ...]) -> None:
    if not _RECORDERS:
        return
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple):  # an internet address; unix sockets stay on this machine
            _RECORDERS[-1].append(("connect", (str(address[0]), int(address[1]))))
    elif event == "socket.getaddrinfo":
        _RECORDERS[-1].append(("lookup", (str(args[0]), args[1])))


@pytest.fixture
def connections() -> Iterator[list[tuple[str, object]]]:
    """Every internet connection and name lookup this process starts during the test, loopback included.

    A ``sys.addaudithook`` hook sees each ``socket.connect`` / ``getaddrinfo`` made from Python (httpx, the
    ollama client, huggingface_hub ...), however the socket was made. Audit hooks cannot be removed, so the
    hook is added once and records only while a test holds this fixture.
    """
    if not getattr(sys, "_rerankforge_socket_audit", False):
        sys.addaudithook(_record_sockets)
        sys._rerankforge_socket_audit = True  # type: ignore[attr-defined]
    seen: list[tuple[str, object]] = []
    _RECORDERS.append(seen)
    yield seen
    _RECORDERS.remove(seen)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the retry waits of LLMProvider.chat_json instead of sleeping them (the sleep is not under test)."""
    import rerankforge.llm.base as llm_base

    waits: list[float] = []
    fake_time = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if not n.startswith("_")})
    fake_time.sleep = waits.append
    monkeypatch.setattr(llm_base, "time", fake_time)
    return waits


@pytest.fixture(scope="session")
def onnx_model_dir(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CrossEncoder on the MiniLM backbone (random, seeded head), saved and exported once: fp32, dynamic int8
    and static int8 (calibrated on a few pairs)."""
    import torch
    from sentence_transformers import CrossEncoder

    from rerankforge.stages.export import export_model

    torch.manual_seed(0)
    model = CrossEncoder(minilm_path, num_labels=1, max_length=128, device="cpu")
    path = tmp_path_factory.mktemp("onnx-model") / "model"
    model.save_pretrained(str(path))
    calibration = [
        ("how long does the battery last", "A full charge lasts about nine hours of normal operation."),
        ("expense deadline", "Expense reports are due within thirty days of travel."),
        ("cafeteria", "The cafeteria opens at 8 am on weekdays."),
        ("dock", "Dock the unit and wait for the green LED before undocking. " * 10),
    ]
    export_model(path, max_length=128, calibration_pairs=calibration)
    return path


FAKE_BUILD = {
    "queries": {"max_queries": 12},
    "mine": {"top_k": 4},
    "grade": {"top_k": "all", "source": True},  # every candidate graded: the grading and its rules stay tested
    # the first stage tuned once, as before its folds (test_scorer.py's floor tests tune and judge them)
    "train": {"epochs": 2, "max_length": 128, "batch_size": 4, "cross_encoder": True, "first_stage_folds": 1},
    "export": {"first_stage_variants": []},  # one test measures them (test_vector_memo.py): 30 s a build
}


def fake_build_config(docs: Path, run_dir: Path, **overrides: object):
    """A small, quick build config for pipeline tests with the FakeLLM; it trains the cross-encoder too (the
    default skips it on a plain encoder backbone), so the tests cover every part of the scorer. An override
    replaces its whole section."""
    from rerankforge import load_config

    return load_config(None, docs=str(docs), run_dir=str(run_dir), **{**FAKE_BUILD, **overrides})


def fake_build_toml(path: Path, **more: dict[str, object]) -> Path:
    """``fake_build_config``'s settings as a TOML file, as a user would pass them with --config, with ``more``
    keys added to (or changed in) their sections."""
    sections = {name: {**FAKE_BUILD.get(name, {}), **more.get(name, {})} for name in {**FAKE_BUILD, **more}}
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]  # JSON scalars are TOML's
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def fake_build(tmp_path_factory: pytest.TempPathFactory, example_docs: Path):
    """One whole build of the example documents with the FakeLLM (real parsing, Qdrant, training, ONNX)."""
    from rerankforge import build
    from tests.fake_llm import FakeLLM

    run_dir = tmp_path_factory.mktemp("run")
    llm = FakeLLM()
    result = build(fake_build_config(example_docs, run_dir), llm=llm)
    return result, llm, run_dir


@pytest.fixture(scope="session")
def default_build(fake_build, tmp_path_factory: pytest.TempPathFactory, example_docs: Path):
    """The example build with the default scorer settings: a copy of ``fake_build`` graded and trained again with
    ``train.cross_encoder = auto``, which trains no cross-encoder on the plain MiniLM backbone, and the default
    grading, which then grades nothing."""
    from rerankforge import build
    from tests.fake_llm import FakeLLM

    _, _, source = fake_build
    run_dir = tmp_path_factory.mktemp("default-run") / "run"
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns(".lock"))
    llm = FakeLLM()
    config = fake_build_config(  # the default grading too: nothing graded when no cross-encoder is trained
        example_docs, run_dir, train={"epochs": 2, "max_length": 128, "batch_size": 4}, grade={}
    )
    result = build(config, llm=llm)
    return result, llm, run_dir
