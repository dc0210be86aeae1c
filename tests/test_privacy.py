"""Privacy measurements: Opacus's accountants reproduced, the loss-threshold membership attack on known
losses, and an overfit tiny model whose training rows the attack finds."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_config, sentiment_rows, write_csv
from scipy.optimize import brentq
from scipy.stats import norm

import tunewise
from tunewise.api import read_splits
from tunewise.errors import ConfigError
from tunewise.evaluation.privacy import (
    audit_frames,
    audit_privacy,
    auto_delta,
    dp_bound_check,
    membership_inference,
    noise_multiplier_for,
    per_example_losses,
    spent_epsilon,
)
from tunewise.tasks import make_task
from tunewise.training.loop import predict_logits

# ------------------------------------------------------------------------------------------ accounting


def test_rdp_reproduces_opacus_reference_values() -> None:
    """The numbers Opacus's own test suite pins (opacus/tests/accountants_test.py)."""
    assert spent_epsilon(1.5, 0.04, int(90 / 0.04), 1e-5, "rdp") == pytest.approx(7.32911117143, abs=1e-7)
    assert noise_multiplier_for(8.0, 1e-5, 0.04, 2000, "rdp") == pytest.approx(1.3562, abs=1e-4)


@pytest.mark.parametrize("mechanism", ["rdp", "prv"])
def test_spent_epsilon_equals_an_accountant_stepped_by_hand(mechanism: str) -> None:
    from opacus.accountants import PRVAccountant, RDPAccountant

    for sigma, q, steps, delta in [(1.0, 0.01, 300, 1e-5), (0.8, 0.1, 50, 1e-6)]:
        accountant = RDPAccountant() if mechanism == "rdp" else PRVAccountant()
        for _ in range(steps):  # as Opacus's optimizer hook records a run, one step at a time
            accountant.step(noise_multiplier=sigma, sample_rate=q)
        assert spent_epsilon(sigma, q, steps, delta, mechanism) == pytest.approx(accountant.get_epsilon(delta=delta))


def exact_gaussian_epsilon(sigma: float, steps: int, delta: float) -> float:
    """Without subsampling, `steps` Gaussian mechanisms compose exactly into one with mu = sqrt(steps) / sigma,
    whose (epsilon, delta) curve is analytic (Balle & Wang 2018): an independent reference for the PRV."""
    mu = np.sqrt(steps) / sigma
    return brentq(lambda eps: norm.cdf(-eps / mu + mu / 2) - np.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta, 0, 100)


@pytest.mark.parametrize(("sigma", "steps", "delta"), [(1.0, 1, 1e-5), (2.0, 10, 1e-5), (5.0, 100, 1e-6)])
def test_prv_is_a_tight_upper_bound_on_the_exact_gaussian(sigma: float, steps: int, delta: float) -> None:
    exact = exact_gaussian_epsilon(sigma, steps, delta)
    prv = spent_epsilon(sigma, 1.0, steps, delta, "prv")
    rdp = spent_epsilon(sigma, 1.0, steps, delta, "rdp")
    assert exact <= prv <= exact + 0.02  # Opacus's eps_error is 0.01 and it reports the upper end
    assert prv <= rdp  # RDP's conversion to (epsilon, delta) is the looser bound


@pytest.mark.parametrize("mechanism", ["rdp", "prv"])
def test_noise_multiplier_round_trip_meets_the_target(mechanism: str) -> None:
    sigma = noise_multiplier_for(3.0, 1e-5, 0.02, 500, mechanism)
    assert 3.0 - 0.02 <= spent_epsilon(sigma, 0.02, 500, 1e-5, mechanism) <= 3.0


