"""Process-wide settings applied before Prefect is imported: offline, quiet, patient."""

from __future__ import annotations

import os

DEFAULTS = {
    # No internet: no telemetry from the server (PREFECT_SERVER_...) or the client (DO_NOT_TRACK).
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # The temporary server needs ~20 s on a fresh database on 2 loaded cores; 20 s is the default.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def apply_defaults() -> None:
    """Set each default unless the user already chose a value."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
