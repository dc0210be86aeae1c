"""The `tunewise` command: a thin layer over the Python API in `tunewise.api`.

Errors the user can fix (TunewiseError) print one clear message and exit with status 1 (training
stopped by a signal, `Stopped`: 128 + its number, with the command that resumes it); anything else is
a bug in tunewise and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tunewise.errors import Stopped, TunewiseError
from tunewise.jobs.launch import Processes

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Fine-tune pretrained models on your own data, responsibly."
)
console = Console(stderr=True)


def user_errors(command):
    """Turn TunewiseError into a message and exit code 1 instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _quiet_transformers()
        try:
            return command(*args, **kwargs)
        except TunewiseError as error:
            label = "[bold yellow]stopped:[/]" if isinstance(error, Stopped) else "[bold red]error:[/]"
            console.print(f"{label} {error}", highlight=False)
            raise typer.Exit(code=getattr(error, "exit_code", 1)) from None  # Stopped: 128 + the signal

    return wrapper


def _quiet_transformers() -> None:
    """Weight-loading bars and load reports from transformers would drown tunewise's own output."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


# where the processes of `train` and `tune` run (jobs/launch.py)
Nproc = Annotated[
    int, typer.Option("--nproc", help="Processes on this machine (one per GPU): starts itself under torchrun.")
]
Nnodes = Annotated[int, typer.Option("--nnodes", help="Machines taking part, each running this command.")]
NodeRank = Annotated[int, typer.Option("--node-rank", help="This machine's number, 0 to nnodes - 1.")]
MasterAddr = Annotated[str | None, typer.Option("--master-addr", help="Several machines: the address of node 0.")]
MasterPort = Annotated[int, typer.Option("--master-port", help="Several machines: a free port on node 0.")]


@app.command()
@user_errors
def train(
    config: Annotated[Path, typer.Argument(help="Run config (YAML). `tunewise init` writes a starting one.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: --set train.epochs=1")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the run already in output_dir.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in output_dir from its last checkpoint.")] = False,
    skip_check: Annotated[
        bool, typer.Option("--skip-check", help="Train without the data check (audit.before_training: false).")
    ] = False,
    nproc: Nproc = 1,
    nnodes: Nnodes = 1,
    node_rank: NodeRank = 0,
    master_addr: MasterAddr = None,
    master_port: MasterPort = 29500,
) -> None:
    """Check the data, fine-tune a model as CONFIG describes, and write the run folder."""
    from tunewise.api import train as run_training

    overrides = [*(set_ or []), *(["audit.before_training=false"] if skip_check else [])]
    processes = Processes(nproc, nnodes, node_rank, master_addr, master_port)
    arguments = [
        "train", str(config), *(f"--set={item}" for item in overrides),
        *(["--overwrite"] if overwrite else []), *(["--resume"] if resume else []),
    ]  # fmt: skip
    if launched_again(config, overrides, processes, arguments):
        return
    from tunewise.prepare import process_state

    try:
        run = run_training(config, overrides=overrides, overwrite=overwrite, resume=resume, console=console)
    except Stopped as stopped:  # by a signal, with a checkpoint: say the command that continues it
        if not process_state().is_main_process:  # once, from the first process
            raise typer.Exit(code=stopped.exit_code) from None
        message = str(stopped).replace(Stopped.RESUME_HINT, resume_command(arguments))
        raise Stopped(message, stopped.signal_number, stopped.step) from None
    if process_state().is_main_process:  # with several processes, the first one speaks for all
        console.print(f"[green]done:[/] model, metrics and plots in {run.run_dir}")


def resume_command(arguments: list[str]) -> str:
    """The command that continues a stopped `tunewise train ARGUMENTS`."""
    command = shlex.join(["tunewise", *(a for a in arguments if a not in ("--overwrite", "--resume")), "--resume"])
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return f"{command} (with the same --nproc and machine options)" if launched else command


def launched_again(config: Path, overrides: list[str], processes: Processes, arguments: list[str]) -> bool:
    """With several processes (or an Accelerate config), run ARGUMENTS under the launcher and exit as it does;
    False when this process should do the work itself. The config is checked first, once."""
    from tunewise.jobs.launch import launcher_command, launcher_environment, needs_launcher, run_launcher
    from tunewise.tasks import load_config

    accelerate_config = load_config(config, overrides).train.accelerate_config
    if not needs_launcher(processes, accelerate_config):
        return False
    command = launcher_command(arguments, processes, accelerate_config)
    console.print(
        f"starting {processes.per_node * processes.nodes} processes: {' '.join(command[1:])}", highlight=False
    )
    code = run_launcher(command, launcher_environment())  # a SIGTERM to this process reaches the training
    if code != 0:
        raise typer.Exit(code=code)
    return True


@app.command()
@user_errors
def tune(
    config: Annotated[Path, typer.Argument(help="Run config (YAML) with a tune: section: the fields to search.")],
    trials: Annotated[
        int,
        typer.Option(
            min=1,
            help="Finished trials the study holds in the end: a study continued with --storage counts the ones it "
            "has (4 after 2 runs 2 more); trials stopped with their process run again and do not count.",
        ),
    ],
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage URL, e.g. sqlite:///tune.db; default: OUTPUT_DIR/tune/study.db."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Start no new trial after this many seconds (a running one finishes).")
    ] = None,
    study_name: Annotated[str | None, typer.Option(help="The study's name in the storage; default: output_dir")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: --set train.epochs=1")] = None,
    nproc: Nproc = 1,
    nnodes: Nnodes = 1,
    node_rank: NodeRank = 0,
    master_addr: MasterAddr = None,
    master_port: MasterPort = 29500,
) -> None:
    """Search hyperparameters: one training run per trial (test withheld), the best scored on test once."""
    from tunewise.api import tune as run_tuning
    from tunewise.jobs.tuning.outputs import BEST_CONFIG, BEST_FILE, summary_table
    from tunewise.prepare import process_state

    overrides = set_ or []
    arguments = [
        "tune", str(config), f"--trials={trials}", *(f"--set={item}" for item in overrides),
        *([f"--storage={storage}"] if storage else []), *([f"--timeout={timeout}"] if timeout is not None else []),
        *([f"--study-name={study_name}"] if study_name else []),
    ]  # fmt: skip
    if launched_again(config, overrides, Processes(nproc, nnodes, node_rank, master_addr, master_port), arguments):
        return
    result = run_tuning(config, trials, storage, timeout, overrides=overrides, study_name=study_name, console=console)
    if not process_state().is_main_process:  # every process has the result; the first one shows it
        return
    Console().print(summary_table(result.trials, result.metric, result.direction, result.best_trial))
    test = "" if result.test is None else f", test {result.test.get(result.metric, float('nan')):.4f}"
    console.print(
        f"[green]best:[/] trial {result.best_trial}, validation {result.metric} {result.validation:.4f}{test}, in "
        f"{result.folder}\n{result.tune_dir / BEST_FILE}: its values and scores; {result.tune_dir / BEST_CONFIG}: "
        "the config to train it again with `tunewise train`",
        highlight=False,
        soft_wrap=True,  # paths stay whole, to copy
    )


@app.command()
@user_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `tunewise train`.")],
    data: Annotated[str, typer.Option(help="Labelled data to score, in the training format.")],
    output: Annotated[Path | None, typer.Option(help="Also write the metrics as JSON here.")] = None,
) -> None:
    """Score a trained model on labelled data."""
    from tunewise.evaluation.metrics import format_metrics_table
    from tunewise.serving.predictor import load

    metrics, _ = load(run).evaluate(data)
    Console().print(format_metrics_table({Path(data).name: metrics}))
    if output is not None:
        _refuse_existing(output)
        output.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


@app.command()
@user_errors
def predict(
    run: Annotated[Path, typer.Argument(help="A run folder written by `tunewise train`.")],
    input: Annotated[
        str | None, typer.Option("--input", help="A data file with the input column(s), or a folder of images.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Where to write predictions: .jsonl or .json for JSON lines, else CSV; default: print them."),
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option(help="Text to predict for (repeatable): classify, tag, answer; a chat model's user turn."),
    ] = None,
    image: Annotated[list[str] | None, typer.Option(help="Image file to classify (repeatable; image models).")] = None,
    screen_action: Annotated[
        str | None,
        typer.Option(
            "--screen-action",
            help="Generative models: what the content screen does with a flagged text, overriding the run's "
            "screen.action: flag (keep, with reasons), redact (<TAG> spans; abusive texts blocked), block (a fixed "
            "refusal), or off (no screen).",
        ),
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Explain each prediction: how much each word moved it (Captum attributions, merged from sub-words), "
            "or for images a heat map PNG. Printed: the strongest words with signed scores; files: an `explanation` "
            "column of JSON.",
        ),
    ] = False,
    explain_label: Annotated[
        str | None, typer.Option("--explain-label", help="With --explain: explain this label, not the predicted one.")
    ] = None,
    explain_method: Annotated[
        str,
        typer.Option(
            "--explain-method",
            help="With --explain: auto (occlusion for text, Grad-CAM for images), integrated_gradients, "
            "layer_integrated_gradients, gradient_x_input, occlusion, or for images grad_cam.",
        ),
    ] = "auto",
    explain_dir: Annotated[
        Path | None,
        typer.Option(
            "--explain-dir",
            help="With --explain on an image model: where the heat maps go; default: explanations/ beside --output, "
            "else ./explanations.",
        ),
    ] = None,
) -> None:
    """Predict for a file or folder (--input), or for texts (--text) or image files (--image): labels, tags,
    answers, or generated text; --explain says which words (or pixels) decided."""
    from tunewise.serving.predictor import csv_ready, load

    if sum(bool(given) for given in (input, text, image)) != 1:
        raise TunewiseError('Give one of --input FILE, one or more --text "...", or one or more --image PATH.')
    if screen_action not in (None, "flag", "redact", "block", "off"):
        raise TunewiseError(f"--screen-action must be flag, redact, block or off, not {screen_action!r}.")
    if not explain and (explain_label is not None or explain_method != "auto" or explain_dir is not None):
        raise TunewiseError("--explain-label, --explain-method and --explain-dir go with --explain; add --explain.")
    model = load(run)
    if screen_action is not None:
        model.set_screen_action(screen_action)
    settings = None
    if explain:
        folder = explain_dir or (output.parent if output is not None else Path()) / "explanations"
        settings = model.explain_settings(explain_label, explain_method, folder)
    inline = text or image
    if inline:
        facts = model.facts
        reads_text = facts.capabilities.reads_text
        if reads_text != bool(text):
            raise TunewiseError(
                f"This model reads {'text' if reads_text else 'images'}: use {'--text' if reads_text else '--image'} "
                "or --input."
            )
        if reads_text and len(facts.text_columns) > 1 and not facts.capabilities.generation:  # a prompt is one text
            raise TunewiseError(
                f"This model reads {len(facts.text_columns)} texts per input ({', '.join(facts.text_columns)}); put "
                "them in a file with those columns and use --input."
            )
        frame = model.predict_frame(model.task.data.from_inputs(inline), settings)
        frame.insert(0, "text" if text else "image", inline)
    else:
        assert input is not None
        frame = model.predict_file(input, settings)
    if model.screen_counts:
        counts = model.screen_counts
        console.print(
            f"screen: {counts['flagged']} of {counts['screened']} flagged ({counts['redacted']} redacted, "
            f"{counts['blocked']} blocked)" + "".join(f"; {name} {n}" for name, n in counts["by_reason"].items())
        )
    if output is None and settings is not None:
        shown = [c for c in model.facts.text_columns if c in frame.columns] or [str(frame.columns[0])]
        print_explained(frame, shown)
        return
    if output is None:
        csv_ready(frame).to_csv(sys.stdout, index=False)
        return
    _refuse_existing(output)
    if output.suffix.lower() in (".jsonl", ".json"):
        frame.to_json(output, orient="records", lines=True, force_ascii=False)
    else:
        csv_ready(frame).to_csv(output, index=False)
    console.print(f"[green]wrote[/] {len(frame)} predictions to {output}")


SHOWN_WORDS = 6  # printed per explanation: the strongest words by |score|


def print_explained(frame: pd.DataFrame, inputs: list[str]) -> None:
    """Each input, then one line per explanation: what was explained and its probability, the method (and
    integrated gradients' convergence delta), and the strongest words with signed scores (green toward the
    target, red against it), or the heat map's path."""
    out = Console(highlight=False, soft_wrap=True)
    for index, record in enumerate(frame.to_dict(orient="records"), start=1):
        out.print(f"[bold]{index}[/] " + " | ".join(escape(str(record[column])) for column in inputs))
        for item in record["explanation"]:
            delta = item.get("convergence_delta")
            method = item["method"] + (f", convergence delta {delta:.3f}" if delta is not None else "")
            out.print(f"  [bold]{escape(str(item['target']))}[/] {item['probability']:.3f} [dim]({method})[/]")
            if "words" not in item:
                out.print(f"    heat map: {escape(str(item.get('heatmap_png')))}")
                continue
            strongest = sorted(item["words"], key=lambda word: abs(word["score"]), reverse=True)[:SHOWN_WORDS]
            words = "  ".join(
                f"{escape(word['word'])} [{'green' if word['score'] >= 0 else 'red'}]{word['score']:+.3f}[/]"
                for word in strongest
            )
            out.print(f"    {words}")


