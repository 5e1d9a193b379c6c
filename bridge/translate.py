"""Which pods become Slurm jobs, and which job each becomes. Pure: no I/O, no clock.

- `select_pod` decides whether a pod is ours to submit (scheduler name, namespace allow-list, state).
- `job_spec_for` turns a pod into the JobSpec of its placeholder job, or raises TranslationError
  listing every problem found.
- `placeholder_job_for` adds what submission needs on top: the job marker and the batch script
  chosen by the placeholder mode.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeVar

from bridge import tenancy, wellknown
from bridge.config import BridgeConfig, PlaceholderMode
from bridge.marker import JobMarker
from bridge.numbers import MAX_DIGITS, ascii_int
from bridge.objects import ContainerResources, PodInfo
from bridge.wellknown import JobOption, Reason
from slurm_client import JobSpec, placeholder_script

_MIB: Final = 1024 * 1024
# Slurm keeps counts (nodes, priority, time limit in minutes) in 32 bits, with the top values meaning
# "unset"/"infinite"; CPUs per task in 16 bits; memory in 64-bit MiB. A larger value is refused here
# with a clear message instead of reaching Slurm (which would refuse it less clearly, or wrap it).
MAX_OPTION_NUMBER: Final = 2**32 - 3
MAX_CPUS_PER_TASK: Final = 2**16 - 3
MAX_MEMORY_MIB: Final = 2**62
_CPU: Final = "cpu"
_MEMORY: Final = "memory"
# The resources translation reads; any other (ephemeral-storage, hugepages, other devices) is not
# a Slurm concept and is left to Kubernetes.
_USED_RESOURCES: Final = (_CPU, _MEMORY, *wellknown.GPU_RESOURCES)
_POD_LEVEL_RESOURCES: Final = (_CPU, _MEMORY)

# The batch placeholder (slurm_client's): ends with the pod's outcome when the bridge signals the batch
# shell (USR1: exit 0, USR2: the exit code end_placeholder wrote into the comment); any other end
# (scancel, time limit) kills it as usual.
BATCH_PLACEHOLDER_SCRIPT: Final = placeholder_script()


class JobOutcome(enum.StrEnum):
    """How the bridge ends a placeholder job."""

    SUCCESS = "success"  # the pod Succeeded: job should end COMPLETED
    FAILURE = "failure"  # the pod Failed: job should end FAILED
    CANCEL = "cancel"  # nothing ran for it, or it is no longer wanted: plain cancel

    @property
    def batch_signal(self) -> str | None:
        """Signal for the batch shell of a batch placeholder (see BATCH_PLACEHOLDER_SCRIPT).

        None means a plain cancel; external placeholders are always cancelled plainly.
        """
        return {JobOutcome.SUCCESS: "USR1", JobOutcome.FAILURE: "USR2"}.get(self)


class TranslationError(ValueError):
    """A pod that cannot become a Slurm job; `problems` lists every reason, each one sentence."""

    def __init__(self, pod_key: str, problems: Sequence[str]) -> None:
        self.pod_key = pod_key
        self.problems = tuple(problems)
        super().__init__(f"pod {pod_key} cannot become a Slurm job: {self.message}")

    @property
    def message(self) -> str:
        """The problems in one line, for an event or condition message."""
        return "; ".join(self.problems)


# --- Selection --------------------------------------------------------------------------------------


class Verdict(enum.StrEnum):
    NOT_OURS = "not-ours"  # another scheduler's pod
    SETTLED = "settled"  # bound, being deleted or finished: nothing to submit
    REFUSE = "refuse"  # ours, but its namespace is not allowed
    SUBMIT = "submit"


@dataclass(frozen=True)
class Selection:
    verdict: Verdict
    reason: Reason | None = None
    message: str = ""


def select_pod(pod: PodInfo, config: BridgeConfig) -> Selection:
    """Whether `pod` is one the bridge should turn into a Slurm job now."""
    if pod.scheduler_name != config.scheduler_name:
        return Selection(Verdict.NOT_OURS)
    if pod.is_bound or pod.is_deleting or pod.is_terminal:
        return Selection(Verdict.SETTLED)
    refusal = namespace_refusal(pod, config)
    if refusal is not None:
        return Selection(Verdict.REFUSE, Reason.NAMESPACE_NOT_ALLOWED, refusal)
    return Selection(Verdict.SUBMIT)


def namespace_refusal(pod: PodInfo, config: BridgeConfig) -> str | None:
    """Why the pod's namespace keeps it from Slurm, or None when the namespace is allowed."""
    if config.namespace_allowed(pod.namespace):
        return None
    allowed = ", ".join(config.namespaces) or "none"
    return (
        f"namespace {pod.namespace!r} is not allowed for scheduler {config.scheduler_name!r} "
        f"(allowed: {allowed}); the pod will not be scheduled"
    )


