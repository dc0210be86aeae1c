"""Where a model's layers are, from the bottom (embeddings, a CNN's stem) to the top (the task head).

Freezing the backbone, training the top N layers and layer-wise learning-rate decay all need each
parameter's depth. The model is asked first: timm models declare their layer groups
(`group_matcher`: ResNet's `layer1`..`layer4`, EfficientNet's stages, ViT's blocks), and timm's own
`group_parameters` turns that into a depth per parameter, as its layer-decay optimiser does. Models
that declare nothing (transformers encoders and decoders) are read from their module names: the
longest list of blocks named `layer`, `layers`, `h`, `block`, `blocks` or `stages`. Names are
compared without LoRA's wrapping (`base_model.model.`, `base_layer`, `lora_A.default`), so the
same layout serves a model before and after peft wraps it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from tunewise.errors import ConfigError

HEAD_MODULE_NAMES = ("classifier", "pooler", "score", "pre_classifier", "qa_outputs", "lm_head")
_LAYER_LIST_NAMES = ("layer", "layers", "h", "block", "blocks", "stages")
_PEFT_PREFIX = "base_model.model."
_PEFT_PARTS = {"base_layer", "lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "default"}
_PEFT_COPIES = ("modules_to_save", "original_module")  # peft's trained and original copies of a head


@dataclass(frozen=True)
class LayerLayout:
    """Each parameter's depth: 0 the bottom (embeddings, stem), 1..count the blocks, count + 1 the head."""

    count: int
    depths: Mapping[str, int]  # parameter name (without LoRA's wrapping) -> depth
    found_by: str  # how the layers were found, for messages: "timm group_matcher" or "module names"

    def depth(self, parameter_name: str) -> int:
        name = canonical_name(parameter_name)
        if name in self.depths:
            return self.depths[name]
        if any(head in name.split(".") for head in HEAD_MODULE_NAMES):
            return self.count + 1
        return self.count  # anything else above the blocks (final norms)


def find_layers(model: nn.Module) -> LayerLayout:
    """The model's own layer groups when it declares them (timm), else the blocks found by name."""
    layout = declared_layers(model) or named_layers(model)
    if layout is None:
        raise ConfigError(
            f"Could not find the layers of {type(model).__name__}: it declares no layer groups (timm's group_matcher) "
            "and has no list of blocks named layer(s), h, block(s) or stages. Use strategy.method full or lora."
        )
    return layout


def layer_depth(parameter_name: str, layout: LayerLayout) -> int:
    """0 for embeddings, i + 1 for block i, count + 1 for the task head, count for anything else."""
    return layout.depth(parameter_name)


def declared_layers(model: nn.Module) -> LayerLayout | None:
    """The layer groups a timm backbone declares (coarse: one group per stage), as timm's layer decay reads them."""
    found = next(((path, m) for path, m in model.named_modules() if callable(getattr(m, "group_matcher", None))), None)
    if found is None:
        return None
    from timm.models import group_parameters

    path, backbone = found
    matcher: Any = backbone.group_matcher(coarse=True)
    if not isinstance(matcher, dict):
        return None
    names = [name for name, _ in backbone.named_parameters()]
    groups = group_parameters(backbone, matcher, reverse=True)
    patterns = [re.compile(spec) for spec in _matcher_patterns(matcher)]
    matched = [name for name in names if any(pattern.match(name) for pattern in patterns)]
    if not matched:
        return None
    stem = matcher.get("stem")
    has_stem = isinstance(stem, str) and any(re.match(stem, name) for name in names)
    offset = 0 if has_stem else 1  # blocks start at depth 1 either way
    count = max(groups[name] for name in matched) + offset
    prefix = canonical_name(path) + "." if path else ""
    depths = {
        canonical_name(prefix + name): (groups[name] + offset if name in matched else count + 1) for name in names
    }
    return LayerLayout(count=count, depths=depths, found_by="timm group_matcher")


def named_layers(model: nn.Module) -> LayerLayout | None:
    """The longest list of blocks with a usual name; parameters before it (embeddings) are the bottom."""
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.ModuleList, nn.Sequential))
        and name.rsplit(".", 1)[-1] in _LAYER_LIST_NAMES
        and len(module) > 0
    ]
    if not candidates:
        return None
    path, blocks = max(candidates, key=lambda item: len(item[1]))
    count = len(blocks)
    block = re.compile(rf"(?:^|\.){re.escape(path.rsplit('.', 1)[-1])}\.(\d+)\.")
    depths: dict[str, int] = {}
    before_blocks = True
    for parameter_name, _ in model.named_parameters():
        name = canonical_name(parameter_name)
        match = block.search(name)
        if match:
            before_blocks = False
            depths[name] = int(match.group(1)) + 1
        elif "embed" in name or "wte" in name or "wpe" in name:
            depths[name] = 0
        elif any(head in name.split(".") for head in HEAD_MODULE_NAMES):
            depths[name] = count + 1
        else:  # a CNN's stem comes before its blocks; final norms after them
            depths[name] = 0 if before_blocks else count
    return LayerLayout(count=count, depths=depths, found_by="module names")


def canonical_name(name: str) -> str:
    """A parameter's name as in the model before LoRA wrapped it."""
    name = name.removeprefix(_PEFT_PREFIX)
    parts = [part for part in name.split(".") if part not in _PEFT_PARTS]
    for copy in _PEFT_COPIES:  # classifier.modules_to_save.default.weight -> classifier.weight
        if copy in parts:
            parts.remove(copy)
    return ".".join(parts)


def _matcher_patterns(matcher: dict[str, Any]) -> list[str]:
    patterns = []
    for spec in matcher.values():
        if isinstance(spec, (list, tuple)):
            patterns += [entry[0] for entry in spec]
        elif spec:
            patterns.append(spec)
    return patterns
