"""The explanation job: after training, which words (or pixels) moved the model's predictions on the test split
(else validation), how far those attributions can be trusted, and how much of them the identity terms carry
that the fairness audit found a gap for. It writes explanations.json (and the shown examples' heat maps into
explanations/ for an image model); the report's Explanations section and the model card read them.

    sample        up to explain.rows evaluation rows, seeded (predictor.sample_positions)
    explain       the task's targets (tasks.explanation) attributed by tunewise.explain: explain.method, steps
    faithfulness  ERASER's deletion test on the same rows (explain.measure_faithfulness)
    top words     per label, the words (lower-cased, end punctuation off) with the largest mean attribution
                  toward it over the rows where they occur (at least MIN_WORD_ROWS of them, so a word seen
                  once cannot top the list)
    examples      explain.examples correct and as many wrong predictions (tasks with one class per row), else
                  rows: the most confident of each label in turn
    identities    per identity with an AUC gap in fairness.json: the share of the attribution its words carry
                  in the rows that mention it, beside the share an average word there carries, and its mean score

Training runs it on the model in memory (main process only); `tunewise tune` runs it once, on the best trial
and the test split, after the study (its trials skip it: they choose on validation, and explanations would
only slow them down).
"""

from __future__ import annotations

import dataclasses
import string
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from torch import nn

from tunewise.config.sections import RunConfig
from tunewise.data.readers import ROW_COLUMN
from tunewise.errors import TunewiseError
from tunewise.explain import Faithfulness, explain_targets, measure_faithfulness
from tunewise.explain.results import Explanation, HeatMap, WordAttribution
from tunewise.explain.settings import ExplainSettings
from tunewise.prepare import Plan
from tunewise.runs.layout import EXPLANATIONS_FILE, EXPLANATIONS_FOLDER, FAIRNESS_FILE
from tunewise.runs.reader import read_json
from tunewise.runs.record import write_json
from tunewise.serving.payload import as_json
from tunewise.serving.predictor import FineTunedModel, sample_positions
from tunewise.tasks import Task, explanation
from tunewise.types import ImageExplanationTarget, TextExplanationTarget

MIN_WORD_ROWS = 3  # a word must occur in this many explained rows to rank among a label's top words
TOP_WORDS = 10  # per label: the words pushing toward it most
AGAINST_WORDS = 5  # per label: the words pushing away from it most
Target = TextExplanationTarget | ImageExplanationTarget
IMAGE_FAITHFULNESS = (
    "not measured: the deletion test deletes words, so it measures text explanations; an image model's heat maps "
    "are judged by eye here (bench/explain_images.py measures them)"
)


def explain_run(
    plan: Plan, model: nn.Module, fairness: dict[str, Any] | None, console: Console
) -> dict[str, Any] | None:
    """explanations.json for a finished training run, from the model in memory; a run whose rows cannot be
    explained says why and keeps everything else (the model is trained and saved)."""
    assert plan.training is not None
    split = "test" if "test" in plan.data.frames else "validation"
    labels = plan.training.encoded[split].labels if plan.facts.capabilities.class_labels else None
    try:
        record, line = explain_split(
            plan.task,
            model,
            plan.model.processor,
            plan.model.max_length,
            plan.data.frames[split],
            None if labels is None else np.asarray(labels, dtype=int),
            plan.config,
            split,
            fairness,
            plan.run_dir,
        )
    except TunewiseError as error:
        console.print(f"[yellow]explanations skipped:[/] {error}")
        return None
    console.print(line)
    return record


def explain_saved_run(loaded: FineTunedModel, run_dir: Path, source: str, console: Console) -> dict[str, Any] | None:
    """explanations.json for a run folder's loaded model, on a labelled file: the best trial of `tunewise tune`,
    once it is scored on the test split its trials never saw."""
    config = loaded.config
    if not config.explain.enabled:
        return None
    frame = loaded.task.data.read(source, "test")
    labels = None
    if loaded.facts.capabilities.class_labels:
        labels = np.asarray(loaded.encode(frame, "evaluate").labels, dtype=int)
    fairness = read_json(run_dir / FAIRNESS_FILE)
    try:
        record, line = explain_split(
            loaded.task, loaded.model, loaded.processor, loaded.max_length, frame, labels, config, "test",
            fairness if isinstance(fairness, dict) else None, run_dir,
        )  # fmt: skip
    except TunewiseError as error:
        console.print(f"[yellow]explanations skipped:[/] {error}")
        return None
    console.print(line)
    return record


