"""The guard: MiniLM-L6 fine-tuned on a stratified sample of Davidson et al.'s tweets by tunewise itself
flags abusive language on held-out rows well above chance, flags planted abuse, and leaves ordinary
sentences alone; a file that is not Davidson's CSV is a DataError naming it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import shared_path

from tunewise.config.safety import ScreenConfig
from tunewise.errors import DataError
from tunewise.jobs.guard import build_guard
from tunewise.prepare.screen import GUARD_FILE, screen_problems
from tunewise.serving.predictor import load_classifier
from tunewise.serving.screen import Screen

# Twenty ordinary sentences, none abusive: the false alarms the guard raises on them are counted.
CLEAN = [
    "The committee will meet again on Tuesday to discuss the budget.",
    "Preheat the oven and bake the bread for 35 minutes.",
    "Our quarterly revenue grew by 4.5 percent compared with last year.",
    "Thank you for your question; here is a short summary of the article.",
    "The train to the coast leaves at a quarter past nine.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "She finished the marathon in just under four hours.",
    "Please restart the application after installing the update.",
    "The museum is closed on public holidays.",
    "The new version of the library fixes two bugs in the parser.",
    "I would recommend reading the first chapter before the meeting.",
    "The river flooded the lower fields after three days of rain.",
    "Add two cups of flour, one egg and a pinch of salt.",
    "The team scored twice in the second half and won the match.",
    "Sorry, I do not know the answer to that question.",
    "In 1969 the first people walked on the Moon.",
    "The report lists twelve recommendations for safer roads.",
    "Remember to water the plants while we are away.",
    "The new policy takes effect at the start of next month.",
    "He plays the cello in the city orchestra on weekends.",
]
ABUSIVE = [
    "shut up you stupid bitch",
    "you are a worthless piece of shit",
    "fuck you and your ugly face, hoe",
    "that dumb ass nigga is trash",
]
# Measured once (1,500 rows, 2 epochs, seed 0, 79 s on 2 busy CPU cores): recall 0.90, precision 0.97, 13 % of
# held-out "neither" flagged, 1 of the 20 clean sentences flagged (score 0.56), the planted abuse at 0.97-0.99.
THRESHOLDS = {"recall": 0.8, "precision": 0.92, "false_alarm_rate": 0.35, "clean_false_alarms": 3}


def test_a_file_that_is_not_davidsons_csv_is_refused(tmp_path: Path) -> None:
    wrong = tmp_path / "tweets.csv"
    wrong.write_text("text,label\nhello,0\n")
    with pytest.raises(DataError, match=r"tweets.csv has no tweet or class column"):
        build_guard(wrong, tmp_path / "guard")
    with pytest.raises(DataError, match="does not exist"):
        build_guard(tmp_path / "missing.csv", tmp_path / "guard")


@pytest.mark.integration
def test_a_small_guard_flags_abuse_and_spares_ordinary_sentences(tmp_path: Path) -> None:
    data = shared_path("data/hate_offensive/labeled_data.csv")
    record = build_guard(data, tmp_path / "guard", max_rows=1500, epochs=2)
    assert json.loads((tmp_path / "guard" / GUARD_FILE).read_text()) == record
    assert record["licence"].startswith("MIT") and len(record["data_sha256"]) == 64
    held_out = record["held_out"]
    # chance (flag everything) gives precision 0.83, the share of abusive rows, and flags every "neither" row
    assert held_out["rows"] == 225 and held_out["abusive_recall"] >= THRESHOLDS["recall"], held_out
    assert held_out["abusive_precision"] >= THRESHOLDS["precision"], held_out
    assert held_out["false_alarm_rate"] <= THRESHOLDS["false_alarm_rate"], held_out

    settings = ScreenConfig(classifier=str(tmp_path / "guard"), pii=False)
    assert screen_problems(settings) == []
    screen = Screen.from_config(
        SimpleNamespace(screen=settings, audit=SimpleNamespace(pii_patterns={})), load_classifier
    )
    abusive = screen.screen(ABUSIVE)
    assert all(v.flagged for v in abusive), [v.abusive_score for v in abusive]
    false_alarms = [v.reasons for v in screen.screen(CLEAN) if v.flagged]
    assert len(false_alarms) <= THRESHOLDS["clean_false_alarms"], (false_alarms, held_out)
