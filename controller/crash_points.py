"""Test-only kill points: the process dies at a named step, as `kill -9` would leave it.

`BRIDGE_TEST_CRASH_AT=<point>[:<nth>]`, read once at startup (slurm_bridge/workloads.py), arms one
point: the nth time the process reaches it (the first by default), it ends with `os._exit(137)`: no
`finally`, no lease release, no flush, exactly what a SIGKILL leaves behind. Unset, `reach` returns at
once. The crash suite (tests/testbed/test_crash_points_e2e.py) restarts the bridge without the variable
and checks that nothing was duplicated, orphaned, lost or half done.

A point is `<scope>.<step>`: the effects shared by pods and gangs (controller/effects.py) are reached
under both scopes (`pod.after-submit`, `gang.after-submit`); the NodeSet controller's steps under
`nodeset`. "After member k of a gang's bind" is `gang.after-bind:k`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import NoReturn

# Not SLURM_BRIDGE_*: those are configuration overrides (bridge/config.py), and no config field is this.
CRASH_VARIABLE = "BRIDGE_TEST_CRASH_AT"
KILLED_EXIT_CODE = 137  # 128 + SIGKILL, what a shell reports for kill -9


class Scope(StrEnum):
    POD = "pod"
    GANG = "gang"
    NODESET = "nodeset"


class Step(StrEnum):
    # effects on pods and jobs (controller/effects.py), under Scope.POD and Scope.GANG
    BEFORE_SUBMIT = "before-submit"
    AFTER_SUBMIT = "after-submit"  # the job exists; the pod does not carry its id yet
    BEFORE_PREPARE = "before-prepare"
    AFTER_PREPARE = "after-prepare"  # finalizer (and job-id label, when known) written
    BEFORE_BIND = "before-bind"
    AFTER_BIND = "after-bind"
    BEFORE_END_JOB = "before-end-job"
    AFTER_END_JOB = "after-end-job"
    BEFORE_DELETE = "before-delete"
    AFTER_DISRUPTION_CONDITION = "after-disruption-condition"  # DisruptionTarget set, pod not deleted
    AFTER_DELETE = "after-delete"
    BEFORE_RELEASE = "before-release"
    AFTER_RELEASE = "after-release"
    BEFORE_ORPHAN_CANCEL = "before-orphan-cancel"
    AFTER_ORPHAN_CANCEL = "after-orphan-cancel"
    # the NodeSet controller (controller/nodesets.py), under Scope.NODESET
    BEFORE_CREATE = "before-create"
    AFTER_CREATE = "after-create"
    BEFORE_DRAIN = "before-drain"
    AFTER_DRAIN = "after-drain"  # Slurm drains the node; its pod is still there
    BEFORE_POD_DELETE = "before-pod-delete"
    AFTER_POD_DELETE = "after-pod-delete"  # the pod is deleted; its node is not back to FUTURE yet
    BEFORE_RESUME = "before-resume"
    AFTER_RESUME = "after-resume"
    BEFORE_RETIRE = "before-retire"
    AFTER_RETIRE = "after-retire"


_NODESET_STEPS = (
    Step.BEFORE_CREATE,
    Step.AFTER_CREATE,
    Step.BEFORE_DRAIN,
    Step.AFTER_DRAIN,
    Step.BEFORE_POD_DELETE,
    Step.AFTER_POD_DELETE,
    Step.BEFORE_RESUME,
    Step.AFTER_RESUME,
    Step.BEFORE_RETIRE,
    Step.AFTER_RETIRE,
)
_EFFECT_STEPS = tuple(s for s in Step if s not in _NODESET_STEPS)

KILL_POINTS: frozenset[str] = frozenset(
    {f"{scope}.{step}" for scope in (Scope.POD, Scope.GANG) for step in _EFFECT_STEPS}
    | {f"{Scope.NODESET}.{step}" for step in _NODESET_STEPS}
)


def _kill(code: int) -> NoReturn:
    os._exit(code)


class CrashPoints:
    """One armed kill point, or none. `reach(scope, step)` at each step; it returns unless armed there."""

    def __init__(
        self, point: str | None = None, nth: int = 1, *, die: Callable[[int], NoReturn] = _kill
    ) -> None:
        if point is not None and point not in KILL_POINTS:
            raise ValueError(f"{CRASH_VARIABLE}: unknown kill point {point!r} (known: {sorted(KILL_POINTS)})")
        if nth < 1:
            raise ValueError(f"{CRASH_VARIABLE}: the count must be 1 or more, not {nth}")
        self.point = point
        self.nth = nth
        self._reached = 0
        self._die = die

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> CrashPoints:
        """Armed by `BRIDGE_TEST_CRASH_AT=<point>[:<nth>]`; disarmed when unset or empty."""
        raw = environ.get(CRASH_VARIABLE, "").strip()
        if not raw:
            return cls()
        point, _, count = raw.partition(":")
        if count and not (count.isascii() and count.isdigit()):
            raise ValueError(f"{CRASH_VARIABLE}: the count after ':' must be a number, not {count!r}")
        return cls(point, int(count) if count else 1)

    def reach(self, scope: Scope, step: Step) -> None:
        if self.point is None or self.point != f"{scope}.{step}":
            return
        self._reached += 1
        if self._reached == self.nth:
            os.write(2, f"slurm-bridge: {CRASH_VARIABLE}: killed at {self.point}:{self.nth}\n".encode())
            self._die(KILLED_EXIT_CODE)


NO_CRASH = CrashPoints()
