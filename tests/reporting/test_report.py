"""report.html and model_card.md: built from the run folder alone, self-contained, escaped, and really rendered."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml
from conftest import lm_config, make_config, sentiment_rows, story_rows, write_csv, write_jsonl

import tunewise
from tunewise.errors import DataError
from tunewise.reporting.model_card import write_model_card
from tunewise.reporting.rebuild import rebuild
from tunewise.reporting.report import write_report

SCRIPT_LABEL = "<script>alert(1)</script>"
ESCAPED_LABEL = "&lt;script&gt;alert(1)&lt;/script&gt;"
INTENDED_USE = "Sorting <b>film reviews</b> by sentiment for a demo."
MITCHELL_SECTIONS = [
    "## Model details",
    "## Intended use",
    "## Factors",
    "## Metrics",
    "## Evaluation data",
    "## Training data",
    "## Quantitative analyses",
    "## Ethical considerations",
    "## Caveats and recommendations",
]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def planted_rows(n: int, seed: int) -> list[dict]:
    """Sentiment rows whose negative label is a script tag: every place that shows a label must escape it."""
    return [
        {**row, "label": SCRIPT_LABEL if row["label"] == "negative" else row["label"]}
        for row in sentiment_rows(n, seed)
    ]


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory: pytest.TempPathFactory, tiny_mean_model_dir: Path) -> Path:
    """A finished single-label run with the data check (dedupe: the tiny splits share texts) and a card section."""
    folder = tmp_path_factory.mktemp("report-run")
    data = {
        "train": write_csv(folder / "train.csv", planted_rows(96, seed=1)),
        "test": write_csv(folder / "test.csv", planted_rows(40, seed=2)),
        "dedupe": True,
    }
    config = make_config(
        folder,
        tiny_mean_model_dir,
        data,
        audit={"before_training": True},
        card={"intended_use": INTENDED_USE, "authors": "Test Team"},
        output_dir=str(folder / "run"),
    )
    run_dir = tunewise.train(config, show_progress=False).run_dir
    rebuild(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def causal_lm_run(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("report-lm")
    files = {
        "train": write_jsonl(folder / "train.jsonl", story_rows(120, seed=1)),
        "test": write_jsonl(folder / "test.jsonl", story_rows(20, seed=2)),
    }
    config = lm_config(folder, tiny_gpt2_dir, files, train={"epochs": 1}, output_dir=str(folder / "run"))
    run_dir = tunewise.train(config, show_progress=False).run_dir
    rebuild(run_dir)
    return run_dir


def assert_self_contained(page: str) -> None:
    assert not re.search(r"https?://", page), "the page must not reach the network"
    images = re.findall(r"<img [^>]*src=['\"]([^'\"]*)", page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert "<script" not in page.lower() and "<link" not in page.lower()


def test_report_is_self_contained_with_headline_metrics_and_every_section(classification_run: Path) -> None:
    page = (classification_run / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    test_metrics = json.loads((classification_run / "metrics.json").read_text())["test"]
    for name in ("accuracy", "f1_macro", "roc_auc", "ece", "loss"):
        assert f"{test_metrics[name]:.4f}" in page, name
    assert f"On the <b>test</b> split ({test_metrics['n']} rows)" in page
    for heading in ("Headline metrics", "Loss and learning rate", "Confusion matrix", "Calibration", "Fairness",
                    "Data check", "Privacy", "Explanations", "Run facts"):  # fmt: skip
        assert f"<h2>{heading}" in page, heading
    assert (classification_run / "plots" / "calibration_test.png").is_file()  # the reliability diagram it drew
    audit = json.loads((classification_run / "audit" / "audit.json").read_text())
    assert audit["findings"] and all(f["check"] in page for f in audit["findings"])
    record = json.loads((classification_run / "run.json").read_text())
    assert record["git_revision"] is None or record["git_revision"] in page
    assert record["data_sha256"]["train"] in page
    privacy = json.loads((classification_run / "privacy.json").read_text())  # audited after every such run
    assert "No privacy audit ran" not in page and f"{privacy['auc']:.4f}" in page
    fairness = json.loads((classification_run / "fairness.json").read_text())  # measured after every such run
    assert all(identity in page for identity in fairness["identities"])


def test_user_strings_are_escaped_in_report_and_card(classification_run: Path) -> None:
    page = (classification_run / "report.html").read_text(encoding="utf-8")
    card = (classification_run / "model_card.md").read_text(encoding="utf-8")
    for text in (page, card):
        assert "<script>" not in text and ESCAPED_LABEL in text
    assert "<b>film reviews</b>" not in card and "&lt;b&gt;film reviews&lt;/b&gt;" in card


def test_model_card_has_every_mitchell_section_filled_from_the_run(classification_run: Path) -> None:
    card = (classification_run / "model_card.md").read_text(encoding="utf-8")
    positions = [card.index(section) for section in MITCHELL_SECTIONS]
    assert positions == sorted(positions)
    assert "Sorting &lt;b&gt;film reviews&lt;/b&gt; by sentiment for a demo." in card  # the config's own words
    assert "Test Team" in card and "card.out_of_scope` is empty" not in card
    assert "targets: label column `label`." in card
    assert "the author left this empty (config `card.out_of_scope`)" in card
    test_metrics = json.loads((classification_run / "metrics.json").read_text())["test"]
    assert "| accuracy | " in card and f"{test_metrics['accuracy']:.4f}" in card
    assert "identities looked for in the test texts" in card and "No privacy audit ran" not in card


def test_fairness_groups_and_privacy_audit_are_shown_when_present(classification_run: Path, tmp_path: Path) -> None:
    """Per-group metrics with intervals (fairness.json with a group column) and a privacy audit's privacy.json
    become tables and bars on a `tunewise report` rebuild, whatever else their JSON holds."""
    run_dir = tmp_path / "run"
    shutil.copytree(classification_run, run_dir, ignore=shutil.ignore_patterns("model", "checkpoints"))
    by_group = {
        "north": {"accuracy": {"value": 0.81, "ci": [0.7, 0.9]}, "count": {"value": 20}},
        "<i>south</i>": {"accuracy": {"value": 0.64, "ci": [0.5, 0.77]}, "count": {"value": 20}},
    }
    check = {"figure": "demographic_parity_difference", "value": 0.17, "warn": 0.1, "fail": 0.2, "status": "warn"}
    fairness = {"split": "test", "groups": {"by_group": by_group, "demographic_parity_difference": 0.17}}
    (run_dir / "fairness.json").write_text(json.dumps({**fairness, "checks": [check], "status": "warn"}))
    (run_dir / "privacy.json").write_text(json.dumps({"auc": 0.55, "auc_ci95": [0.5, 0.6], "delta": 1e-5}))
    page_path, card_path = rebuild(run_dir)
    page, card = page_path.read_text(encoding="utf-8"), card_path.read_text(encoding="utf-8")
    assert_self_contained(page)
    for text in (page, card):
        assert "&lt;i&gt;south&lt;/i&gt;" in text and "0.6400 (95% CI 0.5000 to 0.7700)" in text
        assert "0.5500" in text and "1e-05" in text and "No privacy audit ran" not in text
    assert "groups / by_group: by group" in page  # the bar chart's caption
    assert "Fairness check warn: demographic_parity_difference is 0.1700" in card


def test_explanations_show_faithfulness_top_words_and_coloured_examples(classification_run: Path) -> None:
    page = (classification_run / "report.html").read_text(encoding="utf-8")
    card = (classification_run / "model_card.md").read_text(encoding="utf-8")
    explained = json.loads((classification_run / "explanations.json").read_text())
    section = page[page.index("<h2>Explanations</h2>") : page.index("<h2>Run facts</h2>")]
    assert "How the explanations were made" in section and "occlusion" in section
    assert "Faithfulness: the deletion test" in section and "comprehensiveness: top-k" in section
    first = explained["faithfulness"]["by_k"]["1"]
    assert f"{first['comprehensiveness_top']:.4f}" in section and f"{first['sufficiency_random']:.4f}" in section
    assert "Most influential words per label" in section and ESCAPED_LABEL in section  # a label, escaped
    assert explained["examples"] and section.count("<div class='explained'>") == len(explained["examples"])
    for example in explained["examples"]:
        strongest = max(example["words"], key=lambda word: abs(word["score"]))
        assert f">{strongest['word']}</span>" in section  # each attributed word on its colour
    assert re.search(r"<span style='background:rgba\((214,39,40|31,119,180),0\.85\)' title='[+-]", section)
    assert "**Explanations**" in card and "Faithfulness (ERASER deletion test, k = 1)" in card


def test_explanations_absent_say_why_and_images_and_identity_terms_are_shown(
    classification_run: Path, causal_lm_run: Path, tmp_path: Path
) -> None:
    lm_page = (causal_lm_run / "report.html").read_text(encoding="utf-8")
    assert "No explanations: this causal-lm run&#x27;s task does not attribute its predictions" in lm_page

    run_dir = tmp_path / "run"
    shutil.copytree(classification_run, run_dir, ignore=shutil.ignore_patterns("model", "checkpoints"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    config["explain"]["enabled"] = False
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    explained = json.loads((run_dir / "explanations.json").read_text())
    (run_dir / "explanations.json").unlink()
    page_path, card_path = rebuild(run_dir)
    for text in (page_path.read_text(encoding="utf-8"), card_path.read_text(encoding="utf-8")):
        assert "No explanations: the config sets `explain.enabled: false`" in text

    (run_dir / "explanations").mkdir()
    shutil.copy(run_dir / "plots" / "loss.png", run_dir / "explanations" / "3-cat.png")
    image = {"kind": "wrong", "row": 3, "target": "<i>cat</i>", "probability": 0.9, "label": "dog",
             "convergence_delta": None, "heatmap_png": "explanations/3-cat.png"}  # fmt: skip
    text = {"kind": "correct", "row": 4, "target": "positive", "probability": 0.8, "label": "positive",
            "texts": ["a <b>good</b> film"], "words": [{"word": "<b>good</b>", "text": 0, "start": 2, "end": 13,
                                                       "score": 0.5}]}  # fmt: skip
    identity = {"gender/female": {"auc_gap": 0.12, "status": "fail", "rows": 5, "attribution_share": 0.31,
                                  "uniform_share": 0.1, "mean_attribution": -0.2}}  # fmt: skip
    explained.update(examples=[image, text], identity_terms=identity)
    (run_dir / "explanations.json").write_text(json.dumps(explained))
    page_path, card_path = rebuild(run_dir)
    page, card = page_path.read_text(encoding="utf-8"), card_path.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "Heat map of row 3: &lt;i&gt;cat&lt;/i&gt;" in page and "<i>cat" not in page
    assert "a <span style='background:rgba(214,39,40,0.85)' title='+0.5000'>&lt;b&gt;good&lt;/b&gt;</span> film" in page
    assert "Identity terms with a fairness gap" in page and "gender/female" in page and "0.3100" in page
    assert "gender/female 0.3100 (an average word: 0.1000)" in card


def test_causal_lm_run_gets_a_report_and_a_card(causal_lm_run: Path) -> None:
    page = (causal_lm_run / "report.html").read_text(encoding="utf-8")
    card = (causal_lm_run / "model_card.md").read_text(encoding="utf-8")
    assert_self_contained(page)
    test_metrics = json.loads((causal_lm_run / "metrics.json").read_text())["test"]
    assert f"{test_metrics['perplexity']:.4f}" in page and f"{test_metrics['perplexity']:.4f}" in card
    assert "Not applicable to this causal-lm run: it has no classes to confuse or probabilities" in page
    assert "The data check did not run" in page
    assert "Fairness was not measured: tunewise measures it for single-label classification" in page
    assert all(section in card for section in MITCHELL_SECTIONS)
    assert "the author left this empty (config `card.intended_use`)" in card
    assert "Perplexity measures fit to held-out text" in card
    assert "the red team and the content screen (see Safety)" in card
    assert "Safety before and after fine-tuning: not measured" in card and "<h2>Memorisation</h2>" in page
    assert "test: base model" in page  # the pretrained model scored beside the fine-tuned one


def test_a_folder_without_a_finished_run_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no run\.json"):
        write_report(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(DataError, match="not finished"):
        write_model_card(tmp_path)


# ------------------------------------------------------------------------------------------ a real browser


def find_browser() -> str:
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if browser is None:
        message = f"no headless browser found (looked for {', '.join(BROWSERS)}); apt-get install chromium"
        if os.environ.get("TUNEWISE_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"TUNEWISE_REQUIRE_CHROMIUM=1 but {message}")
        pytest.skip(message)
    return browser


def screenshot(browser: str, page: Path, folder: Path) -> tuple[np.ndarray, str]:
    """Render the page headless; return the screenshot's RGB pixels and the browser's log."""
    shot = folder / f"{page.stem}.png"
    result = subprocess.run(
        [browser, "--headless=new", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={folder / 'profile'}", f"--screenshot={shot}", "--window-size=1200,3000",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0 and shot.is_file(), log
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(shot)[..., :3], log


def coloured_pixels(pixels: np.ndarray) -> int:
    """Pixels that are clearly not grey: the plots' blues and oranges, never text on white."""
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 0.25).sum())


