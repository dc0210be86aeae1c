"""Best-model selection and early stopping as one small value: what the best evaluation was, and when."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunewise.errors import ConfigError
from tunewise.evaluation.metrics import is_better
from tunewise.training.settings import Selection


@dataclass
class Verdict:
    improved: bool  # this evaluation is the best so far: keep its weights
    stop: bool  # patience is used up


@dataclass
class EarlyStopping:
    """The best value of the selection metric, the step that reached it, and the evaluations since.

    It is part of the training state, so a resumed run continues with the same patience left."""

    selection: Selection | None
    best: float | None = None
    best_step: int | None = None
    stale: int = 0  # evaluations without improvement

    def update(self, step: int, metrics: dict[str, Any]) -> Verdict:
        if self.selection is None:  # no selection metric: the latest model is the result
            self.best_step = step
            return Verdict(improved=False, stop=False)
        name = self.selection.metric
        value = metrics.get(name)
        if value is None:
            raise ConfigError(
                f"train.early_stopping.metric {name!r} could not be computed on the validation data (ROC-AUC "
                "needs every class present there). Choose another metric, e.g. f1_macro, or a larger validation set."
            )
        if is_better(name, value, self.best, self.selection.min_delta):
            self.best, self.best_step, self.stale = value, step, 0
            return Verdict(improved=True, stop=False)
        self.stale += 1
        return Verdict(improved=False, stop=self.stale >= self.selection.patience)
