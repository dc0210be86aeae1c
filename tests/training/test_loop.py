"""The training loop (tunewise.training.loop.fit): exact resume through `tunewise.train`, and unit
tests that call `fit` directly on a tiny BERT, with settings built by hand, an Accelerator on CPU and
an evaluate callback that records what it saw: learning, best-model selection and early stopping,
gradient accumulation, resume after a crash, and DP-SGD's Poisson batches and privacy records.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from conftest import (
    UNIT_TEST_THREADS,
    Interrupted,
    assert_same_weights,
    make_config,
    read_json,
    saved_weights,
    sentiment_rows,
    train_until_crash,
    without_timings,
    write_csv,
)
from torch.optim.optimizer import register_optimizer_step_post_hook

import tunewise
import tunewise.training.loop as training_loop
import tunewise.training.steps as training_steps
from tunewise.tasks import load_config, make_task
from tunewise.training.accounting import plan_privacy
from tunewise.training.loop import fit
from tunewise.training.settings import Selection, TrainingSettings
from tunewise.training.steps import run_accelerator
from tunewise.types import CheckpointHints, EncodedSplit


def train(config: dict, **kwargs: Any) -> tunewise.Run:
    return tunewise.train(config, show_progress=False, **kwargs)


# ------------------------------------------------------------------------------------------ resume through train

RESUME_TRAIN = {"epochs": 3, "learning_rate": 3e-3}  # 33 steps of 11 per epoch; a loss line every 10 steps


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_mean_model_dir, single_label_data) -> tunewise.Run:
    folder = tmp_path_factory.mktemp("uninterrupted")
    return train(make_config(folder, tiny_mean_model_dir, single_label_data, train=RESUME_TRAIN))


@pytest.mark.parametrize(
    ("checkpoint_every", "interrupt_after", "resumes_at"),
    [
        (3, 4, 12),  # mid-epoch 2 and between two loss lines (steps 10 and 20)
        (11, 1, 11),  # exactly at the end of epoch 1, before its evaluation ran
    ],
)
def test_resume_matches_an_uninterrupted_run(
    tmp_path,
    monkeypatch,
    tiny_mean_model_dir,
    single_label_data,
    uninterrupted,
    checkpoint_every,
    interrupt_after,
    resumes_at,
):
    config = make_config(
        tmp_path, tiny_mean_model_dir, single_label_data, train={**RESUME_TRAIN, "checkpoint_every": checkpoint_every}
    )
    saved = train_until_crash(monkeypatch, config, after_checkpoints=interrupt_after)
    assert saved[-1] == resumes_at
    run_dir = Path(config["output_dir"])
    assert read_json(run_dir / "run.json")["status"] == "training"
    assert not (run_dir / "model").exists()

    resumed = train(config, resume=True)
    assert_same_weights(saved_weights(resumed.run_dir / "model"), saved_weights(uninterrupted.run_dir / "model"))
    # same losses, learning rates and evaluations (wall-clock seconds differ, of course)
    assert without_timings(resumed.history) == without_timings(uninterrupted.history)
    assert resumed.metrics == uninterrupted.metrics
    record, reference = read_json(run_dir / "run.json"), read_json(uninterrupted.run_dir / "run.json")
    assert record["status"] == "finished"
    assert (record["steps"], record["best_step"]) == (reference["steps"], reference["best_step"])


def test_resume_refuses_changed_data(tmp_path, monkeypatch, tiny_mean_model_dir):
    train_file = tmp_path / "train.csv"
    data = {"train": write_csv(train_file, sentiment_rows(96, seed=1))}
    config = make_config(tmp_path, tiny_mean_model_dir, data, train={"epochs": 1, "checkpoint_every": 3})
    train_until_crash(monkeypatch, config)
    write_csv(train_file, sentiment_rows(96, seed=99))  # same file name, other rows
    with pytest.raises(tunewise.TunewiseError, match="data"):
        train(config, resume=True)


def test_resume_keeps_only_the_newest_checkpoints(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(
            tmp_path, tiny_mean_model_dir, single_label_data, train={"epochs": 1, "checkpoint_every": 2, "keep_last": 2}
        )
    )
    checkpoints = sorted(p.name for p in (run.run_dir / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-00000008", "checkpoint-00000010"]


# ------------------------------------------------------------------------------------------ fit, called directly

ROWS, BATCH = 96, 8  # single_label_data's train file: 12 batches of 8 per epoch


@dataclasses.dataclass
class Pieces:
    """A text-classification task that has learnt its labels, and its encoded train and validation rows."""

    task: Any
    source: Any
    processor: Any
    train: EncodedSplit
    validation: EncodedSplit

    def model(self) -> torch.nn.Module:
        """A fresh tiny BERT with a mean-pooled head, the same weights every time."""
        set_seed(0)
        return self.task.model.build(self.source, CheckpointHints(), "mean")

    def score(self, model: torch.nn.Module, split: EncodedSplit) -> dict[str, Any]:
        outputs = self.task.scoring.run(model, self.processor, split)
        return {**self.task.scoring.metrics(outputs, split), "loss": outputs.loss}


@pytest.fixture(scope="module")
def pieces(tmp_path_factory, tiny_mean_model_dir, single_label_data) -> Pieces:
    torch.set_num_threads(UNIT_TEST_THREADS)
    folder = tmp_path_factory.mktemp("fit")
    task = make_task(load_config(make_config(folder, tiny_mean_model_dir, single_label_data)))
    source = task.model.source(str(tiny_mean_model_dir))
    processor = task.model.processor(source)
    train_frame = task.data.read(single_label_data["train"], "train")
    task.data.learn(train_frame)
    validation_frame = task.data.read(single_label_data["test"], "validation")
    task.data.check(validation_frame, "validation", single_label_data["test"])
    return Pieces(
        task,
        source,
        processor,
        task.data.encode(train_frame, processor, 32, "train"),
        task.data.encode(validation_frame, processor, 32, "evaluate"),
    )


@pytest.fixture
def accelerator() -> Accelerator:
    return run_accelerator(mixed_precision="no", cpu=True)  # as the train job does: an earlier run may be bf16


def settings(epochs: int = 1, gradient_accumulation: int = 1, **changes: Any) -> TrainingSettings:
    per_epoch = -(-(ROWS // BATCH) // gradient_accumulation)  # the epoch's last, partial accumulation still steps
    plain = TrainingSettings(
        batch_size=BATCH,
        learning_rate=3e-3,
        epochs=epochs,
        steps_per_epoch=per_epoch,
        total_steps=epochs * per_epoch,
        gradient_accumulation=gradient_accumulation,
        weight_decay=0.0,
        warmup_ratio=0.0,
        scheduler="linear",
        max_grad_norm=1.0,
        layerwise_lr_decay=1.0,
        mixed_precision="no",
        seed=0,
        eval_every=None,
        checkpoint_every=10_000,
        keep_last=2,
        compile=False,
        selection=None,
        privacy=None,
    )
    return dataclasses.replace(plain, **changes)


class Evaluator:
    """The evaluate callback: the task's metrics on validation, and a copy of the weights it scored.

    `accuracy`, when given, replaces the measured accuracy evaluation by evaluation, so a test can say
    which evaluation is the best."""

    def __init__(self, pieces: Pieces, accelerator: Accelerator, accuracy: list[float] | None = None):
        self.pieces, self.accelerator, self.accuracy = pieces, accelerator, accuracy
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.metrics: list[dict[str, Any]] = []

    def __call__(self, model: torch.nn.Module, split: EncodedSplit) -> tuple[dict[str, Any], int]:
        """The metrics, and as the outputs behind them the evaluation's number (which fit keeps for the best)."""
        assert split is self.pieces.validation
        metrics = self.pieces.score(model, split)
        if self.accuracy is not None:
            metrics["accuracy"] = self.accuracy[len(self.metrics)]
        bare = self.accelerator.unwrap_model(model)
        self.snapshots.append({name: value.detach().clone() for name, value in bare.state_dict().items()})
        self.metrics.append(metrics)
        return metrics, len(self.metrics) - 1


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def validations(history: list[dict]) -> list[dict]:
    return [record for record in history if record.get("split") == "validation"]


