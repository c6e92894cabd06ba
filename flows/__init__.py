"""Prefect flows of wsss (the `wsss` command line that calls them is the cli package).

Importing this package sets quiet, offline-friendly Prefect defaults (each can be
overridden from the environment) before Prefect reads its settings.
"""

import os

PREFECT_DEFAULTS = {
    # Prefect logs every task run at INFO; the progress bars say the same more briefly.
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # Without PREFECT_API_URL each command starts a temporary local Prefect server; on a
    # busy 2-core machine that can take longer than Prefect's 20 s default.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # The temporary server's telemetry heartbeat needs the network (there may be none)
    # and races other commands for the shared local database.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
for _name, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
