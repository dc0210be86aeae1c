"""The export job: `tunewise export RUN --format onnx [--quantize int8]`, an ONNX model checked, not trusted.

    load          the run's model (LoRA runs' model/ already holds the merged weights) on the CPU
    refuse        generative runs: their answer is a generation loop, not one graph
    rows          the run's own test split (validation when it has none), read and split as training did
    convert       torch.onnx (dynamo) to fp32; with --quantize int8, ONNX Runtime's dynamic quantization
    measure       PyTorch and every ONNX model over those rows: the largest logit difference, every metric,
                  file sizes, CPU latency at batch 1 and throughput at batch 32, the hardware and versions
    gate          the exported model may lose at most `max_drop` points of the run's selection metric
    write         model.onnx, export.json, config.yaml and model/ without weights, in a folder moved into
                  place only once accepted: a refused export leaves nothing behind

`tunewise.load(EXPORT)` then serves the export through ONNX Runtime (`serving.onnx_model`).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch
from torch import nn

from tunewise.config.sections import RunConfig
from tunewise.errors import ConfigError, DataError, ExportRefused
from tunewise.evaluation.parity import max_abs_difference, quality_gate
from tunewise.evaluation.speed import latency_ms, throughput
from tunewise.inference import collate, sorted_batches
from tunewise.models.onnx import export_onnx, onnx_bytes, quantize_int8
from tunewise.prepare import prepare_data
from tunewise.runs.atomic import flush_to_disk, space_for
from tunewise.runs.exports import export_root
from tunewise.runs.guard import beside, check_export_dir, place_export
from tunewise.runs.layout import (
    CARD_FILE,
    CONFIG_FILE,
    EXPORT_FILE,
    MODEL_FOLDER,
    ONNX_EXPORT,
    ONNX_FILE,
    ONNX_INT8_EXPORT,
)
from tunewise.runs.reader import changed_since_training, run_folder
from tunewise.runs.record import cpu, cpu_cores, hardware, package_versions, write_json
from tunewise.serving.onnx_model import OnnxModel
from tunewise.serving.predictor import FineTunedModel, load
from tunewise.types import EncodedSplit, TaskFacts

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
VERSIONS = ("tunewise", "torch", "transformers", "onnx", "onnxscript", "onnxruntime", "timm")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
EXAMPLE_ROWS = 2  # the trace's batch: torch.export would freeze a dimension of size 1
LATENCY_ROWS = 64  # rows timed one at a time (the median is reported)
THROUGHPUT_ROWS = 512  # rows timed in batches of THROUGHPUT_BATCH rows each, longest first
THROUGHPUT_BATCH = 32


def export_run(
    run_dir: Path,
    output: Path | None = None,
    format: str = "onnx",
    quantize: str | None = None,
    max_drop: float = 1.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a finished run; returns what export.json holds. `output`: the export folder (default
    RUN/export/onnx, or RUN/export/onnx-int8 with `quantize`). `max_drop`: the points of the selection
    metric the exported model may lose on the run's test rows (ExportRefused beyond it)."""
    check_options(format, quantize, max_drop)
    if export_root(Path(run_dir)) is not None:
        raise ConfigError(f"{run_dir} is an export folder; point `tunewise export` at the run folder it came from.")
    run_dir = run_folder(run_dir)  # the run, also when given its model/ folder
    fine_tuned = load(run_dir, device="cpu")
    refuse_generation(fine_tuned.facts, run_dir)
    target = Path(output) if output is not None else run_dir / (ONNX_INT8_EXPORT if quantize else ONNX_EXPORT)
    check_export_dir(target, overwrite)
    frame, data = evaluation_rows(fine_tuned, run_dir)
    encoded = fine_tuned.encode(frame, "evaluate")
    exported = "onnx_int8" if quantize else "onnx_fp32"
    with tempfile.TemporaryDirectory(prefix="tunewise-export-") as scratch:
        with space_for(Path(scratch) / ONNX_FILE):  # the system's temporary folder
            models = convert(fine_tuned.model, encoded, Path(scratch), quantize)
        result = measure(fine_tuned, encoded, models)
        metric = selection_metric(fine_tuned.config, fine_tuned.facts, result["metrics"]["pytorch"])
        before, after = result["metrics"]["pytorch"][metric], result["metrics"][exported][metric]
        result = {
            "format": format,
            "quantization": quantize,
            "model_file": ONNX_FILE,
            "run_dir": str(run_dir.resolve()),
            "task": fine_tuned.facts.name,
            **graph_facts(models[exported]),
            "data": data,
            "gate": quality_gate(metric, before, after, max_drop),
            **result,
            "file_bytes": {"pytorch_safetensors": weight_bytes(run_dir / MODEL_FOLDER)}
            | {name: onnx_bytes(path) for name, path in models.items()},
            "hardware": hardware() | cpu(),
            "versions": package_versions(VERSIONS),
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if not result["gate"]["accepted"]:
            raise ExportRefused(refusal(result, run_dir), result)
        write_export(result, run_dir, models[exported], target)
    return result


def check_options(format: str, quantize: str | None, max_drop: float) -> None:
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}: tunewise exports {', '.join(FORMATS)}.")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize {quantize!r}: tunewise quantizes to {', '.join(QUANTIZATIONS)}, or not at all.")
    if not max_drop >= 0:
        raise ConfigError(f"--max-drop {max_drop}: the points the export may lose must be 0 or more.")


