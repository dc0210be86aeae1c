"""Run configuration: the schema, YAML loading with overrides, and the commented template."""

from tunewise.config.loading import dump_config, load_config
from tunewise.config.schema import RunConfig

__all__ = ["RunConfig", "dump_config", "load_config"]
