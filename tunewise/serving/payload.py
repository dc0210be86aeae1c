"""What a JSON request carries, as what `predict()` takes, and what `predict()` returns, as JSON.

`{"inputs": [...]}` holds one item per input, in the form the run's task takes in Python: texts, [text, pair]
lists, word lists, {"question", "context"} objects, conversations ([{"role", "content"}, ...]). Images
cannot travel as paths to another machine, so a model that reads images takes them base64-encoded (a data
URI works too); they are decoded into a request's own scratch folder, which lives until its answer is sent.
An image's explanation travels back the same way: its heat map's PNG base64-encoded, not a server path.
"""

from __future__ import annotations

import base64
import binascii
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from tunewise.errors import TunewiseError
from tunewise.types import TaskFacts


class InputError(TunewiseError):
    """A request's inputs are not what the model takes: answered 422, with the field named."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def task_inputs(facts: TaskFacts, inputs: list[Any], scratch: Path | None) -> list[Any]:
    """The request's inputs as `predict()` takes them: as sent, or for an image model, files in `scratch`."""
    if facts.capabilities.reads_text:
        return inputs
    assert scratch is not None, "an image model's request has a scratch folder"
    return [_image_file(item, index, scratch) for index, item in enumerate(inputs)]


def _image_file(item: Any, index: int, scratch: Path) -> str:
    field = f"inputs[{index}]"
    if not isinstance(item, str):
        raise InputError(field, f"an image model takes each image as a base64 string, not {type(item).__name__}.")
    encoded = item.split(",", 1)[1] if item.startswith("data:") and "," in item else item
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field, "not valid base64; send the image file's bytes base64-encoded.") from None
    path = scratch / f"{index}.image"
    path.write_bytes(data)
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise InputError(field, "the decoded bytes are not an image (JPEG, PNG, ...); send an image file.") from None
    return str(path)


def check_inputs(facts: TaskFacts, frame_of: Any, inputs: list[Any]) -> pd.DataFrame:
    """The frame `frame_of(inputs)` makes (a task's `data.from_inputs`); when it refuses them, the first input
    it refuses on its own is named, so a client knows which of its inputs to fix."""
    try:
        return frame_of(inputs)
    except TunewiseError as whole:
        for index, item in enumerate(inputs):
            try:
                frame_of([item])
            except TunewiseError as error:
                raise InputError(f"inputs[{index}]", str(error)) from None
        raise InputError("inputs", str(whole)) from None


def as_json(value: Any) -> Any:
    """A prediction as plain JSON: numpy numbers and arrays as Python's, NaN as null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(key): as_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [as_json(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def embedded_png(explanation: dict[str, Any]) -> dict[str, Any]:
    """An image explanation with its heat map's PNG bytes, base64-encoded, as `heatmap_png_base64` in place of
    `heatmap_png`, the path on the server (of no use to a client, and gone once the call's folder is)."""
    path = explanation.pop("heatmap_png", None)
    if path is not None:
        explanation["heatmap_png_base64"] = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return explanation
