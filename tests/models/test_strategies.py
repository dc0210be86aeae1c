"""Adaptation strategies through training: freeze_backbone, last_n_layers, LoRA (merged model and
adapter), their refusals before anything is written, and layer-wise learning-rate decay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_same_weights, make_config, read_json, saved_weights

import tunewise
from tunewise.errors import ConfigError

TEXTS = [
    "the film was really great overall",
    "this book was so excellent today",
    "the movie was very awful again",
    "the hotel was rather terrible honestly",
]
LEARN = {"epochs": 5, "learning_rate": 3e-3}


def train(config: dict, **kwargs: Any) -> tunewise.Run:
    return tunewise.train(config, show_progress=False, **kwargs)


def backbone(run_dir: Path) -> dict[str, torch.Tensor]:
    """The fine-tuned encoder weights, keyed like the pretrained BertModel folder ("encoder." removed)."""
    return {
        name.removeprefix("encoder."): value
        for name, value in saved_weights(run_dir / "model").items()
        if name.startswith("encoder.")
    }


# ------------------------------------------------------------------------------------------ freezing


def test_freeze_backbone_trains_only_the_head(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            strategy={"method": "freeze_backbone"},
            train={"epochs": 1},
        )
    )
    parameters = read_json(run.run_dir / "run.json")["parameters"]
    assert parameters["trainable"] == 32 * 2 + 2  # the linear classifier only
    assert parameters["total"] > 100 * parameters["trainable"]
    pretrained = saved_weights(tiny_mean_model_dir)
    tuned = backbone(run.run_dir)
    assert tuned, "no encoder weights found in the saved model"
    assert_same_weights(tuned, {name: pretrained[name] for name in tuned})


def test_last_n_layers_trains_only_the_top_layers(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            strategy={"method": "last_n_layers", "n_layers": 1},
            train={"epochs": 1},
        )
    )
    pretrained = saved_weights(tiny_mean_model_dir)
    tuned = backbone(run.run_dir)
    frozen = [name for name in tuned if name.startswith(("embeddings.", "encoder.layer.0."))]
    trained = [name for name in tuned if name.startswith("encoder.layer.1.")]
    assert frozen and trained
    assert_same_weights({n: tuned[n] for n in frozen}, {n: pretrained[n] for n in frozen})
    changed = [name for name in trained if not torch.equal(tuned[name], pretrained[name])]
    assert len(changed) == len(trained), f"layer 1 weights unchanged: {set(trained) - set(changed)}"


def test_last_n_layers_beyond_the_model_is_refused_before_anything_is_written(
    tmp_path, tiny_mean_model_dir, single_label_data
):
    config = make_config(
        tmp_path, tiny_mean_model_dir, single_label_data, strategy={"method": "last_n_layers", "n_layers": 5}
    )
    with pytest.raises(ConfigError, match="at most 2") as excinfo:
        train(config)
    assert "n_layers is 5" in str(excinfo.value)
    assert not Path(config["output_dir"]).exists()


# ------------------------------------------------------------------------------------------ LoRA


def test_lora_saves_a_merged_model_and_the_adapter(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            strategy={"method": "lora", "lora": {"target_modules": ["query", "value"], "r": 4}},
            train=LEARN,
        )
    )
    parameters = read_json(run.run_dir / "run.json")["parameters"]
    assert 0 < parameters["trainable"] < parameters["total"] / 2

    adapter = run.run_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert any(adapter.glob("adapter_model.*"))
    assert set(read_json(adapter / "adapter_config.json")["target_modules"]) == {"query", "value"}

    merged = saved_weights(run.run_dir / "model")
    assert not [name for name in merged if "lora" in name or "base_model" in name or "modules_to_save" in name]
    pretrained = saved_weights(tiny_mean_model_dir)
    tuned = backbone(run.run_dir)
    assert set(tuned) == {name for name in pretrained if not name.startswith("pooler.")}
    adapted = [name for name in tuned if name.endswith(("query.weight", "value.weight"))]
    untouched = [name for name in tuned if name.endswith(("key.weight", "output.dense.weight"))]
    assert all(not torch.equal(tuned[name], pretrained[name]) for name in adapted), "LoRA updates were not merged"
    assert all(torch.equal(tuned[name], pretrained[name]) for name in untouched)

    loaded = tunewise.load(run.run_dir)  # a plain transformers model: no peft wrapper
    assert "peft" not in type(loaded.model).__module__
    assert [p["label"] for p in loaded.predict(TEXTS)] == [p["label"] for p in run.predict(TEXTS)]
    # the final metrics score the merged model, the one saved in model/
    metrics, _ = loaded.evaluate(single_label_data["test"])
    assert metrics["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    assert metrics["loss"] == pytest.approx(run.metrics["test"]["loss"], rel=1e-5)


def test_lora_unknown_target_lists_the_choices(tmp_path, tiny_mean_model_dir, single_label_data):
    config = make_config(
        tmp_path,
        tiny_mean_model_dir,
        single_label_data,
        strategy={"method": "lora", "lora": {"target_modules": ["nonexistent"]}},
    )
    with pytest.raises(ConfigError) as excinfo:
        train(config)
    message = str(excinfo.value)
    assert "nonexistent" in message and "Choose among" in message
    for name in ("query", "key", "value", "dense"):
        assert name in message
    assert not Path(config["output_dir"]).exists()


# ------------------------------------------------------------------------------------------ layer-wise LR decay


def test_layerwise_lr_decay_slows_the_lower_layers(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from tunewise.models.strategies import parameter_groups

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    names = {id(parameter): name for name, parameter in model.named_parameters()}

    def lr_of(groups: list[dict]) -> dict[str, float]:
        return {names[id(p)]: group["lr"] for group in groups for p in group["params"]}

    rates = lr_of(parameter_groups(model, learning_rate=1.0, weight_decay=0.01, decay=0.5))
    assert len(rates) == len(names)  # every trainable parameter is in exactly one group
    assert rates["bert.embeddings.word_embeddings.weight"] == pytest.approx(0.125)
    assert rates["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(0.25)
    assert rates["bert.encoder.layer.1.attention.self.query.weight"] == pytest.approx(0.5)
    assert rates["classifier.weight"] == pytest.approx(1.0)
    assert rates["bert.pooler.dense.weight"] == pytest.approx(1.0)

    flat = lr_of(parameter_groups(model, learning_rate=1.0, weight_decay=0.01, decay=1.0))
    assert set(flat.values()) == {1.0}

    groups = parameter_groups(model, learning_rate=1.0, weight_decay=0.01, decay=0.5)
    decay_of = {names[id(p)]: group["weight_decay"] for group in groups for p in group["params"]}
    assert decay_of["bert.encoder.layer.0.attention.self.query.bias"] == 0.0
    assert decay_of["bert.embeddings.LayerNorm.weight"] == 0.0
    assert decay_of["bert.encoder.layer.0.attention.self.query.weight"] == 0.01


def test_layerwise_lr_decay_skips_frozen_parameters(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from tunewise.config.sections import StrategyConfig
    from tunewise.models.strategies import apply_strategy, parameter_groups

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    apply_strategy(model, StrategyConfig(method="last_n_layers", n_layers=1))
    grouped = [p for group in parameter_groups(model, 1.0, 0.0, 0.5) for p in group["params"]]
    assert all(p.requires_grad for p in grouped)
    assert len(grouped) == sum(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------ timm layer groups


def resnet_classifier() -> Any:
    """A randomly initialised ResNet-18 classifier: ResNet keeps its stages in layer1..layer4, not in a list."""
    from tunewise.models.vision import TimmImageClassifier, TimmImageConfig

    config = TimmImageConfig(architecture="resnet18")
    config.num_labels, config.id2label, config.label2id = 2, {0: "ant", 1: "bee"}, {"ant": 0, "bee": 1}
    torch.manual_seed(0)
    return TimmImageClassifier(config)


def test_resnet_layers_come_from_timms_group_matcher() -> None:
    from tunewise.models.layers import find_layers

    layout = find_layers(resnet_classifier())
    assert layout.found_by == "timm group_matcher"
    assert layout.count == 4  # the four stages
    assert layout.depth("backbone.conv1.weight") == 0  # the stem
    assert layout.depth("backbone.layer1.0.conv1.weight") == 1
    assert layout.depth("backbone.layer4.1.bn2.bias") == 4
    assert layout.depth("classifier.weight") == 5  # the head
    # the same depths once LoRA has wrapped the model
    assert layout.depth("base_model.model.backbone.layer3.0.conv1.lora_A.default.weight") == 3


@pytest.mark.parametrize(
    ("method", "trainable_prefixes"),
    [
        ("freeze_backbone", ("classifier.",)),
        ("last_n_layers", ("classifier.", "backbone.layer3.", "backbone.layer4.")),
    ],
)
def test_every_strategy_works_on_a_resnet(method: str, trainable_prefixes: tuple[str, ...]) -> None:
    from tunewise.config.sections import StrategyConfig
    from tunewise.models.strategies import apply_strategy

    model = apply_strategy(resnet_classifier(), StrategyConfig(method=method, n_layers=2))
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and all(name.startswith(trainable_prefixes) for name in trainable)
    assert any(name.startswith("backbone.layer4.") for name in trainable) == (method == "last_n_layers")


def test_lora_and_layerwise_decay_work_on_a_resnet() -> None:
    from tunewise.config.sections import StrategyConfig
    from tunewise.models.strategies import apply_strategy, lora_target_modules, parameter_groups

    assert lora_target_modules(resnet_classifier(), StrategyConfig(method="lora")) == ["conv1", "conv2"]
    model = apply_strategy(resnet_classifier(), StrategyConfig(method="lora"))
    rates = sorted({group["lr"] for group in parameter_groups(model, 1e-3, 0.01, 0.5)})
    # adapters in every stage and the head: one rate per depth, halving stage by stage below the head
    assert rates == pytest.approx([1e-3 * 0.5**k for k in range(5, -1, -1)])


@pytest.mark.parametrize("model_fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])  # output head tied, and not
def test_lora_trains_the_embedding_rows_of_added_tokens_and_merges_them(model_fixture, request) -> None:
    """A chat template's new end-of-turn token starts with an untrained row; LoRA alone would leave it so."""
    from transformers import AutoModelForCausalLM

    from tunewise.config.sections import StrategyConfig
    from tunewise.models.strategies import apply_strategy, mark_new_tokens

    base = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(model_fixture))
    known = base.get_input_embeddings().num_embeddings
    base.resize_token_embeddings(known + 2)
    mark_new_tokens(base, [known, known + 1])
    before_in = base.get_input_embeddings().weight.detach().clone()
    before_out = base.get_output_embeddings().weight.detach().clone()
    model = apply_strategy(base, StrategyConfig(method="lora"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = torch.tensor([[5, known, 6, known + 1, 7]])
    for _ in range(3):  # learn to emit the new tokens, reading them too
        model(input_ids=inputs, labels=inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    merged = model.merge_and_unload()
    after_in, after_out = merged.get_input_embeddings().weight, merged.get_output_embeddings().weight
    assert torch.equal(after_in[:known], before_in[:known]) and torch.equal(after_out[:known], before_out[:known])
    assert not torch.allclose(after_in[known:], before_in[known:])
    assert not torch.allclose(after_out[known:], before_out[known:])
