"""REST API v0.0.41 and v0.0.42 (Slurm 24.05/24.11, still served by 25.x/26.05).

Against v0.0.40 the fields this client reads and writes are unchanged (job_resources became an
object with `nodes.list`, which the client does not need: it reads the job's `nodes` hostlist);
`job/allocate` appears. Only the version and the default capabilities differ.
"""

from __future__ import annotations

from ._v0040 import V0040Adapter


class V0041Adapter(V0040Adapter):
    version = "v0.0.41"
    default_allocate = True


class V0042Adapter(V0041Adapter):
    version = "v0.0.42"
    supports_job_states = True  # GET jobs/state (Slurm 24.11+)
