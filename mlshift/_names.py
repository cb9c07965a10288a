"""Names of endpoints and versions: DNS labels, checked before anything is touched.

A version (and most other names) must be a DNS-1123 label: lower-case letters, digits and
'-', starting and ending with a letter or digit, at most 63 characters. An endpoint name
names a Kubernetes Service, so it must be a DNS-1035 label: the same, but starting with a
letter. A refused name comes with a suggestion that is itself valid (``suggest_name``).
"""

from __future__ import annotations

import re
from collections.abc import Collection

from mlshift._exceptions import InvalidNameError

__all__ = ["check_name", "next_name", "suggest_name"]

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_LEN = 63
ENDPOINT_PREFIX = "ep-"
"""Put before a suggested endpoint name that would otherwise start with a digit."""
_EXAMPLE = "churn-v2"


def _is_endpoint(kind: str) -> bool:
    """Endpoint names (``kind`` "endpoint name", "endpoint ...") follow DNS-1035."""
    return kind.startswith("endpoint")


def suggest_name(value: str, *, kind: str = "name", max_len: int = MAX_LEN) -> str:
    """Turn ``value`` into a valid name of ``kind``, or ``""`` when nothing usable is left.

    Lower-cases, turns whitespace, '_' and '.' into '-', drops other characters, collapses
    repeated '-', trims to ``max_len`` and strips '-' at either end; an endpoint name that
    would start with a digit gets ``ep-`` in front.

    Example:
        >>> suggest_name("Churn Model_v2.1")
        'churn-model-v2-1'
        >>> suggest_name("2024 churn", kind="endpoint name")
        'ep-2024-churn'
    """
    text = re.sub(r"[\s_.]+", "-", value.lower())
    text = re.sub(r"[^a-z0-9-]+", "", text)
    text = re.sub(r"-{2,}", "-", text).strip("-")
    if _is_endpoint(kind) and text[:1].isdigit():
        text = ENDPOINT_PREFIX + text
    return text[:max_len].rstrip("-")


def _example(value: str, kind: str, max_len: int) -> str:
    suggestion = suggest_name(value, kind=kind, max_len=max_len)
    return repr(suggestion or _EXAMPLE)


def check_name(value: object, *, kind: str = "name", max_len: int = MAX_LEN) -> str:
    """Return ``value`` if it is a valid name of ``kind``, else raise ``InvalidNameError``.

    Names are DNS-1123 labels; when ``kind`` starts with "endpoint" (``kind="endpoint
    name"``) a DNS-1035 label, which also starts with a letter. The error suggests a valid
    name.

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
            f" (for example {_example(value, kind, max_len)})"
        )
    endpoint = _is_endpoint(kind)
    # fullmatch, not match with '$': '$' also matches before a trailing newline ("v2\n").
    if not _LABEL.fullmatch(value) or (endpoint and not value[0].isalpha()):
        label = "DNS-1035 label (it names a Service)" if endpoint else "DNS-1123 label"
        first = "a letter" if endpoint else "a letter or digit"
        raise InvalidNameError(
            f"{kind} {value!r} is not a {label}: use lower-case letters, digits and '-',"
            f" starting with {first} and ending with a letter or digit"
            f" (for example {_example(value, kind, max_len)})"
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
