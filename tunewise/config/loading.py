"""Read a run config from YAML, apply `--set key=value` overrides, and validate it.

Pydantic's errors are rewritten into one message per problem that names the field, the value and
what to change, with a "did you mean" for misspelt keys.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunewise.config.schema import RunConfig
from tunewise.errors import ConfigError


def load_config(source: str | Path | dict | RunConfig, overrides: list[str] | None = None) -> RunConfig:
    """Build a validated `RunConfig` from a YAML path, a dict or an existing config.

    Relative data paths in a YAML file are resolved against the current directory first and then
    against the YAML file's folder, so `examples/x.yaml` can name `x.csv` beside it.
    """
    if isinstance(source, RunConfig):
        raw = source.model_dump()
        base_dir = None
    elif isinstance(source, dict):
        raw, base_dir = copy.deepcopy(source), None
    else:
        raw, base_dir = read_yaml(Path(source)), Path(source).parent
    for override in overrides or []:
        apply_override(raw, override)
    config = validate_config(raw, origin=str(source) if base_dir else "config")
    if base_dir is not None:
        resolve_data_paths(config, base_dir)
    return config


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}. Create one with `tunewise init > {path}`.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; save it as UTF-8.") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path} must hold a mapping of settings (task:, model:, data:, ...), not {type(raw).__name__}."
        )
    return raw


def apply_override(raw: dict, override: str) -> None:
    """Apply one `dotted.key=value` override; the value is parsed as YAML (`3`, `1e-4`, `null`, `[a, b]`)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r} must look like section.field=value, e.g. train.epochs=1.")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {part!r} is a value, not a section.")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = text


def validate_config(raw: dict, origin: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        problems = [describe_problem(item) for item in error.errors()]
        raise ConfigError(
            f"{origin} has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        ) from None


def describe_problem(item: dict[str, Any]) -> str:
    location = field_path(item["loc"])
    if item["type"] == "extra_forbidden":
        field = str(item["loc"][-1])
        parent = _section_model(item["loc"][:-1])
        suggestion = difflib.get_close_matches(field, list(parent.model_fields), n=1, cutoff=0.5) if parent else []
        hint = f" Did you mean {suggestion[0]!r}?" if suggestion else ""
        known = f" Known fields: {', '.join(parent.model_fields)}." if parent else ""
        return f"{field_path(item['loc'][:-1])}.{field}: unknown field.{hint}{known}".lstrip(".")
    if item["type"] == "missing":
        return f"{location}: required field is missing."
    message = item["msg"].removeprefix("Value error, ")
    return f"{location}: {message} (got {item.get('input')!r})."


_UNION_TAGS = {"int", "float", "str", "bool", "none"}


def field_path(loc: tuple) -> str:
    """Pydantic adds union branch tags (int, "literal['auto']", ClassName) to locations; drop them."""
    keep = [p for p in loc if isinstance(p, str) and re.fullmatch(r"[a-z_][a-z0-9_]*", p) and p not in _UNION_TAGS]
    return ".".join(keep)


def _section_model(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        candidates = [field.annotation, *getattr(field.annotation, "__args__", ())]
        sub = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if sub is None:
            return None
        model = sub
    return model


def resolve_data_paths(config: RunConfig, base_dir: Path) -> None:
    """Make relative data paths that only exist beside the YAML file point there."""
    for split in ("train", "validation", "test"):
        value = getattr(config.data, split)
        if value is None or value.startswith("hf:") or Path(value).is_absolute() or Path(value).exists():
            continue
        beside = base_dir / value
        if beside.exists():
            setattr(config.data, split, os.path.normpath(beside))


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