def refuse_generation(facts: TaskFacts, run_dir: Path) -> None:
    """A generative model answers with a decoding loop (and a key-value cache), which one exported graph
    of the encoder kind does not hold."""
    if facts.capabilities.generation:
        raise ConfigError(
            f"{run_dir} is a {facts.name} run, which generates text; tunewise export supports the encoder tasks "
            "(text classification, token classification, question answering, image classification). Serve it "
            f"with PyTorch (`tunewise.load('{run_dir}')`), or export its model/ folder with Hugging Face Optimum "
            f"(`optimum-cli export onnx --model {run_dir / MODEL_FOLDER} OUT`), which exports decoders with their "
            "key-value cache."
        )


def evaluation_rows(fine_tuned: FineTunedModel, run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The run's test rows (validation when it has no test file), read and split exactly as training
    did, and what they are for export.json."""
    data = prepare_data(fine_tuned.task, fine_tuned.config, labels_known=True)
    if data.problems:
        raise data.problems[0]
    split = next((name for name in ("test", "validation") if len(data.frames.get(name, ()))), None)
    if split is None:
        raise DataError(f"{run_dir} has no test or validation rows to check the export on; give the run data.test.")
    frame = data.frames[split]
    changed = changed_since_training(run_dir, data.fingerprints)
    return frame, {"split": split, "source": data.sources[split], "rows": len(frame), "changed_since_training": changed}


def convert(model: nn.Module, encoded: EncodedSplit, scratch: Path, quantize: str | None) -> dict[str, Path]:
    """The ONNX models, by name: onnx_fp32, and with `quantize` onnx_int8 made from it."""
    order = np.argsort(-encoded.lengths, kind="stable")
    example = model_inputs(encoded, np.resize(order[:EXAMPLE_ROWS], EXAMPLE_ROWS))  # the longest rows: >= 2 tokens
    models = {"onnx_fp32": scratch / "onnx_fp32" / ONNX_FILE}
    export_onnx(model, example, models["onnx_fp32"], token_inputs="input_ids" in encoded.sequences)
    if quantize is not None:
        models["onnx_int8"] = scratch / "onnx_int8" / ONNX_FILE
        quantize_int8(models["onnx_fp32"], models["onnx_int8"], scratch)
    return models


def measure(fine_tuned: FineTunedModel, encoded: EncodedSplit, models: dict[str, Path]) -> dict[str, Any]:
    """Every metric of PyTorch and of each ONNX model on the rows, the largest absolute difference of each
    ONNX model's scores from PyTorch's, and the speed of all of them."""
    scoring, processor = fine_tuned.task.scoring, fine_tuned.processor
    reference = fine_tuned.run(encoded)
    metrics = {"pytorch": scoring.metrics(reference, encoded)}
    differences, runners = {}, {"pytorch": fine_tuned.model}
    for name, path in models.items():
        session = OnnxModel.open(path)
        outputs = scoring.run(session, processor, encoded)
        metrics[name] = scoring.metrics(outputs, encoded)
        differences[name] = max_abs_difference(reference.logits, outputs.logits)
        runners[name] = session
    return {"max_abs_logit_difference": differences, "metrics": metrics, "speed": speed(runners, encoded)}


def speed(models: dict[str, nn.Module], encoded: EncodedSplit) -> dict[str, Any]:
    """CPU latency at batch 1 (median ms) and throughput at batch 32 (rows/s) of each model, on the same
    prepared batches, PyTorch and ONNX Runtime with the same number of threads."""
    singles = [model_inputs(encoded, np.array([row])) for row in range(min(len(encoded), LATENCY_ROWS))]
    rows = min(len(encoded), THROUGHPUT_ROWS)
    batches = [model_inputs(encoded, indices) for indices in sorted_batches(encoded.lengths[:rows], THROUGHPUT_BATCH)]
    timings: dict[str, Any] = {"threads": cpu_cores(), "latency_rows": len(singles), "throughput_rows": rows}
    with torch_threads(cpu_cores()), torch.inference_mode():
        for name, model in models.items():
            timings[name] = {
                "latency_batch1_ms": latency_ms(caller(model), singles),
                "throughput_batch32_rows_per_s": throughput(caller(model), batches, rows),
            }
    return timings


def caller(model: nn.Module) -> Callable[[dict[str, torch.Tensor]], Any]:
    return lambda batch: model(**batch)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch timed on as many threads as ONNX Runtime (training may have set fewer)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def model_inputs(encoded: EncodedSplit, indices: np.ndarray) -> dict[str, torch.Tensor]:
    """The batch of rows `indices` as the model takes it, without the labels."""
    return {name: tensor for name, tensor in collate(encoded, indices).items() if name not in encoded.label_keys}


def selection_metric(config: RunConfig, facts: TaskFacts, metrics: dict[str, Any]) -> str:
    """The metric the run picked its best model by, when the scores give it (the loss does not: an
    export returns scores only), else the task's default metric."""
    stopping = config.train.early_stopping
    chosen = stopping.metric if stopping is not None else facts.default_metric
    return chosen if isinstance(metrics.get(chosen), (int, float)) else facts.default_metric


def graph_facts(path: Path) -> dict[str, Any]:
    """The exported graph's inputs, outputs and opset, for whoever feeds it without tunewise."""
    graph = onnx.load(str(path), load_external_data=False)
    opset = next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))
    return {
        "inputs": [node.name for node in graph.graph.input],
        "outputs": [node.name for node in graph.graph.output],
        "opset": opset,
    }


