"""The gang job marker: the Slurm job comment that ties one multi-node placeholder job to its gang.

Format (one line, single spaces, fields in this order):

    slurm-bridge/v1 cluster=<cluster-id> gang=<namespace>/<kind>/<name> spec=<digest> uid=<group-uid>

- ``slurm-bridge/v1`` and ``cluster``: as in the pod marker (bridge/marker.py).
- ``gang``: the GangKey (bridge/gang.py). ``<kind>`` is one of the GangKind tokens, e.g.
  ``podgroup.scheduling.x-k8s.io``, so ``kubectl -n <namespace> get <kind>/<name>`` finds a PodGroup.
- ``spec``: 12 hex digits of the gang's translated JobSpec digest (member count included), so a pending
  job whose gang now translates differently - a member more or less, other options - is superseded.
- ``uid``: the UID of the group's incarnation: the PodGroup's metadata.uid, or for a LeaderWorkerSet
  group its leader pod's UID. A job of an earlier incarnation of the same name is stale.

The marker is distinct from the pod marker by construction: the field after ``cluster=`` is ``gang=``,
not ``pod=``, and each grammar is matched in full, so a gang marker never decodes as a pod marker (the
single-pod planner and its orphan clean-up leave gang jobs alone) and a pod marker never decodes as a
gang marker. As with pod markers, anything not positively ours decodes to None and is never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge import wellknown
from bridge.gang import GangKey, GangKind
from slurm_client import split_exit_code

_GRAMMAR = re.compile(
    re.escape(wellknown.MARKER_PREFIX) + r" cluster=(?P<cluster_id>[A-Za-z0-9][A-Za-z0-9._-]{0,62})"
    r" gang=(?P<namespace>[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)"
    r"/(?P<kind>" + "|".join(re.escape(kind.value) for kind in GangKind) + r")"
    r"/(?P<name>[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?)"
    r" spec=(?P<spec_digest>[0-9a-f]{12})"
    r" uid=(?P<group_uid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)


@dataclass(frozen=True)
class GangMarker:
    cluster_id: str
    namespace: str
    kind: GangKind
    name: str
    group_uid: str
    spec_digest: str

    @property
    def gang_key(self) -> GangKey:
        return GangKey(namespace=self.namespace, kind=self.kind, name=self.name)

    def encode(self) -> str:
        """The comment text; raises ValueError for a marker that would not decode back to itself."""
        text = (
            f"{wellknown.MARKER_PREFIX} cluster={self.cluster_id}"
            f" gang={self.namespace}/{self.kind.value}/{self.name}"
            f" spec={self.spec_digest} uid={self.group_uid}"
        )
        if parse_gang_marker(text) != self:
            raise ValueError(f"cannot encode a decodable gang marker from {self!r}")
        return text


def parse_gang_marker(comment: str | None) -> GangMarker | None:
    """The gang marker in `comment`, whatever cluster wrote it; None if the comment is not one."""
    if comment is None:
        return None
    # A batch placeholder being ended carries the pod's exit code after the marker (slurm_client).
    match = _GRAMMAR.fullmatch(split_exit_code(comment)[0])
    if match is None:
        return None
    fields = match.groupdict()
    return GangMarker(
        cluster_id=fields["cluster_id"],
        namespace=fields["namespace"],
        kind=GangKind(fields["kind"]),
        name=fields["name"],
        group_uid=fields["group_uid"],
        spec_digest=fields["spec_digest"],
    )


def decode_gang_marker(comment: str | None, cluster_id: str) -> GangMarker | None:
    """The gang marker in `comment` if this cluster's bridge wrote it; None for anything else."""
    marker = parse_gang_marker(comment)
    if marker is None or marker.cluster_id != cluster_id:
        return None
    return marker
