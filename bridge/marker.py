"""The job marker: the Slurm job comment that ties a placeholder job to its pod.

Format (one line, single spaces, fields in this order):

    slurm-bridge/v1 cluster=<cluster-id> pod=<namespace>/<name> spec=<digest> uid=<pod-uid>

- ``slurm-bridge/v1``: namespaced, versioned key; a later format gets a new version token.
- ``cluster``: the bridge's ``cluster_id``, so bridges of clusters sharing one Slurm ignore
  each other's jobs.
- ``pod``: namespace and name (DNS label / DNS subdomain), for people reading squeue and for lookups.
- ``spec``: 12 hex digits of the translated job spec's digest; a pending job whose pod now translates
  to another digest is superseded.
- ``uid``: the pod's UID (a UUID, as the API server assigns).

Decoding is a full match of that grammar, so anything not positively ours - free text, someone's JSON,
another cluster's marker, a comment cut short anywhere (the trailing UUID then fails its fixed
shape) - decodes to None, and the bridge never touches such a job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge import wellknown
from slurm_client import split_exit_code

_GRAMMAR = re.compile(
    re.escape(wellknown.MARKER_PREFIX) + r" cluster=(?P<cluster_id>[A-Za-z0-9][A-Za-z0-9._-]{0,62})"
    r" pod=(?P<namespace>[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)"
    r"/(?P<pod_name>[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?)"
    r" spec=(?P<spec_digest>[0-9a-f]{12})"
    r" uid=(?P<pod_uid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)


@dataclass(frozen=True)
class JobMarker:
    cluster_id: str
    namespace: str
    pod_name: str
    pod_uid: str
    spec_digest: str

    def encode(self) -> str:
        """The comment text; raises ValueError for a marker that would not decode back to itself."""
        text = (
            f"{wellknown.MARKER_PREFIX} cluster={self.cluster_id} pod={self.namespace}/{self.pod_name}"
            f" spec={self.spec_digest} uid={self.pod_uid}"
        )
        # One grammar for both directions: a job we could not recognise later must never be submitted.
        if parse_marker(text) != self:
            raise ValueError(f"cannot encode a decodable job marker from {self!r}")
        return text


def parse_marker(comment: str | None) -> JobMarker | None:
    """The marker in `comment`, whatever cluster wrote it; None if the comment is not a marker."""
    if comment is None:
        return None
    # A batch placeholder being ended carries the pod's exit code after the marker (slurm_client).
    match = _GRAMMAR.fullmatch(split_exit_code(comment)[0])
    if match is None:
        return None
    return JobMarker(**match.groupdict())


def decode_marker(comment: str | None, cluster_id: str) -> JobMarker | None:
    """The marker in `comment` if this cluster's bridge wrote it; None for anything else."""
    marker = parse_marker(comment)
    if marker is None or marker.cluster_id != cluster_id:
        return None
    return marker
