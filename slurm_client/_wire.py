"""Pieces shared by the API-version adapters: the request value they build, and readers for the
small wire shapes that recur (numbers that may be `{set, infinite, number}`, UNIX times, flag lists,
GRES strings, `errors[]` entries)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._errors import MalformedResponse, MissingCollection, SlurmErrorEntry
from ._models import JobState, NodeState

JsonDict = dict[str, Any]

# Slurm's "no value" / "infinite" sentinels as they leak through older API versions.
_NO_VAL_SENTINELS = frozenset(
    {0xFFFFFFFF, 0xFFFFFFFE, 0xFFFF, 0xFFFE, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE}
)


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A request as an adapter describes it; the client sends it.

    `target` names what a not-found answer is about (see `_errors.TARGET_*`), and `lookup` says
    the request only fetches that one object; `idempotent`
    decides whether the client may send it again after an ambiguous failure; `benign_errors` are
    Slurm error numbers that do not make the answer a failure (e.g. 2042 "job held" on a held
    submit).
    """

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: JsonDict | None = None
    target: str | None = None
    idempotent: bool = True
    benign_errors: frozenset[int] = frozenset()
    lookup: bool = False  # a GET of one named job/node/partition

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"


_BLANK = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def loads_in_pieces(content: bytes) -> object:
    """`json.loads(content)`, decoding a top-level object's lists one element at a time.

    json's decoder holds the GIL until it is done, so decoding a big job list even in a worker thread
    stops the event loop for as long. Decoded piece by piece (one job at a time), the thread lets the
    loop run between pieces. Bad JSON raises ValueError, as json.loads does.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return json.loads(content)  # another encoding json detects (or not JSON at all)
    at = _blank_after(text, 0)
    if not text.startswith("{", at):
        return json.loads(text)
    result: dict[str, object] = {}
    at = _blank_after(text, at + 1)
    if text.startswith("}", at):
        at += 1
    else:
        while True:
            key, at = _DECODER.raw_decode(text, at)
            if not isinstance(key, str):
                raise ValueError(f"expected a member name at {at}")
            at = _blank_after(text, at)
            if not text.startswith(":", at):
                raise ValueError(f"expected ':' at {at}")
            at = _blank_after(text, at + 1)
            if text.startswith("[", at):
                result[key], at = _list_in_pieces(text, at)
            else:
                result[key], at = _DECODER.raw_decode(text, at)
            at = _blank_after(text, at)
            if text.startswith(",", at):
                at = _blank_after(text, at + 1)
            elif text.startswith("}", at):
                at += 1
                break
            else:
                raise ValueError(f"expected ',' or '}}' at {at}")
    if _blank_after(text, at) != len(text):
        raise ValueError(f"extra data at {at}")
    return result


def _list_in_pieces(text: str, at: int) -> tuple[list[object], int]:
    items: list[object] = []
    at = _blank_after(text, at + 1)
    if text.startswith("]", at):
        return items, at + 1
    while True:
        item, at = _DECODER.raw_decode(text, at)
        items.append(item)
        at = _blank_after(text, at)
        if text.startswith(",", at):
            at = _blank_after(text, at + 1)
        elif text.startswith("]", at):
            return items, at + 1
        else:
            raise ValueError(f"expected ',' or ']' at {at}")


def _blank_after(text: str, at: int) -> int:
    found = _BLANK.match(text, at)
    assert found is not None  # the pattern matches the empty string
    return found.end()


def number(value: object) -> int | None:
    """An integer from a plain number, a numeric string or a `{set, infinite, number}` struct.

    Unset, infinite and Slurm's NO_VAL sentinels give None. (Hot path when listing thousands of
    jobs: exact type checks first, the general ones after.)
    """
    kind = type(value)
    if kind is int:
        return None if value in _NO_VAL_SENTINELS else value  # type: ignore[return-value]
    if kind is dict:
        struct: dict[str, object] = value  # type: ignore[assignment]
        if struct.get("infinite") or struct.get("set") is False:
            return None
        return number(struct.get("number"))
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Mapping):
        return number(dict(value))
    if isinstance(value, int):
        return None if value in _NO_VAL_SENTINELS else value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        stripped = value.strip()
        digits = stripped.removeprefix("-")
        # ASCII digits only ("٣".isdigit() is true) and few of them (int() refuses > 4,300 digits).
        if 0 < len(digits) <= 20 and digits.isascii() and digits.isdigit():
            return number(int(stripped))
    return None


def minutes(value: object) -> int | None:
    """A time limit in minutes; negative values (v0.0.38's "unlimited" -1) give None."""
    result = number(value)
    return None if result is None or result < 0 else result


def timestamp(value: object) -> datetime | None:
    """A UTC datetime from a UNIX time (plain or struct); 0 and unset give None."""
    seconds = number(value)
    if not seconds or seconds < 0:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def text(value: object) -> str | None:
    """A non-empty string, or None (Slurm sends "" and sometimes "(null)" for unset strings)."""
    if value is None:
        return None
    if not isinstance(value, str):
        return str(value)
    return value if value and value != "(null)" else None


def reason(value: object) -> str | None:
    """A pending/hold reason; Slurm's "None" means there is none."""
    result = text(value)
    return None if result in (None, "None") else result


def string_list(value: object) -> tuple[str, ...]:
    """A list of strings from a JSON list or a comma-separated string."""
    if value is None:
        return ()
    if type(value) is list:
        return tuple(str(item) for item in value if item is not None and item != "")
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, Sequence):
        return tuple(str(item) for item in value if item not in (None, ""))
    return ()


