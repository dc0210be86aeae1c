"""Reading and splitting the user's data: every problem becomes a DataError that cites the row and the fix."""

from tunewise.data.readers import (
    HF_PREFIX,
    ROW_COLUMN,
    SUPPORTED_FORMATS,
    cite_rows,
    file_fingerprint,
    read_table,
)
from tunewise.data.splits import split_train_validation

__all__ = [
    "HF_PREFIX",
    "ROW_COLUMN",
    "SUPPORTED_FORMATS",
    "cite_rows",
    "file_fingerprint",
    "read_table",
    "split_train_validation",
]
