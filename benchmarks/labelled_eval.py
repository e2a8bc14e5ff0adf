"""BM25 vs dense vs a reranker on real labelled questions: a seeded MedQuAD slice, rerankforge's own evaluation.

Reads MedQuAD (../shared/data/medquad-dev, in place). The slice keeps every answer of a seeded sample of
foci (diseases), so each question competes with the other answers about its own focus (symptoms vs causes
vs treatment): the hard part a reranker is for. Prints the metric table, the paired t-test against the
first stage, wins/losses and the verdict, with seconds per phase.

    .venv/bin/python benchmarks/labelled_eval.py runs/examples/model --foci 80 --queries 60 --top-k 20
"""

from __future__ import annotations

import argparse
import json
import time

from medquad_data import medquad_slice, require_data

from rerankforge.config import EvaluateConfig
from rerankforge.evaluation import evaluate_labelled, load_scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="reranker: a model folder (torch or ONNX) or a cached Hugging Face id")
    parser.add_argument("--compare", nargs="*", default=[], help="other rerankers on the same candidates")
    parser.add_argument("--foci", type=int, default=80)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--onnx", action="store_true", help="score the model folder's ONNX export")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    require_data()
    started = time.perf_counter()
    data = medquad_slice(args.foci, args.seed)
    print(f"slice: {len(data.corpus)} answers, {len(data.qrels)} questions ({time.perf_counter() - started:.1f} s)")
    scorers = [load_scorer(args.model, onnx=args.onnx or None), *(load_scorer(m) for m in args.compare)]
    cfg = EvaluateConfig(rerank_top_k=args.top_k, max_queries=args.queries)
    started = time.perf_counter()
    result = evaluate_labelled(data, scorers, cfg, bi_encoder="all-MiniLM-L6-v2", seed=args.seed)
    print(f"evaluated {result['data']['queries_evaluated']} questions in {time.perf_counter() - started:.1f} s")
    metrics = list(next(iter(result["metrics"].values())))
    main_metric = result["main_metric"]
    print(f"{'system':<58}" + "".join(f"{m:>11}" for m in metrics) + f"{'p':>10}  W/T/L")
    for system, values in result["metrics"].items():
        p_value = result["p_values"].get(system, {}).get(main_metric)
        wtl = result["win_tie_loss"].get(system, {}).get(main_metric)
        tail = f"{p_value:>10.3g}  {wtl['W']}/{wtl['T']}/{wtl['L']}" if wtl else f"{'baseline':>10}"
        print(f"{result['systems'][system]:<58}" + "".join(f"{values[m]:>11.4f}" for m in metrics) + tail)
    print(f"The reranker is {result['verdict']}")
    print(json.dumps({"metrics": result["metrics"], "p_values": result["p_values"]}))


if __name__ == "__main__":
    main()
