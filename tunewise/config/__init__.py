"""Run configuration: the shared sections, the cross-field rules, YAML parsing and the commented template.

Each task adds its own section in its module (tunewise/tasks/); `tunewise.tasks.load_config`
validates a YAML file against the config class of the task it names.
"""

from tunewise.config.parsing import dump_config
from tunewise.config.sections import RunConfig

__all__ = ["RunConfig", "dump_config"]
