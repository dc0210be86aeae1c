"""From a YAML file (or a dict) and `--set key=value` overrides to a validated config of one task.

`parse_config` does the work for any set of task config classes (`tunewise.tasks.load_config`
passes the registered ones): it reads the file, applies the overrides, picks the class the `task`
names and validates against it. Pydantic's errors, and every broken cross-field rule, are
rewritten into one message per problem that names the field, the value and what to change, with a
"did you mean" for misspelt keys and the task that owns a field another task does not have.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunewise.config.rules import RULE_ERROR
from tunewise.config.sections import RunConfig
from tunewise.errors import ConfigError

DEFAULT_TASK = "text-classification"


def parse_config(
    source: str | Path | dict | RunConfig, overrides: list[str] | None, classes: Mapping[str, type[RunConfig]]
) -> RunConfig:
    """A validated config from a YAML path, a dict or an existing config, as the class its `task` names.

    Relative data paths in a YAML file are resolved against the current directory first and then
    against the YAML file's folder, so `examples/x.yaml` can name `x.csv` beside it.
    """
    if isinstance(source, RunConfig):
        raw, base_dir = source.model_dump(), None
    elif isinstance(source, dict):
        raw, base_dir = copy.deepcopy(source), None
    else:
        raw, base_dir = read_yaml(Path(source)), Path(source).parent
    for override in overrides or []:
        apply_override(raw, override)
    config = validate_config(raw, classes, origin=str(source) if base_dir else "config")
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


def validate_config(raw: dict, classes: Mapping[str, type[RunConfig]], origin: str = "config") -> RunConfig:
    """The config as the class of its task (text-classification when it names none), or one ConfigError
    listing every problem: unknown or invalid fields and broken rules alike."""
    task = raw.get("task", DEFAULT_TASK)
    if task not in classes:
        close = difflib.get_close_matches(str(task), list(classes), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{origin}: task: unknown task {task!r}.{hint} Choose one of: {', '.join(classes)}.")
    model = classes[task]
    try:
        return model.model_validate({**raw, "task": task})
    except ValidationError as error:
        problems = [describe_problem(item, model, classes) for item in error.errors()]
        raise ConfigError(
            f"{origin} has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        ) from None


def describe_problem(item: Any, model: type[RunConfig], classes: Mapping[str, type[RunConfig]]) -> str:
    location = field_path(item["loc"])
    if item["type"] == "extra_forbidden":
        field = str(item["loc"][-1])
        parent = section_model(model, item["loc"][:-1])
        prefix = f"{field_path(item['loc'][:-1])}.{field}".lstrip(".")
        owners = [name for name, other in classes.items() if other is not model and has_field(other, prefix)]
        if owners:
            return (
                f"{prefix}: not a setting of task {model.model_fields['task'].default}; it belongs to task "
                f"{' and '.join(owners)}. Remove it, or set task: {owners[0]}."
            )
        suggestion = difflib.get_close_matches(field, list(parent.model_fields), n=1, cutoff=0.5) if parent else []
        hint = f" Did you mean {suggestion[0]!r}?" if suggestion else ""
        known = f" Known fields: {', '.join(parent.model_fields)}." if parent else ""
        return f"{prefix}: unknown field.{hint}{known}"
    if item["type"] == "missing":
        return f"{location}: required field is missing."
    if item["type"] == RULE_ERROR:
        return f"{location}: {item['msg']} (now {item.get('input')!r})."
    message = item["msg"].removeprefix("Value error, ")
    return f"{location}: {message} (got {item.get('input')!r})."


_UNION_TAGS = {"int", "float", "str", "bool", "none"}


def field_path(loc: tuple) -> str:
    """Pydantic adds union branch tags (int, "literal['auto']", ClassName) to locations; drop them."""
    keep = [p for p in loc if isinstance(p, str) and re.fullmatch(r"[a-z_][a-z0-9_]*", p) and p not in _UNION_TAGS]
    return ".".join(keep)


def section_model(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section class at a field location of `model` (None when the location is not a section)."""
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


def has_field(model: type[BaseModel], dotted: str) -> bool:
    *sections, name = dotted.split(".")
    parent = section_model(model, tuple(sections))
    return parent is not None and name in parent.model_fields


# the fields that name files or folders: a relative one that exists only beside the YAML file points there
PATH_FIELDS = (
    ("data", "train"),
    ("data", "validation"),
    ("data", "test"),
    ("safety", "prompts"),
    ("screen", "classifier"),
)


def resolve_data_paths(config: RunConfig, base_dir: Path) -> None:
    """Make relative data paths that only exist beside the YAML file point there."""
    for section_name, field in PATH_FIELDS:
        section = getattr(config, section_name, None)
        value = getattr(section, field, None)
        if not isinstance(value, str) or value.startswith("hf:") or Path(value).is_absolute() or Path(value).exists():
            continue
        beside = base_dir / value
        if beside.exists():
            setattr(section, field, os.path.normpath(beside))


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
