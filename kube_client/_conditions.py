"""Kubernetes-style conditions (status.conditions): the one place that decides how an entry is upserted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple


class ConditionUpsert(NamedTuple):
    condition: dict[str, Any]  # the entry as it should be
    conditions: list[dict[str, Any]]  # the whole list with that entry replaced (or appended)
    changed: bool  # False: the list already said exactly that (status, reason, message)


def upsert_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    condition_type: str,
    status: str,
    reason: str,
    message: str,
    *,
    now: str,
    extra: Mapping[str, Any] | None = None,
) -> ConditionUpsert:
    """Set the entry of `condition_type`; lastTransitionTime (`now`, RFC 3339) moves only when status does.

    An empty reason or message is written as absent, as the API server itself leaves them.
    """
    existing = [dict(c) for c in conditions or ()]
    old = next((c for c in existing if c.get("type") == condition_type), None)
    same_status = old is not None and old.get("status") == status
    changed = not (
        same_status
        and ((old or {}).get("reason") or "") == reason
        and ((old or {}).get("message") or "") == message
    )
    condition: dict[str, Any] = {
        "type": condition_type,
        "status": status,
        "lastTransitionTime": ((old or {}).get("lastTransitionTime") if same_status else None) or now,
        "reason": reason or None,
        "message": message or None,
        **(extra or {}),
    }
    merged = [*(c for c in existing if c.get("type") != condition_type), condition]
    return ConditionUpsert(condition, merged, changed)
