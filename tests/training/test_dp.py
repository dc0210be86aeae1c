"""Differentially private fine-tuning (DP-SGD with Opacus) through the ordinary training loop."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_config, sentiment_rows, write_csv
from torch import nn

import tunewise
from tunewise.errors import ConfigError
from tunewise.inference import collate
from tunewise.training.accounting import PrivacyPlan
from tunewise.training.dp import make_private, poisson_batches, private_backward
from tunewise.types import EncodedSplit


@pytest.fixture(scope="module")
def dp_data(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("dp")
    return {
        "train": write_csv(folder / "train.csv", sentiment_rows(160, seed=11)),
        "test": write_csv(folder / "test.csv", sentiment_rows(40, seed=12)),
    }


def dp_config(tmp_path: Path, model_dir: Path, data: dict, method: str = "full", **dp) -> dict:
    return make_config(
        tmp_path / method,
        model_dir,
        data,
        strategy={"method": method},
        train={"epochs": 2, "batch_size": 16},
        privacy={"dp": {"epsilon": 4.0, **dp}},
    )


@pytest.mark.parametrize("method", ["full", "freeze_backbone", "lora"])
def test_a_dp_run_spends_at_most_its_epsilon_and_logs_it_every_epoch(
    tmp_path: Path, tiny_mean_model_dir: Path, dp_data: dict, method: str
) -> None:
    run = tunewise.train(dp_config(tmp_path, tiny_mean_model_dir, dp_data, method), show_progress=False)
    privacy = json.loads((run.run_dir / "run.json").read_text())["privacy"]
    assert 0 < privacy["epsilon"] <= 4.0 and privacy["delta"] < 1 / 144  # delta auto: below 1/N
    assert privacy["noise_multiplier"] > 0.5 and privacy["accountant"] == "prv"
    spent = [h["epsilon"] for h in run.history if h.get("split") == "privacy"]
    assert len(spent) == 2 and spent[0] < spent[1] == pytest.approx(privacy["epsilon"])
    assert run.config.train.compile is False


def test_physical_pieces_give_the_same_clipped_update_as_the_whole_batch(tiny_mean_model_dir: Path) -> None:
    """Opacus's BatchMemoryManager mechanism: pieces are skipped steps, then one real step."""
    from transformers import AutoModel

    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}  # identical forwards
    encoder = AutoModel.from_pretrained(tiny_mean_model_dir, add_pooling_layer=False, **no_dropout)

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.head = encoder, nn.Linear(32, 2)

        def forward(self, labels=None, **inputs):
            logits = self.head(self.encoder(**inputs).last_hidden_state[:, 0])
            return type("Output", (), {"loss": nn.functional.cross_entropy(logits, labels)})()

    rng = np.random.default_rng(0)
    split = EncodedSplit(
        sequences={"input_ids": [rng.integers(5, 100, rng.integers(3, 9)).tolist() for _ in range(12)]},
        labels=rng.integers(0, 2, 12),
        pad_token_id=0,  # the tiny tokenizer's [PAD]
    )
    torch.manual_seed(0)
    first = Classifier().train()  # from_pretrained leaves eval mode: Opacus records activations in training
    second = copy.deepcopy(first)
    results = []
    for classifier, physical in ((first, None), (second, 5)):
        plan = PrivacyPlan(4.0, 1e-5, 0.0, 0.5, 10, 0.1, "prv", physical)  # no noise: updates comparable
        private, optimizer = make_private(classifier, torch.optim.SGD(classifier.parameters(), lr=1.0), plan, 12)
        private_backward(private, optimizer, split, np.arange(12), torch.device("cpu"), plan)
        optimizer.step()
        results.append({name: p.detach().clone() for name, p in classifier.named_parameters()})
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], atol=1e-6, rtol=1e-5)


def test_poisson_batches_are_reproducible_and_about_the_expected_size() -> None:
    batches = poisson_batches(1000, 0.05, 40, seed=3, epoch=1)
    assert [b.tolist() for b in batches] == [b.tolist() for b in poisson_batches(1000, 0.05, 40, seed=3, epoch=1)]
    assert 40 < np.mean([len(b) for b in batches]) < 60  # 50 expected
    assert any(len(b) != len(batches[0]) for b in batches)  # sizes vary: each row is its own coin


def test_hugging_face_models_get_per_row_position_and_token_type_ids() -> None:
    split = EncodedSplit(sequences={"input_ids": [[5, 6, 7], [8, 9]]}, labels=np.array([0, 1]))
    batch = collate(split, np.arange(2), per_row_positions=True, token_types=True)
    assert batch["position_ids"].shape == (2, 3) and batch["position_ids"][1].tolist() == [0, 1, 2]
    assert batch["token_type_ids"].shape == (2, 3)


def test_private_backward_pads_with_the_splits_pad_id_and_skips_all_pieces_but_the_last() -> None:
    """The pad id comes from the EncodedSplit; every physical piece but the last is a skipped step."""

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(()))
            self.seen: list[dict[str, torch.Tensor]] = []

        def forward(self, labels: torch.Tensor, **inputs: torch.Tensor):
            self.seen.append({name: tensor.clone() for name, tensor in inputs.items()})
            return type("Output", (), {"loss": self.weight * labels.float().mean()})()

    class Optimizer:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def signal_skip_step(self, do_skip: bool) -> None:
            self.calls.append(f"skip={do_skip}")

        def step(self) -> None:
            self.calls.append("step")

        def zero_grad(self, set_to_none: bool = True) -> None:
            self.calls.append("zero_grad")

    split = EncodedSplit(sequences={"input_ids": [[5, 6, 7], [8], [9, 10]]}, labels=np.array([1, 0, 1]), pad_token_id=7)
    model, optimizer = Recorder(), Optimizer()
    plan = PrivacyPlan(4.0, 1e-5, 1.0, 0.5, 10, 1.0, "prv", 2)  # physical pieces of at most 2 rows
    loss = private_backward(model, optimizer, split, np.arange(3), torch.device("cpu"), plan)
    assert [batch["input_ids"].tolist() for batch in model.seen] == [[[5, 6, 7], [8, 7, 7]], [[9, 10]]]
    assert model.seen[0]["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert model.seen[0]["position_ids"].tolist() == [[0, 1, 2], [0, 1, 2]]  # per row, for Opacus
    assert "token_type_ids" not in model.seen[0]  # the model has no token-type embeddings
    assert optimizer.calls == ["skip=True", "step", "zero_grad"]  # the caller steps after the last piece
    assert loss.item() == pytest.approx((0.5 * 2 + 1.0 * 1) / 3)  # the batch's mean loss over its rows


def test_batch_norm_is_refused_with_the_fix() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    plan = PrivacyPlan(8.0, 1e-5, 1.0, 0.1, 10, 1.0, "prv", None)
    with pytest.raises(ConfigError, match="GroupNorm"):
        make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), plan, 8)


@pytest.mark.parametrize(
    ("train", "data", "message"),
    [
        ({"gradient_accumulation": 2}, {}, "max_physical_batch_size"),
        ({"precision": "bf16"}, {}, "fp32"),
        ({}, {"balance": "reweight"}, "data.balance: none"),
    ],
)
def test_settings_dp_cannot_honour_fail_before_training(
    tmp_path: Path, tiny_model_dir: Path, dp_data: dict, train: dict, data: dict, message: str
) -> None:
    config = make_config(tmp_path, tiny_model_dir, {**dp_data, **data}, train=train, privacy={"dp": {}})
    with pytest.raises(ConfigError, match=message):
        tunewise.train(config, show_progress=False)
