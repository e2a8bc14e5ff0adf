"""The train stage: best checkpoint by held-out nDCG@10, max length from the data, model card, resume after kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rerankforge import build
from rerankforge.artifacts import read_json
from rerankforge.errors import StageError
from rerankforge.stages.train import _precision
from rerankforge.training.dev import DevQuery, first_stage_ndcg, rerank_ndcg
from rerankforge.training.lengths import choose_max_length
from tests.conftest import fake_build_config, fake_build_toml
from tests.fake_llm import FakeLLM

ROOT = Path(__file__).resolve().parent.parent


def test_dev_ndcg_ranks_each_query_by_its_scores() -> None:
    dev = [
        DevQuery("q1", ["a", "b", "c"], [0, 3, 1]),  # first stage puts the grade-3 passage second
        DevQuery("q2", ["d", "e"], [2, 0]),
    ]
    perfect = [np.array([0.1, 0.9, 0.5]), np.array([1.0, 0.0])]
    reversed_ = [np.array([0.9, 0.1, 0.5]), np.array([0.0, 1.0])]
    assert rerank_ndcg(dev, perfect, k=10) == pytest.approx(1.0)
    ideal_q1 = 3 + 1 / np.log2(3)
    first_q1 = 0 + 3 / np.log2(3) + 1 / np.log2(4)
    assert first_stage_ndcg(dev, k=10) == pytest.approx((first_q1 / ideal_q1 + 1.0) / 2)
    worst_q1 = (0 + 1 / np.log2(3) + 3 / np.log2(4)) / ideal_q1
    assert rerank_ndcg(dev, reversed_, k=10) == pytest.approx((worst_q1 + (2 / np.log2(3)) / 2) / 2)


def test_max_length_counts_what_it_truncates() -> None:
    chosen = choose_max_length(np.array([20, 40, 41, 300, 500]), cap=256)
    assert chosen["max_length"] == 256 and chosen["truncated_pairs"] == 2 and chosen["tokens_max"] == 500
    assert choose_max_length(np.array([20, 40, 41]), cap=256)["max_length"] == 48


def test_half_precision_on_a_cpu_is_refused_with_the_fix() -> None:
    assert _precision("auto", "cpu") == "fp32"
    with pytest.raises(StageError, match=r"train.precision = bf16 needs a CUDA GPU.*Use auto"):
        _precision("bf16", "cpu")


@pytest.mark.slow
def test_training_keeps_the_best_checkpoint_and_writes_a_model_card(fake_build) -> None:
    result, _, run_dir = fake_build
    train = result.summary("train")
    history = read_json(run_dir / "train" / "loss_history.json")
    points = [h["eval_dev_ndcg@10"] for h in history if "eval_dev_ndcg@10" in h]
    assert len(points) >= 3
    dev = train["dev"]
    assert dev["best_ndcg@10"] == pytest.approx(max(points), abs=1e-4)
    assert dev["best_ndcg@10"] >= dev["last_ndcg@10"]
    # the saved model is the best checkpoint: the evaluate stage reranks the same dev candidates with it
    assert result.summary("evaluate")["reranked"]["ndcg@10"] == pytest.approx(dev["best_ndcg@10"], abs=2e-3)
    lengths = train["max_length"]
    assert lengths["max_length"] % 16 == 0 and lengths["max_length"] <= 128
    assert lengths["tokens_max"] <= lengths["max_length"] or lengths["truncated_pairs"] > 0
    assert not (run_dir / "train" / "checkpoints").exists()  # only the chosen weights are kept
    card = (run_dir / "model" / "README.md").read_text(encoding="utf-8")
    judgments = [json.loads(line) for line in (run_dir / "grade" / "judgments.jsonl").open()]
    zeros = sum(1 for j in judgments if j["grade"] == 0)
    assert "## Built by rerankforge" in card
    assert f"| training groups | {train['groups']} of {train['group_size']} documents |" in card
    assert f"0: {zeros}" in card and "Loss: `bce`" in card and "| `learning_rate` |" in card
    assert f"{dev['best_ndcg@10']:.4f}" in card


_BUILD_IN_CHILD = """
import sys
from rerankforge import build
from tests.conftest import fake_build_config
from tests.fake_llm import FakeLLM
from pathlib import Path
build(fake_build_config(Path(sys.argv[1]), Path(sys.argv[2]), train={"epochs": 4, "max_length": 128,
      "batch_size": 4, "eval_points": 8, "cross_encoder": True}), llm=FakeLLM(), until="train")
