"""The ONNX Runtime session behind an exported model: fed like the PyTorch model, answering like it.

A tiny random BERT question-answering model (two outputs, start and end logits) is exported once with
`tunewise.models.onnx.export_onnx`; the wrapper must take the encoded batch as keyword tensors, feed
only the inputs the graph declares, and return the scores by name with no loss, for batches of other
sizes and lengths than the trace's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModelForQuestionAnswering

from tunewise.errors import ConfigError
from tunewise.inference import collate, model_device, predict_logits
from tunewise.models.onnx import export_onnx
from tunewise.runs.record import cpu_cores
from tunewise.serving.onnx_model import OnnxModel
from tunewise.types import EncodedSplit


def token_rows(lengths: list[int], seed: int) -> EncodedSplit:
    """Rows of random token ids (past the special tokens) with start/end labels, as the QA task encodes them."""
    rng = np.random.default_rng(seed)
    ids = [rng.integers(5, 60, length).astype(np.int32) for length in lengths]
    labels = np.array([[1, min(2, length - 1)] for length in lengths], dtype=np.int64)
    return EncodedSplit(sequences={"input_ids": ids}, labels=labels, label_keys=("start_positions", "end_positions"))


@pytest.fixture(scope="module")
def qa_model(tiny_model_dir: Path) -> nn.Module:
    torch.manual_seed(0)
    return AutoModelForQuestionAnswering.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def exported(qa_model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    example = token_rows([7, 5], seed=0)
    batch = {k: v for k, v in collate(example, np.arange(2)).items() if k not in example.label_keys}
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(qa_model, batch, path, token_inputs=True)
    return OnnxModel.open(path)


def test_outputs_are_named_scores_with_no_loss_for_any_batch_and_length(qa_model, exported) -> None:
    assert list(exported.inputs) == ["input_ids", "attention_mask"]
    assert exported.outputs == ["start_logits", "end_logits"]
    for lengths in ([4], [11, 9, 3]):  # batch 1 and batch 3, neither of the trace's length 7
        batch = collate(token_rows(lengths, seed=1), np.arange(len(lengths)))  # labels included: left out
        batch["input_ids"] = batch["input_ids"].int()  # fed as the graph declares (int64)
        got = exported(**batch)
        with torch.no_grad():
            expected = qa_model(**{k: v.long() for k, v in batch.items() if k in exported.inputs})
        assert got.loss is None
        assert isinstance(got.start_logits, torch.Tensor) and got.start_logits.shape == (len(lengths), max(lengths))
        assert torch.allclose(got.start_logits, expected.start_logits, atol=1e-5)
        assert torch.allclose(got.end_logits, expected.end_logits, atol=1e-5)


def test_predict_logits_runs_the_session_in_input_order_without_a_loss(qa_model, exported) -> None:
    split = token_rows([3, 12, 6, 9, 4], seed=2)
    onnx_scores, onnx_loss = predict_logits(exported, split, batch_size=2)
    torch_scores, torch_loss = predict_logits(qa_model, split, batch_size=2)
    assert onnx_loss is None and torch_loss is not None  # the export returns scores only
    assert isinstance(onnx_scores, list) and isinstance(torch_scores, list)
    for a, b in zip(onnx_scores, torch_scores, strict=True):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)


def test_the_session_declares_the_cpu_and_uses_every_core(qa_model, exported) -> None:
    assert model_device(exported) == torch.device("cpu")
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")  # a model without `device`: its parameters'
    assert model_device(qa_model) == qa_model.device
    assert exported.threads == cpu_cores()
    assert exported.session.get_providers() == ["CPUExecutionProvider"]
    assert exported.eval() is exported and not exported.training
    with pytest.raises(ConfigError, match="cannot be trained"):
        exported.train()


def test_a_batch_without_an_input_the_graph_declares_is_refused(exported) -> None:
    with pytest.raises(
        ConfigError, match="takes input_ids, attention_mask, but the encoded batch has no attention_mask"
    ):
        exported(input_ids=torch.ones(1, 3, dtype=torch.long))


def test_a_file_onnx_runtime_cannot_run_is_a_config_error_naming_it(tmp_path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"\x08\x07 not a protobuf")
    with pytest.raises(ConfigError, match=r"model\.onnx cannot be run by ONNX Runtime .*--overwrite"):
        OnnxModel.open(broken)
    with pytest.raises(ConfigError, match="cannot be run by ONNX Runtime"):
        OnnxModel.open(tmp_path / "missing.onnx")