def run_fit(
    pieces: Pieces,
    model: torch.nn.Module,
    training: TrainingSettings,
    evaluate: Any,
    accelerator: Accelerator,
    folder: Path,
    **options: Any,
) -> Any:
    """`fit` with the checkpoints in `folder/checkpoints` and no progress bar."""
    return fit(
        model,
        pieces.train,
        pieces.validation,
        training,
        evaluate,
        accelerator,
        Path(folder) / "checkpoints",
        show_progress=False,
        **options,
    )


def test_fit_lowers_the_loss_on_learnable_data(pieces, accelerator, tmp_path):
    model = pieces.model()
    before = pieces.score(model, pieces.validation)
    evaluate = Evaluator(pieces, accelerator)
    result = run_fit(pieces, model, settings(epochs=3), evaluate, accelerator, tmp_path)

    assert result.state.step == result.total_steps == 3 * 12
    assert result.state.samples_seen == 3 * ROWS
    losses = [evaluation["loss"] for evaluation in evaluate.metrics]
    assert len(losses) == 3  # one evaluation at each epoch's end
    assert before["loss"] > losses[0] > losses[1] > losses[2], (before["loss"], losses)  # better at every epoch
    assert losses[-1] < before["loss"] - 0.1
    logged = [record["loss"] for record in result.state.history if "split" not in record]
    assert [record["step"] for record in result.state.history if "split" not in record] == [10, 20, 30, 36]
    assert logged[-1] < logged[0]
    assert pieces.score(model, pieces.validation)["loss"] == pytest.approx(losses[-1], abs=1e-6)
    assert not (tmp_path / "checkpoints").exists()  # checkpoint_every beyond the run: nothing written


