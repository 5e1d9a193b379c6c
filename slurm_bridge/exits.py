"""How the program ends, by cause: the exit status a supervisor (Kubernetes, systemd) sees."""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  # bad command line, configuration or manifest
# The leader lost its Lease: its work was cancelled mid-way; a restart rejoins as a follower with fresh
# caches (client-go's leader election ends the process the same way).
EXIT_LEADERSHIP_LOST = 3


class LeaseLost(Exception):
    """The leader's Lease was lost (renewal failed past the renew deadline, or another holder took it)."""
