"""`tunewise report RUN`: write report.html and model_card.md again from the run folder alone."""

from __future__ import annotations

from pathlib import Path

from tunewise.reporting.model_card import write_model_card
from tunewise.reporting.report import write_report


def rebuild(run_dir: Path) -> tuple[Path, Path]:
    """Write both report.html and model_card.md (after a fairness or privacy check, or a card edit)."""
    return write_report(run_dir), write_model_card(run_dir)