def explain_split(
    task: Task,
    model: nn.Module,
    processor: Any,
    max_length: int,
    frame: pd.DataFrame,
    labels: np.ndarray | None,
    config: RunConfig,
    split: str,
    fairness: dict[str, Any] | None,
    run_dir: Path,
) -> tuple[dict[str, Any], str]:
    """Explain a seeded sample of `frame` (`labels`: each row's class index, for tasks with one class per row),
    write explanations.json into `run_dir`, and return it with its one-line summary."""
    settings = ExplainSettings(method=config.explain.method, steps=config.explain.steps)
    reads_text = task.facts().capabilities.reads_text
    method = settings.text_method() if reads_text else settings.image_method()
    positions = sample_positions(len(frame), config.explain.rows, config.train.seed)
    sample = frame.iloc[positions].reset_index(drop=True)
    model.eval()  # dropout off: an attribution of a random forward pass would differ every time
    targets = explanation(task).targets(model, processor, sample, max_length, None)
    started = time.perf_counter()
    explained = explain_targets(model, targets, settings)
    seconds = time.perf_counter() - started
    faithfulness = deletion_test(model, targets, explained, config.train.seed) if reads_text else None
    truths = None if labels is None else [task.facts().label_names[i] for i in labels[positions]]
    user_rows = sample[ROW_COLUMN].tolist() if ROW_COLUMN in sample.columns else list(range(len(sample)))
    shown = choose_examples(targets, explained, truths, config.explain.examples)
    if not reads_text and shown:
        draw_heat_maps(model, targets, explained, [index for index, _ in shown], settings, run_dir)
    deltas = [e.convergence_delta for e in explained if e.convergence_delta is not None]
    record: dict[str, Any] = {
        "split": split,
        "method": method,
        "steps": settings.steps,
        "rows": len(sample),
        "explanations": len(explained),
        "seconds": round(seconds, 2),
        "seconds_per_explanation": round(seconds / max(len(explained), 1), 4),
        "mean_convergence_delta": float(np.mean(deltas)) if deltas else None,
        "max_convergence_delta": float(np.max(deltas)) if deltas else None,
        "min_word_rows": MIN_WORD_ROWS,
        "labels": top_words(targets, explained),
        "examples": [example(targets[i], explained[i], kind, truths, user_rows, run_dir) for i, kind in shown],
        "faithfulness": faithfulness.as_dict() if faithfulness is not None else None,
    }
    if faithfulness is None:
        record["faithfulness_note"] = IMAGE_FAITHFULNESS
    identities = identity_attribution(targets, explained, fairness, config.fairness.identity_terms)
    if identities:
        record["identity_terms"] = identities
    record = as_json(record)  # NaN (a k no explanation had words enough for) as null
    write_json(run_dir / EXPLANATIONS_FILE, record)
    found = faithfulness.summary() if faithfulness is not None else f"heat maps of {len(shown)} examples drawn."
    delta = f", mean convergence delta {record['mean_convergence_delta']:.3f}" if deltas else ""
    line = f"explanations ({split}, {len(sample)} rows, {method}, {seconds:.1f} s{delta}): {found}"
    return record, line


def deletion_test(model: nn.Module, targets: Sequence[Target], explained: list[Explanation], seed: int) -> Faithfulness:
    """ERASER's deletion test of text explanations (`explain.measure_faithfulness`)."""
    texts = [target for target in targets if isinstance(target, TextExplanationTarget)]
    words = [item for item in explained if isinstance(item, WordAttribution)]
    return measure_faithfulness(model, texts, words, seed=seed)


# ------------------------------------------------------------------------------------------ top words


def label_of(target: Target, explained: Explanation) -> str:
    """What a target's attributions count toward: its label. A per-entity target ("PER: Barack Obama", a
    token-level class) counts toward its entity type, so one entity's words join the others of its type."""
    token_classes = isinstance(target, TextExplanationTarget) and target.positions and target.classes
    return explained.target.split(": ", 1)[0] if token_classes else explained.target


def word_key(text: str) -> str:
    """A word as it is counted across rows: lower-cased, without the punctuation a word carries at its ends
    ("Free!" is "free"); punctuation standing alone stays itself."""
    lowered = text.lower()
    return lowered.strip(string.punctuation) or lowered


def word_scores(explained: WordAttribution) -> dict[str, float]:
    """Each word of one explanation (`word_key`) and its attribution, summed where it occurs more than once."""
    scores: dict[str, float] = defaultdict(float)
    for word in explained.words:
        scores[word_key(word.text)] += word.score
    return scores


def top_words(targets: Sequence[Target], explained: list[Explanation]) -> dict[str, Any]:
    """Per label: its explanations' count, and the words with the largest and the most negative mean attribution
    toward it over the explanations they occur in (at least MIN_WORD_ROWS), with those counts."""
    per_label: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, int] = defaultdict(int)
    for target, item in zip(targets, explained, strict=True):
        if not isinstance(item, WordAttribution):
            continue
        label = label_of(target, item)
        counts[label] += 1
        for word, score in word_scores(item).items():
            per_label[label][word].append(score)
    result = {}
    for label in sorted(counts):
        ranked = sorted(
            ((float(np.mean(scores)), word, len(scores)) for word, scores in per_label[label].items()
             if len(scores) >= MIN_WORD_ROWS),
            reverse=True,
        )  # fmt: skip
        toward = [(mean, word, rows) for mean, word, rows in ranked if mean > 0][:TOP_WORDS]
        against = [(mean, word, rows) for mean, word, rows in reversed(ranked) if mean < 0][:AGAINST_WORDS]
        result[label] = {
            "explanations": counts[label],
            "toward": [{"word": word, "mean": mean, "rows": rows} for mean, word, rows in toward],
            "against": [{"word": word, "mean": mean, "rows": rows} for mean, word, rows in against],
        }
    return result


