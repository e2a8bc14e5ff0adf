"""Parse throughput on a generated mixed corpus: files/s, chunks/s and peak memory, per worker count.

Writes a corpus of N files in 10 formats (md, txt, html, csv, json, eml, docx, pdf, pptx, xlsx) with a shared
disclaimer (a duplicate to remove) and a few bad files, then runs the parse stage on it in a fresh process per
worker count and samples the memory of that process and its workers (summed PSS) every 100 ms. Finally it
changes 1 % of the files and re-runs with the last worker count, to show an incremental run. Other work on the
machine skews the figures: each row also gives the CPU seconds of the process tree and the 1-minute load
average at its end.

    .venv/bin/python benchmarks/parse_corpus.py --files 1000 --workers 1 2
"""

from __future__ import annotations

import argparse
import email.message
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "robot dock battery charge warehouse shelf route sensor lidar firmware update schedule maintenance "
    "inspection safety policy leave travel expense receipt approval manager contract supplier invoice "
    "payment audit report quarter budget forecast training onboarding badge access password network"
).split()
DISCLAIMER = "CONFIDENTIAL. Property of Northwind Robotics; do not share outside the company. Copies are uncontrolled."
FORMATS = ["md", "md", "md", "txt", "txt", "html", "html", "csv", "json", "eml", "docx", "pdf", "pptx", "xlsx"]


def _paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18))).capitalize() + "." for _ in range(sentences)
    )


def _sections(rng: random.Random) -> list[tuple[str, str]]:
    return [(f"{rng.choice(WORDS).title()} {rng.choice(WORDS)}", _paragraph(rng, rng.randint(2, 8))) for _ in range(3)]


def write_file(path: Path, fmt: str, rng: random.Random) -> None:  # noqa: C901 - one branch per format
    sections = _sections(rng)
    if fmt == "md":
        path.write_text("".join(f"# {t}\n\n{b}\n\n" for t, b in sections) + f"# Notice\n\n{DISCLAIMER}\n")
    elif fmt == "txt":
        path.write_text("".join(f"{t.upper()}\n\n{b}\n\n" for t, b in sections) + f"NOTICE\n\n{DISCLAIMER}\n")
    elif fmt == "html":
        body = "".join(f"<h2>{t}</h2><p>{b}</p>" for t, b in [*sections, ("Notice", DISCLAIMER)])
        path.write_text(f"<html><head><script>var t=1;</script></head><body>{body}</body></html>")
    elif fmt == "csv":
        path.write_text("topic,text\n" + "".join(f'{t},"{b}"\n' for t, b in sections))
    elif fmt == "json":
        path.write_text(json.dumps({"sections": [{"title": t, "text": b} for t, b in sections]}))
    elif fmt == "eml":
        mail = email.message.EmailMessage()
        mail["Subject"], mail["From"], mail["To"] = sections[0][0], "a@example.com", "b@example.com"
        mail.set_content("\n\n".join(b for _, b in sections))
        path.write_bytes(bytes(mail))
    elif fmt == "docx":
        from docx import Document

        document = Document()
        for title, body in sections:
            document.add_heading(title, level=1)
            document.add_paragraph(body)
        document.save(path)
    elif fmt == "pdf":
        from fpdf import FPDF

        pdf = FPDF()
        pdf.add_page()
        pdf.set_font("helvetica", size=11)
        for title, body in sections:
            pdf.multi_cell(0, 6, f"{title}\n{body}\n")
        pdf.output(str(path))
    elif fmt == "pptx":
        from pptx import Presentation

        deck = Presentation()
        for title, body in sections:
            slide = deck.slides.add_slide(deck.slide_layouts[1])
            slide.shapes.title.text = title
            slide.placeholders[1].text = body
        deck.save(path)
    elif fmt == "xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        for title, body in sections:
            book.active.append([title, body])
        book.save(path)