def test_fit_stops_early_and_leaves_the_best_weights_in_the_model(pieces, accelerator, tmp_path):
    model = pieces.model()
    # evaluations at steps 2, 4, 6: the second is the best, the third does not improve: patience 1 stops
    evaluate = Evaluator(pieces, accelerator, accuracy=[0.5, 0.9, 0.4, 0.95, 0.99])
    training = settings(epochs=2, eval_every=2, selection=Selection("accuracy", patience=1, min_delta=0.0))
    result = run_fit(pieces, model, training, evaluate, accelerator, tmp_path)

    assert result.state.stopped_early is True
    assert result.state.step == 6 < result.total_steps == 24
    assert result.state.best_step == 4
    assert [record["step"] for record in validations(result.state.history)] == [2, 4, 6]
    assert len(evaluate.snapshots) == 3
    assert result.best_validation is not None and result.best_validation["accuracy"] == 0.9
    assert result.best_validation["loss"] == pytest.approx(evaluate.metrics[1]["loss"])
    final = weights_of(model)
    assert_same_weights(final, evaluate.snapshots[1])
    assert result.best_outputs == 1  # the outputs of the evaluation whose weights the model holds
    assert any(not torch.equal(final[name], evaluate.snapshots[2][name]) for name in final)
    assert any(not torch.equal(final[name], evaluate.snapshots[0][name]) for name in final)


def test_fit_without_a_selection_keeps_the_final_weights(pieces, accelerator, tmp_path):
    model = pieces.model()
    evaluate = Evaluator(pieces, accelerator, accuracy=[0.9, 0.1])  # a worse last evaluation is still kept
    result = run_fit(pieces, model, settings(epochs=2), evaluate, accelerator, tmp_path)

    assert result.state.stopped_early is False
    assert result.state.step == 24
    assert result.state.best_step == 24
    assert [record["step"] for record in validations(result.state.history)] == [12, 24]
    assert result.best_validation is not None and result.best_validation["accuracy"] == 0.1
    final = weights_of(model)
    assert_same_weights(final, evaluate.snapshots[-1])
    assert result.best_outputs == 1  # the last evaluation's outputs, as its weights are the ones kept
    assert any(not torch.equal(final[name], evaluate.snapshots[0][name]) for name in final)


@pytest.fixture
def optimizer_steps() -> Any:
    """Counts every optimizer step taken while the test runs (a global post-step hook)."""
    counted: list[int] = []
    handle = register_optimizer_step_post_hook(lambda *args: counted.append(1))
    yield counted
    handle.remove()


def test_gradient_accumulation_takes_half_the_optimizer_steps(pieces, accelerator, tmp_path, optimizer_steps):
    plain = run_fit(pieces, pieces.model(), settings(), Evaluator(pieces, accelerator), accelerator, tmp_path / "a")
    plain_steps = len(optimizer_steps)
    optimizer_steps.clear()
    accumulated = run_fit(
        pieces,
        pieces.model(),
        settings(gradient_accumulation=2),
        Evaluator(pieces, accelerator),
        accelerator,
        tmp_path / "b",
    )
    assert plain_steps == plain.state.step == 12
    assert len(optimizer_steps) == accumulated.state.step == 6
    assert plain.state.samples_seen == accumulated.state.samples_seen == ROWS  # every batch still trains
    assert plain.state.epoch == accumulated.state.epoch == 1


