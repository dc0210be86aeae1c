"""tunewise: fine-tune pretrained models on your own data, with the evidence to ship them.

import tunewise
run = tunewise.train("examples/sms_spam.yaml")
run.metrics["test"]["f1_macro"]
run.predict(["WINNER! Claim your prize now"])
tunewise.load("runs/sms-spam").predict(["see you at lunch"])
tunewise.export("runs/sms-spam", quantize="int8")   # ONNX int8, checked on the run's test rows
tunewise.serve("runs/sms-spam", port=8000)          # HTTP, until interrupted
tunewise.tune("my.yaml", trials=20)                 # an Optuna study over the config's tune.space
"""

from tunewise.host import configure_memory

configure_memory()  # before torch allocates (tunewise.host says why)

from tunewise.api import (  # noqa: E402
    CheckResult,
    FineTunedModel,
    Run,
    TuneResult,
    audit_privacy,
    check,
    export,
    load,
    serve,
    train,
    tune,
)
from tunewise.config.sections import RunConfig  # noqa: E402
from tunewise.errors import ConfigError, DataError, TunewiseError  # noqa: E402
from tunewise.tasks import load_config  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "CheckResult",
    "ConfigError",
    "DataError",
    "FineTunedModel",
    "Run",
    "RunConfig",
    "TuneResult",
    "TunewiseError",
    "audit_privacy",
    "check",
    "export",
    "load",
    "load_config",
    "serve",
    "train",
    "tune",
]
