"""Membership inference: the loss-threshold attack on known losses, and the run-level privacy audit against
an overfit tiny model whose training rows the attack finds (right after training and rebuilt from the run
folder), and against the same training under DP-SGD."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_config, sentiment_rows, write_csv

import tunewise
from tunewise.evaluation.membership import dp_bound_check, membership_inference
from tunewise.inference import collate, predict_logits
from tunewise.jobs.privacy import audit_frames
from tunewise.prepare import prepare_data
from tunewise.tasks import make_task

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


def read_privacy(run_dir: Path) -> dict:
    return json.loads((run_dir / "privacy.json").read_text())


@pytest.fixture(scope="module")
def trained_overfit(tmp_path_factory: pytest.TempPathFactory, tiny_mean_model_dir: Path) -> tuple[Path, dict]:
    """The overfit run, and the privacy.json its training wrote (read before any test audits the run again)."""
    folder = tmp_path_factory.mktemp("privacy")
    data = {
        "train": write_csv(folder / "train.csv", random_label_rows(24, seed=11)),
        "validation": write_csv(folder / "validation.csv", random_label_rows(8, seed=12)),
        "test": write_csv(folder / "test.csv", random_label_rows(24, seed=13)),
    }
    config = make_config(folder, tiny_mean_model_dir, data, train={"epochs": 60, "early_stopping": None})
    run_dir = tunewise.train(config, show_progress=False).run_dir
    return run_dir, read_privacy(run_dir)


@pytest.fixture(scope="module")
def overfit_run(trained_overfit: tuple[Path, dict]) -> Path:
    return trained_overfit[0]


@pytest.fixture(scope="module")
def trained_unequal(tmp_path_factory: pytest.TempPathFactory, tiny_mean_model_dir: Path) -> tuple[Path, dict]:
    """A short run at seed 3 whose groups differ in size (validation held out of train; a test file that
    repeats eight training texts): the audit subsamples the members and leaves the repeated texts out."""
    folder = tmp_path_factory.mktemp("privacy-unequal")
    train = random_label_rows(60, seed=21)
    test = random_label_rows(22, seed=22) + [{"text": row["text"], "label": "class0"} for row in train[:8]]
    data = {"train": write_csv(folder / "train.csv", train), "test": write_csv(folder / "test.csv", test)}
    config = make_config(folder, tiny_mean_model_dir, data, train={"epochs": 3, "seed": 3, "early_stopping": None})
    run_dir = tunewise.train(config, show_progress=False).run_dir
    return run_dir, read_privacy(run_dir)


def test_the_attack_finds_the_training_rows_of_an_overfit_model(overfit_run: Path) -> None:
    result = tunewise.audit_privacy(overfit_run, seed=0)
    assert result["auc"] >= 0.9 and result["auc_ci95"][0] > 0.75  # measured: 0.964 [0.894, 1.0]
    assert result["member_loss_mean"] < result["non_member_loss_mean"]
    assert (result["members"], result["non_members"]) == (24, 24)
    assert "train.csv" in result["member_data"] and "test.csv" in result["non_member_data"]
    assert result["data_changed_since_training"] == []
    assert "epsilon" not in result  # run.json records no DP budget
    assert read_privacy(overfit_run) == result


@pytest.mark.parametrize(("run", "seed"), [("trained_overfit", 0), ("trained_unequal", 3)])
def test_the_audit_after_training_and_the_audit_rebuilt_from_the_run_folder_agree(
    request: pytest.FixtureRequest, tmp_path: Path, run: str, seed: int
) -> None:
    """Right after training the audit scores the model in memory (reusing the final evaluation's losses for
    the non-members); `tunewise.audit_privacy` reloads the model and rebuilds the frames from the run's
    config. With the run's seed both must attack the same rows and get the same numbers."""
    trained_dir, after_training = request.getfixturevalue(run)
    run_dir = Path(shutil.copytree(trained_dir, tmp_path / "run"))  # the module's run folder stays as trained
    rebuilt = tunewise.audit_privacy(run_dir, seed=seed)
    assert after_training["seed"] == rebuilt["seed"] == seed
    assert rebuilt["auc"] == pytest.approx(after_training["auc"], abs=1e-12)
    assert rebuilt["auc_ci95"] == pytest.approx(after_training["auc_ci95"], abs=1e-12)
    assert rebuilt["tpr_at_fpr"] == pytest.approx(after_training["tpr_at_fpr"], abs=1e-12)
    for key in ("members", "non_members", "members_available", "non_members_available"):
        assert rebuilt[key] == after_training[key], key
    for key in ("member_loss_mean", "non_member_loss_mean"):
        assert rebuilt[key] == pytest.approx(after_training[key], rel=1e-5), key
    assert rebuilt["member_data"] == after_training["member_data"]
    assert rebuilt["non_member_data"] == after_training["non_member_data"]
    assert rebuilt["data_changed_since_training"] == after_training["data_changed_since_training"] == []
    if run == "trained_unequal":  # the case the subsampling and the repeated-text rule are for
        assert rebuilt["members_available"] > rebuilt["non_members_available"] == rebuilt["members"]
        assert "whose text is also a training text" in rebuilt["non_member_data"]
        assert "held out for validation" in rebuilt["member_data"]