def test_fit_resumes_after_a_crash_to_the_same_weights(pieces, accelerator, tmp_path, monkeypatch):
    training = settings(epochs=2, checkpoint_every=5, selection=Selection("loss", patience=10, min_delta=0.0))
    reference_model = pieces.model()
    set_seed(0)
    reference = run_fit(pieces, reference_model, training, Evaluator(pieces, accelerator), accelerator, tmp_path / "a")

    real_save = training_loop.save_checkpoint
    saved: list[int] = []

    def save_then_crash(folder: Path, step: int, payload: dict, keep_last: int) -> Path:
        path = real_save(folder, step, payload, keep_last)
        saved.append(step)
        if len(saved) == 2:
            raise Interrupted
        return path

    monkeypatch.setattr(training_loop, "save_checkpoint", save_then_crash)
    crashed_model = pieces.model()
    set_seed(0)
    with pytest.raises(Interrupted):
        run_fit(pieces, crashed_model, training, Evaluator(pieces, accelerator), accelerator, tmp_path / "b")
    monkeypatch.setattr(training_loop, "save_checkpoint", real_save)
    assert saved == [5, 10]  # mid-epoch 1, between two loss lines
    checkpoints = tmp_path / "b" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-00000005", "checkpoint-00000010"]

    resumed_model = pieces.model()  # a fresh process would start from the pretrained weights again
    set_seed(123)  # and from other random state: the checkpoint restores it
    resumed = run_fit(
        pieces, resumed_model, training, Evaluator(pieces, accelerator), accelerator, tmp_path / "b", resume=True
    )
    assert_same_weights(weights_of(resumed_model), weights_of(reference_model))
    assert without_timings(resumed.state.history) == without_timings(reference.state.history)
    assert (resumed.state.step, resumed.state.best_step) == (reference.state.step, reference.state.best_step)
    assert resumed.state.samples_seen == reference.state.samples_seen
    assert resumed.best_validation == reference.best_validation


def test_fit_with_privacy_draws_poisson_batches_and_records_the_spent_epsilon(
    pieces, accelerator, tmp_path, monkeypatch
):
    training = settings(epochs=2, max_grad_norm=None)
    plan = plan_privacy(
        epsilon=8.0,
        delta=1e-3,
        max_grad_norm=1.0,
        accountant="rdp",
        max_physical_batch_size=None,
        rows=len(pieces.train),
        batch_size=BATCH,
        total_steps=training.total_steps,
    )
    training = dataclasses.replace(training, privacy=plan)

    draws: list[tuple[tuple, list[np.ndarray]]] = []
    real_poisson = training_steps.poisson_batches

    def poisson(*args: Any) -> list[np.ndarray]:
        batches = real_poisson(*args)
        draws.append((args, batches))
        return batches

    def no_shuffled_batches(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("DP-SGD must not use fixed-size shuffled batches")

    monkeypatch.setattr(training_steps, "poisson_batches", poisson)
    monkeypatch.setattr(training_steps, "length_grouped_batches", no_shuffled_batches)
    result = run_fit(pieces, pieces.model(), training, Evaluator(pieces, accelerator), accelerator, tmp_path)

    assert [args for args, _ in draws] == [(ROWS, plan.sample_rate, 12, 0, 0), (ROWS, plan.sample_rate, 12, 0, 1)]
    assert plan.sample_rate == pytest.approx(BATCH / ROWS)
    sizes = [len(batch) for _, batches in draws for batch in batches]
    assert len(set(sizes)) > 1, "Poisson batches vary in size"
    assert result.state.samples_seen == sum(sizes)  # the loop trained on exactly the drawn batches
    steps_taken = sum(len(batches) for _, batches in draws)
    assert result.state.step == min(steps_taken, training.total_steps)

    history = result.state.history
    privacy = [record for record in history if record.get("split") == "privacy"]
    assert [record["epoch"] for record in privacy] == [1, 2]  # one record at each epoch's end
    ends = np.cumsum([len(batches) for _, batches in draws]).tolist()
    assert [record["step"] for record in privacy] == [min(end, training.total_steps) for end in ends]
    for record in privacy:
        assert record["epsilon"] == pytest.approx(plan.spent(record["step"]))
        following = history[history.index(record) + 1]  # the epoch's evaluation comes right after
        assert following["split"] == "validation" and following["step"] == record["step"]
    assert 0 < privacy[0]["epsilon"] < privacy[1]["epsilon"] <= plan.epsilon * 1.01
