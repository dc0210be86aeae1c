"""predict_logits: outputs in input order whatever the batch, the mean loss over rows, a batch per device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tunewise.inference import eval_batch_size, predict_logits, sorted_batches
from tunewise.types import EncodedSplit


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)


def random_split(rows: int, seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    ids = [list(rng.integers(5, 40, size=int(rng.integers(2, 20)))) for _ in range(rows)]
    return EncodedSplit(sequences={"input_ids": ids}, labels=rng.integers(0, 2, size=rows))


def test_outputs_come_back_in_input_order_whatever_the_batch(classifier: torch.nn.Module) -> None:
    split = random_split(37)  # rows of many lengths: sorted batches reorder them
    by_default, default_loss = predict_logits(classifier, split)
    for batch_size in (1, 5, 128):
        logits, loss = predict_logits(classifier, split, batch_size=batch_size)
        np.testing.assert_allclose(logits, by_default, rtol=1e-5, atol=1e-6)
        assert loss == pytest.approx(default_loss, rel=1e-5)
    with torch.inference_mode():  # and row by row, unpadded: each output belongs to its own row
        for row in (0, 17, 36):
            alone = classifier(input_ids=torch.tensor([split.sequences["input_ids"][row]])).logits[0]
            np.testing.assert_allclose(by_default[row], alone.numpy(), rtol=1e-4, atol=1e-5)


def test_the_mean_loss_is_over_rows(classifier: torch.nn.Module) -> None:
    split = random_split(23, seed=1)
    logits, loss = predict_logits(classifier, split, batch_size=4)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(split.labels))
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_unlabelled_rows_have_no_loss_and_keep_logits_false_returns_none(classifier: torch.nn.Module) -> None:
    split = random_split(9)
    unlabelled = EncodedSplit(sequences=split.sequences, labels=None)
    logits, loss = predict_logits(classifier, unlabelled)
    assert logits.shape == (9, 2) and loss is None
    nothing, labelled_loss = predict_logits(classifier, split, keep_logits=False)
    assert nothing is None and labelled_loss is not None


def test_evaluation_batches_are_smaller_on_cpu_than_on_a_gpu() -> None:
    assert eval_batch_size(torch.device("cpu")) == 32
    assert eval_batch_size(torch.device("cuda")) == 128


def test_cpu_batches_hold_little_padding_and_every_row_once() -> None:
    lengths = np.random.default_rng(1).integers(2, 120, size=200)
    batches = sorted_batches(lengths, 32, max_padding=0.3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(200))
    flat = np.concatenate(batches)
    assert (np.diff(lengths[flat]) <= 0).all()  # still longest first
    for batch in batches:
        assert len(batch) <= 32
        padded, real = len(batch) * lengths[batch].max(), lengths[batch].sum()
        assert len(batch) == 1 or padded <= 1.3 * real
    assert len(batches) > len(sorted_batches(lengths, 32))  # it did split batches


def test_predictions_do_not_depend_on_the_padding_split(classifier: torch.nn.Module) -> None:
    split = random_split(37)
    expected, _ = predict_logits(classifier, split, batch_size=37, device=torch.device("cpu"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tunewise.inference.outputs.CPU_MAX_PADDING", 10.0)  # one batch, however padded
        unsplit, _ = predict_logits(classifier, split, batch_size=37, device=torch.device("cpu"))
    np.testing.assert_allclose(expected, unsplit, atol=1e-5)