def no_val(value: int) -> JsonDict:
    """The `{set, infinite, number}` struct that v0.0.40+ expects for optional numbers."""
    return {"set": True, "infinite": False, "number": value}


def _split_outside_parens(value: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in value:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def gres_counts(value: object) -> dict[str, int]:
    """`gpu:2,gpu:a100:1(S:0-1),nic:1(IDX:0,2)` → {"gpu": 2, "gpu:a100": 1, "nic": 1}.

    Also accepts TRES-style `gres/gpu=2` entries. Unparseable entries are skipped.
    """
    raw = text(value)
    if raw is None or raw in ("N/A", "(null)"):
        return {}
    counts: dict[str, int] = {}
    for entry in _split_outside_parens(raw):
        entry = entry.split("(", 1)[0].strip()
        if entry.startswith("gres/"):
            entry = entry.removeprefix("gres/").replace("=", ":")
        name, _, count = entry.rpartition(":")
        is_count = 0 < len(count) <= 18 and count.isascii() and count.isdigit()
        if is_count and name:
            counts[name] = counts.get(name, 0) + int(count)
        elif entry and not count.isdigit() and ":" not in entry and entry.isidentifier():
            counts[entry] = counts.get(entry, 0) + 1
    return counts


def gres_request(gres: Mapping[str, int], *, tres_style: bool) -> str | None:
    """{"gpu": 2, "gpu:a100": 1} → `gres/gpu:2,gres/gpu:a100:1` (tres_style) or `gpu:2,gpu:a100:1`."""
    if not gres:
        return None
    prefix = "gres/" if tres_style else ""
    return ",".join(f"{prefix}{name}:{count}" for name, count in gres.items())


def error_entries(body: object, key: str = "errors") -> tuple[SlurmErrorEntry, ...]:
    """The `errors[]` (or `warnings[]`) of a reply; each version names the number differently."""
    if not isinstance(body, Mapping):
        return ()
    raw = body.get(key)
    if not isinstance(raw, list):
        return ()
    entries: list[SlurmErrorEntry] = []
    for item in raw:
        if not isinstance(item, Mapping):
            entries.append(SlurmErrorEntry(number=None, error=str(item)))
            continue
        found: int | None = None
        for name in ("error_number", "errno", "error_code"):
            candidate = item.get(name)
            if isinstance(candidate, int) and not isinstance(candidate, bool):
                found = candidate
                break
        entries.append(
            SlurmErrorEntry(
                number=found,
                error=str(item.get("error") or ""),
                description=str(item.get("description") or ""),
                source=str(item.get("source") or ""),
            )
        )
    return tuple(entries)


def warning_texts(body: object) -> tuple[str, ...]:
    return tuple(str(entry) for entry in error_entries(body, "warnings"))


def records(body: object, key: str, what: str) -> list[Mapping[str, Any]]:
    """`body[key]` as a list of objects, or MissingCollection / MalformedResponse.

    Every slurmrestd version sends the list, empty or not, in every successful answer. A missing or
    null list is NOT an empty one: read as empty, it would make every job, node or partition look gone.
    """
    if not isinstance(body, Mapping):
        raise MalformedResponse(f"{what}: the answer is not a JSON object")
    if key not in body:
        raise MissingCollection(f"{what}: the answer has no {key!r} list")
    raw = body[key]
    if raw is None:
        raise MissingCollection(f"{what}: {key!r} is null")
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        raise MalformedResponse(f"{what}: {key!r} is not a list of objects")
    return raw


_JOB_STATES = frozenset(state.value for state in JobState)
# Flags that v0.0.38 reports in place of the base state (job_state_string() shows them first),
# with the base state they imply when known. COMPLETING/STAGE_OUT/SIGNALING hide the final state.
_JOB_FLAG_BASE: dict[str, JobState] = {
    "CONFIGURING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "SPECIAL_EXIT": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "LAUNCH_FAILED": JobState.PENDING,
}


def job_state(value: object) -> tuple[JobState, frozenset[str]]:
    """Base state and flags from `"RUNNING"` (v0.0.38) or `["RUNNING", "COMPLETING"]` (v0.0.40+)."""
    names = [value] if isinstance(value, str) else list(string_list(value))
    names = [str(name).upper() for name in names]
    base: JobState | None = None
    flags: set[str] = set()
    for name in names:
        if base is None and name in _JOB_STATES:
            base = JobState(name)
        else:
            flags.add(name)
    if base is None:
        base = next((_JOB_FLAG_BASE[f] for f in sorted(flags) if f in _JOB_FLAG_BASE), JobState.UNKNOWN)
    return base, frozenset(flags)


_NODE_STATES = frozenset(state.value for state in NodeState)


def node_state(value: object, extra_flags: object = None) -> tuple[NodeState, frozenset[str]]:
    """Base state and flags from `"idle"` + `state_flags` (v0.0.38) or `["IDLE", "DRAIN"]`."""
    names = [value] if isinstance(value, str) else list(string_list(value))
    names = [str(name).upper() for name in names]
    base: NodeState | None = None
    flags: set[str] = {flag.upper() for flag in string_list(extra_flags)}
    for name in names:
        if base is None and name in _NODE_STATES:
            base = NodeState(name)
        else:
            flags.add(name)
    return base or NodeState.UNKNOWN, frozenset(flags)


def exit_status(value: object) -> tuple[int | None, int | None]:
    """(exit code, signal) from v0.0.38's raw wait status or v0.0.40+'s verbose exit code struct."""
    if value is None:
        return None, None
    if isinstance(value, Mapping):
        statuses = {s.upper() for s in string_list(value.get("status"))}
        if statuses & {"PENDING", "INVALID"} and not statuses & {"SUCCESS", "ERROR", "SIGNALED"}:
            return None, None
        code = number(value.get("return_code"))
        signal_part = value.get("signal")
        signal = number(signal_part.get("id")) if isinstance(signal_part, Mapping) else None
        if signal == 0:
            signal = None
        if code is None and (signal is not None or statuses & {"SIGNALED", "CORE_DUMPED"}):
            code = 0  # as Slurm shows it: ExitCode=0:15
        return code, signal
    raw = number(value)
    if raw is None:
        return None, None
    if raw & 0x7F:  # killed by a signal
        return 0, raw & 0x7F
    return (raw >> 8) & 0xFF, None


def result_errors(body: object) -> tuple[SlurmErrorEntry, ...]:
    """Per-job failures that v0.0.41+ report beside an empty `errors[]`.

    Job updates list them in `results[]` (`error_code`), signals and cancels in `status[]`
    (`error.code`): a DELETE of an unknown job answers HTTP 200, `errors: []` and
    `status: [{"error": {"code": 2017, ...}}]`.
    """
    if not isinstance(body, Mapping):
        return ()
    entries: list[SlurmErrorEntry] = []
    for key in ("results", "status"):
        items = body.get(key)
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, Mapping):
                continue
            nested = item.get("error")
            if isinstance(nested, Mapping):
                code, message = nested.get("code"), nested.get("message") or nested.get("string")
            else:
                code, message = item.get("error_code"), nested
            if isinstance(code, int) and not isinstance(code, bool) and code != 0:
                job = item.get("job_id")
                job_id = number(job)
                entries.append(
                    SlurmErrorEntry(
                        number=code,
                        error=str(message or ""),
                        description=f"job {job_id}" if job_id else "",
                        source=key,
                    )
                )
    return tuple(entries)


def gres_in_use(used: object, configured: Mapping[str, int]) -> dict[str, int]:
    """GRES in use, limited to what the node has (v0.0.38 reports `gpu:0` on GPU-less nodes)."""
    return {name: count for name, count in gres_counts(used).items() if name in configured or count}