def weight_bytes(model_dir: Path) -> int:
    """The PyTorch weights' size on disk (every weights file of the saved model)."""
    return sum(file.stat().st_size for file in model_dir.iterdir() if file.name.endswith(WEIGHT_SUFFIXES))


def refusal(result: dict[str, Any], run_dir: Path) -> str:
    """What was lost, against what tolerance, and what to do instead."""
    gate, data = result["gate"], result["data"]
    fp32_difference = result["max_abs_logit_difference"]["onnx_fp32"]
    if result["quantization"]:
        instead = (
            f"Export without --quantize (the fp32 graph's scores differ from PyTorch's by at most "
            f"{fp32_difference:.2g}), or allow the drop with --max-drop {math.ceil(gate['drop'] * 100) / 100:g}."
        )
    else:
        instead = (
            f"An fp32 graph should score as PyTorch does, yet its scores differ by up to {fp32_difference:.2g}: "
            f"please report it with the run's model type; --max-drop {math.ceil(gate['drop'] * 100) / 100:g} "
            "accepts it as it is."
        )
    return (
        f"the {result['quantization'] or 'fp32'} ONNX export of {run_dir} is refused: {gate['metric']} on its "
        f"{data['rows']} {data['split']} rows is {gate['before']:.4f} with PyTorch and {gate['after']:.4f} with ONNX "
        f"Runtime, a drop of {gate['drop']:.4g} {gate['unit']} where --max-drop allows {gate['max_drop']:g}. Nothing "
        "was written. " + instead
    )


def write_export(result: dict[str, Any], run_dir: Path, model: Path, target: Path) -> None:
    """The export folder, written beside its final place and moved there whole."""
    staging = beside(target, "partial")
    needed = sum(file.stat().st_size for file in model.parent.iterdir())
    try:
        with space_for(target, needed):  # a full disk: DiskFull, the export that was there unchanged
            for file in model.parent.iterdir():  # the model, and its external data file when it has one
                shutil.copy2(file, staging / file.name)
            shutil.copy2(run_dir / CONFIG_FILE, staging / CONFIG_FILE)
            if (run_dir / CARD_FILE).is_file():  # the card travels with the model (the server's /info quotes it)
                shutil.copy2(run_dir / CARD_FILE, staging / CARD_FILE)
            shutil.copytree(run_dir / MODEL_FOLDER, staging / MODEL_FOLDER, ignore=without_weights)
            write_json(staging / EXPORT_FILE, result)
            flush_to_disk(staging)  # on the disk before it is renamed into place
            place_export(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def without_weights(folder: str, names: list[str]) -> list[str]:
    """The saved model's weight files (and their shard indexes): the export carries its own weights."""
    return [name for name in names if name.endswith((*WEIGHT_SUFFIXES, ".index.json"))]
