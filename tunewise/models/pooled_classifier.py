"""A sequence classifier that pools the encoder the way its checkpoint was trained to be pooled.

`AutoModelForSequenceClassification` always classifies from the [CLS] pooler. Sentence-embedding
checkpoints such as all-MiniLM-L6-v2 were trained with *mean* pooling and their [CLS] vector and
pooler are untrained, so the stock head learns slowly or not at all on small data. This head pools
as the checkpoint declares (mean, max or cls) and then applies dropout and one linear layer.

This file is deliberately self-contained (torch + transformers only): `save_pretrained` copies it
into every saved model folder and registers both classes in `config.auto_map`, so plain
transformers loads the model with `trust_remote_code=True`:

    pipeline("text-classification", model="runs/x/model", trust_remote_code=True)

The config has its own `model_type` (the encoder's config is nested inside it), so loading
without `trust_remote_code` fails with a clear error instead of silently building a stock head
with random weights.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLING_MODES = ("mean", "max", "cls")


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce (batch, tokens, hidden) to (batch, hidden), ignoring padding positions."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class PooledEncoderConfig(PreTrainedConfig):
    """Label settings (num_labels, id2label, problem_type), the pooling mode, and the encoder's config."""

    model_type = "tunewise_pooled_encoder"

    def __init__(
        self, encoder: dict | None = None, pooling: str = "mean", classifier_dropout: float | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, not {pooling!r}")
        self.encoder = dict(encoder or {})
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout

    def encoder_config(self) -> PreTrainedConfig:
        settings = dict(self.encoder)
        return AutoConfig.for_model(settings.pop("model_type"), **settings)


class PooledModelForSequenceClassification(PreTrainedModel):
    """Any `AutoModel` encoder, a pooling step, dropout and a linear classifier.

    The loss follows `config.problem_type` as in transformers' own heads (cross-entropy,
    BCE-with-logits for multi-label, MSE for regression).
    """

    config_class = PooledEncoderConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: PooledEncoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        encoder_config = config.encoder_config()
        extra = {"add_pooling_layer": False} if _has_pooler(encoder_config) else {}
        self.encoder = AutoModel.from_config(encoder_config, **extra)
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = getattr(encoder_config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(dropout)
        assert config.num_labels is not None, "the task sets the labels before the head is built"
        self.classifier = nn.Linear(encoder_config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "classifier", None):
            nn.init.normal_(module.weight, std=self.config.encoder.get("initializer_range", 0.02))
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            assert input_ids is not None, "the model reads token ids"
            attention_mask = torch.ones_like(input_ids)
        encoder_inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            encoder_inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**encoder_inputs, **kwargs).last_hidden_state
        pooled = pool_hidden_states(hidden, attention_mask, self.config.pooling)
        logits = self.classifier(self.dropout(pooled))
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: PreTrainedConfig) -> torch.Tensor:
    """The loss transformers' own heads use for each `problem_type`."""
    if config.problem_type == "regression":
        return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    if config.problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


def _has_pooler(config: PreTrainedConfig) -> bool:
    """BERT-family encoders build an (unused here) [CLS] pooler unless told not to."""
    model_class: Any = AutoModel._model_mapping.get(type(config), None)
    return model_class is not None and "add_pooling_layer" in inspect.signature(model_class).parameters


def register_auto_class() -> None:
    """Let `save_pretrained` write `auto_map` and copy this file next to the weights."""
    PooledEncoderConfig.register_for_auto_class()
    PooledModelForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
