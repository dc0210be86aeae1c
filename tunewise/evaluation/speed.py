"""How fast a model answers: latency of one row at a time, and throughput in batches.

Pure measurements over a callable, so a PyTorch model and an ONNX Runtime session are timed by the
same code on the same prepared batches (the inputs are built beforehand: only the model is timed).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

Batch = dict[str, Any]


def latency_ms(call: Callable[[Batch], Any], batches: Sequence[Batch], warmup: int = 2) -> float:
    """The median milliseconds of one call per batch (batches of one row: the latency a request sees),
    after `warmup` untimed calls that let the runtime allocate and pick its kernels."""
    for batch in batches[:warmup]:
        call(batch)
    times = []
    for batch in batches:
        started = time.perf_counter()
        call(batch)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def throughput(call: Callable[[Batch], Any], batches: Sequence[Batch], rows: int, warmup: int = 1) -> float:
    """Rows per second over all `batches` (holding `rows` rows in all), after `warmup` untimed calls."""
    for batch in batches[:warmup]:
        call(batch)
    started = time.perf_counter()
    for batch in batches:
        call(batch)
    return rows / (time.perf_counter() - started)
