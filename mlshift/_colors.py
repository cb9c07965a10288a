"""One colour per version, the same everywhere: plots, the traffic slider, HTML reprs.

Colours come from the Okabe-Ito palette, which stays distinguishable with the common forms
of colour blindness. The choice is deterministic and does not depend on which other
versions happen to exist, so a version keeps its colour after others are removed:

- a name ending in a number (``v1``, ``v2``, ``rev-3``) takes palette slot ``number - 1``,
  so ``v1`` is blue, ``v2`` orange, ``v3`` green, as people expect;
- any other name takes a slot from a stable hash of the name (CRC-32, not Python's salted
  ``hash``), the same in every process.

When the versions shown together are passed as ``versions``, two of them that would share a
colour are told apart: in natural order (``v2`` before ``v10``) each keeps its own slot if
it is free and otherwise takes the next free one.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

__all__ = ["PALETTE", "version_color", "version_colors"]

# Okabe & Ito (2008), ordered so the first versions get the most distinct colours; yellow,
# faint on white, comes last.
PALETTE = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
_NUMBERED = re.compile(r"[A-Za-z_.-]*?(\d+)")


def _preferred(version: str) -> int:
    m = _NUMBERED.fullmatch(version)
    if m:
        return (int(m.group(1)) - 1) % len(PALETTE)
    return zlib.crc32(version.encode()) % len(PALETTE)


def _natural_key(version: str) -> list[tuple[int, int | str]]:
    """Sort key that puts v2 before v10."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", version) if p]


def version_colors(versions: Sequence[str]) -> dict[str, str]:
    """Colours of several versions shown together, all different while the palette lasts.

    Example:
        >>> version_colors(["v2", "v1"])
        {'v1': '#0072B2', 'v2': '#E69F00'}
    """
    taken: set[int] = set()
    out: dict[str, str] = {}
    for version in sorted(dict.fromkeys(versions), key=_natural_key):
        slot = _preferred(version)
        if len(taken) < len(PALETTE):
            while slot in taken:
                slot = (slot + 1) % len(PALETTE)
        taken.add(slot)
        out[version] = PALETTE[slot]
    return out


def version_color(version: str, versions: Sequence[str] | None = None) -> str:
    """The colour of ``version`` (a ``#RRGGBB`` string).

    Args:
        version: the version name.
        versions: the versions shown alongside it, to keep their colours apart.

    Example:
        >>> version_color("v1"), version_color("v2")
        ('#0072B2', '#E69F00')
    """
    if not versions:
        return PALETTE[_preferred(version)]
    return version_colors([*versions, version])[version]