def make_corpus(docs: Path, n: int, seed: int = 13) -> None:
    rng = random.Random(seed)
    for i in range(n):
        fmt = FORMATS[i % len(FORMATS)]
        folder = docs / f"dept-{i % 12:02d}" / f"team {i % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        write_file(folder / f"doc-{i:05d}.{fmt}", fmt, rng)
    bad = docs / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "empty.txt").write_bytes(b"")
    (bad / "noise.txt").write_bytes(os.urandom(4096))
    (bad / "truncated.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<")
    (bad / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(1024))


def run_parse(docs: Path, run_dir: Path, workers: int) -> dict:
    """In this process: the parse stage alone, as the pipeline runs it."""
    sys.path.insert(0, str(ROOT))
    from rerankforge import load_config
    from rerankforge.stage import StageContext
    from rerankforge.stages import parse

    cfg = load_config(None, docs=str(docs), run_dir=str(run_dir), parse={"workers": workers})
    ctx = StageContext(cfg, run_dir, lambda *a: None)
    ctx.stage = "parse"
    ctx.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = parse.run(ctx).summary
    summary["seconds"] = time.perf_counter() - started
    return summary


def measure(docs: Path, run_dir: Path, workers: int) -> tuple[dict, float]:
    """Run the parse stage in a fresh process; return its summary and the peak memory (MB) of its process tree.

    Memory is the sum of PSS (proportional set size): pages the forked workers share with the forkserver are
    divided among them, not counted once per process as summed RSS would.
    """
    import psutil

    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from benchmarks.parse_corpus import run_parse; "
        "from pathlib import Path; print(json.dumps(run_parse(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))))"
    )
    env = {**os.environ, "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", code, str(ROOT), str(docs), str(run_dir), str(workers)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    peak = 0.0
    cpu: dict[int, float] = {}  # pid -> user + system seconds, last seen
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_full_info().pss for p in tree if p.is_running()) / 2**20)
                for p in tree:
                    times = p.cpu_times()
                    cpu[p.pid] = times.user + times.system
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"parse failed with exit code {proc.returncode}")
    summary = json.loads(out.strip().splitlines()[-1])
    summary["cpu_seconds"] = sum(cpu.values())
    summary["load_average"] = os.getloadavg()[0]
    return summary, peak


def _row(label: str, summary: dict, peak: float) -> str:
    seconds = summary["seconds"]
    parsed = summary["files_parsed"] - summary.get("files_reused", 0)
    return (
        f"{label:<24} {seconds:7.1f} s  {summary['files_seen'] / seconds:6.1f} files/s  "
        f"{summary['chunks'] / seconds:7.1f} chunks/s  peak PSS {peak:6.0f} MB  "
        f"({parsed} parsed, {summary.get('files_reused', 0)} reused, {summary['files_skipped']} skipped, "
        f"{summary['chunks']} chunks, dup removed {summary.get('duplicates_removed')}; "
        f"{summary['cpu_seconds']:.0f} CPU s, load average {summary['load_average']:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", type=Path, help="Write the corpus and runs here and keep them.")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="rf-parse-bench-"))
    docs = base / "docs"
    started = time.perf_counter()
    make_corpus(docs, args.files)
    count = sum(1 for p in docs.rglob("*") if p.is_file())
    print(f"corpus: {count} files in {docs} (written in {time.perf_counter() - started:.0f} s); {os.cpu_count()} CPUs")
    for workers in args.workers:
        summary, peak = measure(docs, base / f"run-{workers}", workers)
        print(_row(f"{workers} worker process(es)", summary, peak), flush=True)
    last = args.workers[-1]
    rng = random.Random(7)
    files = sorted(p for p in docs.rglob("*.md"))
    for path in rng.sample(files, max(1, args.files // 100)):
        path.write_text(path.read_text() + "\n" + _paragraph(rng, 2) + "\n")
    summary, peak = measure(docs, base / f"run-{last}", last)
    print(_row(f"rerun, 1 % changed ({last})", summary, peak))


if __name__ == "__main__":
    main()
