"""Read and validate ``relist.toml`` once, at start-up, into immutable values.

Every key is declared in ``SCHEMA`` with its type, default and a check; an unknown
key, a wrong type or a bad value raises ``ConfigError`` naming the key and the value,
so a typo never silently falls back to a default.  The result feeds everything:
the core's ``RelayPolicy``/``ListPolicy`` and the edges' settings.

``schema.py`` declares the keys; ``load.py`` reads the file and builds the values.
"""

from relist.config.load import Config, check_signing, load, parse, with_overrides
from relist.config.schema import (
    ENV_VAR, INGRESS_SCHEMA, LIST_SCHEMA, MTA_SIZE_MARGIN, SCHEMA, ConfigError, parse_hostport,
)

__all__ = ["ENV_VAR", "INGRESS_SCHEMA", "LIST_SCHEMA", "MTA_SIZE_MARGIN", "SCHEMA", "Config", "ConfigError",
           "check_signing", "load", "parse", "parse_hostport", "with_overrides"]
