"""Names of endpoints and versions: DNS-1123 labels, checked before anything is touched."""

from __future__ import annotations

import re
from collections.abc import Collection

from mlshift._exceptions import InvalidNameError

__all__ = ["check_name", "next_name"]

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_LEN = 63


def check_name(value: object, *, kind: str = "name", max_len: int = MAX_LEN) -> str:
    """Return ``value`` if it is a DNS-1123 label, else raise ``InvalidNameError``.

    Example:
        >>> check_name("churn-v2", kind="version")
        'churn-v2'
    """
    if not isinstance(value, str):
        raise InvalidNameError(f"{kind} must be a string, got {type(value).__name__}: {value!r}")
    if not value:
        raise InvalidNameError(f"{kind} is empty; use lower-case letters, digits and '-'")
    if len(value) > max_len:
        raise InvalidNameError(
            f"{kind} {value!r} is {len(value)} characters; the limit is {max_len}"
        )
    if not _LABEL.match(value):
        hint = value.lower().replace("_", "-").replace(".", "-").strip("-")
        raise InvalidNameError(
            f"{kind} {value!r} is not a DNS-1123 label: use lower-case letters, digits and '-',"
            f" starting and ending with a letter or digit (for example {hint!r})"
        )
    return value


def next_name(version: str, taken: Collection[str]) -> str:
    """Suggest the next free version name after ``version`` (``v2`` -> ``v3``).

    Example:
        >>> next_name("v2", ["v1", "v2", "v3"])
        'v4'
        >>> next_name("blue", [])
        'blue-2'
    """
    m = re.fullmatch(r"(.*?)(\d+)", version)
    stem, n = (m.group(1), int(m.group(2))) if m else (version + "-", 1)
    candidate = f"{stem}{n + 1}"
    while candidate in taken:
        n += 1
        candidate = f"{stem}{n + 1}"
    return candidate
