"""Tokenise texts once: results are kept on disk, keyed by the texts, the tokenizer and the settings.

A second run on the same data (a resumed run, a new learning rate, another strategy) loads token
ids instead of tokenising again. The key hashes the texts themselves rather than a file name, so
an edited file, a different validation split or another tokenizer can never reuse stale ids. Token
ids are stored as one flat int32 array per column plus row offsets (`.npz`), which loads in
milliseconds for a hundred thousand rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "TUNEWISE_CACHE_DIR"
FORMAT_VERSION = "1"


def cache_base() -> Path:
    """tunewise's cache folder, shared by every cache (each in its own subfolder): $TUNEWISE_CACHE_DIR,
    default ~/.cache/tunewise."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tunewise")


def cache_root() -> Path:
    return cache_base() / "tokens"


def tokenize(
    tokenizer: Any,
    texts: list[str],
    pairs: list[str] | None = None,
    max_length: int | None = None,
    columns: tuple[str, ...] = ("input_ids",),
    use_cache: bool = True,
    **options: Any,
) -> dict[str, list[np.ndarray]]:
    """Token ids per row for each of `columns` (those the tokenizer returns), truncated to max_length."""
    settings = {"truncation": max_length is not None, "max_length": max_length, **options}
    path = cache_root() / f"{cache_key(tokenizer, texts, pairs, columns, settings)}.npz" if use_cache else None
    if path is not None and path.is_file():
        try:
            return _load(path)
        except (OSError, ValueError, KeyError):  # a damaged cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    if not texts:
        return {name: [] for name in columns[:1]}
    encoded = tokenizer(texts, pairs, **settings)
    result = {name: [np.asarray(row, dtype=np.int32) for row in encoded[name]] for name in columns if name in encoded}
    if path is not None:
        _save(path, result)
    return result


def cache_key(tokenizer: Any, texts: list[str], pairs: list[str] | None, columns: tuple[str, ...], settings) -> str:
    digest = hashlib.sha256()
    digest.update(f"{FORMAT_VERSION}|{tokenizer_fingerprint(tokenizer)}|{columns}|{sorted(settings.items())}".encode())
    for group in (texts, pairs or []):
        digest.update(b"\x1e")
        for text in group:
            digest.update(str(text).encode("utf-8", "surrogatepass"))
            digest.update(b"\x1f")
    return digest.hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """The tokenizer's full definition (vocabulary, normaliser, special tokens), hashed."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # the backend also records the truncation and padding of its last call: not part of its identity
        settings = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        definition = json.dumps(settings, sort_keys=True)
    else:
        definition = repr(sorted(tokenizer.get_vocab().items()))
    extras = f"{type(tokenizer).__name__}|{tokenizer.padding_side}|{tokenizer.truncation_side}"
    return hashlib.sha256((definition + extras).encode("utf-8")).hexdigest()


def _save(path: Path, result: dict[str, list[np.ndarray]]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for name, rows in result.items():
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        arrays[f"{name}.offsets"] = np.concatenate([[0], np.cumsum(lengths)])
        arrays[f"{name}.values"] = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial.npz")
    try:
        np.savez(partial, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its flags
        partial.replace(path)  # atomic: a concurrent reader never sees half a file
    except OSError as error:  # a full or read-only cache disk: this run goes on without caching its tokens
        partial.unlink(missing_ok=True)
        why = f"the token cache {path.parent} could not be written ({error.strerror}); tokens are not cached"
        warnings.warn(why, stacklevel=2)


def _load(path: Path) -> dict[str, list[np.ndarray]]:
    with np.load(path) as stored:
        names = sorted({key.rsplit(".", 1)[0] for key in stored.files})
        result = {}
        for name in names:
            offsets, values = stored[f"{name}.offsets"], stored[f"{name}.values"]
            result[name] = np.split(values, offsets[1:-1]) if len(offsets) > 1 else []
    return result
