"""The bad inputs of a real shared drive: each one is skipped or handled with its reason, and the run goes on.

Every test puts a good file beside the bad one and checks that the good one is still parsed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from rerankforge.errors import InputError
from tests.parse_helpers import reasons, run_parse

GOOD = "# Travel policy\n\nEmployees book economy class for flights under six hours and keep every receipt.\n"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.md").write_text(GOOD)
    return folder


def _good_kept(chunks: list) -> bool:
    return any("economy class" in c.text and c.source == "good.md" for c in chunks)


def _pdf(path: Path, text: str) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    pdf.multi_cell(0, 6, text)
    pdf.output(str(path))


def test_corrupted_pdf(docs: Path, tmp_path: Path) -> None:
    _pdf(tmp_path / "whole.pdf", "Quarterly figures for the northern region were above plan. " * 20)
    (docs / "truncated.pdf").write_bytes((tmp_path / "whole.pdf").read_bytes()[:400])
    chunks, report = run_parse(docs, tmp_path / "run")
    kind, reason = reasons(report)["truncated.pdf"]
    assert kind == "corrupted" and reason.startswith("damaged PDF")
    assert _good_kept(chunks)


def test_encrypted_pdf(docs: Path, tmp_path: Path) -> None:
    import pikepdf

    _pdf(tmp_path / "plain.pdf", "Salary bands for 2025 are confidential and listed per grade. " * 5)
    with pikepdf.open(tmp_path / "plain.pdf") as pdf:
        pdf.save(docs / "salaries.pdf", encryption=pikepdf.Encryption(user="s3cret", owner="owner"))
    chunks, report = run_parse(docs, tmp_path / "run")
    assert reasons(report)["salaries.pdf"] == (
        "encrypted",
        "encrypted PDF (password-protected): save an unprotected copy",
    )
    assert _good_kept(chunks)


def test_zero_byte_file(docs: Path, tmp_path: Path) -> None:
    (docs / "empty.docx").write_bytes(b"")
    chunks, report = run_parse(docs, tmp_path / "run")
    assert reasons(report)["empty.docx"] == ("empty", "empty file")
    assert _good_kept(chunks)


def test_binary_garbage_named_txt(docs: Path, tmp_path: Path) -> None:
    (docs / "notes.txt").write_bytes(os.urandom(20_000))
    (docs / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(5000))
    chunks, report = run_parse(docs, tmp_path / "run")
    why = reasons(report)
    assert why["notes.txt"][0] == why["image.txt"][0] == "binary"
    assert "binary content in a '.txt' file" in why["notes.txt"][1]
    assert {c.source for c in chunks} == {"good.md"}


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "cp1252"])
def test_non_utf8_text_is_decoded(docs: Path, tmp_path: Path, encoding: str) -> None:
    text = "Politique de congés\n\nLes employés reçoivent vingt-cinq jours de congé payé par année civile, à prendre."
    (docs / "conges.txt").write_bytes(text.encode(encoding))
    chunks, report = run_parse(docs, tmp_path / "run")
    assert report["skipped"] == []
    parsed = " ".join(c.text for c in chunks if c.source == "conges.txt")
    assert "Les employés reçoivent vingt-cinq jours de congé payé" in parsed


def test_a_200_mb_file_is_skipped_by_size_without_reading_it(docs: Path, tmp_path: Path) -> None:
    with (docs / "dump.txt").open("wb") as handle:  # sparse: 200 MB on paper, nothing written
        handle.truncate(200 * 2**20)
    chunks, report = run_parse(docs, tmp_path / "run")
    kind, reason = reasons(report)["dump.txt"]
    assert kind == "too_large"
    assert reason == "200.0 MB is over parse.max_file_mb (100 MB); raise it to read the file"
    assert _good_kept(chunks)


def test_a_200_mb_file_over_a_raised_limit_is_checked_in_bounded_memory(docs: Path, tmp_path: Path) -> None:
    with (docs / "dump.txt").open("wb") as handle:
        handle.truncate(200 * 2**20)
    tracemalloc.start()
    try:
        chunks, report = run_parse(docs, tmp_path / "run", max_file_mb=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reasons(report)["dump.txt"][0] == "binary"  # all NUL bytes: seen in the first 64 KB
    assert peak < 50 * 2**20  # the file was hashed in 1 MB blocks and sniffed, never loaded whole
    assert _good_kept(chunks)


UNREADABLE_SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.parse_helpers import run_parse
chunks, report = run_parse(Path(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({"sources": sorted({c.source for c in chunks}), "skipped": report["skipped"]}))
"""


