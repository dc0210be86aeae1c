"""An exported ONNX model behind the interface the task's scoring already calls.

`OnnxModel` is a torch `nn.Module` without parameters whose forward feeds an ONNX Runtime session:
called with the encoded batch as keyword tensors (exactly what `inference.collate` gives a PyTorch
model), it passes on the inputs the graph declares (labels and anything else are left out), and
returns the graph's outputs by name (`logits`, or `start_logits` and `end_logits`) as torch tensors,
with `loss` None. So `predict`, `predict_file` and `evaluate` run an export through the same task
code as the PyTorch model, and what they print means the same.

The session runs on the CPU (CPUExecutionProvider) with one intra-op thread per core, idle threads
sleeping rather than spinning: an export is for serving where there is no GPU, or no PyTorch model to
keep in memory.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from torch import nn

from tunewise.errors import ConfigError, first_line
from tunewise.runs.record import cpu_cores

# what ONNX Runtime raises for a file that is not a model it can run (truncated, not ONNX, an unknown operator)
SESSION_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NoSuchFile,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
)
# ONNX tensor element types -> the numpy type a feed must have
FEED_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(bool)": np.bool_,
}


class OnnxModel(nn.Module):
    """An ONNX Runtime session called like the PyTorch model it was exported from."""

    def __init__(self, session: ort.InferenceSession, path: Path, threads: int):
        super().__init__()
        self.session = session
        self.path = path
        self.threads = threads
        self.inputs: dict[str, type] = {
            node.name: FEED_TYPES.get(node.type, np.float32) for node in session.get_inputs()
        }
        self.outputs = [node.name for node in session.get_outputs()]
        self.device = torch.device("cpu")
        self.train(False)  # evaluation only, from the start (nn.Module starts in training mode)

    @classmethod
    def open(cls, path: Path, threads: int | None = None) -> OnnxModel:
        """A session over `path`; a file ONNX Runtime cannot run is a ConfigError naming it."""
        threads = threads or cpu_cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # idle threads sleep instead of spinning: a server's event loop and its clients need the same cores
        # (bench/serving.py, int8 SMS export, 2 cores: 16 clients 148 -> 183-197 req/s, 64 clients 66 -> 85-93)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except SESSION_ERRORS as error:
            raise ConfigError(
                f"{path} cannot be run by ONNX Runtime ({first_line(error, 300)}). The file is damaged or not an ONNX "
                "model; export the run again with `tunewise export RUN --format onnx --overwrite`."
            ) from None
        return cls(session, Path(path), threads)

    def train(self, mode: bool = True) -> OnnxModel:
        """Evaluation only: an exported graph has no gradients to train."""
        if mode:
            raise ConfigError(f"{self.path} is an exported model, which cannot be trained; train the run folder.")
        return super().train(False)

    def forward(self, **batch: torch.Tensor) -> Any:
        """The graph's outputs for the inputs it declares, by name, as torch tensors; `loss` is None."""
        missing = [name for name in self.inputs if name not in batch]
        if missing:
            raise ConfigError(
                f"{self.path} takes {', '.join(self.inputs)}, but the encoded batch has no {', '.join(missing)}. "
                "The export does not match this run's encoding; export the run again."
            )
        feeds: dict[str, np.ndarray] = {
            name: batch[name].detach().cpu().numpy().astype(kind, copy=False) for name, kind in self.inputs.items()
        }
        results = self.session.run(self.outputs, feeds)
        scores = {name: torch.from_numpy(value) for name, value in zip(self.outputs, results, strict=True)}
        return SimpleNamespace(loss=None, **scores)