def test_impossible_budget_and_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="cannot be met"):
        noise_multiplier_for(1e-4, 1e-12, 1.0, 100_000, "rdp")
    with pytest.raises(ConfigError, match="accountant"):
        spent_epsilon(1.0, 0.1, 10, 1e-5, "gdp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="delta"):
        spent_epsilon(1.0, 0.1, 10, 0.0)
    assert spent_epsilon(1.0, 0.1, 0, 1e-5) == 0.0


@pytest.mark.parametrize(("rows", "delta"), [(1, 1e-1), (9, 1e-2), (10, 1e-2), (1000, 1e-4), (4127, 1e-5)])
def test_auto_delta_is_a_power_of_ten_at_most_a_tenth_of_one_over_n(rows: int, delta: float) -> None:
    assert auto_delta(rows) == pytest.approx(delta)
    assert auto_delta(rows) <= 1 / (10 * rows) + 1e-18


# ------------------------------------------------------------------------------------------ the attack


def test_members_with_clearly_lower_losses_are_found() -> None:
    rng = np.random.default_rng(0)
    members, non_members = rng.exponential(0.05, 300), 1.0 + rng.exponential(1.0, 200)
    result = membership_inference(members, non_members, seed=0, bootstrap=200)
    assert (result["members"], result["non_members"]) == (200, 200)  # the larger group subsampled
    assert (result["members_available"], result["non_members_available"]) == (300, 200)
    assert result["auc"] == 1.0 and result["auc_ci95"][0] == pytest.approx(1.0)
    assert result["tpr_at_fpr"] == {"0.01": 1.0, "0.001": 1.0}
    assert "note" in result  # 200 non-members cannot resolve FPR 0.001


def test_identical_distributions_give_auc_near_one_half() -> None:
    rng = np.random.default_rng(1)
    result = membership_inference(rng.exponential(1.0, 1000), rng.exponential(1.0, 1000), seed=0, bootstrap=300)
    low, high = result["auc_ci95"]
    assert abs(result["auc"] - 0.5) < 0.04 and low < 0.5 < high and high - low < 0.1
    assert result["tpr_at_fpr"]["0.01"] < 0.05
    assert "note" not in result  # 1,000 non-members resolve FPR 0.001


def test_tpr_at_fpr_is_the_best_point_at_or_below_the_level() -> None:
    non_members = np.arange(1.0, 101.0)  # losses 1..100
    members = np.array([0.5] * 30 + [1.5] + [200.0] * 69)
    result = membership_inference(members, non_members, bootstrap=10)
    # FPR 0: the 30 members below every non-member. FPR 0.01: one non-member (loss 1) also flagged, and the
    # member at 1.5 with it. Nothing better exists at or below either level.
    assert result["tpr_at_fpr"] == {"0.01": 0.31, "0.001": 0.30}
    points = result["operating_points"]
    assert points["0.01"]["fpr"] == pytest.approx(0.01) and points["0.001"]["fpr"] == 0.0
    assert (points["0.01"]["members_flagged"], points["0.01"]["non_members_flagged"]) == (31, 1)

    tiny = membership_inference(np.array([0.1, 0.2, 0.9, 1.5]), np.array([0.5, 1.0, 1.2, 2.0]), bootstrap=10)
    assert tiny["tpr_at_fpr"] == {"0.01": 0.5, "0.001": 0.5}  # 4 non-members: read at FPR 0
    assert tiny["auc"] == pytest.approx(12 / 16)  # of 16 member/non-member pairs, 4 + 4 + 3 + 1 ordered right


def test_dp_bound_check_on_hand_values() -> None:
    e = np.e
    assert dp_bound_check(0.027, 0.01, 1.0, 1e-5)  # e x 0.01 + 1e-5 = 0.02719
    assert not dp_bound_check(0.03, 0.01, 1.0, 1e-5)
    assert dp_bound_check(0.01 + 1e-5, 0.01, 0.0, 1e-5)  # epsilon 0: TPR may exceed FPR by delta only
    assert not dp_bound_check(0.01 + 2e-5, 0.01, 0.0, 1e-5)
    assert dp_bound_check(e**2 * 0.001, 0.001, 2.0, 0.0) and not dp_bound_check(0.5, 0.0, 8.0, 1e-5)


def test_dp_verdict_uses_confidence_limits() -> None:
    rng = np.random.default_rng(2)
    members, non_members = rng.exponential(0.05, 500), 1.0 + rng.exponential(1.0, 500)
    strong = membership_inference(members, non_members, bootstrap=50, epsilon=1.0, delta=1e-5)
    assert strong["within_dp_bound"] is False and "does not hold" in strong["dp_bound"]
    assert membership_inference(members, non_members, bootstrap=50, epsilon=8.0)["within_dp_bound"] is True
    # chance alone: 20 members, the lowest loss a member. The point estimate (TPR 0.05 at FPR 0) exceeds
    # e^1 x 0 + 1e-5; the confidence limits do not, so the verdict is not a false alarm
    chance = membership_inference(
        np.linspace(0.0, 1.9, 20), np.linspace(0.05, 1.95, 20), bootstrap=50, epsilon=1.0, delta=1e-5
    )
    assert chance["operating_points"]["0.01"]["tpr"] > 0 and chance["within_dp_bound"] is True
    assert "does not contradict" in chance["dp_bound"]


# ------------------------------------------------------------------------------------------ a run


def random_label_rows(n: int, seed: int, classes: int = 4) -> list[dict]:
    """Sentiment texts with labels drawn at random from `classes` names: only memorising each row fits them.

    Four classes rather than two: an unseen row then gets its (random) label right by chance a quarter of
    the time instead of half, so fewer non-members look like members (over six seeds, 60 epochs: AUC
    0.95-1.00 with four classes, 0.70-0.87 with two)."""
    rng = random.Random(seed)
    labels = [f"class{i % classes}" for i in range(n)]
    rng.shuffle(labels)
    return [{"text": row["text"], "label": label} for row, label in zip(sentiment_rows(n, seed), labels, strict=True)]


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory: pytest.TempPathFactory, tiny_mean_model_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("privacy")
    data = {
        "train": write_csv(folder / "train.csv", random_label_rows(24, seed=11)),
        "validation": write_csv(folder / "validation.csv", random_label_rows(8, seed=12)),
        "test": write_csv(folder / "test.csv", random_label_rows(24, seed=13)),
    }
    config = make_config(folder, tiny_mean_model_dir, data, train={"epochs": 60, "early_stopping": None})
    return tunewise.train(config, show_progress=False).run_dir


def test_the_attack_finds_the_training_rows_of_an_overfit_model(overfit_run: Path) -> None:
    result = audit_privacy(overfit_run, seed=0)
    assert result["auc"] >= 0.9 and result["auc_ci95"][0] > 0.75  # measured: 0.964 [0.894, 1.0]
    assert result["member_loss_mean"] < result["non_member_loss_mean"]
    assert (result["members"], result["non_members"]) == (24, 24)
    assert "train.csv" in result["member_data"] and "test.csv" in result["non_member_data"]
    assert result["data_changed_since_training"] == []
    assert "epsilon" not in result  # run.json records no DP budget
    assert json.loads((overfit_run / "privacy.json").read_text()) == result


def test_a_recorded_budget_is_checked(overfit_run: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = Path(shutil.copytree(overfit_run, tmp_path / "run"))
    record = json.loads((run_dir / "run.json").read_text())
    record["privacy"] = {"epsilon": 50.0, "delta": 1e-5}
    (run_dir / "run.json").write_text(json.dumps(record))
    result = audit_privacy(run_dir)
    assert result["epsilon"] == 50.0 and result["within_dp_bound"] is True  # e^50: no attack can exceed it


def test_per_example_losses_are_the_rows_cross_entropy_in_input_order(overfit_run: Path) -> None:
    model = tunewise.load(overfit_run)
    frame = model.task.read_split(model.config.data.test, "test")
    encoded = model.task.encode(frame, model.tokenizer, model.max_length)
    pad = model.tokenizer.pad_token_id
    losses = per_example_losses(model.model, encoded, 5, model.device, pad)
    logits, mean_loss = predict_logits(model.model, encoded, 7, model.device, pad)
    expected = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(encoded.labels), reduction="none")
    np.testing.assert_allclose(losses, expected.numpy(), rtol=1e-4, atol=1e-6)
    assert losses.mean() == pytest.approx(mean_loss, rel=1e-4)


def test_members_are_the_rows_training_used_when_validation_is_held_out(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = {"train": write_csv(tmp_path / "train.csv", sentiment_rows(40, seed=3))}
    config = tunewise.load_config(make_config(tmp_path, tiny_model_dir, data))
    trained_on = read_splits(make_task(config), config)
    task = make_task(config)
    task.fit_labels(task.read_split(config.data.train, "train"))
    members, non_members, described = audit_frames(SimpleNamespace(config=config, task=task))
    assert members["_row"].tolist() == trained_on["train"]["_row"].tolist()
    assert non_members["_row"].tolist() == trained_on["validation"]["_row"].tolist()
    assert "held out" in described["member_data"] and "held out" in described["non_member_data"]


def test_the_same_training_under_dp_leaves_the_attack_near_chance(
    tmp_path_factory: pytest.TempPathFactory, tiny_mean_model_dir: Path
) -> None:
    """The overfit run's data and epochs, trained with DP-SGD at epsilon 1: the attack that found
    the training rows of the plain run (AUC >= 0.9) is back near 0.5, within what epsilon allows."""
    folder = tmp_path_factory.mktemp("private")
    data = {
        "train": write_csv(folder / "train.csv", random_label_rows(24, seed=11)),
        "validation": write_csv(folder / "validation.csv", random_label_rows(8, seed=12)),
        "test": write_csv(folder / "test.csv", random_label_rows(24, seed=13)),
    }
    config = make_config(
        folder,
        tiny_mean_model_dir,
        data,
        train={"epochs": 60, "batch_size": 8, "early_stopping": None},
        privacy={"dp": {"epsilon": 1.0}},
    )
    run = tunewise.train(config, show_progress=False)
    result = json.loads((run.run_dir / "privacy.json").read_text())  # audited at the end of training
    assert result["auc_ci95"][0] < 0.5 < result["auc_ci95"][1] and result["auc"] < 0.7, result["auc_ci95"]
    assert result["epsilon"] <= 1.0 and result["within_dp_bound"] is True
