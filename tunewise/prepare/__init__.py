"""Preparation: read, split and resolve everything once, into the frozen plan every job starts from."""

from tunewise.prepare.data import prepare_data
from tunewise.prepare.plan import ModelPlan, Plan, PreparedData, TrainingPlan
from tunewise.prepare.planner import prepare, prepare_check, prepare_model, process_state

__all__ = [
    "ModelPlan",
    "Plan",
    "PreparedData",
    "TrainingPlan",
    "prepare",
    "prepare_check",
    "prepare_data",
    "prepare_model",
    "process_state",
]
