"""Adaptation strategies: which parameters train, and how fast each layer learns.

Works on any model whose layers `tunewise.models.layers` can find: the groups a timm model declares
(ResNet, EfficientNet, ViT, ConvNeXt, ...), or one list of blocks (BERT `encoder.layer`, GPT-2 `h`,
Llama `layers`). Mistakes that would waste a run (n_layers beyond the model, LoRA targets that match
nothing) fail here, before training.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from transformers.pytorch_utils import Conv1D

from tunewise.config.sections import StrategyConfig
from tunewise.errors import ConfigError
from tunewise.models.layers import HEAD_MODULE_NAMES, find_layers, layer_depth

# auto LoRA targets for architectures peft has no mapping for, in order of preference: the first
# group the model has wins
_FALLBACK_LORA_TARGETS = (
    ("q_proj", "v_proj", "query", "value", "c_attn", "qkv"),  # attention projections (fused qkv in timm's ViTs)
    ("conv_pw", "conv_pwl"),  # the pointwise convolutions of MobileNet/EfficientNet blocks
    ("conv1", "conv2", "conv3"),  # the convolutions of ResNet blocks
    ("fc1", "fc2"),  # MLP blocks (ConvNeXt)
)
_NEW_TOKENS = "_tunewise_new_token_ids"  # set on a model by mark_new_tokens, read by _wrap_lora
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "ln_")


def apply_strategy(model: nn.Module, strategy: StrategyConfig) -> nn.Module:
    """Freeze or wrap `model` as the strategy says; returns the model to train (a PeftModel for LoRA)."""
    if strategy.method == "full":
        return model
    if strategy.method == "lora":
        return _wrap_lora(model, strategy)
    layout = find_layers(model)
    trainable_from = layout.count + 1 if strategy.method == "freeze_backbone" else layout.count - strategy.n_layers + 1
    if strategy.method == "last_n_layers" and strategy.n_layers > layout.count:
        raise ConfigError(
            f"strategy.n_layers is {strategy.n_layers} but the model has only {layout.count} layers; "
            f"use at most {layout.count}, or strategy.method: full."
        )
    for name, parameter in model.named_parameters():
        parameter.requires_grad = layer_depth(name, layout) >= trainable_from
    return model


def lora_target_modules(model: nn.Module, strategy: StrategyConfig) -> list[str]:
    """Resolve `auto` to the architecture's attention projections and check the names match something.
    peft adapts linear layers and convolutions (a CNN's pointwise convs are its linear maps)."""
    linear_names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D, nn.Conv2d))
    }
    targets = strategy.lora.target_modules
    if targets == "auto":
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
        targets = list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type, []))
        for group in _FALLBACK_LORA_TARGETS if not targets else ():
            targets = [name for name in group if name in linear_names]
            if targets:
                break
    unmatched = [target for target in targets if target not in linear_names]
    if not targets or unmatched:
        adaptable = sorted(linear_names - set(HEAD_MODULE_NAMES))
        raise ConfigError(
            f"strategy.lora.target_modules {unmatched or targets} match no linear layer of this model. "
            f"Choose among: {', '.join(adaptable)}."
        )
    return list(targets)


def _wrap_lora(model: nn.Module, strategy: StrategyConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    # new task heads train in full beside the adapters; a language model's head is pretrained (and
    # usually tied to the input embeddings), so it stays frozen like the rest of the model
    head_modules = sorted(
        {name for name, _ in model.named_children() if name in HEAD_MODULE_NAMES and name != "lm_head"}
    )
    targets = lora_target_modules(model, strategy)
    conv1d = any(isinstance(m, Conv1D) and name.rsplit(".", 1)[-1] in targets for name, m in model.named_modules())
    new_tokens: list[int] = getattr(model, _NEW_TOKENS, [])
    config = LoraConfig(
        r=strategy.lora.r,
        lora_alpha=strategy.lora.alpha,  # type: ignore[arg-type]  # peft types it int; a float alpha works
        lora_dropout=strategy.lora.dropout,
        target_modules=targets,
        fan_in_fan_out=conv1d,  # GPT-2's Conv1D stores its weight transposed
        modules_to_save=head_modules + _pooler_modules(model),
        trainable_token_indices=_token_rows(model, new_tokens) if new_tokens else None,
    )
    return get_peft_model(model, config)


def mark_new_tokens(model: nn.Module, token_ids: Sequence[int]) -> None:
    """Record the tokens a task added to the vocabulary (a pad token, a chat template's tokens).

    Their embedding rows start untrained. LoRA freezes the embeddings, so without this a model given a
    new end-of-turn token could emit it only through its frozen, initial row; with it, LoRA trains those
    rows and nothing else of the embeddings (peft's trainable tokens), and the merge writes them into the
    saved model."""
    setattr(model, _NEW_TOKENS, list(token_ids))


def _token_rows(model: nn.Module, token_ids: list[int]) -> list[int] | dict[str, list[int]]:
    """peft's trainable_token_indices: the rows of the input embedding (peft follows a tied output
    head itself), and those of the output head as well when it is a separate matrix."""
    embeddings = model.get_input_embeddings()  # type: ignore[operator]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None  # type: ignore[operator]
    if head is None or head.weight is embeddings.weight:
        return token_ids
    names = {id(module): name for name, module in model.named_modules()}
    return {names[id(embeddings)]: token_ids, names[id(head)]: token_ids}


def _pooler_modules(model: nn.Module) -> list[str]:
    return ["pooler"] if any(name.endswith(".pooler") for name, _ in model.named_modules()) else []


def parameter_groups(model: nn.Module, learning_rate: float, weight_decay: float, decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms (named, or any 1-D parameter, as timm does:
    BatchNorm's `bn1.weight` too); layer-wise learning-rate decay when decay < 1 (only then are the
    model's layers needed)."""
    layout = find_layers(model) if decay < 1.0 else None
    top = layout.count + 1 if layout is not None else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth = layer_depth(name, layout) if layout is not None else top
        no_decay = parameter.ndim <= 1 or any(marker in name for marker in _NO_DECAY)
        group = groups.setdefault(
            (depth, no_decay),
            {
                "params": [],
                "lr": learning_rate * decay ** (top - depth),
                "weight_decay": 0.0 if no_decay else weight_decay,
            },
        )
        group["params"].append(parameter)
    return list(groups.values())


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
