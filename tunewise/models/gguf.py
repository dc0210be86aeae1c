"""GGUF weights converted once into a plain transformers folder in tunewise's cache.

A GGUF file is what llama.cpp runs; transformers reads one (dequantising it) but refuses to save a model
loaded from it. Converting once into safetensors, tokenizer and config means everything downstream (the
tokenizer, LoRA, saving, plain `from_pretrained`) sees an ordinary local folder, and the 15-40 s read
happens once per machine instead of once per run.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tunewise.data import file_fingerprint
from tunewise.data.token_cache import CACHE_ENV, cache_base
from tunewise.errors import ConfigError

logger = logging.getLogger(__name__)

MODELS_CACHE = "models"  # $TUNEWISE_CACHE_DIR/models, beside the token cache
CONVERSION_VERSION = "1"  # in every converted folder's name: a changed conversion never reuses an old folder
CONVERTED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
STAGING_SUFFIX = ".partial"
STALE_STAGING_SECONDS = 3600  # a staging folder this old was left by a killed conversion (one takes under a minute)


def converted_folder(name: str, gguf_file: Path) -> Path:
    """A plain transformers folder converted from `gguf_file`: made once, then reused.

    The folder is named by the GGUF file's sha256, hashed on every resolve (about 0.1 s for SmolLM2's
    98 MB): a reinstall that ships other bytes gets its own folder, which the package version and the
    file size could not promise. It is written under a staging name and renamed into place only when
    complete, so a killed conversion never leaves a folder that looks done; a damaged folder there all
    the same (a file deleted, the weights truncated) is rebuilt, never trusted."""
    root = cache_base() / MODELS_CACHE
    target = root / f"{name}-{file_fingerprint(str(gguf_file))[:16]}-v{CONVERSION_VERSION}"
    if _is_complete(target):
        return target
    staging = _staging_folder(root, target)
    try:
        logger.info("%s: converting %s once into %s (under a minute on CPU)", name, gguf_file.name, target)
        model, tokenizer = _load_gguf(gguf_file)
        try:
            _write_folder(model, tokenizer, staging)
            _move_into_place(staging, target)
        except OSError as error:
            raise _unwritable(root, error) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after the move there is nothing left to remove
    return target


def _is_complete(folder: Path) -> bool:
    """Every file the conversion writes is there, and the weights are whole (safetensors checks the file's
    length against its header)."""
    if not all((folder / file).is_file() for file in CONVERTED_FILES):
        return False
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
            weights.keys()
    except (OSError, SafetensorError):
        return False
    return True


def _staging_folder(root: Path, target: Path) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(f".{target.name}.*{STAGING_SUFFIX}"):
            with suppress(FileNotFoundError):  # another process may be removing it too
                if time.time() - leftover.stat().st_mtime > STALE_STAGING_SECONDS:
                    shutil.rmtree(leftover, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGING_SUFFIX, dir=root))
    except OSError as error:
        raise _unwritable(root, error) from None


def _unwritable(root: Path, error: OSError) -> ConfigError:
    return ConfigError(
        f"model: could not write the converted model to {root} ({error.strerror or error}). Make that folder "
        f"writable, or set {CACHE_ENV} to a writable folder elsewhere (tunewise keeps its caches there; the "
        "converted model needs about 550 MB)."
    )


def _load_gguf(gguf_file: Path) -> tuple[Any, Any]:
    """The model and its tokenizer as transformers reads a GGUF file (15-40 s on 2 CPU cores). float32,
    because gguf dequantises into float32 and tunewise trains float32 master weights anyway: the folder
    keeps the dequantised weights bit for bit, where bf16 would round them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_gguf_bar():
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    return model, tokenizer


@contextmanager
def _quiet_gguf_bar() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar, which transformers' switch for its bars
    (disable_progress_bar, as the CLI sets it) does not reach."""
    from transformers import modeling_gguf_pytorch_utils as gguf_reader

    bar = gguf_reader.tqdm
    gguf_reader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_reader.tqdm = bar


def _write_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    """save_pretrained refuses a GGUF-loaded model ("not serializable"), so the pieces are saved one by one:
    the weights with safetensors (which stores the tied lm_head once), the config without its
    quantization_config (it names the GGUF file; a plain folder must not claim to be quantized), the
    generation config, and the tokenizer with its chat template."""
    from safetensors.torch import save_model

    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.config)
    del config.quantization_config
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    # the GGUF records no tokenizer limit (transformers then says 1e30); the model's positions are the limit
    tokenizer.model_max_length = model.config.max_position_embeddings
    tokenizer.save_pretrained(folder)


def _move_into_place(staging: Path, target: Path) -> None:
    """A damaged folder at `target` is replaced; one another process completed meanwhile is kept (and
    ours discarded by the caller)."""
    if _is_complete(target):
        return
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        if not _is_complete(target):  # not merely a concurrent conversion that finished first
            raise
