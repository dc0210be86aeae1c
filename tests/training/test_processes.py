"""Several processes on CPU: torchrun on the gloo backend, 2 processes, against one process.

Each process computes its share of every batch and DDP averages the shares' gradients, weighted so
the average is the whole batch's gradient: a 2-process run with the same (global) batch ends with the
weights of the 1-process run, to float rounding. The tiny model has no dropout, whose masks would
differ with the rows each process holds. Each torchrun costs two interpreter starts (~10 s here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import build_tiny_bert, make_config, read_json, saved_weights, sentiment_rows, write_csv

from tunewise.jobs.launch import LAUNCHER_VARIABLES, Processes, launcher_command
from tunewise.runs.layout import CHECKPOINT_FOLDER, METRICS_FILE, MODEL_FOLDER, PREDICTIONS_FILE, RUN_FILE

TIMEOUT = 300  # a hang fails the test instead of the suite
CRASH_SCRIPT = Path(__file__).with_name("crash_after_checkpoint.py")


@pytest.fixture(scope="module")
def no_dropout_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_tiny_bert(tmp_path_factory.mktemp("no-dropout") / "model")
    config = read_json(folder / "config.json")
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("processes-data")
    # 42 rows in batches of 8: the epoch's last batch has 2 rows, one per process
    return {
        "train": write_csv(folder / "train.csv", sentiment_rows(42, 1)),
        "validation": write_csv(folder / "validation.csv", sentiment_rows(11, 2)),
        "test": write_csv(folder / "test.csv", sentiment_rows(13, 3)),
    }


def write_config(tmp_path: Path, model: Path, data: dict[str, str], name: str, **train) -> Path:
    settings = {"epochs": 3, "batch_size": 8, "gradient_accumulation": 2, "learning_rate": 1e-2, **train}
    config = make_config(tmp_path, model, data, train=settings, output_dir=str(tmp_path / name))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def tunewise(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m tunewise ARGS` as a user runs it, outside any launcher pytest might be under."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    command = [sys.executable, "-m", "tunewise", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def torchrun(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)


def max_difference(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> float:
    assert left.keys() == right.keys()
    return max(float((left[name] - right[name]).abs().max()) for name in left)


def losses(run: Path) -> list[tuple[int, float]]:
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [(h["step"], h["loss"] if "loss" in h else h["metrics"]["loss"]) for h in history if "step" in h]


def assert_same_losses(left: Path, right: Path, tolerance: float) -> None:
    """The same steps logged, with training and validation losses equal to `tolerance`."""
    assert [step for step, _ in losses(left)] == [step for step, _ in losses(right)]
    assert [loss for _, loss in losses(left)] == pytest.approx([loss for _, loss in losses(right)], abs=tolerance)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory: pytest.TempPathFactory, no_dropout_model: Path, data: dict[str, str]):
    """The same config trained in one process and, through `--nproc 2`, in two."""
    tmp_path = tmp_path_factory.mktemp("one-and-two")
    one = tunewise("train", write_config(tmp_path, no_dropout_model, data, "one"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = tunewise("train", write_config(tmp_path, no_dropout_model, data, "two"), "--nproc", "2", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    return tmp_path / "one", tmp_path / "two", two


def test_two_processes_end_with_the_weights_and_metrics_of_one(one_and_two, no_dropout_model: Path) -> None:
    one, two, _ = one_and_two
    assert read_json(one / RUN_FILE)["processes"] == 1
    assert read_json(two / RUN_FILE)["processes"] == 2
    trained_one, trained_two = saved_weights(one / MODEL_FOLDER), saved_weights(two / MODEL_FOLDER)
    assert max_difference(trained_one, trained_two) < 1e-5
    start = saved_weights(no_dropout_model)
    moved = max(float((trained_one[f"bert.{n}"] - start[n]).abs().max()) for n in start if f"bert.{n}" in trained_one)
    assert moved > 1e-2  # training changed the weights: the agreement is not two untouched models
    assert_same_losses(one, two, 1e-5)  # the logged losses are the whole batch's, not one process's share
    metrics_one, metrics_two = read_json(one / METRICS_FILE), read_json(two / METRICS_FILE)
    for split in ("validation", "test"):
        assert metrics_two[split]["n"] == metrics_one[split]["n"]  # every row once, none duplicated as padding
        assert metrics_two[split]["accuracy"] == metrics_one[split]["accuracy"]
        assert metrics_two[split]["loss"] == pytest.approx(metrics_one[split]["loss"], abs=1e-5)
    assert len((two / PREDICTIONS_FILE).read_text().splitlines()) == 13 + 1


def test_only_the_first_process_speaks_and_writes(one_and_two) -> None:
    _, two, completed = one_and_two
    assert completed.stderr.count("validation:") == 3  # one line per evaluation, not one per process
    assert completed.stderr.count("done:") == 1
    assert "starting 2 processes" in completed.stderr
    assert (two / "report.html").is_file() and (two / "model_card.md").is_file()


def test_a_two_process_run_killed_after_a_checkpoint_resumes_to_the_same_weights(
    tmp_path: Path, one_and_two, no_dropout_model: Path, data: dict[str, str]
) -> None:
    config = write_config(tmp_path, no_dropout_model, data, "killed", checkpoint_every=4)
    killed = torchrun(CRASH_SCRIPT, config, cwd=tmp_path)
    assert killed.returncode != 0
    assert [p.name for p in (tmp_path / "killed" / CHECKPOINT_FOLDER).iterdir()] == ["checkpoint-00000004"]
    assert not (tmp_path / "killed" / MODEL_FOLDER).exists()
    resumed = torchrun("-m", "tunewise", "train", config, "--resume", cwd=tmp_path)  # plain torchrun works too
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, uninterrupted, _ = one_and_two
    assert (
        max_difference(saved_weights(tmp_path / "killed" / MODEL_FOLDER), saved_weights(uninterrupted / MODEL_FOLDER))
        < 1e-6
    )
    assert_same_losses(tmp_path / "killed", uninterrupted, 1e-6)


def test_an_accelerate_config_file_runs_the_same_training(
    tmp_path: Path, one_and_two, no_dropout_model: Path, data: dict[str, str]
) -> None:
    """`train.accelerate_config` starts `accelerate launch --config_file`, with the file's process count."""
    # examples/accelerate/ddp.yaml for two CPU processes (Accelerate's MULTI_CPU type would start only one)
    recipe = tmp_path / "cpu.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU", "num_processes": 2,
             "num_machines": 1, "machine_rank": 0, "mixed_precision": "no", "use_cpu": True}
        ),
        encoding="utf-8",
    )  # fmt: skip
    config = write_config(tmp_path, no_dropout_model, data, "accelerate", accelerate_config=str(recipe))
    completed = tunewise("train", config, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "tunewise.jobs.launch accelerate --config_file" in " ".join(completed.stderr.split())
    record = read_json(tmp_path / "accelerate" / RUN_FILE)
    assert (record["processes"], record["distributed_type"]) == (2, "MULTI_CPU")
    _, two, _ = one_and_two
    assert (
        max_difference(saved_weights(tmp_path / "accelerate" / MODEL_FOLDER), saved_weights(two / MODEL_FOLDER)) < 1e-6
    )


@pytest.mark.parametrize("distributed_type", ["FSDP", "DEEPSPEED"])
def test_sharded_training_is_refused_with_the_way_out(distributed_type: str) -> None:
    from tunewise.errors import ConfigError
    from tunewise.jobs.launch import refuse_sharded_training

    with pytest.raises(ConfigError, match="shards the training state") as refused:
        refuse_sharded_training(distributed_type)
    assert "--nproc N" in str(refused.value)
    refuse_sharded_training("MULTI_GPU")  # DDP goes ahead


def test_differential_privacy_refuses_several_processes(
    tmp_path: Path, no_dropout_model: Path, data: dict[str, str]
) -> None:
    config = write_config(tmp_path, no_dropout_model, data, "private", gradient_accumulation=1)
    raw = yaml.safe_load(config.read_text())
    raw["privacy"] = {"dp": {"epsilon": 8.0}}
    config.write_text(yaml.safe_dump(raw))
    completed = tunewise("train", config, "--nproc", "2", cwd=tmp_path)
    assert completed.returncode != 0
    message = " ".join(completed.stderr.split())
    assert "privacy.dp trains in one process, and this run has 2" in message
    assert "Traceback" not in completed.stderr
    assert "of the run stopped with an error (its message is above)" in message
    assert not (tmp_path / "private").exists()


def test_a_study_runs_its_trials_in_two_processes(tmp_path: Path, no_dropout_model: Path, data: dict[str, str]) -> None:
    """`tunewise tune --nproc 2`: the first process samples each trial and tells the others; every trial trains
    in both; one set of study files."""
    config = write_config(tmp_path, no_dropout_model, data, "study", epochs=2, early_stopping={"patience": 100})
    raw = yaml.safe_load(config.read_text())
    raw["tune"] = {"space": {"train.learning_rate": {"choice": [1e-2, 1e-3]}}, "pruner": "none"}
    config.write_text(yaml.safe_dump(raw))
    completed = tunewise("tune", config, "--trials", "2", "--nproc", "2", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    trials = (tmp_path / "study" / "tune" / "trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 2 and all(",COMPLETE," in row for row in trials[1:])
    folders = sorted((tmp_path / "study" / "trials").iterdir())
    assert [read_json(folder / RUN_FILE)["processes"] for folder in folders] == [2, 2]
    assert sum((folder / MODEL_FOLDER).is_dir() for folder in folders) == 1  # the best keeps its weights
    assert read_json(tmp_path / "study" / "tune" / "best.json")["test"]["n"] == 13  # scored on test once
    assert completed.stdout.count("trial") >= 2 and completed.stderr.count("best:") == 1


def test_the_launcher_command_lines() -> None:
    arguments = ["train", "my.yaml", "--resume"]
    one_machine = launcher_command(arguments, Processes(per_node=4), None)
    assert one_machine[1:] == [
        "-m", "tunewise.jobs.launch", "torchrun", "--nproc_per_node", "4", "--standalone", "--nnodes", "1",
        "-m", "tunewise", "train", "my.yaml", "--resume",
    ]  # fmt: skip
    two_machines = launcher_command(arguments, Processes(8, 2, 1, "10.0.0.1", 29400), None)
    assert two_machines[4:14] == [
        "--nproc_per_node", "8", "--nnodes", "2", "--node_rank", "1",
        "--master_addr", "10.0.0.1", "--master_port", "29400",
    ]  # fmt: skip


def test_an_accelerate_config_launches_through_accelerate(tmp_path: Path) -> None:
    recipe = Path(__file__).resolve().parents[2] / "examples" / "accelerate" / "fsdp2.yaml"
    command = launcher_command(["train", "my.yaml"], Processes(per_node=2), str(recipe))
    assert command[1:6] == ["-m", "tunewise.jobs.launch", "accelerate", "--config_file", str(recipe)]
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[-3:] == ["tunewise", "train", "my.yaml"]


@pytest.mark.parametrize(
    ("processes", "message"),
    [
        ({"per_node": 0}, "--nproc and --nnodes must be at least 1"),
        ({"nodes": 2}, "need --master-addr"),
        ({"nodes": 2, "node_rank": 2, "master_addr": "h"}, "--node-rank must be between 0 and 1"),
    ],
)
def test_impossible_process_layouts_are_refused(processes: dict, message: str) -> None:
    from tunewise.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        Processes(**processes)


def test_a_missing_accelerate_config_is_named(tmp_path: Path) -> None:
    from tunewise.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.accelerate_config: .*nowhere\.yaml is not a file"):
        launcher_command(["train", "my.yaml"], Processes(per_node=2), str(tmp_path / "nowhere.yaml"))


def test_each_process_takes_its_rows_and_their_share_of_the_loss_terms() -> None:
    import numpy as np

    from tunewise.training.steps import process_share
    from tunewise.types import LABEL_PAD, EncodedSplit

    rows = EncodedSplit({"input_ids": [[1, 2]] * 5}, labels=np.array([0, 1, 0, 1, 1]))
    batch = np.array([4, 0, 4, 2, 1])  # oversampling may repeat a row
    shares = [process_share(rows, batch, rank, 2) for rank in range(2)]
    assert [list(indices) for indices, _ in shares] == [[4, 0, 4], [2, 1]]
    assert [share for _, share in shares] == [0.6, 0.4]
    tags = [np.array([3, LABEL_PAD, 1]), np.array([LABEL_PAD, LABEL_PAD, LABEL_PAD]), np.array([2, 2, 2, 2])]
    tokens = EncodedSplit({"input_ids": [[1, 2, 3], [1, 2, 3], [1, 2, 3, 4]]}, labels=tags)
    assert process_share(tokens, np.array([0, 1, 2]), 0, 2)[1] == pytest.approx(2 / 6)  # labelled tokens count
    assert process_share(tokens, np.array([1, 0]), 0, 2)[1] == 0.0  # all masked: weight 0, not NaN
    # a causal LM never scores a row's first label
    shifted = EncodedSplit(
        {"input_ids": [[5, 6, 7], [5, 6]]}, [np.array([5, 6, 7]), np.array([5, 6])], shifted_labels=True
    )
    assert process_share(shifted, np.array([0, 1]), 0, 2)[1] == pytest.approx(2 / 3)
    alone, weight = process_share(rows, np.array([3]), 1, 2)  # no row left for process 1: it computes one at weight 0
    assert (list(alone), weight) == ([3], 0.0)
