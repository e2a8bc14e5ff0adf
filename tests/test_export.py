"""ONNX export of a real MiniLM CrossEncoder: files, fp32/int8 parity with torch, truncation and padding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rerankforge.errors import StageError
from rerankforge.serve.runtime import METADATA_FILE, VARIANTS, Reranker, available_variants
from rerankforge.stages.export import export_model

MAX_LENGTH = 128
QUERY = "how long does the battery last on one charge"
DOCS = [
    "A full charge lasts about nine hours of normal operation.",
    "ok",
    "The cafeteria opens at 8 am on weekdays.",
    "Expense reports are due within thirty days of travel.",
    "battery battery battery",
    "Quarterly tax filing deadlines for contractors in the EU.",
    "zzz qqq xxx",
    "Die Akkulaufzeit beträgt etwa neun Stunden — 充電は約2時間です。",
    "Charging: dock the unit, wait for the green LED, then undock. " * 60,  # far over 128 tokens
]


@pytest.fixture(scope="module")
def exported_model(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A CrossEncoder on the MiniLM backbone (random, seeded head) saved and exported once for this module."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder(minilm_path, num_labels=1, max_length=MAX_LENGTH, device="cpu")
    model_dir = tmp_path_factory.mktemp("export") / "model"
    model.save_pretrained(str(model_dir))
    summary = export_model(model_dir, max_length=MAX_LENGTH)
    return model_dir, summary


@pytest.fixture(scope="module")
def torch_model(exported_model: tuple[Path, dict]):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(exported_model[0]), num_labels=1, max_length=MAX_LENGTH, device="cpu")


def _torch_logits(model, query: str, docs: list[str]) -> np.ndarray:
    import torch

    pairs = [(query, d) for d in docs]
    return np.asarray(model.predict(pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False)).reshape(-1)


def test_export_writes_the_onnx_layout(exported_model: tuple[Path, dict]) -> None:
    model_dir, summary = exported_model
    for name in ("onnx/model.onnx", "onnx/model_qint8.onnx", "tokenizer.json", "config.json", METADATA_FILE):
        assert (model_dir / name).is_file(), name
    # dynamic int8 weights: the quantized file is much smaller than the fp32 one
    assert (model_dir / "onnx/model_qint8.onnx").stat().st_size < 0.5 * (model_dir / "onnx/model.onnx").stat().st_size
    meta = json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))
    assert meta["max_length"] == MAX_LENGTH
    assert meta["pad_token"] == "[PAD]" and meta["pad_token_id"] == 0
    assert meta["parity"] == summary
    assert summary["file_fp32"] == "onnx/model.onnx" and summary["file_int8"] == "onnx/model_qint8.onnx"
    # no calibration pairs were given: no static int8 model of either engine
    assert "file_int8_static" not in summary and "file_openvino_int8" not in summary
    assert summary["max_abs_diff_fp32"] <= 1e-4
    assert summary["max_abs_diff_int8"] < 0.1


def test_long_document_is_truncated_at_max_length(exported_model: tuple[Path, dict]) -> None:
    reranker = Reranker(exported_model[0], quantized=False)
    assert reranker.max_length == MAX_LENGTH
    assert len(reranker.tokenizer.encode(QUERY, DOCS[-1]).ids) == MAX_LENGTH
    # with truncation, appending more text past the cut changes nothing
    longer = DOCS[-1] + " An unrelated sentence about the cafeteria menu." * 20
    assert reranker.logits(QUERY, [longer])[0] == pytest.approx(reranker.logits(QUERY, [DOCS[-1]])[0], abs=1e-6)


def test_fp32_logits_match_torch_one_by_one_and_batched(exported_model: tuple[Path, dict], torch_model) -> None:
    reranker = Reranker(exported_model[0], quantized=False)
    expected = _torch_logits(torch_model, QUERY, DOCS)
    batched = reranker.logits(QUERY, DOCS)  # one call: short and long docs padded together
    single = np.concatenate([reranker.logits(QUERY, [d]) for d in DOCS])
    assert batched.shape == (len(DOCS),)
    np.testing.assert_allclose(batched, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(single, expected, atol=1e-4, rtol=0)
    # the random head still separates these documents: the comparison is not between constants
    assert np.ptp(expected) > 0.01


def test_fp32_parity_holds_across_onnx_batch_boundaries(exported_model: tuple[Path, dict], torch_model) -> None:
    reranker = Reranker(exported_model[0], quantized=False, batch_size=4)
    other_query = "Where do I install the charging dock?"
    docs = DOCS + list(reversed(DOCS))  # 18 docs: batches of 4, 4, 4, 4, 2
    np.testing.assert_allclose(
        reranker.logits(other_query, docs), _torch_logits(torch_model, other_query, docs), atol=1e-4, rtol=0
    )


def test_int8_is_close_to_fp32_and_keeps_the_ranking(exported_model: tuple[Path, dict]) -> None:
    fp32 = Reranker(exported_model[0], quantized=False).logits(QUERY, DOCS)
    int8 = Reranker(exported_model[0], quantized=True).logits(QUERY, DOCS)
    assert Reranker(exported_model[0], quantized=True).onnx_path.name == "model_qint8.onnx"
    error = float(np.max(np.abs(int8 - fp32)))
    assert error < 0.1
    assert error < 0.25 * float(np.ptp(fp32))  # noise well below the spread of the scores
    # every pair of documents the fp32 model clearly separates keeps its order under int8
    clear_pairs = [(i, j) for i in range(len(DOCS)) for j in range(len(DOCS)) if fp32[i] - fp32[j] > 0.01]
    assert len(clear_pairs) >= 5
    swapped = [(i, j) for i, j in clear_pairs if not int8[i] > int8[j]]
    assert swapped == []


def test_sentence_transformers_loads_the_exported_folder_with_onnx_backend(
    exported_model: tuple[Path, dict],
) -> None:
    from sentence_transformers import CrossEncoder

    try:
        onnx_model = CrossEncoder(str(exported_model[0]), backend="onnx")
    except Exception as exc:  # sentence-transformers raises a bare Exception when optimum is missing
        if "Optimum" in str(exc):
            pytest.skip("sentence-transformers' ONNX backend needs the optimum package, which is not installed")
        raise
    scores = onnx_model.predict([(QUERY, d) for d in DOCS[:4]], show_progress_bar=False)
    np.testing.assert_allclose(scores, Reranker(exported_model[0], quantized=False).score(QUERY, DOCS[:4]), atol=1e-4)


def test_export_refuses_a_parity_failure(minilm_path: str, tmp_path: Path) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(1)
    model_dir = tmp_path / "model"
    CrossEncoder(minilm_path, num_labels=1, max_length=32, device="cpu").save_pretrained(str(model_dir))
    # fp32 ONNX and torch differ by float rounding (~1e-8), so a 1e-12 tolerance trips the check
    with pytest.raises(StageError, match=r"ONNX fp32 scores differ from torch by .* export\.parity_tolerance 1e-12"):
        export_model(model_dir, max_length=32, quantize=False, parity_tolerance=1e-12)
    assert not (model_dir / "onnx" / "model_qint8.onnx").exists()


def _clearly_ordered_pairs_kept(reference: np.ndarray, other: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of documents the reference separates by more than 0.01 that ``other`` puts the other way round."""
    clear = [(i, j) for i in range(len(reference)) for j in range(len(reference)) if reference[i] - reference[j] > 0.01]
    assert len(clear) >= 5
    return [(i, j) for i, j in clear if not other[i] > other[j]]


