"""tunewise: fine-tune pretrained models on your own data, with the evidence to ship them.

import tunewise
run = tunewise.train("examples/sms_spam.yaml")
run.metrics["test"]["f1_macro"]
run.predict(["WINNER! Claim your prize now"])
tunewise.load("runs/sms-spam").predict(["see you at lunch"])
"""

from tunewise.api import Run, train
from tunewise.config import RunConfig, load_config
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.serving.predictor import FineTunedModel, load

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "DataError",
    "FineTunedModel",
    "Run",
    "RunConfig",
    "TunewiseError",
    "load",
    "load_config",
    "train",
]