def test_the_report_renders_in_a_headless_browser(classification_run: Path, tmp_path: Path) -> None:
    browser = find_browser()
    pixels, log = screenshot(browser, classification_run / "report.html", tmp_path)
    console = [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, "the page logged to the browser console:\n" + "\n".join(console)
    assert pixels.std() > 0.05  # not a blank page

    # the same page without its images: what remains is text and tables, so the colour must come from the plots
    page = (classification_run / "report.html").read_text(encoding="utf-8")
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<img [^>]*>", "", page), encoding="utf-8")
    bare_pixels, _ = screenshot(browser, bare, tmp_path)
    assert coloured_pixels(pixels) > coloured_pixels(bare_pixels) + 20_000

    # the Explanations section alone: its examples' words are coloured, and the colour is theirs
    start, end = page.index("<h2>Explanations</h2>"), page.index("<h2>Run facts</h2>")
    section = tmp_path / "explanations.html"
    section.write_text(page[: page.index("<body>") + 6] + page[start:end] + "</body></html>", encoding="utf-8")
    uncoloured = tmp_path / "uncoloured.html"
    uncoloured.write_text(
        re.sub(r"background:rgba\([^)]*\)", "", section.read_text(encoding="utf-8")), encoding="utf-8"
    )
    section_pixels, _ = screenshot(browser, section, tmp_path)
    uncoloured_pixels, _ = screenshot(browser, uncoloured, tmp_path)
    assert coloured_pixels(section_pixels) > coloured_pixels(uncoloured_pixels) + 500