def test_openvino_variants_are_written_and_stay_faithful(onnx_model_dir: Path) -> None:
    """The calibrated export writes the NNCF int8 IR where sentence-transformers' OpenVINO backend looks for it;
    OpenVINO's bf16/fp32 run of the fp32 file and its int8 model keep the fp32 ranking."""
    meta = json.loads((onnx_model_dir / METADATA_FILE).read_text(encoding="utf-8"))
    parity = meta["parity"]
    assert parity["file_openvino_int8"] == "openvino/openvino_model_qint8_quantized.xml"
    assert (onnx_model_dir / "openvino/openvino_model_qint8_quantized.bin").is_file()
    assert set(available_variants(onnx_model_dir)) == set(VARIANTS)
    fp32 = Reranker(onnx_model_dir, variant="fp32").logits(QUERY, DOCS)
    for variant in ("openvino", "openvino_int8"):
        reranker = Reranker(onnx_model_dir, variant=variant)
        assert reranker.engine == "openvino" and reranker.precision in ("bf16", "f32")
        scores = reranker.logits(QUERY, DOCS)
        assert float(np.max(np.abs(scores - fp32))) < 0.1
        assert 0 < parity[f"max_abs_diff_{variant}"] < 0.1
        assert _clearly_ordered_pairs_kept(fp32, scores) == []


def test_quantizing_for_openvino_keeps_nncf_telemetry_off_and_opens_no_connection(onnx_model_dir: Path) -> None:
    """OpenVINO (on import) and NNCF send usage telemetry unless told not to; an export must not even look up a
    name."""
    code = f"""
import sys
connections = []
watched = ("socket.connect", "socket.getaddrinfo")
sys.addaudithook(lambda event, args: connections.append(args) if event in watched else None)
from pathlib import Path
from rerankforge.stages.export import calibration_feeds, quantize_openvino
model = Path({str(onnx_model_dir)!r})
import shutil, tempfile
copy = Path(tempfile.mkdtemp()) / "model"
shutil.copytree(model, copy)
quantize_openvino(copy / "onnx" / "model.onnx", calibration_feeds(copy, [("battery", "nine hours")] * 2))
from nncf.telemetry import decorator, wrapper
assert not isinstance(decorator.telemetry, wrapper.NNCFTelemetry), type(decorator.telemetry)
assert not isinstance(wrapper.telemetry, wrapper.NNCFTelemetry), type(wrapper.telemetry)
assert (copy / "openvino" / "openvino_model_qint8_quantized.xml").is_file()
print("connections", connections)
"""
    import subprocess
    import sys

    # a fresh interpreter: pytest's own import of NNCF would switch its telemetry off for the wrong reason
    # without CI or NNCF_CI in the environment: both switch the telemetry off by themselves, as in CI runs
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "connections []" in done.stdout
    assert "Statistics collection" not in done.stdout + done.stderr  # NNCF's progress bars are not printed


def test_export_removes_the_files_of_variants_it_no_longer_writes(onnx_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(onnx_model_dir, model_dir)
    assert "openvino_int8" in available_variants(model_dir)
    calibration = [(QUERY, d) for d in DOCS[:4]]
    summary = export_model(model_dir, max_length=MAX_LENGTH, calibration_pairs=calibration, openvino=False)
    assert not (model_dir / VARIANTS["openvino_int8"].path).exists()
    assert not (model_dir / VARIANTS["openvino_int8"].path).with_suffix(".bin").exists()
    assert "openvino_int8" not in available_variants(model_dir)
    assert "file_openvino_int8" not in summary and summary["file_int8_static"] == VARIANTS["int8_static"].path
