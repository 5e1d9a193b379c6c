"""Which adapter serves which REST API version, and how to pick one from a server's OpenAPI spec."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ._api import Adapter
from ._base import version_key
from ._v0038 import V0038Adapter
from ._v0040 import V0040Adapter
from ._v0041 import V0041Adapter, V0042Adapter
from ._v0043 import V0043Adapter, V0044Adapter, V0045Adapter

# v0.0.36/37 share v0.0.38's shapes (Slurm 20.11/21.08); they are served by the same adapter but
# were never tested live. v0.0.39 (23.02) is left out on purpose: 23.02 also serves v0.0.38,
# which discovery then picks.
ADAPTERS: dict[str, type[V0038Adapter] | type[V0040Adapter]] = {
    "v0.0.36": V0038Adapter,
    "v0.0.37": V0038Adapter,
    "v0.0.38": V0038Adapter,
    "v0.0.40": V0040Adapter,
    "v0.0.41": V0041Adapter,
    "v0.0.42": V0042Adapter,
    "v0.0.43": V0043Adapter,
    "v0.0.44": V0044Adapter,
    "v0.0.45": V0045Adapter,
}

SUPPORTED_VERSIONS: tuple[str, ...] = tuple(sorted(ADAPTERS, key=version_key))

_SLURM_PATH = re.compile(r"^/slurm/(v\d+\.\d+\.\d+)/")


def normalize_version(version: str) -> str:
    """ "0.0.42", "v0.0.42", "v0042" → "v0.0.42"."""
    raw = version.strip().lower().removeprefix("v")
    compact = re.fullmatch(r"00(\d\d)", raw)
    if compact:
        raw = f"0.0.{int(compact.group(1))}"
    if not re.fullmatch(r"\d+\.\d+\.\d+", raw):
        raise ValueError(f"not a Slurm REST API version: {version!r}")
    return f"v{raw}"


def adapter_for(version: str) -> Adapter:
    name = normalize_version(version)
    cls = ADAPTERS.get(name)
    if cls is None:
        raise KeyError(name)
    return cls(name)


def offered_versions(paths: Iterable[str]) -> set[str]:
    """The slurmctld API versions named in an OpenAPI spec's paths."""
    found = set()
    for path in paths:
        match = _SLURM_PATH.match(path)
        if match:
            found.add(match.group(1))
    return found


def choose_version(offered: Iterable[str]) -> str | None:
    """The newest offered version this client supports, or None."""
    usable = [version for version in offered if version in ADAPTERS]
    return max(usable, key=version_key) if usable else None


def spec_paths(spec: object) -> Mapping[str, Any]:
    if isinstance(spec, Mapping) and isinstance(spec.get("paths"), Mapping):
        paths: Mapping[str, Any] = spec["paths"]
        return paths
    return {}