# --- Translation ------------------------------------------------------------------------------------


def job_spec_for(
    pod: PodInfo, config: BridgeConfig, namespace_labels: Mapping[str, str] | None = None
) -> JobSpec:
    """The placeholder job for `pod`, without marker or script. Raises TranslationError.

    With `config.tenancy` enabled the namespace's policy defaults the account and refuses what it
    forbids (TenantPolicyError); `namespace_labels` are the Namespace's labels, for label rules.
    """
    problems: list[str] = []
    requests = _effective_requests(pod, problems)
    options = _job_options(pod.annotations, problems)
    read = _OptionReader(options, problems)

    cpus = max(1, math.ceil(requests.get(_CPU, Decimal(0))))
    memory_mb = max(1, math.ceil(requests.get(_MEMORY, Decimal(0)) / _MIB))
    gpus_requested = sum((requests.get(name, Decimal(0)) for name in wellknown.GPU_RESOURCES), Decimal(0))
    if gpus_requested != gpus_requested.to_integral_value():
        problems.append(f"GPU requests must be whole numbers, got {gpus_requested}")
    gpus = math.ceil(gpus_requested)
    if cpus > MAX_CPUS_PER_TASK:
        problems.append(
            f"the pod requests {cpus} CPUs, more than Slurm allows per task ({MAX_CPUS_PER_TASK})"
        )
    if memory_mb > MAX_MEMORY_MIB:
        problems.append(
            f"the pod requests {memory_mb}M of memory, more than Slurm can count ({MAX_MEMORY_MIB}M)"
        )
    if gpus > MAX_OPTION_NUMBER:
        problems.append(f"the pod requests {gpus} GPUs, more than Slurm can count ({MAX_OPTION_NUMBER})")

    min_nodes = read.integer(JobOption.MIN_NODES, minimum=1)
    if min_nodes is not None and min_nodes > 1:
        problems.append(f"{options[JobOption.MIN_NODES][0]}: a pod runs on one node, so min-nodes must be 1")
    max_nodes = read.integer(JobOption.MAX_NODES, minimum=1)
    if min_nodes is not None and max_nodes is not None and max_nodes < min_nodes:
        problems.append(f"max-nodes {max_nodes} is less than min-nodes {min_nodes}")

    cpus_per_task = read.integer(JobOption.CPU_PER_TASK, minimum=1, maximum=MAX_CPUS_PER_TASK)
    if cpus_per_task is not None and cpus_per_task < cpus:
        problems.append(f"cpu-per-task {cpus_per_task} is less than the pod's {cpus} requested CPUs")
    mem_per_node = read.parsed(JobOption.MEM_PER_NODE, _memory_mib, "a size such as 4096, 512M or 8G")
    if mem_per_node is not None and mem_per_node < memory_mb:
        problems.append(f"mem-per-node {mem_per_node}M is less than the pod's {memory_mb}M requested memory")

    gres = read.parsed(JobOption.GRES, _gres, "a GRES list such as gpu:2 or gpu:a100:1,shard:4") or {}
    gres_gpus = sum(count for name, count in gres.items() if name.split(":")[0] == wellknown.GPU_GRES)
    if gres_gpus and gpus and gres_gpus != gpus:
        problems.append(f"gres asks for {gres_gpus} GPUs but the pod's containers request {gpus}")
    if gpus and not gres_gpus:
        gres[wellknown.GPU_GRES] = gpus

    time_limit = read.integer(JobOption.TIME_LIMIT, minimum=1)
    if time_limit is None and pod.active_deadline_seconds:
        time_limit = max(1, -(-pod.active_deadline_seconds // 60))  # integers: no float overflow
        if time_limit > MAX_OPTION_NUMBER:
            problems.append(
                f"activeDeadlineSeconds {pod.active_deadline_seconds} is beyond Slurm's longest time limit"
            )
    if time_limit is None:
        time_limit = config.slurm.default_time_limit_minutes

    # Read every option before deciding, so one error message lists all the problems.
    job_name = read.text(JobOption.JOB_NAME)
    partition = read.text(JobOption.PARTITION)
    account = read.text(JobOption.ACCOUNT)
    qos = read.text(JobOption.QOS)
    reservation = read.text(JobOption.RESERVATION)
    constraints = read.text(JobOption.CONSTRAINTS)
    licenses = read.text(JobOption.LICENSES)
    wckey = read.text(JobOption.WCKEY)
    priority = read.integer(JobOption.PRIORITY, minimum=0)
    exclusive = read.boolean(JobOption.EXCLUSIVE)
    if problems:
        raise TranslationError(pod.key, problems)
    spec = JobSpec(
        # squeue shows "(null)" for a nameless job: always name it
        name=job_name or pod.name or pod.generate_name.rstrip("-") or "pod",
        partition=partition or config.slurm.partition,
        account=account,
        qos=qos,
        time_limit_minutes=time_limit,
        min_nodes=1,
        max_nodes=max_nodes or 1,
        tasks=1,
        cpus_per_task=cpus_per_task or cpus,
        # Always explicit: with no --mem Slurm may hand the job the whole node's memory.
        memory_per_node_mb=mem_per_node or memory_mb,
        gres_per_node=dict(sorted(gres.items())),
        exclusive=bool(exclusive),
        constraints=constraints,
        reservation=reservation,
        licenses=licenses,
        wckey=wckey,
        priority=priority,
    )
    return tenant_checked(pod, spec, config, namespace_labels or {})


class TenantPolicyError(TranslationError):
    """A job the pod's namespace may not ask for (bridge/tenancy.py); `violations` says what."""

    def __init__(self, pod_key: str, violations: Sequence[tenancy.Violation]) -> None:
        self.violations = tuple(violations)
        super().__init__(pod_key, [v.message for v in violations])


def tenant_checked(pod: PodInfo, spec: JobSpec, config: BridgeConfig, labels: Mapping[str, str]) -> JobSpec:
    """`spec` with the tenant policy's defaults; raises TenantPolicyError for what the policy forbids."""
    if not config.tenancy.enabled:
        return spec
    violations = tenancy.check(pod.namespace, labels, spec, config.tenancy)
    if violations:
        raise TenantPolicyError(pod.key, violations)
    policy = tenancy.policy_for(pod.namespace, labels, config.tenancy)
    return tenancy.with_defaults(spec, policy) if policy is not None else spec


def spec_digest(spec: JobSpec) -> str:
    """12 hex digits identifying what a job asks for (marker, comment, script and output excluded: the
    digest of a job submitted before a field was added must not change)."""
    fields = spec.model_dump(mode="json", exclude={"comment", "admin_comment", "script", "standard_output"})
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def placeholder_job_for(
    pod: PodInfo, config: BridgeConfig, namespace_labels: Mapping[str, str] | None = None
) -> JobSpec:
    """The job to submit for `pod`: its JobSpec plus marker comment and placeholder script.

    script None asks the Slurm client for an allocation that launches nothing (EXTERNAL_JOB); in
    auto mode the client falls back to a batch script where the server cannot do that.
    Raises TranslationError, or ValueError for a pod without a UID.
    """
    spec = job_spec_for(pod, config, namespace_labels)
    marker = JobMarker(
        cluster_id=config.marker_cluster_id,
        namespace=pod.namespace,
        pod_name=pod.name,
        pod_uid=pod.uid,
        spec_digest=spec_digest(spec),
    )
    script = BATCH_PLACEHOLDER_SCRIPT if config.slurm.placeholder_mode is PlaceholderMode.BATCH else None
    # The placeholder prints nothing: its output goes nowhere (no slurm-<id>.out left on the node).
    output = "/dev/null" if script is not None else None
    return spec.model_copy(update={"comment": marker.encode(), "script": script, "standard_output": output})


# --- Resources --------------------------------------------------------------------------------------

_QUANTITY = re.compile(
    r"([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(?:[eE]([+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)",
    re.ASCII,
)
# Kubernetes itself keeps quantities within a signed 64-bit count of the base unit (or of milli-units);
# anything larger is no real request, and unbounded Decimal arithmetic on it could overflow.
MAX_QUANTITY: Final = Decimal(2**63)
_MAX_QUANTITY_TEXT: Final = 64
_MAX_EXPONENT: Final = 30
_SUFFIX_SCALE: Final = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


class QuantityError(ValueError):
    """Text that is not a usable Kubernetes quantity (malformed, negative or out of range)."""


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity ("500m", "1.5", "2Gi", "1e3") as a number of base units.

    Raises QuantityError for anything else, including values beyond Kubernetes' own range (2^63).
    """
    quoted = shown(text)
    stripped = text.strip()
    if len(stripped) > _MAX_QUANTITY_TEXT:
        raise QuantityError(f"{quoted} is too long for a Kubernetes quantity")
    match = _QUANTITY.fullmatch(stripped)
    if match is None:
        raise QuantityError(f"{quoted} is not a Kubernetes quantity")
    number, exponent, suffix = match.groups()
    if exponent is not None and abs(int(exponent)) > _MAX_EXPONENT:
        raise QuantityError(f"{quoted} is out of range (exponent beyond +-{_MAX_EXPONENT})")
    try:
        value = Decimal(number + (f"e{exponent}" if exponent else "")) * _SUFFIX_SCALE[suffix or ""]
    except ArithmeticError as exc:  # InvalidOperation, Overflow, ...
        raise QuantityError(f"{quoted} is not a Kubernetes quantity") from exc
    if value < 0:
        raise QuantityError(f"{quoted} is negative")
    if value > MAX_QUANTITY:
        raise QuantityError(f"{quoted} is out of range (more than 2^63)")
    return value


def _effective_requests(pod: PodInfo, problems: list[str]) -> dict[str, Decimal]:
    """The pod's effective requests for the resources Slurm allocates, computed as Kubernetes does.

    max(sum of app containers + sidecars, peak during init), pod-level cpu/memory taking precedence,
    plus overhead. Unparsable quantities are reported in `problems` and count as 0.
    """

    def requests_of(container: ContainerResources) -> dict[str, Decimal]:
        # A resource with only a limit has request == limit (API server defaulting).
        wanted = {**container.limits, **container.requests}
        where = f"container {container.name!r}"
        return _parse_resources(wanted, where, problems)

    total: dict[str, Decimal] = {}
    for container in pod.containers:
        _add(total, requests_of(container))
    sidecars: dict[str, Decimal] = {}
    init_peak: dict[str, Decimal] = {}
    for container in pod.init_containers:
        requested = requests_of(container)
        if container.sidecar:
            _add(total, requested)  # keeps running beside the app containers
            _add(sidecars, requested)
            running_now = dict(sidecars)
        else:
            running_now = dict(sidecars)  # sidecars started so far run alongside it
            _add(running_now, requested)
        for name, amount in running_now.items():
            init_peak[name] = max(init_peak.get(name, Decimal(0)), amount)
    for name, amount in init_peak.items():
        total[name] = max(total.get(name, Decimal(0)), amount)

    pod_requests = _parse_resources(pod.pod_requests, "pod-level resources", problems, _POD_LEVEL_RESOURCES)
    pod_limits = _parse_resources(pod.pod_limits, "pod-level resources", problems, _POD_LEVEL_RESOURCES)
    for name in _POD_LEVEL_RESOURCES:
        if name in pod_requests:
            total[name] = pod_requests[name]
        elif name in pod_limits and not total.get(name):
            total[name] = pod_limits[name]  # pod-level request defaults to the pod-level limit
    _add(total, _parse_resources(pod.overhead, "pod overhead", problems))
    return total


def _parse_resources(
    quantities: Mapping[str, str],
    where: str,
    problems: list[str],
    names: Iterable[str] = _USED_RESOURCES,
) -> dict[str, Decimal]:
    parsed: dict[str, Decimal] = {}
    for name in names:
        if name in quantities:
            try:
                parsed[name] = parse_quantity(quantities[name])
            except ValueError as exc:
                problems.append(f"{where}: {name}: {exc}")
    return parsed


def _add(into: dict[str, Decimal], amounts: Mapping[str, Decimal]) -> None:
    for name, amount in amounts.items():
        into[name] = into.get(name, Decimal(0)) + amount


# --- Annotations ------------------------------------------------------------------------------------


def with_owner_options(
    pod_annotations: Mapping[str, str], owner_annotations: Mapping[str, str]
) -> dict[str, str]:
    """The pod's annotations with the owner workload's job options laid over them: an option the owner
    sets (under either prefix) replaces the pod's, as for gangs (group > owner workload > pod)."""

    def option(key: str) -> str | None:
        prefix = next((p for p in wellknown.JOB_OPTION_PREFIXES if key.startswith(p)), None)
        return key.removeprefix(prefix) if prefix is not None else None

    owner = {k: v for k, v in owner_annotations.items() if option(k) is not None}
    taken = {option(k) for k in owner}
    kept = {k: v for k, v in pod_annotations.items() if option(k) is None or option(k) not in taken}
    return {**kept, **owner}


def _job_options(annotations: Mapping[str, str], problems: list[str]) -> dict[JobOption, tuple[str, str]]:
    """Job options set by annotation: option -> (annotation key as written, stripped value)."""
    found: dict[JobOption, tuple[str, str]] = {}
    for key, raw_value in sorted(annotations.items()):
        prefix = next((p for p in wellknown.JOB_OPTION_PREFIXES if key.startswith(p)), None)
        if prefix is None or key in wellknown.BRIDGE_OWNED_ANNOTATIONS:
            continue
        value = raw_value.strip()
        try:
            option = JobOption(key.removeprefix(prefix))
        except ValueError:
            known = ", ".join(o.value for o in JobOption)
            problems.append(f"unknown annotation {key!r} (options under {prefix!r}: {known})")
            continue
        if option in found:
            first_key, first_value = found[option]
            if first_value != value:
                problems.append(
                    f"annotations {first_key!r} ({shown(first_value)}) and {key!r} ({shown(value)}) disagree"
                )
            continue
        found[option] = (key, value)
    return found


_T = TypeVar("_T")


class _OptionReader:
    """Typed access to annotation options; each malformed value adds one problem and reads as None."""

    def __init__(self, options: Mapping[JobOption, tuple[str, str]], problems: list[str]) -> None:
        self._options = options
        self._problems = problems

    def parsed(self, option: JobOption, parse: Callable[[str], _T | None], expected: str) -> _T | None:
        if option not in self._options:
            return None
        key, value = self._options[option]
        result = parse(value)
        if result is None:
            self._problems.append(f"{key}: {shown(value)} is not {expected}")
        return result

    def text(self, option: JobOption) -> str | None:
        return self.parsed(option, _plain_text, "a non-empty single-line value")

    def integer(self, option: JobOption, minimum: int, maximum: int = MAX_OPTION_NUMBER) -> int | None:
        if option in self._options:
            key, value = self._options[option]
            if value.isascii() and value.isdigit() and (len(value) > MAX_DIGITS or int(value) > maximum):
                self._problems.append(f"{key}: {shown(value)} is too large (at most {maximum})")
                return None

        def whole_number(value: str) -> int | None:
            number = ascii_int(value)
            return number if number is not None and number >= minimum else None

        return self.parsed(option, whole_number, f"a whole number >= {minimum}")

    def boolean(self, option: JobOption) -> bool | None:
        def true_or_false(value: str) -> bool | None:
            return {"true": True, "false": False}.get(value.lower())

        return self.parsed(option, true_or_false, '"true" or "false"')


def shown(value: str, limit: int = 40) -> str:
    """`value` quoted for a message, cut short: an event or condition must stay readable."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def _plain_text(value: str) -> str | None:
    return value if value and value.isprintable() else None


_MEMORY_SIZE = re.compile(r"([0-9]{1,18})(?:([KMGT])i?)?", re.IGNORECASE | re.ASCII)
_MEMORY_UNIT_MIB: Final = {"K": Decimal(1) / 1024, "M": Decimal(1), "G": Decimal(1024), "T": Decimal(1024**2)}


def _memory_mib(value: str) -> int | None:
    """Slurm's --mem syntax (default unit MiB; K/M/G/T binary, "Gi" style accepted) -> MiB."""
    match = _MEMORY_SIZE.fullmatch(value)
    if match is None:
        return None
    number, unit = match.groups()
    mib = math.ceil(int(number) * _MEMORY_UNIT_MIB[(unit or "M").upper()])
    return mib if 1 <= mib <= MAX_MEMORY_MIB else None


# name[:type][:count]; a type has at least one non-digit, so "gpu:2" is a count
_GRES_ITEM = re.compile(
    r"(?P<name>[A-Za-z][\w-]*)(?::(?P<type>[\w.-]*[A-Za-z_.-][\w.-]*))?(?::(?P<count>[0-9]{1,9}))?",
    re.ASCII,
)


def _gres(value: str) -> dict[str, int] | None:
    """Slurm's --gres list, e.g. "gpu:2,gpu:a100:1,shard" -> {"gpu": 2, "gpu:a100": 1, "shard": 1}."""
    gres: dict[str, int] = {}
    for item in value.split(","):
        match = _GRES_ITEM.fullmatch(item.strip())
        if match is None:
            return None
        key = match["name"] if match["type"] is None else f"{match['name']}:{match['type']}"
        count = int(match["count"] or 1)  # at most 9 ASCII digits
        if count < 1 or key in gres:
            return None
        gres[key] = count
    return gres