@pytest.mark.slow  # a fresh interpreter that imports the parsers: 10-20 s
def test_a_file_unreadable_by_permissions(docs: Path, tmp_path: Path) -> None:
    """Root reads any file: as root the parse runs in a child without the capabilities that bypass permissions."""
    import json

    (docs / "locked.md").write_text("# Locked\n\nNobody but the owner may read this file's content at all.")
    (docs / "locked.md").chmod(0o000)
    command = [sys.executable, "-c", UNREADABLE_SCRIPT, str(docs), str(tmp_path / "run"), str(ROOT)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE: root reads any file")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["sources"] == ["good.md"]
    assert [(s["path"], s["kind"]) for s in result["skipped"]] == [("locked.md", "unreadable")]
    assert result["skipped"][0]["reason"] == "no permission to read it (Permission denied)"


def test_symlink_loops_are_reported_not_followed_forever(docs: Path, tmp_path: Path) -> None:
    (docs / "team").mkdir()
    (docs / "team" / "handbook.md").write_text("# Handbook\n\nThe team meets every Tuesday to plan the sprint work.")
    (docs / "team" / "back-to-top").symlink_to(docs, target_is_directory=True)
    (docs / "team" / "self.md").symlink_to(docs / "team" / "self.md")
    (docs / "alias.md").symlink_to(docs / "good.md")
    chunks, report = run_parse(docs, tmp_path / "run")
    why = reasons(report)
    assert why["team/back-to-top"][0] == "symlink_loop"
    assert why["team/self.md"][0] == "symlink_loop"
    assert why["good.md"] == ("duplicate_file", "same file as alias.md (reached through a symlink)")
    assert {c.source for c in chunks} == {"alias.md", "team/handbook.md"}


def test_symlinks_can_be_left_alone(docs: Path, tmp_path: Path) -> None:
    (docs / "alias.md").symlink_to(docs / "good.md")
    (docs / "loop").symlink_to(docs, target_is_directory=True)
    chunks, report = run_parse(docs, tmp_path / "run", follow_symlinks=False)
    assert report["skipped"] == [] and report["ignored"] == {"symlink": 2}
    assert {c.source for c in chunks} == {"good.md"}


def test_unicode_and_spaces_in_paths(docs: Path, tmp_path: Path) -> None:
    folder = docs / "Équipe RH – 2024"
    folder.mkdir()
    (folder / "Congés payés (version finale).md").write_text("# Congés\n\nChaque salarié a droit à 25 jours ouvrés.")
    japanese = "出張の前に上長の承認を得てください。経費の領収書は必ず保管し、帰社後一週間以内に経理部へ提出すること。"
    (folder / "日本語 メモ.txt").write_text(japanese)
    chunks, report = run_parse(docs, tmp_path / "run")
    assert report["skipped"] == []
    sources = {c.source for c in chunks}
    assert {"Équipe RH – 2024/Congés payés (version finale).md", "Équipe RH – 2024/日本語 メモ.txt"} <= sources
    assert any(c.id == "Équipe RH – 2024/Congés payés (version finale).md#0" for c in chunks)


def test_a_zip_bomb_like_docx_is_refused_before_inflating(docs: Path, tmp_path: Path) -> None:
    from docx import Document

    small = tmp_path / "small.docx"
    document = Document()
    document.add_paragraph("Harmless looking memo.")
    document.save(small)
    with zipfile.ZipFile(small) as source, zipfile.ZipFile(docs / "memo.docx", "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in source.infolist():
            if item.filename != "word/document.xml":
                bomb.writestr(item, source.read(item))
                continue
            head, tail = source.read(item).split(b"<w:body>")
            with bomb.open(item.filename, "w", force_zip64=True) as member:  # 600 MB of spaces, ~600 KB zipped
                member.write(head + b"<w:body>")
                block = b" " * 2**20
                for _ in range(600):
                    member.write(block)
                member.write(tail)
    assert (docs / "memo.docx").stat().st_size < 2 * 2**20
    tracemalloc.start()
    try:
        chunks, report = run_parse(docs, tmp_path / "run")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kind, reason = reasons(report)["memo.docx"]
    assert kind == "zip_bomb" and "over parse.max_unzipped_mb (500 MB)" in reason
    assert peak < 50 * 2**20
    assert _good_kept(chunks)


def test_an_html_page_that_is_99_percent_scripts(docs: Path, tmp_path: Path) -> None:
    script = "<script>window.dataLayer.push({event: 'tracking', id: Math.random()});</script>\n"
    body = "<p>Visitors sign in at the front desk and wear their badge at all times in the building.</p>"
    page = f"<html><head>{script * 3000}</head><body>{body}{script * 1000}</body></html>"
    (docs / "portal.html").write_text(page)
    assert len(body) / len(page) < 0.01
    chunks, report = run_parse(docs, tmp_path / "run")
    mine = [c.text for c in chunks if c.source == "portal.html"]
    assert mine == ["Visitors sign in at the front desk and wear their badge at all times in the building."]
    assert report["skipped"] == []


def test_a_folder_that_vanishes_mid_run(docs: Path, tmp_path: Path) -> None:
    (docs / "a-first.md").write_text("# First\n\nThe first file is parsed before the folder below disappears.")
    (docs / "z-share").mkdir()
    for i in range(3):
        (docs / "z-share" / f"minutes-{i}.md").write_text(f"# Minutes {i}\n\nMeeting {i} agreed the budget for Q{i}.")
    vanished: list[str] = []

    def unplug_the_share(stage: str, done: int, total: int, note: str) -> None:
        if note == "a-first.md":  # the network share drops after the first file
            shutil.rmtree(docs / "z-share")
            vanished.append(note)

    chunks, report = run_parse(docs, tmp_path / "run", progress=unplug_the_share)
    assert vanished
    why = reasons(report)
    assert {p for p, (kind, _) in why.items() if kind == "vanished"} == {f"z-share/minutes-{i}.md" for i in range(3)}
    assert why["z-share/minutes-0.md"][1] == "the file disappeared during the run"
    assert {c.source for c in chunks} == {"a-first.md", "good.md"}


def _run_openvino() -> None:
    """Compile and run a small OpenVINO model on every core: its native thread pool now lives in this process."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([64, 256], np.float32, name="x")
    weights = ops.constant(np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32))
    model = ov.Model([ops.relu(ops.matmul(x, weights, False, False))], [x], "small")
    compiled = ov.Core().compile_model(model, "CPU")
    for _ in range(20):
        compiled(np.ones((64, 256), np.float32))


def test_a_file_over_the_time_limit_is_skipped_after_openvino_ran_in_the_process(docs: Path, tmp_path: Path) -> None:
    """In this process, after OpenVINO ran here (as after an export, or a second build() from one script): the
    deadline is no signal, so a native thread pool cannot turn it into a segmentation fault."""
    pytest.importorskip("openvino")
    _run_openvino()
    # two files that take far longer than the deadline to parse (a tiny one can finish before a loaded
    # machine lets the timer thread run at all)
    (docs / "good.md").unlink()
    for name in ("slow.pdf", "slower.pdf"):
        _pdf(docs / name, "A long report that takes the parser more than a millisecond to read. " * 200)
    with pytest.raises(InputError, match=r"slow.pdf: took longer than parse.timeout_s \(0.001 s\)"):
        run_parse(docs, tmp_path / "run", timeout_s=0.001)
    report = json.loads((tmp_path / "run" / "parse" / "report.json").read_text())
    assert report["skipped_by_reason"] == {"timeout": 2}  # each file got its own deadline; the run went on


def test_a_deadline_that_was_not_reached_never_fires_later(tmp_path: Path) -> None:
    """The timer is cancelled with the call: no timeout surfaces in whatever code runs next."""
    import time

    from rerankforge.parsing.worker import _with_timeout

    assert _with_timeout(0.05, sum, [1, 2]) == 3
    time.sleep(0.2)  # past the deadline, in plain code: nothing is raised here
    assert sum(1 for _ in range(100_000)) == 100_000


def test_only_no_parsable_file_at_all_is_an_error(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "empty.txt").write_bytes(b"")
    (docs / "noise.txt").write_bytes(os.urandom(1000))
    with pytest.raises(InputError, match=r"No file in .* could be parsed \(2 seen; empty.txt: empty file; noise.txt"):
        run_parse(docs, tmp_path / "run")


@pytest.mark.slow  # a child interpreter parses the example documents with a pool of workers
def test_build_from_a_script_without_a_main_guard_parses_with_the_default_workers(tmp_path: Path) -> None:
    """spawn/forkserver workers used to run the caller's script again: its build() met the run lock and each
    worker died ("A parser worker died"), so every file was retried alone and then skipped as crashed."""
    root = Path(__file__).resolve().parent.parent
    script = tmp_path / "build_docs.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "from rerankforge import build\n"
        "from tests.conftest import fake_build_config\n"
        "from tests.fake_llm import FakeLLM\n"
        f"config = fake_build_config(Path({str(root / 'examples' / 'docs')!r}), Path(sys.argv[1]))\n"
        "assert config.parse.workers is None  # the default: one worker per core\n"
        "result = build(config, llm=FakeLLM(), until='parse')\n"
        "print('parsed', result.summary('parse')['files_parsed'], result.summary('parse')['files_skipped'])\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "parsed 10 0" in done.stdout
    assert "worker died" not in done.stderr and "Another build is running" not in done.stderr
