"""The content screen: planted personal data, blocklisted terms and patterns are flagged with their reasons;
redact and block rewrite the text; a clean sample raises no flag; a classifier that cannot serve is refused
before any work; and a generative model's predictions carry the screen's verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from conftest import lm_config, make_config, story_rows, write_jsonl

import tunewise
from tunewise.config.safety import BLOCKED_TEXT, ScreenConfig
from tunewise.config.sections import AuditConfig
from tunewise.errors import ConfigError
from tunewise.prepare.screen import GUARD_FILE, guard_folder, screen_problems
from tunewise.serving.predictor import load_classifier
from tunewise.serving.screen import Classifier, Screen, count_verdicts

# Ordinary sentences (news, chat, instructions, a recipe, numbers and dates) that hold no personal data,
# no URL and nothing the patterns below match: the screen must leave every one of them alone.
CLEAN = [
    "The committee will meet again on Tuesday to discuss the budget.",
    "Preheat the oven to 200 degrees and bake the bread for 35 minutes.",
    "Our quarterly revenue grew by 4.5 percent compared with last year.",
    "Thank you for your question; here is a short summary of the article.",
    "The train to the coast leaves at 9:15 from platform 3.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "She finished the marathon in just under four hours.",
    "Please restart the application after installing the update.",
    "The museum is closed on public holidays, including 25 December.",
    "Version 2.3 of the library fixes two bugs in the parser.",
    "I would recommend reading the first chapter before the meeting.",
    "The river flooded the lower fields after three days of heavy rain.",
    "Add two cups of flour, one egg and a pinch of salt.",
    "The team scored twice in the second half and won 2-1.",
    "Sorry, I do not know the answer to that question.",
    "In 1969 the first people walked on the Moon.",
    "The report lists 12 recommendations for safer roads.",
    "Remember to water the plants while we are away.",
    "The new policy takes effect at the start of next month.",
    "He plays the cello in the city orchestra on weekends.",
]


def settings(**screen: Any) -> SimpleNamespace:
    """What Screen.from_config reads of a generative run's config: its screen and audit sections."""
    audit = AuditConfig(pii_patterns={"EMPLOYEE_ID": r"\bEMP-\d{6}\b"})
    return SimpleNamespace(screen=ScreenConfig(**{"classifier": None, **screen}), audit=audit)


def make_screen(**screen: Any) -> Screen:
    config = settings(blocklist=["project falcon"], patterns={"INTERNAL_HOST": r"\bsrv-\d+\b"}, **screen)
    return Screen.from_config(config, load_classifier)


PLANTED = [
    "Write to jane.doe@example.com for the slides.",
    "Call me on +1 415 555 0132 tomorrow.",
    "Badge EMP-123456 opens the lab.",
    "The Project Falcon launch moved to May.",
    "Deploy it to srv-42 tonight.",
]


def test_planted_pii_blocklist_and_patterns_are_flagged_with_their_reasons() -> None:
    verdicts = make_screen().screen(PLANTED)
    assert [v.reasons for v in verdicts] == [
        ["pii:EMAIL_ADDRESS"],
        ["pii:PHONE_NUMBER"],
        ["pii:EMPLOYEE_ID"],  # audit.pii_patterns, reused by the screen
        ["blocklist:project falcon"],  # flag keeps the configured term
        ["pattern:INTERNAL_HOST"],
    ]
    assert all(v.flagged and v.action == "flagged" for v in verdicts)
    assert [v.text for v in verdicts] == PLANTED  # flag never rewrites
    assert all(v.abusive_score is None for v in verdicts)  # no classifier


def test_blocklist_matches_whole_words_in_any_case() -> None:
    screen = Screen.from_config(settings(blocklist=["falcon", "c++"]), load_classifier)
    found = [v.flagged for v in screen.screen(["FALCON rises", "falconry is old", "I write C++ daily"])]
    assert found == [True, False, True]


def test_redact_replaces_each_span_and_names_no_term() -> None:
    verdicts = make_screen(action="redact").screen(
        ["Write to jane.doe@example.com about Project Falcon on srv-42.", "Nothing to see."]
    )
    assert verdicts[0].text == "Write to <EMAIL_ADDRESS> about <BLOCKLIST> on <INTERNAL_HOST>."
    assert verdicts[0].action == "redacted"
    assert verdicts[0].reasons == ["pii:EMAIL_ADDRESS", "blocklist", "pattern:INTERNAL_HOST"]
    assert verdicts[1].text == "Nothing to see." and verdicts[1].action == "none" and not verdicts[1].flagged