"""


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_last_checkpoint(fake_build, example_docs: Path, tmp_path: Path) -> None:
    one_process, _, finished = fake_build
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)  # parse .. grade are done; the new train settings make train run again
    checkpoints = run_dir / "train" / "checkpoints"
    child = subprocess.Popen(
        [sys.executable, "-c", _BUILD_IN_CHILD, str(example_docs), str(run_dir)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    try:
        # kill as soon as one checkpoint is complete: the next one may be half-written, which must be survivable
        while not list(checkpoints.glob("checkpoint-*/trainer_state.json")) and child.poll() is None:
            assert time.monotonic() < deadline, "training wrote no checkpoint in 10 minutes"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert not (run_dir / "train" / "manifest.json").exists()
    llm = FakeLLM()
    result = build(
        fake_build_config(example_docs, run_dir, train={"epochs": 4, "max_length": 128, "batch_size": 4,
                                                        "eval_points": 8, "cross_encoder": True}),
        llm=llm, until="train",
    )  # fmt: skip
    train = result.summary("train")
    assert llm.calls == 0
    assert train["resumed_from_step"] > 0
    assert train["steps"] > train["resumed_from_step"]
    assert (run_dir / "train" / "cross_encoder" / "model.safetensors").is_file()
    # the killed run's evaluations carry over into the resumed one, and the best of all of them is what it kept
    history = read_json(run_dir / "train" / "loss_history.json")
    evaluated = [h for h in history if "eval_dev_ndcg@10" in h]
    assert any(h["step"] <= train["resumed_from_step"] for h in evaluated), evaluated
    assert any(h["step"] > train["resumed_from_step"] for h in evaluated), evaluated
    assert train["dev"]["best_ndcg@10"] == pytest.approx(max(h["eval_dev_ndcg@10"] for h in evaluated), abs=1e-4)


@pytest.mark.slow
def test_torchrun_trains_on_two_processes_and_rank_0_alone_writes(
    fake_build, example_docs: Path, tmp_path: Path
) -> None:
    one_process, _, finished = fake_build
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)  # parse .. grade are done: no LLM is needed, the new train settings retrain
    cache_before = (run_dir / "llm_cache.jsonl").read_bytes()
    config = fake_build_toml(tmp_path / "rerankforge.toml", train={"epochs": 4, "eval_points": 4})
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "rerankforge", "build", str(example_docs), "--config", str(config), "--run-dir", str(run_dir),
        "--until", "train", "--yes",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    train = read_json(run_dir / "train" / "manifest.json")["summary"]
    assert train["processes"] == 2
    # each optimizer step takes a batch of 4 groups on each of the two processes: 4 epochs on two processes
    # take about the steps of the session build's 2 epochs on one process (same groups, same batch size)
    alone = one_process.summary("train")
    assert train["groups"] == alone["groups"] and alone["steps"] > 4
    assert abs(train["steps"] - alone["steps"]) <= 6  # one process alone would take about twice as many
    assert train["dev"]["best_ndcg@10"] == pytest.approx(
        max(h["eval_dev_ndcg@10"] for h in read_json(run_dir / "train" / "loss_history.json")
            if "eval_dev_ndcg@10" in h), abs=1e-4
    )  # fmt: skip
    assert (run_dir / "train" / "cross_encoder" / "model.safetensors").is_file()
    assert not (run_dir / "train" / "checkpoints").exists()
    assert (run_dir / "llm_cache.jsonl").read_bytes() == cache_before  # no rank asked the LLM
    assert "Another build is running" not in done.stderr  # the followers never took the run lock
