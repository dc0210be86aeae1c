"""Where a run keeps each of its files, relative to the run folder (the config's output_dir)."""

from __future__ import annotations

RUN_FILE = "run.json"  # what was run and how it went: plan, fingerprints, versions, durations, task facts
CONFIG_FILE = "config.yaml"  # the resolved config: every auto replaced, so it replays exactly
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.jsonl"
PREDICTIONS_FILE = "predictions.csv"
FAIRNESS_FILE = "fairness.json"
PRIVACY_FILE = "privacy.json"
SAFETY_FILE = "safety.json"  # generative runs: the red team before and after, the screen's counts
RED_TEAM_FILE = "red_team.jsonl"  # every red-team prompt with both answers, as the screen left them
MEMORISATION_FILE = "memorisation.json"  # generative runs: canary exposure, personal-data extraction
EXPLANATIONS_FILE = "explanations.json"  # top words per label, examples, faithfulness, identity-term attribution
EXPLANATIONS_FOLDER = "explanations"  # image runs: the heat maps (PNG) of the examples explanations.json shows
REPORT_FILE = "report.html"
CARD_FILE = "model_card.md"
MODEL_FOLDER = "model"  # loads with from_pretrained
ADAPTER_FOLDER = "adapter"  # LoRA runs: the bare adapter
CHECKPOINT_FOLDER = "checkpoints"
PLOTS_FOLDER = "plots"
AUDIT_FOLDER = "audit"  # the data check: audit.json, plots, datasheet.md
AUDIT_FILE = f"{AUDIT_FOLDER}/audit.json"
LOSS_PLOT = f"{PLOTS_FOLDER}/loss.png"
CALIBRATION_PLOT = f"{PLOTS_FOLDER}/calibration_test.png"  # drawn by the report from predictions.csv
EXPORT_FOLDER = "export"  # tunewise export: one folder per exported model
ONNX_EXPORT = f"{EXPORT_FOLDER}/onnx"  # the float32 ONNX model
ONNX_INT8_EXPORT = f"{EXPORT_FOLDER}/onnx-int8"  # the int8 (dynamically quantized) ONNX model

# inside an export folder: self-contained, so it loads without the run folder or the PyTorch weights
ONNX_FILE = "model.onnx"  # the exported model (fp32 or int8: one model per export folder)
EXPORT_FILE = "export.json"  # how the export was checked: parity, metrics before and after, sizes, speed

# everything tunewise writes, and so everything --overwrite may remove (nothing else)
ARTIFACTS = (
    MODEL_FOLDER,
    ADAPTER_FOLDER,
    CHECKPOINT_FOLDER,
    PLOTS_FOLDER,
    EXPORT_FOLDER,  # exports of the previous weights would be stale
    CONFIG_FILE,
    METRICS_FILE,
    HISTORY_FILE,
    PREDICTIONS_FILE,
    FAIRNESS_FILE,
    PRIVACY_FILE,
    SAFETY_FILE,
    RED_TEAM_FILE,
    MEMORISATION_FILE,
    EXPLANATIONS_FILE,
    EXPLANATIONS_FOLDER,
    REPORT_FILE,
    CARD_FILE,
    RUN_FILE,
)
