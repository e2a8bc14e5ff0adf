"""A docs folder for a one-source build: links to the medquad-dev files that hold the answers of one source's
first ``--questions`` evaluated questions (``served_quality.py``'s seeded order), so that a small build's corpus
contains what those questions ask about.

    .venv/bin/python benchmarks/source_docs.py GARD .cache/gard-docs --questions 300
    rerankforge build .cache/gard-docs --run-dir .cache/bench-transfer/gard --max-queries 160 --yes

The links point into ``../shared/data/medquad-dev/docs``; nothing is copied.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medquad_data import require_data
from medquad_scorer import DATA, SOURCES, real_questions, source_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=SOURCES)
    parser.add_argument("out", type=Path)
    parser.add_argument("--questions", type=int, default=300)
    args = parser.parse_args()
    require_data()
    _, evaluated, _ = real_questions(500, args.questions)
    evaluated = [(q, rel) for q, rel in evaluated if source_of(next(iter(rel))) == args.source][: args.questions]
    files = sorted({doc.rsplit("-", 1)[0] + ".md" for _, rel in evaluated for doc in rel})
    docs = (DATA / "docs").resolve()
    missing = [f for f in files if not (docs / f).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} answer files are not in {docs} (first: {missing[0]}): is the data complete?")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in files:
        link = args.out / name
        if not link.exists():
            link.symlink_to(docs / name)
    print(f"{len(files)} files of {len(evaluated)} {args.source} questions linked in {args.out}")


if __name__ == "__main__":
    main()
