"""Durations as users type them in a notebook: ``"30s"``, ``"5m"``, ``"1h30m"``, or seconds."""

from __future__ import annotations

import re

from mlshift._exceptions import InvalidArgumentError

__all__ = ["parse_duration"]

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | float | int, *, what: str = "duration") -> float:
    """Return ``value`` in seconds.

    Example:
        >>> parse_duration("1m30s")
        90.0
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be seconds or a string like '30s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise InvalidArgumentError(
                f"{what} must not be negative, got {value!r}; pass 0 or more seconds"
            )
        return float(value)
    text = str(value).strip().lower()
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise InvalidArgumentError(
            f"{what} {value!r} is not understood; use seconds or a string like '30s', '5m', '1h30m'"
        )
    return total
