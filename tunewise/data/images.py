"""Image data: an ImageFolder tree, or a table (CSV, TSV, JSONL, JSON, Parquet) of image paths and labels.

An ImageFolder tree is `root/<class name>/<image>` (torchvision's layout, nested folders allowed
inside a class). A table names each image in a path column; relative paths are resolved against
the table's own folder, so a dataset folder can be moved as a whole.

Real image folders hold broken files: truncated downloads, HTML error pages saved as .jpg, a
README beside the photos. Each file is opened with PIL, `verify()`-ed and then fully decoded (verify
alone misses truncation), and the unreadable ones are returned by path with the reason, so the data
check can list them and training can skip them instead of failing halfway through an epoch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from tunewise.data.readers import ROW_COLUMN, read_table
from tunewise.errors import DataError

# (path, size, modification time) -> why the file is unusable, or None
_CHECKED: dict[tuple[str, int, int], str | None] = {}


@dataclass(frozen=True)
class UnreadableImage:
    """A file named by the data that cannot be used as an image, and why."""

    path: str
    reason: str
    row: int


def read_images(source: str, split: str, path_column: str, label_column: str | None) -> pd.DataFrame:
    """The images `source` names, one row each: `path_column` (absolute paths), the label (when
    `label_column` is given) and `_row`. Files that are not readable images are still listed here;
    `unreadable_images` finds them."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_folder(path, split, path_column, label_column)
    frame = read_table(source, split, [path_column], label_column)
    base = path.resolve().parent
    frame[path_column] = [_absolute(value, base) for value in frame[path_column]]
    return frame


def unreadable_images(frame: pd.DataFrame, path_column: str) -> list[UnreadableImage]:
    """Every row whose file is missing, not an image, corrupt or truncated."""
    problems = []
    for path, row in zip(frame[path_column], frame[ROW_COLUMN], strict=True):
        reason = image_problem(path)
        if reason is not None:
            problems.append(UnreadableImage(path, reason, int(row)))
    return problems


def image_problem(path: str) -> str | None:
    """Why `path` cannot be used as an image, or None. Results are remembered per file version
    (size, modification time), so the data check and training decode each file once."""
    try:
        stat = os.stat(path)
    except OSError:
        return "file not found"
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKED:
        _CHECKED[key] = _decode_problem(path)
    return _CHECKED[key]


def _decode_problem(path: str) -> str | None:
    try:
        with Image.open(path) as image:
            image.verify()  # structure and checksums, without decoding the pixels
        with Image.open(path) as image:
            image.load()  # decoding the pixels finds truncated files that verify() lets through
    except Image.DecompressionBombError as error:
        return f"too large to decode safely ({error})"
    except (OSError, SyntaxError, ValueError) as error:
        message = str(error).strip() or type(error).__name__
        if "cannot identify image file" in message:
            return "not an image file PIL can read"
        return message.splitlines()[0][:200]
    return None


def load_rgb(path: str) -> Image.Image:
    """The image as 3-channel RGB (grey, palette and RGBA images all occur in real folders)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_folder(root: Path, split: str, path_column: str, label_column: str | None) -> pd.DataFrame:
    """ImageFolder: class folders under `root`, each holding that class's images (at any depth).
    Without labels (prediction), every image under `root` is read."""
    where = f"{split} data {str(root)!r}"
    files = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root)))
    if label_column is None:
        paths = [str(p.resolve()) for p in files]
        if not paths:
            raise DataError(f"{where}: the folder holds no files. Point at the folder that holds the images.")
        frame = pd.DataFrame({path_column: paths})
    else:
        outside = [p for p in files if len(p.relative_to(root).parts) < 2]
        inside = [p for p in files if len(p.relative_to(root).parts) >= 2]
        if not inside:
            raise DataError(
                f"{where}: no class folders with files in them. An image folder holds one subfolder per class, "
                f"e.g. {root}/cats/1.jpg and {root}/dogs/2.jpg; or give a CSV/JSONL of image paths and labels."
            )
        if outside:
            names = ", ".join(p.name for p in outside[:5])
            raise DataError(
                f"{where}: {len(outside)} file(s) lie directly in the folder, outside any class folder ({names}), "
                "so they have no label. Move each into its class's subfolder, or remove it."
            )
        frame = pd.DataFrame(
            {
                path_column: [str(p.resolve()) for p in inside],
                label_column: [p.relative_to(root).parts[0] for p in inside],
            }
        )
    frame[ROW_COLUMN] = range(1, len(frame) + 1)
    frame.attrs.update(source=str(root), row_unit="file")
    return frame


def _hidden(relative: Path) -> bool:
    """Dot files and folders (.DS_Store, .ipynb_checkpoints) are file-system clutter, not data."""
    return any(part.startswith(".") for part in relative.parts)


def _absolute(value: object, base: Path) -> str:
    path = Path(str(value).strip()).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())
