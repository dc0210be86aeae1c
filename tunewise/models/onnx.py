"""A PyTorch model as an ONNX graph (torch.onnx's dynamo exporter), and that graph with int8 weights.

`export_onnx` traces the model with `torch.export` on an example batch and writes the graph with the
batch (and, for token inputs, the sequence length) as symbolic dimensions. torch.export treats sizes
0 and 1 as constants, so the example must have at least two rows of at least two tokens, or a batch of
one would be baked into the graph. The graph's outputs are named after the model output's fields
(`logits`, or `start_logits` and `end_logits`), so a runtime finds each by name.

`quantize_int8` is ONNX Runtime's dynamic quantization: weights stored as int8 (QInt8), activations
quantized on the fly per batch, no calibration data. ONNX Runtime's pre-processing runs first (ONNX
shape inference and its graph optimisations), without its symbolic shape inference: that step cannot
read dynamo's `Min(max_positions, sequence)` dimensions ("Incomplete symbolic shape inference" on every
BERT export tried), and when it fails it leaves sym_shape_infer_temp.onnx in the working directory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from tunewise.errors import ConfigError, first_line

PROTOBUF_LIMIT = 2**31 - 1  # bytes: larger models keep their weights in an external data file beside the graph


def export_onnx(model: nn.Module, example: dict[str, torch.Tensor], path: Path, token_inputs: bool) -> None:
    """Write `model` as `path` (plus `path`.data for models over 2 GB). `example`: one batch of model inputs
    (at least two rows; with `token_inputs`, [rows, tokens] tensors of at least two tokens)."""
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=1)
    shapes = {
        name: {0: batch, 1: sequence} if token_inputs and tensor.dim() == 2 else {0: batch}
        for name, tensor in example.items()
    }
    with torch.no_grad():
        names = [name for name in model(**example).keys() if name != "loss"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on merged axis names and deprecated paths
            program = torch.onnx.export(
                model, (), kwargs=example, dynamo=True, dynamic_shapes=shapes, output_names=names, verbose=False
            )
    except torch.onnx.errors.OnnxExporterError as error:
        raise ConfigError(
            f"the {type(model).__name__} model cannot be exported to ONNX ({first_line(error, 300)}). Serve the run "
            "with PyTorch (`tunewise.load(RUN)`), or fine-tune a model whose architecture torch.onnx supports (BERT, "
            "MiniLM, DistilBERT, RoBERTa, timm CNNs and ViTs do)."
        ) from None
    assert program is not None, "the dynamo exporter returns the program"
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))


def onnx_bytes(path: Path) -> int:
    """The size of an ONNX model on disk, with its external data file when it has one."""
    return sum(file.stat().st_size for file in (path, path.with_name(path.name + ".data")) if file.is_file())


def quantize_int8(source: Path, target: Path, scratch: Path) -> None:
    """`source` with int8 weights as `target` (ONNX Runtime dynamic quantization); `scratch` holds the
    pre-processed graph in between."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    large = onnx_bytes(source) > PROTOBUF_LIMIT
    prepared = scratch / "preprocessed.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    quant_pre_process(source, prepared, skip_symbolic_shape=True, save_as_external_data=large)
    quantize_dynamic(prepared, target, weight_type=QuantType.QInt8, use_external_data_format=large)
