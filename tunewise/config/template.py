"""`tunewise init`: a starting config generated from the schema, every field commented.

Generated rather than hand-written so the template can never drift from what the schema accepts.
"""

from __future__ import annotations

import textwrap
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from tunewise.config.sections import RunConfig

STARTER_VALUES: dict[str, Any] = {
    "data": {"train": "data/train.csv", "test": "data/test.csv"},
    "output_dir": "runs/my-run",
}


def commented_template(config_class: type[RunConfig]) -> str:
    """Every field of one task's config class, its default and its description as a comment."""
    lines = ["# tunewise run config. Train with: tunewise train this.yaml", ""]
    _emit(config_class, STARTER_VALUES, lines, indent=0)
    return "\n".join(lines) + "\n"


def _emit(model: type[BaseModel], starter: dict, lines: list[str], indent: int) -> None:
    pad = " " * indent
    for name, field in model.model_fields.items():
        for line in textwrap.wrap(field.description or "", width=96 - indent):
            lines.append(f"{pad}# {line}")
        section = _section_type(field.annotation)
        if section is not None and field.default is None and name not in starter:  # an optional section, off
            example = to_jsonable_python(section())
            rendered = yaml.safe_dump(example, default_flow_style=True, width=1000).strip()
            lines.append(f"{pad}# to turn it on: {name}: {rendered}")
            lines.append(f"{pad}{name}: null")
            continue
        if section is not None:
            lines.append(f"{pad}{name}:")
            _emit(section, starter.get(name, {}), lines, indent + 2)
            continue
        value = to_jsonable_python(starter.get(name, field.get_default(call_default_factory=True)))
        rendered = yaml.safe_dump({name: value}, default_flow_style=True, width=1000).strip()[1:-1]
        lines.append(f"{pad}{rendered}")
    lines.append("")


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field (`X` or `X | None`); containers of models (dicts, lists) are values."""
    union = get_origin(annotation) in (Union, UnionType)
    candidates = [annotation, *(get_args(annotation) if union else ())]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