def test_block_replaces_a_flagged_text_with_the_refusal() -> None:
    verdicts = make_screen(action="block").screen(["Call +1 415 555 0132.", "A calm sentence."])
    assert verdicts[0].text == BLOCKED_TEXT and verdicts[0].action == "blocked"
    assert verdicts[1].text == "A calm sentence." and verdicts[1].action == "none"


def test_a_clean_sample_raises_no_flag() -> None:
    verdicts = make_screen().screen(CLEAN)
    assert [v.reasons for v in verdicts if v.flagged] == []


def test_decisions_are_counted_by_category_without_raw_values(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="tunewise.screen"):
        verdicts = make_screen(action="redact").screen([*PLANTED, "Fine.", "Mail a@example.com or b@example.org."])
    counts = count_verdicts(verdicts)
    assert counts == {
        "screened": 7,
        "flagged": 6,
        "redacted": 6,
        "blocked": 0,
        "by_reason": {
            "blocklist": 1,
            "pattern:INTERNAL_HOST": 1,
            "pii:EMAIL_ADDRESS": 2,  # once per text, however many addresses it holds
            "pii:EMPLOYEE_ID": 1,
            "pii:PHONE_NUMBER": 1,
        },
    }
    logged = caplog.text
    assert "redacted" in logged and "jane.doe" not in logged and "falcon" not in logged.lower()