def test_a_recorded_budget_is_checked(overfit_run: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(overfit_run, tmp_path / "run"))
    record = json.loads((run_dir / "run.json").read_text())
    record["privacy"] = {"epsilon": 50.0, "delta": 1e-5}
    (run_dir / "run.json").write_text(json.dumps(record))
    result = tunewise.audit_privacy(run_dir)
    assert result["epsilon"] == 50.0 and result["within_dp_bound"] is True  # e^50: no attack can exceed it


def test_row_losses_are_the_rows_cross_entropy_in_input_order(overfit_run: Path) -> None:
    model = tunewise.load(overfit_run)
    frame = model.task.data.read(model.config.data.test, "test")
    encoded = model.encode(frame, "evaluate")
    losses = model.task.scoring.run(model.model, model.processor, encoded).row_losses
    assert losses is not None and losses.shape == (len(frame),)
    logits, mean_loss = predict_logits(model.model, encoded, batch_size=7)  # other batches than scoring's
    expected = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(encoded.labels), reduction="none")
    np.testing.assert_allclose(losses, expected.numpy(), rtol=1e-4, atol=1e-6)
    assert losses.mean() == pytest.approx(mean_loss, rel=1e-4)
    with torch.no_grad():  # and each row alone, unpadded: the loss belongs to that row
        for row in (0, len(frame) // 2, len(frame) - 1):
            alone = model.model(**collate(encoded, np.array([row]))).loss.item()
            assert losses[row] == pytest.approx(alone, rel=1e-4, abs=1e-6)


def test_members_are_the_rows_training_used_when_validation_is_held_out(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = {"train": write_csv(tmp_path / "train.csv", sentiment_rows(40, seed=3))}
    config = tunewise.load_config(make_config(tmp_path, tiny_model_dir, data))
    trained_on = prepare_data(make_task(config), config)  # what training's preparation splits
    task = make_task(config)  # as `tunewise audit privacy` does: a task that already knows its labels
    task.data.learn(task.data.read(config.data.train, "train"))
    members, non_members, kept, described = audit_frames(task, config, prepare_data(task, config, labels_known=True))
    assert members["_row"].tolist() == trained_on.frames["train"]["_row"].tolist()
    assert members["_row"].tolist() == trained_on.members["_row"].tolist()
    assert non_members["_row"].tolist() == trained_on.frames["validation"]["_row"].tolist()
    assert kept.tolist() == list(range(len(trained_on.frames["validation"])))  # no validation text repeats train
    assert "held out" in described["member_data"] and "held out" in described["non_member_data"]


def test_the_same_training_under_dp_leaves_the_attack_near_chance(
    tmp_path_factory: pytest.TempPathFactory, tiny_mean_model_dir: Path
) -> None:
    """The overfit run's data and epochs, trained with DP-SGD at epsilon 2: the attack that found
    the training rows of the plain run (AUC >= 0.9) is back near 0.5, within what epsilon allows.
    (Epsilon 1 on 24 rows needs noise that drowns every step, which preparation now refuses.)"""
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
        privacy={"dp": {"epsilon": 2.0}},
    )
    run = tunewise.train(config, show_progress=False)
    result = read_privacy(run.run_dir)  # audited at the end of training
    assert result["auc_ci95"][0] < 0.5 < result["auc_ci95"][1] and result["auc"] < 0.7, result["auc_ci95"]
    assert result["epsilon"] <= 2.0 and result["within_dp_bound"] is True