# ------------------------------------------------------------------------------------------ examples


def choose_examples(
    targets: Sequence[Target], explained: list[Explanation], truths: list[str] | None, per_kind: int
) -> list[tuple[int, str]]:
    """(explanation index, kind) of the examples to show: with true classes, `per_kind` correct and `per_kind`
    wrong predictions, otherwise 2 x `per_kind` explanations; each kind takes the labels explained in turn,
    the most confident of each first, so a common label does not fill every place."""
    if truths is None:
        return [(index, "example") for index in by_label_in_turn(explained, range(len(explained)))[: 2 * per_kind]]
    chosen = []
    for kind in ("correct", "wrong"):
        matching = [
            i for i in range(len(explained)) if (explained[i].target == truths[targets[i].row]) == (kind == "correct")
        ]
        chosen += [(index, kind) for index in by_label_in_turn(explained, matching)[:per_kind]]
    return chosen


def by_label_in_turn(explained: list[Explanation], indices: Sequence[int]) -> list[int]:
    """`indices` ordered by confidence within each explained label, the labels taking turns."""
    queues: dict[str, list[int]] = defaultdict(list)
    for index in sorted(indices, key=lambda i: -explained[i].probability):
        queues[explained[index].target].append(index)
    ordered = []
    while any(queues.values()):
        for queue in queues.values():
            if queue:
                ordered.append(queue.pop(0))
    return ordered


def draw_heat_maps(
    model: nn.Module,
    targets: Sequence[Target],
    explained: list[Explanation],
    indices: list[int],
    settings: ExplainSettings,
    run_dir: Path,
) -> None:
    """The shown image examples explained again with their heat maps written into the run's explanations/
    folder (the same attributions: the methods are deterministic), so only the images the report shows are
    saved; `explained` then holds the heat maps with their PNGs."""
    folder = run_dir / EXPLANATIONS_FOLDER
    drawn = explain_targets(model, [targets[index] for index in indices], dataclasses.replace(settings, folder=folder))
    for index, heat_map in zip(indices, drawn, strict=True):
        explained[index] = heat_map


def example(
    target: Target, item: Explanation, kind: str, truths: list[str] | None, user_rows: list[Any], run_dir: Path
) -> dict[str, Any]:
    """One shown explanation: the input (texts, or the image and its heat map relative to the run folder), what
    was explained and the true label where known, and the word scores."""
    shown: dict[str, Any] = {
        "kind": kind,
        "row": int(user_rows[target.row]),
        "target": item.target,
        "probability": item.probability,
        "label": None if truths is None else truths[target.row],
        "convergence_delta": item.convergence_delta,
    }
    if isinstance(target, TextExplanationTarget):
        shown["texts"] = list(target.texts)
    if isinstance(item, WordAttribution):
        shown["words"] = item.as_dict()["words"]
    if isinstance(item, HeatMap):
        shown["image"] = target.path if isinstance(target, ImageExplanationTarget) else None
        shown["heatmap_png"] = _relative(item.png, run_dir)
    return shown


def _relative(path: str | None, run_dir: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------ identity terms


def identity_attribution(
    targets: Sequence[Target],
    explained: list[Explanation],
    fairness: dict[str, Any] | None,
    identity_terms: dict[str, dict[str, list[str]]],
) -> dict[str, Any]:
    """For each identity the fairness audit found an AUC gap for ("gender/female"): in the explained rows that
    mention one of its words, the share of all absolute attribution those words carry (`attribution_share`),
    the share an average word there would carry (`uniform_share`, for scale), and the words' mean summed
    attribution toward the explained label (`mean_attribution`: positive, they pushed toward it)."""
    identities = (fairness or {}).get("identities") or {}
    checks = {c.get("figure"): c.get("status") for c in (fairness or {}).get("checks") or []}
    texts = [item for item in explained if isinstance(item, WordAttribution)]
    result = {}
    for identity, entry in identities.items():
        gap = entry.get("auc_gap")
        if not isinstance(gap, int | float) or gap <= 0:
            continue
        category, _, name = identity.partition("/")
        words = {word.lower() for word in identity_terms.get(category, {}).get(name, [])}
        carried = total = term_words = all_words = 0.0
        signed = []
        for item in texts:
            mentions = [word for word in item.words if word_key(word.text) in words]
            if not mentions:
                continue
            carried += sum(abs(word.score) for word in mentions)
            total += sum(abs(word.score) for word in item.words)
            term_words += len(mentions)
            all_words += len(item.words)
            signed.append(sum(word.score for word in mentions))
        result[identity] = {
            "auc_gap": float(gap),
            "status": checks.get(f"identity_auc_gap:{identity}"),
            "fairness_split": (fairness or {}).get("split"),
            "rows": len(signed),
            "attribution_share": carried / total if total > 0 else None,
            "uniform_share": term_words / all_words if all_words > 0 else None,
            "mean_attribution": float(np.mean(signed)) if signed else None,
        }
    return result
