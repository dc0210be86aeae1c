"""The Python API: one function per command, each a thin caller of its job (tunewise/jobs/).

train(config)         check the data, fine-tune, evaluate, audit, report: the run folder
tune(config, trials)  an Optuna study over the config's tune.space, a training run per trial; the best on test once
check(config)         the data check alone: findings, audit.json, datasheet, redacted copies
audit_privacy(run)    membership inference against a finished run
build_guard(data)     train the content screen's abusive-language classifier (Davidson et al.'s tweets)
load(run)             a fine-tuned model to predict and evaluate with
export(run)           ONNX (and int8), checked on the run's own test rows before it is accepted
serve(run)            the model behind HTTP: batched across clients, with limits, metrics and an API key
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers.utils import logging as transformers_logging

from tunewise.audit.findings import Audit
from tunewise.audit.redact import RedactMode, write_redacted_copies
from tunewise.config.sections import RunConfig
from tunewise.jobs import export as export_job
from tunewise.jobs import guard as guard_job
from tunewise.jobs import privacy as privacy_job
from tunewise.jobs import train as train_job
from tunewise.jobs import tune as tune_job
from tunewise.jobs.check import TokenView, run_check, token_views, write_check
from tunewise.prepare import prepare_check
from tunewise.reporting.rebuild import rebuild
from tunewise.runs.exports import check_export, export_folder, export_root
from tunewise.runs.layout import AUDIT_FOLDER
from tunewise.runs.reader import run_folder
from tunewise.serving.http import ServerSettings, run_server
from tunewise.serving.predictor import FineTunedModel, load
from tunewise.tasks import load_config

Run = train_job.Run
TuneResult = tune_job.TuneResult


def train(
    config: str | Path | dict | RunConfig,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
) -> Run:
    """Fine-tune as the config says and write the run folder. Returns the `Run`."""
    transformers_logging.set_verbosity_error()
    return train_job.train(load_config(config, overrides), overwrite, resume, show_progress, console)


def tune(
    config: str | Path | dict | RunConfig,
    trials: int,
    storage: str | None = None,
    timeout: float | None = None,
    overrides: list[str] | None = None,
    study_name: str | None = None,
    show_progress: bool = True,
    console: Console | None = None,
) -> TuneResult:
    """Search the config's `tune.space` (`tunewise tune`): one training run per trial into OUTPUT_DIR/trials/, with
    the test split withheld, until the study holds `trials` finished trials (`storage` of an earlier study
    continues it) or `timeout` seconds have passed; the best trial is then scored on test once. Writes
    OUTPUT_DIR/tune/ (trials.csv, best.json, best_config.yaml, plots) and returns the best trial."""
    transformers_logging.set_verbosity_error()
    return tune_job.tune(load_config(config, overrides), trials, storage, timeout, study_name, show_progress, console)


@dataclass
class CheckResult:
    audit: Audit
    audit_file: Path
    redacted: list[Path] = field(default_factory=list)
    tokens: list[TokenView] = field(default_factory=list)  # --show-tokens: the first training rows as tokens


def check(
    config: str | Path | dict | RunConfig,
    overrides: list[str] | None = None,
    output: Path | None = None,
    redact: Path | None = None,
    redact_mode: RedactMode = "replace",
    salt_file: Path | None = None,
    show_tokens: int = 0,
) -> CheckResult:
    """The data check of `tunewise check`: audit.json, plots and the datasheet in `output` (default
    OUTPUT_DIR/audit), with `redact` copies of the data files with personal data redacted, and with
    `show_tokens` the first training rows as the model sees them (tokens and loss mask)."""
    transformers_logging.set_verbosity_error()
    plan = prepare_check(load_config(config, overrides))
    audit = run_check(plan)
    audit_file = write_check(audit, plan, output or plan.run_dir / AUDIT_FOLDER)
    redacted = []
    if redact is not None:
        salt = salt_file or (Path(config).with_name(".tunewise-salt") if isinstance(config, (str, Path)) else None)
        salt = salt or Path(".tunewise-salt")  # per project: the same value, the same pseudonym
        redacted = write_redacted_copies(plan.config, plan.facts.text_columns, redact, redact_mode, salt)
    return CheckResult(audit, audit_file, redacted, token_views(plan, show_tokens) if show_tokens else [])


def audit_privacy(run_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Membership inference against a finished run; writes privacy.json and rebuilds the report and card."""
    transformers_logging.set_verbosity_error()
    result = privacy_job.audit_run(Path(run_dir), seed=seed)
    rebuild(Path(run_dir))
    return result


def build_guard(
    data: str | Path,
    output: str | Path | None = None,
    max_rows: int | None = guard_job.DEFAULT_MAX_ROWS,
    overwrite: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train the screen's abusive-language classifier from Davidson et al.'s labeled_data.csv (MIT; tunewise
    ships neither its weights nor the data) into `output` (default: the cache, where `screen.classifier: auto`
    finds it). Returns its guard.json: held-out precision and recall, latency, data sha256 and licence."""
    transformers_logging.set_verbosity_error()
    target = Path(output) if output is not None else None
    return guard_job.build_guard(Path(data), target, max_rows, console=console, overwrite=overwrite)


def export(
    run_dir: str | Path,
    output: str | Path | None = None,
    format: str = "onnx",
    quantize: str | None = None,
    max_drop: float = 1.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a finished run (`tunewise export`) to ONNX, int8 with `quantize="int8"`, into `output` (default
    RUN/export/onnx or RUN/export/onnx-int8). The export runs the run's test rows before it is kept: an
    export losing more than `max_drop` points of the selection metric is refused (ExportRefused, with the
    numbers). Returns export.json: parity, metrics before and after, sizes, CPU latency and throughput."""
    transformers_logging.set_verbosity_error()
    target = Path(output) if output is not None else None
    return export_job.export_run(Path(run_dir), target, format, quantize, max_drop, overwrite)


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServerSettings | None = None,
    onnx: bool = False,
) -> None:
    """Serve a run folder, or an export folder, over HTTP until interrupted (`tunewise serve`); with `onnx` a
    run is served from its export (`tunewise export`: int8 when it passed its gate, else fp32) by ONNX Runtime.
    A folder that is not a run or an export, or a model that cannot be loaded, is a TunewiseError before any
    request is taken."""
    transformers_logging.set_verbosity_error()
    export = export_root(Path(run_dir))
    if export is not None:
        check_export(export)
        folder = export
    else:
        folder = run_folder(run_dir)
        if onnx:
            folder = export_folder(folder)
    run_server(folder, host, port, settings or ServerSettings(), load)


__all__ = [
    "CheckResult",
    "FineTunedModel",
    "Run",
    "TuneResult",
    "audit_privacy",
    "build_guard",
    "check",
    "export",
    "load",
    "serve",
    "train",
    "tune",
]
