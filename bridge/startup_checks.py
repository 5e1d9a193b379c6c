"""Settings the connected Slurm cannot honour refuse the bridge's start, with a clear error.

Checked once, after the Slurm client learned the server's REST version (`SlurmClient.discover`).
Never a silent fall back: `placeholder_mode: external` on a server without EXTERNAL_JOB (REST API
before v0.0.43) would otherwise submit batch placeholders, which behave differently (a batch shell
on the first node, ended by a signal).
"""

from __future__ import annotations

from bridge.config import BridgeConfig, PlaceholderMode
from slurm_client import Capabilities


class StartupRefused(Exception):
    """The configuration asks for something this Slurm cannot do; the message says what and why."""


def placeholder_mode_problem(mode: PlaceholderMode, capabilities: Capabilities) -> str | None:
    """Why `mode` cannot work with this server, or None when it can."""
    if mode is PlaceholderMode.EXTERNAL and not capabilities.supports_external_job:
        return (
            f"slurm.placeholder_mode 'external' needs EXTERNAL_JOB, which Slurm's REST API offers from "
            f"v0.0.43 (Slurm 25.05); this slurmrestd speaks {capabilities.api_version}. "
            "Use placeholder_mode 'batch' (or 'auto', which picks batch here)."
        )
    return None


def refuse_unsupported(config: BridgeConfig, capabilities: Capabilities) -> None:
    """Raise StartupRefused when the configuration cannot work with this Slurm."""
    problem = placeholder_mode_problem(config.slurm.placeholder_mode, capabilities)
    if problem is not None:
        raise StartupRefused(problem)
