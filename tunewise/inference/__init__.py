"""Running a model over encoded data: batches padded to their longest row, and the outputs in input order.

Training and prediction share these, so the model sees the same batches whether it is learning or
answering; the training loop adds its own batch order (`training.batching`) on top.
"""

from tunewise.inference.batches import collate, loss_terms, sorted_batches, to_device
from tunewise.inference.outputs import (
    eval_batch_size,
    model_device,
    model_scores,
    predict_logits,
    shared_across_processes,
)

__all__ = [
    "collate",
    "eval_batch_size",
    "loss_terms",
    "model_device",
    "model_scores",
    "predict_logits",
    "shared_across_processes",
    "sorted_batches",
    "to_device",
]
