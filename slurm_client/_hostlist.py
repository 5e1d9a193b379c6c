"""Slurm hostlist expressions, both ways.

`expand_hostlist("node[0-3,7],gpu-[01-02]")` gives the names in Slurm's order;
`compress_hostlist(names)` gives back the shortest usual expression (`node[0-3,7],gpu-[01-02]`).
Zero padding is kept: a range written `[01-10]` expands to `01 … 10`, and names that share a
padded width are written back the same way. Several bracket groups in one name
(`rack[1-2]-n[0-1]`) expand as a cartesian product, as Slurm does.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

# A hostlist naming more hosts than this is refused instead of filling memory.
MAX_HOSTS = 1_000_000

_TRAILING_NUMBER = re.compile(r"^(.*?)([0-9]+)$", re.ASCII | re.DOTALL)
# Host numbers are at most this many digits (Slurm's own are 32-bit); longer ones are refused.
MAX_NUMBER_DIGITS = 18


def _is_number(text: str) -> bool:
    return 0 < len(text) <= MAX_NUMBER_DIGITS and text.isascii() and text.isdigit()


class HostlistError(ValueError):
    """The text is not a valid hostlist expression."""


def _split_top_level(expression: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in expression:
        if char == "[":
            depth += 1
            if depth > 1:
                raise HostlistError(f"nested '[' in hostlist {expression!r}")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise HostlistError(f"unbalanced ']' in hostlist {expression!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise HostlistError(f"unbalanced '[' in hostlist {expression!r}")
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _expand_ranges(body: str, expression: str) -> list[str]:
    """`0-3,7` → ["0", "1", "2", "3", "7"], keeping the width of the first number of each range."""
    values: list[str] = []
    for item in body.split(","):
        item = item.strip()
        if not item:
            raise HostlistError(f"empty range in hostlist {expression!r}")
        low, dash, high = item.partition("-")
        if not _is_number(low) or (dash and not _is_number(high)):
            raise HostlistError(f"bad range {item!r} in hostlist {expression!r}")
        if not dash:
            values.append(low)
            continue
        start, stop = int(low), int(high)
        if stop < start:
            raise HostlistError(f"descending range {item!r} in hostlist {expression!r}")
        if stop - start + 1 > MAX_HOSTS:
            raise HostlistError(f"range {item!r} names more than {MAX_HOSTS} hosts")
        width = len(low)
        values.extend(str(number).zfill(width) for number in range(start, stop + 1))
    return values


def _expand_token(token: str, expression: str) -> list[str]:
    pieces: list[list[str]] = []
    rest = token
    while rest:
        open_at = rest.find("[")
        if open_at < 0:
            if "]" in rest:
                raise HostlistError(f"unbalanced ']' in hostlist {expression!r}")
            pieces.append([rest])
            break
        close_at = rest.find("]", open_at)
        if close_at < 0:
            raise HostlistError(f"unbalanced '[' in hostlist {expression!r}")
        if open_at:
            pieces.append([rest[:open_at]])
        pieces.append(_expand_ranges(rest[open_at + 1 : close_at], expression))
        rest = rest[close_at + 1 :]
    total = 1
    for piece in pieces:
        total *= len(piece)
    if total > MAX_HOSTS:
        raise HostlistError(f"hostlist {expression!r} names more than {MAX_HOSTS} hosts")
    return ["".join(combination) for combination in itertools.product(*pieces)]


def expand_hostlist(expression: str | None) -> list[str]:
    """All host names of a hostlist expression, in order (duplicates kept, as Slurm does).

    An empty string or None (Slurm's "no nodes") gives an empty list.
    """
    if not expression:
        return []
    if expression.strip() in ("(null)", "None"):
        return []
    names: list[str] = []
    for token in _split_top_level(expression):
        names.extend(_expand_token(token, expression))
        if len(names) > MAX_HOSTS:
            raise HostlistError(f"hostlist {expression!r} names more than {MAX_HOSTS} hosts")
    return names


def _ranges(numbers: list[int], width: int) -> str:
    out: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        if start == previous:
            out.append(str(start).zfill(width))
        else:
            out.append(f"{str(start).zfill(width)}-{str(previous).zfill(width)}")
        if number is not None:
            start = previous = number
    return ",".join(out)


def compress_hostlist(names: Iterable[str]) -> str:
    """The hostlist expression for `names` (duplicates dropped, numbers sorted within a prefix).

    Groups keep the order in which their prefix first appears. A number written with leading
    zeros fixes the group's width; unpadded numbers at least that wide join the padded group,
    so `gpu-01 … gpu-12` becomes `gpu-[01-12]`.
    """
    ordered: list[str] = []
    seen: set[str] = set()
    for name in names:
        name = name.strip()
        if name and name not in seen:
            seen.add(name)
            ordered.append(name)

    padded_widths: dict[str, set[int]] = {}
    parsed: list[tuple[str, str] | None] = []
    for name in ordered:
        match = _TRAILING_NUMBER.match(name)
        if match is None or len(match.group(2)) > MAX_NUMBER_DIGITS:
            parsed.append(None)  # no number, or one too long to be a host number: kept as written
            continue
        prefix, digits = match.group(1), match.group(2)
        parsed.append((prefix, digits))
        if len(digits) > 1 and digits.startswith("0"):
            padded_widths.setdefault(prefix, set()).add(len(digits))

    groups: dict[tuple[str, int], list[int]] = {}
    order: list[tuple[str, int] | str] = []
    for name, parts in zip(ordered, parsed, strict=True):
        if parts is None:
            order.append(name)
            continue
        prefix, digits = parts
        if len(digits) > 1 and digits.startswith("0"):
            width = len(digits)
        else:
            fitting = [w for w in padded_widths.get(prefix, ()) if w <= len(digits)]
            width = max(fitting) if fitting else 0
        key = (prefix, width)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(int(digits))

    out: list[str] = []
    for entry in order:
        if isinstance(entry, str):
            out.append(entry)
            continue
        prefix, width = entry
        numbers = sorted(set(groups[entry]))
        if len(numbers) == 1:
            out.append(f"{prefix}{str(numbers[0]).zfill(width)}")
        else:
            out.append(f"{prefix}[{_ranges(numbers, width)}]")
    return ",".join(out)
