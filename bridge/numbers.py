"""Whole numbers read from text that anyone can write (annotations, labels, CRD fields). Pure.

Python's `int()` takes any Unicode decimal digit ("٣" is 3) and refuses more than 4,300 digits with a
bare ValueError; `str.isdigit()` is true for "²", which `int()` refuses. Everything here reads only
ASCII digits and a bounded count of them, so hostile text gives None, never an exception.
"""

from __future__ import annotations

import re
from typing import Final

# 18 digits always fit a signed 64-bit integer, which is more than any field read here can use.
MAX_DIGITS: Final = 18
_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def ascii_int(text: str, *, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of `text` if it is 1..max_digits ASCII digits (no sign, no spaces), else None."""
    if not text or len(text) > max_digits or _ASCII_DIGITS.fullmatch(text) is None:
        return None
    return int(text)
