"""Checks that need nothing but the rows: suspicious texts, class balance and token lengths."""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd

from tunewise.audit.findings import Finding

NEAR_EMPTY_CHARS = 3
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# UTF-8 read as Latin-1/Windows-1252 and saved again: the classic signatures of mojibake
MOJIBAKE = re.compile(r"Ã[\x80-\xbf¡-¿]|â€|Â[\xa0-\xbf]|ï»¿|\ufffd")


def text_quality(frame: pd.DataFrame, text_columns: list[str], split: str) -> list[Finding]:
    """Near-empty texts, control characters and mojibake: each loads fine but teaches the model noise."""
    findings = []
    for column in text_columns:
        texts = frame[column].astype(str)
        checks = (
            (
                "near-empty",
                texts.str.strip().str.len() < NEAR_EMPTY_CHARS,
                f"have fewer than {NEAR_EMPTY_CHARS} characters",
                "Check whether these rows carry any signal; drop them if not.",
            ),
            (
                "control characters",
                texts.map(lambda t: bool(CONTROL_CHARACTERS.search(t))),
                "contain control characters",
                "Strip control characters (often left by copy-paste or binary exports).",
            ),
            (
                "mojibake",
                texts.map(lambda t: bool(MOJIBAKE.search(t))),
                "look like mis-decoded text (mojibake such as 'Ã©' for 'é')",
                "Re-export the data as UTF-8 from its source, or repair it (e.g. with the ftfy package).",
            ),
        )
        for name, mask, what, fix in checks:
            if mask.any():
                rows = frame.loc[mask, "_row"].tolist()
                findings.append(
                    Finding(
                        "validity",
                        "warning",
                        f"{len(rows)} {split} text(s) in {column!r} {what}.",
                        fix,
                        split,
                        len(rows),
                        rows,
                        {"kind": name, "column": column},
                    )
                )
    return findings


def class_balance(labels: pd.Series, split: str, warn_ratio: float) -> tuple[dict, list[Finding]]:
    """Class counts and the largest/smallest ratio; a warning past `warn_ratio`."""
    counts = labels.astype(str).value_counts().sort_index()
    ratio = float(counts.max() / counts.min()) if len(counts) > 1 else 1.0
    stats = {"class_counts": {str(k): int(v) for k, v in counts.items()}, "imbalance_ratio": round(ratio, 2)}
    findings = []
    if ratio > warn_ratio:
        rarest = counts.idxmin()
        findings.append(
            Finding(
                "balance",
                "warning",
                f"{split}: classes are imbalanced {ratio:.1f}:1 "
                f"(rarest {rarest!r}: {counts.min()} of {counts.sum()} rows).",
                "Judge the model by per-class recall and macro F1 (tunewise reports both), and consider more rows of "
                "the rare class or data.balance: reweight / oversample.",
                split,
                int(counts.min()),
                [],
                {"class_counts": stats["class_counts"], "ratio": round(ratio, 2)},
            )
        )
    return stats, findings


def _token_counts(tokenizer, texts: list[str], pairs: list[str] | None) -> np.ndarray:
    """Tokens per row (special tokens included), untruncated, as training would count them.

    A fast tokenizer's Rust backend counts them directly (`encode_batch_fast`: no offsets, no Python
    lists of ids): 1.5 s instead of 4 s for SST-2's 67k rows. Other tokenizers go through `__call__`.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        encoded = tokenizer(texts, pairs, truncation=False, verbose=False)["input_ids"]
        return np.array([len(ids) for ids in encoded], dtype=np.int64)
    backend = copy.deepcopy(backend)  # a copy: truncation and padding are switched off without touching the caller's
    backend.no_truncation()
    backend.no_padding()
    inputs = texts if pairs is None else list(zip(texts, pairs, strict=True))
    return np.array([len(encoding) for encoding in backend.encode_batch_fast(inputs)], dtype=np.int64)


def token_lengths(
    frame: pd.DataFrame, text_columns: list[str], tokenizer, max_length: int, split: str, warn_share: float
) -> tuple[dict, list[Finding]]:
    """Token-length distribution with the model's own tokenizer, and how many rows max_length cuts."""
    texts = frame[text_columns[0]].tolist()
    pairs = frame[text_columns[1]].tolist() if len(text_columns) > 1 else None
    lengths = _token_counts(tokenizer, texts, pairs)
    truncated = lengths > max_length
    stats = {
        "tokens": {
            "mean": round(float(lengths.mean()), 1),
            "median": float(np.median(lengths)),
            "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
        },
        "max_length": max_length,
        "truncated_rows": int(truncated.sum()),
        "truncated_share": round(float(truncated.mean()), 4),
        "lengths": lengths.tolist(),
    }
    findings = []
    if truncated.mean() > warn_share:
        rows = frame.loc[truncated, "_row"].tolist()
        findings.append(
            Finding(
                "length",
                "warning",
                f"{split}: {truncated.sum()} of {len(lengths)} rows ({truncated.mean():.1%}) are longer than "
                f"max_length "
                f"{max_length} tokens and will be cut (95th percentile: {stats['tokens']['p95']:.0f} tokens).",
                "Raise data.max_length (costs time and memory), or check that the start of each text holds the signal.",
                split,
                int(truncated.sum()),
                rows,
            )
        )
    return stats, findings