@app.command()
@user_errors
def serve(
    run: Annotated[
        Path, typer.Argument(help="A run folder written by `tunewise train`, or an export by `tunewise export`.")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    onnx: Annotated[
        bool,
        typer.Option(help="Serve the run's ONNX export with ONNX Runtime (int8 when it passed its gate, else fp32)."),
    ] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TUNEWISE_API_KEY",
            help="Require this key (Authorization: Bearer KEY, or X-API-Key) on every route but /health.",
        ),
    ] = None,
    max_batch_tokens: Annotated[int, typer.Option(min=1, help="Tokens in one model call, across requests.")] = 16384,
    max_batch_inputs: Annotated[int, typer.Option(min=1, help="Inputs in one model call, across requests.")] = 128,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            min=0,
            help="How long an idle model waits for more requests before it runs (0: it runs at once, and the "
            "requests that arrive meanwhile share the next call; measured faster on CPU, bench/serving.py).",
        ),
    ] = 0.0,
    max_queue_inputs: Annotated[
        int, typer.Option(min=1, help="Inputs waiting for the model; more are refused with 429.")
    ] = 1024,
    max_request_inputs: Annotated[int, typer.Option(min=1, help="Inputs in one request; more is 413.")] = 64,
    max_request_bytes: Annotated[int, typer.Option(min=1, help="Bytes of one request body; more is 413.")] = 16777216,
    log_inputs: Annotated[
        bool, typer.Option(help="Log each request's inputs, personal data replaced by its type (off: counts only).")
    ] = False,
) -> None:
    """Serve a fine-tuned model over HTTP: POST /predict, GET /health, /info and /metrics."""
    from tunewise.api import serve as run_serve
    from tunewise.serving.batching import BatchLimits
    from tunewise.serving.http import ServerSettings

    settings = ServerSettings(
        batching=BatchLimits(max_batch_tokens, max_batch_inputs, max_wait_ms, max_queue_inputs),
        max_request_inputs=max_request_inputs,
        max_request_bytes=max_request_bytes,
        api_key=api_key or None,
        log_inputs=log_inputs,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        console.print(
            f"[yellow]warning:[/] serving on {host} without an API key: anyone who reaches this port can use the "
            "model. Set --api-key or TUNEWISE_API_KEY."
        )
    run_serve(run, host, port, settings, onnx=onnx)


@app.command()
@user_errors
def export(
    run: Annotated[Path, typer.Argument(help="A run folder written by `tunewise train` (an encoder task).")],
    format: Annotated[str, typer.Option("--format", help="The export format: onnx.")] = "onnx",
    quantize: Annotated[
        str | None, typer.Option(help="int8: ONNX Runtime's dynamic quantization of the weights (4x smaller).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="The export folder (default RUN/export/onnx, or RUN/export/onnx-int8).")
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option(help="Refuse an export that loses more than this many points of the run's selection metric."),
    ] = 1.0,
    overwrite: Annotated[bool, typer.Option(help="Replace an export already in the output folder.")] = False,
) -> None:
    """Export a run to ONNX (and int8), checked on the run's own test rows: parity, metric, size, speed."""
    from tunewise.api import export as run_export
    from tunewise.runs.layout import ONNX_EXPORT, ONNX_INT8_EXPORT

    result = run_export(run, output, format, quantize, max_drop, overwrite)
    gate, exported = result["gate"], "onnx_int8" if quantize else "onnx_fp32"
    sizes, before, after = result["file_bytes"], result["speed"]["pytorch"], result["speed"][exported]
    console.print(
        f"{gate['metric']} {gate['before']:.4f} (PyTorch) -> {gate['after']:.4f} ({exported}) on "
        f"{result['data']['rows']} {result['data']['split']} rows: a drop of {gate['drop']:.2f} {gate['unit']}, "
        f"within --max-drop {gate['max_drop']:g}; largest logit difference "
        f"{result['max_abs_logit_difference'][exported]:.2g}",
        highlight=False,
    )
    console.print(
        f"size {sizes['pytorch_safetensors'] / 1e6:.1f} -> {sizes[exported] / 1e6:.1f} MB; CPU latency at batch 1 "
        f"{before['latency_batch1_ms']:.1f} -> {after['latency_batch1_ms']:.1f} ms; throughput at batch 32 "
        f"{before['throughput_batch32_rows_per_s']:.0f} -> {after['throughput_batch32_rows_per_s']:.0f} rows/s",
        highlight=False,
    )
    folder = output or Path(result["run_dir"]) / (ONNX_INT8_EXPORT if quantize else ONNX_EXPORT)
    console.print(f"[green]done:[/] {folder} (export.json holds every measurement)")


@app.command()
@user_errors
def check(
    config: Annotated[Path, typer.Argument(help="Run config (YAML) naming the data to audit.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: --set data.train=x.csv")] = None,
    output: Annotated[
        Path | None, typer.Option(help="Where audit.json and plots go; default OUTPUT_DIR/audit.")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Fail (exit 1) on warnings too, not only on errors.")] = False,
    redact: Annotated[
        Path | None, typer.Option(help="Also write copies of the data files with personal data redacted here.")
    ] = None,
    redact_mode: Annotated[
        str, typer.Option(help="replace (<EMAIL_ADDRESS>), mask (****) or hash (a salted pseudonym per value).")
    ] = "replace",
    show_tokens: Annotated[
        int,
        typer.Option(
            "--show-tokens", min=0, help="Print the first N training rows token by token, with their loss mask."
        ),
    ] = 0,
) -> None:
    """Audit the data before training: validity, balance, duplicates, leakage, lengths, label noise, personal data."""
    from tunewise.api import check as run_check
    from tunewise.audit.summary import print_audit

    if redact is not None and redact_mode not in ("replace", "mask", "hash"):
        raise TunewiseError(f"--redact-mode must be replace, mask or hash, not {redact_mode!r}.")
    result = run_check(
        config, set_ or [], output=output, redact=redact, redact_mode=redact_mode,  # type: ignore[arg-type]
        salt_file=config.with_name(".tunewise-salt"),  # per project: the same value, the same pseudonym
        show_tokens=show_tokens,
    )  # fmt: skip
    if result.tokens:
        print_token_views(result.tokens, Console())
    for written in result.redacted:
        console.print(f"[green]redacted copy:[/] {written}")
    print_audit(result.audit, Console())
    console.print(f"audit written to {result.audit_file}; datasheet (with the questions only you can answer) beside it")
    if not result.audit.passed(strict):
        raise typer.Exit(code=1)


@app.command()
@user_errors
def report(run: Annotated[Path, typer.Argument(help="A run folder written by `tunewise train`.")]) -> None:
    """Rebuild the run's report.html and model_card.md from its folder (after editing the config's card)."""
    from tunewise.reporting.rebuild import rebuild

    page, card = rebuild(run)
    console.print(f"[green]wrote[/] {page} and {card}")


audit_app = typer.Typer(help="Audits of a trained model.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("privacy")
@user_errors
def audit_privacy_command(
    run: Annotated[Path, typer.Argument(help="A run folder written by `tunewise train`.")],
    seed: Annotated[int, typer.Option(help="Seed for the subsampling and the bootstrap.")] = 0,
) -> None:
    """Membership inference on a trained classifier: can its losses tell training rows from unseen ones?"""
    from tunewise.api import audit_privacy
    from tunewise.jobs.privacy import privacy_summary

    result = audit_privacy(run, seed=seed)
    console.print(privacy_summary(result))
    console.print(f"members: {result['member_data']}\nnon-members: {result['non_member_data']}")
    console.print(f"[green]wrote[/] {run / 'privacy.json'}; report.html and model_card.md updated")


guard_app = typer.Typer(help="The content screen's abusive-language classifier.", no_args_is_help=True)
app.add_typer(guard_app, name="guard")


@guard_app.command("build")
@user_errors
def guard_build_command(
    data: Annotated[
        Path,
        typer.Option(
            help="Davidson et al.'s labeled_data.csv (github.com/t-davidson/hate-speech-and-offensive-language, MIT): "
            "columns tweet and class (0 hate, 1 offensive, 2 neither). tunewise does not ship it."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(help="Run folder for the guard; default: the cache folder that screen.classifier: auto reads."),
    ] = None,
    max_rows: Annotated[
        int | None,
        typer.Option(
            "--max-rows",
            min=100,
            help="Train on a stratified sample of this many rows (default 6,000: 6-11 minutes on 2 CPU cores).",
        ),
    ] = None,
    all_rows: Annotated[
        bool, typer.Option("--all-rows", help="Use all 24,783 rows (roughly four times the default's time).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a guard already built in the output folder.")] = False,
) -> None:
    """Train the screen's abusive-language classifier (MiniLM-L6, hate / offensive / neither) with tunewise itself.

    tunewise ships neither its weights (~90 MB) nor the data (not ours to bundle): it is built once, locally."""
    from tunewise.api import build_guard
    from tunewise.jobs.guard import DEFAULT_MAX_ROWS

    if all_rows and max_rows is not None:
        raise TunewiseError("Give one of --max-rows N and --all-rows, not both.")
    rows = None if all_rows else (max_rows or DEFAULT_MAX_ROWS)
    record = build_guard(data, output, rows, overwrite=overwrite, console=console)
    held_out = record["held_out"]
    console.print(
        f"[green]guard built[/] in {record['build_seconds']:.0f} s: abusive (hate or offensive) vs neither on "
        f"{held_out['rows']} held-out rows: precision {held_out['abusive_precision']:.3f}, recall "
        f"{held_out['abusive_recall']:.3f}; {record['latency_ms_per_text']} ms per text"
    )


@app.command()
@user_errors
def init(
    task: Annotated[str, typer.Option(help="The task to write a config for.")] = "text-classification",
) -> None:
    """Print a commented starting config for a task: every field, its default and what it does."""
    from tunewise.config.template import commented_template
    from tunewise.tasks import CONFIG_CLASSES

    if task not in CONFIG_CLASSES:
        raise TunewiseError(f"--task {task!r} is not a task; choose one of: {', '.join(CONFIG_CLASSES)}.")
    sys.stdout.write(commented_template(CONFIG_CLASSES[task]))


def print_token_views(views: list, out: Console) -> None:
    """Each row's tokens separated by |, the targets (in the loss) in bold green, or between [[ and ]]
    where the output has no colour; whitespace shown (a newline as \\n) so a template's layout can be
    checked by eye."""
    from rich.text import Text

    plain = out.color_system is None
    out.print("between [[ and ]]: in the loss" if plain else "[bold green]green[/]: in the loss; [dim]grey[/]: context")
    for view in views:
        line = Text(f"row {view.row}: ", style="bold")
        if view.problem:
            line.append(view.problem, style="red")
        previous = False
        for position, piece in enumerate(view.pieces):
            target = bool(view.targets and view.targets[position])
            if plain and target != previous:
                line.append("[[" if target else "]]")
            previous = target
            line.append(piece.replace("\n", "\\n").replace("\t", "\\t"), style="bold green" if target else "dim")
            line.append("|", style="dim")
        if plain and previous:
            line.append("]]")
        if view.label:
            line.append(f"  -> label {view.label}", style="bold green")
        out.print(line, soft_wrap=True)  # one line per row: the terminal wraps it, the text stays whole


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise TunewiseError(f"{path} already exists; choose another --output or remove it first.")


if __name__ == "__main__":
    app()
