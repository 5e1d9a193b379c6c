"""slurm_client: one typed async client for every slurmrestd from Slurm 22.05 to 26.05.

    async with SlurmClient.from_env() as slurm:          # discovers the newest API it can use
        result = await slurm.submit_job(JobSpec(name="x", partition="p"))
        job = await slurm.get_job(result.job_id)

Callers speak the version-neutral models below; the REST API version differences live in one
private adapter module per version family. Everything raised is a `SlurmError`.
"""

from ._api import SlurmApi
from ._auth import CredentialError, JwtKeyAuth, Secret, StaticTokenAuth, TokenFileAuth
from ._client import ALLOCATE_TIMEOUT, DEFAULT_TIMEOUT, NO_RETRY, RetryPolicy, SlurmClient
from ._errors import (
    AuthError,
    InvalidRequest,
    JobAlreadyFinished,
    JobNotFound,
    MalformedResponse,
    MissingCollection,
    NodeNotFound,
    NotFound,
    PartitionNotFound,
    ResourcesUnavailable,
    ServerBusy,
    SlurmApiError,
    SlurmError,
    SlurmErrorEntry,
    SlurmTimeout,
    SlurmTransportError,
    UnsupportedOperation,
)
from ._hostlist import HostlistError, compress_hostlist, expand_hostlist
from ._models import (
    CancelOutcome,
    Capabilities,
    Diag,
    Job,
    JobList,
    JobSpec,
    JobState,
    JobUpdate,
    Node,
    NodeState,
    NodeUpdate,
    Partition,
    Ping,
    SubmitResult,
)
from ._placeholder import placeholder_script, split_exit_code, with_exit_code
from ._users import UserClients, UserCredentials
from ._versions import SUPPORTED_VERSIONS

__all__ = [
    "ALLOCATE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "NO_RETRY",
    "SUPPORTED_VERSIONS",
    "AuthError",
    "CancelOutcome",
    "Capabilities",
    "CredentialError",
    "Diag",
    "HostlistError",
    "InvalidRequest",
    "Job",
    "JobAlreadyFinished",
    "JobList",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobUpdate",
    "JwtKeyAuth",
    "MalformedResponse",
    "MissingCollection",
    "Node",
    "NodeNotFound",
    "NodeState",
    "NodeUpdate",
    "NotFound",
    "Partition",
    "PartitionNotFound",
    "Ping",
    "ResourcesUnavailable",
    "RetryPolicy",
    "Secret",
    "ServerBusy",
    "SlurmApi",
    "SlurmApiError",
    "SlurmClient",
    "SlurmError",
    "SlurmErrorEntry",
    "SlurmTimeout",
    "SlurmTransportError",
    "StaticTokenAuth",
    "SubmitResult",
    "TokenFileAuth",
    "UnsupportedOperation",
    "UserClients",
    "UserCredentials",
    "compress_hostlist",
    "expand_hostlist",
    "placeholder_script",
    "split_exit_code",
    "with_exit_code",
]