class FakeClassifier:
    """Stands in for a loaded guard: texts with 'idiot' are offensive, others neither."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, inputs: list[str]) -> list[dict[str, Any]]:
        self.calls.append(len(inputs))
        return [
            {"probabilities": {"hate": 0.05, "offensive": 0.9, "neither": 0.05}}
            if "idiot" in text
            else {"probabilities": {"hate": 0.01, "offensive": 0.04, "neither": 0.95}}
            for text in inputs
        ]


def classified_screen(action: str) -> tuple[Screen, FakeClassifier]:
    fake = FakeClassifier()
    classifier = Classifier(fake, Path("runs/guard"), ["hate", "offensive"], 0.5, None)
    return Screen(action, None, [], {"INTERNAL_HOST": r"\bsrv-\d+\b"}, classifier), fake


def test_the_classifier_flags_abusive_texts_and_redact_blocks_them_whole() -> None:
    screen, fake = classified_screen("redact")
    texts = ["You absolute idiot.", "Use srv-7 instead.", "", *[f"line {i}" for i in range(100)]]
    verdicts = screen.screen(texts)
    assert verdicts[0].reasons == ["abusive:offensive 0.95"] and verdicts[0].abusive_score == pytest.approx(0.95)
    assert verdicts[0].text == BLOCKED_TEXT and verdicts[0].action == "blocked"  # not redactable in parts
    assert verdicts[1].text == "Use <INTERNAL_HOST> instead." and verdicts[1].abusive_score == pytest.approx(0.05)
    assert verdicts[2].abusive_score == 0.0 and not verdicts[2].flagged  # an empty text is not classified
    assert fake.calls == [64, 38]  # batched, the empty text left out


def test_describe_says_what_the_screen_is_made_of(tmp_path: Path) -> None:
    described = make_screen().describe()
    assert described["action"] == "flag" and described["pii"] is True
    assert described["blocklist"] == 1 and described["patterns"] == ["INTERNAL_HOST"]
    assert described["classifier"] is None and "null" in described["note"]
    auto = Screen.from_config(settings(classifier="auto"), load_classifier).describe()  # the test cache has no guard
    assert auto["classifier"] is None and "tunewise guard build --data" in auto["note"]
    assert classified_screen("flag")[0].describe()["classifier"]["flag_labels"] == ["hate", "offensive"]


# ------------------------------------------------------------------------------------------ bad classifiers


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, single_label_data) -> Path:
    """A finished text-classification run (labels negative, positive) of the tiny random BERT."""
    folder = tmp_path_factory.mktemp("sentiment")
    tunewise.train(make_config(folder, tiny_model_dir, single_label_data, train={"epochs": 1}), show_progress=False)
    return folder / "run"


def edited_copy(run: Path, folder: Path, edit: Any) -> Path:
    copy = folder / "copy"
    shutil.copytree(run, copy)
    record = json.loads((copy / "run.json").read_text())
    edit(record)
    (copy / "run.json").write_text(json.dumps(record))
    return copy


def problem(classifier: str, **screen: Any) -> str:
    found = screen_problems(ScreenConfig(classifier=classifier, **screen))
    assert len(found) == 1 and isinstance(found[0], ConfigError), found
    return str(found[0])


def test_bad_classifier_folders_are_refused_before_any_work(tmp_path: Path, sentiment_run: Path) -> None:
    assert "does not exist" in problem(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    assert "is a file" in problem(str(tmp_path / "file.txt"))
    (tmp_path / "empty").mkdir()
    assert "not a tunewise run folder" in problem(str(tmp_path / "empty"))
    unfinished = edited_copy(sentiment_run, tmp_path / "a", lambda r: r.update(status="training"))
    assert "has not finished" in problem(str(unfinished))
    # decided by the capabilities the run recorded, whatever its task is called
    regression = edited_copy(sentiment_run, tmp_path / "b", lambda r: r["task"]["capabilities"].update(class_labels=0))
    assert "does not put one class on one text" in problem(str(regression))
    assert "lacks" in problem(str(sentiment_run))  # flag_labels auto needs the guard.json a guard build writes
    assert "nasty not among the labels" in problem(str(sentiment_run), flag_labels=["nasty"])


def test_a_run_of_ones_own_serves_as_the_classifier(tmp_path: Path, sentiment_run: Path) -> None:
    config = settings(classifier=str(sentiment_run), flag_labels=["negative"])
    assert screen_problems(config.screen) == [] and guard_folder(config.screen) == sentiment_run
    screen = Screen.from_config(config, load_classifier)
    verdicts = screen.screen(["the film was awful", "the meal was lovely"])
    assert all(0 <= v.abusive_score <= 1 for v in verdicts)  # the probability of "negative"
    assert screen.describe()["classifier"]["path"] == str(sentiment_run)
    with_guard = edited_copy(sentiment_run, tmp_path, lambda r: None)
    (with_guard / GUARD_FILE).write_text(json.dumps({"flag_labels": ["negative"], "held_out": None}))
    assert screen_problems(ScreenConfig(classifier=str(with_guard))) == []  # auto flag_labels from guard.json


# ------------------------------------------------------------------------------------------ predict


@pytest.fixture(scope="module")
def screened_run(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2_dir: Path) -> Path:
    """A tiny causal LM whose every generation matches the pattern ANY_WORD (no classifier)."""
    folder = tmp_path_factory.mktemp("screened")
    data = {"train": write_jsonl(folder / "train.jsonl", story_rows(60, seed=1))}
    screen = {"classifier": None, "patterns": {"ANY_WORD": r"\w+"}}
    config = lm_config(
        folder, tiny_gpt2_dir, data, train={"epochs": 1}, generation={"max_new_tokens": 4}, screen=screen
    )
    return tunewise.train(config, show_progress=False).run_dir


def test_predictions_of_a_generative_model_carry_the_screen(tmp_path: Path, screened_run: Path) -> None:
    model = tunewise.load(screened_run, device="cpu")
    record = model.predict(["the film was"])[0]
    flagged = bool(record["generated_text"].strip())
    assert record["screen"] == {"flagged": flagged, "reasons": ["pattern:ANY_WORD"] if flagged else []}
    assert model.screen_counts["screened"] == 1
    model.set_screen_action("block")
    blocked = model.predict(["the film was"])[0]
    assert blocked["generated_text"] == (BLOCKED_TEXT if flagged else record["generated_text"])
    prompts = pd.DataFrame({"text": ["the film was", "our trip was"]})
    prompts.to_csv(tmp_path / "prompts.csv", index=False)
    frame = model.predict_file(str(tmp_path / "prompts.csv"))
    assert {"screen_flagged", "screen_reasons"} <= set(frame.columns)
    model.set_screen_action("off")
    assert "screen" not in model.predict(["the film was"])[0]


def test_a_bad_classifier_stops_predict_before_generation(tmp_path: Path, screened_run: Path) -> None:
    model = tunewise.load(screened_run, device="cpu")
    screen = model.config.screen.model_copy(update={"classifier": str(tmp_path / "no-such-guard")})
    model.config = model.config.model_copy(update={"screen": screen})
    with pytest.raises(ConfigError, match=r"screen.classifier: .*no-such-guard does not exist"):
        model.predict(["the film was"])
