"""Finding an export folder (`tunewise export`) and checking it holds what loading it needs.

An export folder is self-contained: `model.onnx`, `export.json` (how it was checked), `config.yaml`
(the run's resolved config) and `model/` (the run's model folder without its weights: the label maps,
the tokenizer or image processor). `export.json` is what makes a folder an export, as `run.json` makes
one a run: the export job writes the folder elsewhere and moves it into place only once the model
has passed its checks, so a folder with an `export.json` was accepted, and one whose other files are
missing was damaged later, which is said with the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

from tunewise.errors import ConfigError
from tunewise.runs.layout import CONFIG_FILE, EXPORT_FILE, MODEL_FOLDER, ONNX_EXPORT, ONNX_FILE, ONNX_INT8_EXPORT
from tunewise.runs.reader import read_json

REEXPORT = "Export the run again with `tunewise export RUN --format onnx --overwrite` (add --quantize int8 for int8)"


def export_root(path: Path) -> Path | None:
    """The export folder `path` is, or whose model/ folder it is; None when it is no export."""
    path = Path(path)
    if not path.is_dir():
        return None
    for folder in (path, path.parent) if path.name == MODEL_FOLDER else (path,):
        if (folder / EXPORT_FILE).is_file() or (folder / ONNX_FILE).is_file():
            return folder
    return None


def check_export(folder: Path) -> dict:
    """The export's record (export.json); a missing or damaged part is a ConfigError naming the file."""
    record = folder / EXPORT_FILE
    if not record.is_file():
        raise ConfigError(
            f"{folder} holds {ONNX_FILE} but no {EXPORT_FILE}, so it is not an export tunewise wrote and checked. "
            f"{REEXPORT}."
        )
    content = read_json(record)
    if not isinstance(content, dict):
        raise ConfigError(f"{record} holds a JSON {type(content).__name__}, not the export's record. {REEXPORT}.")
    needed = {
        folder / ONNX_FILE: "the exported model",
        folder / CONFIG_FILE: "the run's resolved config",
        folder / MODEL_FOLDER / "config.json": "the label maps and model settings",
    }
    for path, what in needed.items():
        if not path.is_file():
            raise ConfigError(f"{folder} is an incomplete export: {path} ({what}) is missing. {REEXPORT}.")
    return content


def export_folder(run_dir: Path) -> Path:
    """A run's export to serve: the int8 one when it exists and was accepted, else the fp32 one."""
    run_dir = Path(run_dir)
    for name in (ONNX_INT8_EXPORT, ONNX_EXPORT):
        folder = run_dir / name
        if (folder / EXPORT_FILE).is_file():
            record = check_export(folder)
            if record.get("gate", {}).get("accepted") is True:
                return folder
    raise ConfigError(
        f"{run_dir} has no ONNX export ({run_dir / ONNX_INT8_EXPORT} and {run_dir / ONNX_EXPORT} hold none). "
        f"Run `tunewise export {run_dir} --format onnx` first."
    )
