"""Running a model over encoded data: batches padded to their longest row, and the outputs in input order.

Training and prediction share these, so the model sees the same batches whether it is learning or
answering; the training loop adds its own batch order (`training.batching`) on top.
"""

from tunewise.inference.batches import collate, sorted_batches, to_device
from tunewise.inference.outputs import EVAL_BATCH_SIZE, model_scores, predict_logits

__all__ = ["EVAL_BATCH_SIZE", "collate", "model_scores", "predict_logits", "sorted_batches", "to_device"]
