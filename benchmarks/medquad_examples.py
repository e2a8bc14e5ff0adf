"""Eight real MedQuAD questions as a user's own examples (``queries.examples_file``), as copied from a search log.

They are drawn, seeded, from questions that ``medquad_scorer.py`` never evaluates, and their focus (the
disease or topic they ask about) is the focus of no evaluated question: the examples show the users' style,
never an evaluated answer. Their answers are never read.

    .venv/bin/python benchmarks/medquad_examples.py .cache/medquad-examples.txt [--count 8] [--per-source 300]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from medquad_data import DATA, require_data
from medquad_scorer import jsonl, real_questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--queries", type=int, default=500, help="as medquad_scorer.py's --queries")
    parser.add_argument("--per-source", type=int, default=300, help="as medquad_scorer.py's --per-source")
    args = parser.parse_args()
    require_data()
    focus = {d["_id"]: d.get("title", "") for d in jsonl(DATA / "corpus.jsonl")}
    _, evaluated, rest = real_questions(args.queries, args.per_source)
    used = {focus[d] for _, rel in evaluated for d in rel}
    free = [q for q, rel in rest if not {focus[d] for d in rel} & used]
    picked = random.Random(7).sample(free, args.count)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{q}\n" for q in picked), encoding="utf-8")
    print(json.dumps({"examples": picked, "free_questions": len(free), "evaluated_foci": len(used)}, indent=1))


if __name__ == "__main__":
    main()
