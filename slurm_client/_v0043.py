"""REST API v0.0.43, v0.0.44 and v0.0.45 (Slurm 25.05 … 26.05).

New against v0.0.42: the EXTERNAL_JOB job flag. A JobSpec without a script is submitted as
`{"job": {..., "flags": ["EXTERNAL_JOB"]}}` with no script (a script gives error 2189), no
environment and no working directory: the job is allocated and RUNNING with nothing launched.
It ends CANCELLED on DELETE or TIMEOUT at its limit; signals do nothing to it.
"""

from __future__ import annotations

from ._v0041 import V0042Adapter


class V0043Adapter(V0042Adapter):
    version = "v0.0.43"
    supports_external_job = True


class V0044Adapter(V0043Adapter):
    version = "v0.0.44"


class V0045Adapter(V0044Adapter):
    version = "v0.0.45"
