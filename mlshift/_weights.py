"""Traffic weights: validation and the pro-rata form of ``shift``. Pure, no I/O.

Weights are integers 0-100 summing to 100, on versions the endpoint knows and that are
ready (routing to pods that are not ready gives transient 503s, kserve#5983). A bad call is
refused with a message naming the problem, before anything changes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from mlshift._exceptions import InvalidWeightsError

__all__ = ["rest_pro_rata", "validate_weights"]


def validate_weights(
    weights: Mapping[str, object],
    *,
    versions: Collection[str],
    ready: Collection[str] | None = None,
) -> dict[str, int]:
    """Check ``weights`` and return them as a complete ``{version: int}`` map.

    Versions not mentioned get 0. ``ready`` (default: all versions) limits which versions may
    carry a non-zero weight.

    Example:
        >>> validate_weights({"v1": 90, "v2": 10}, versions=["v1", "v2"])
        {'v1': 90, 'v2': 10}
    """
    if not isinstance(weights, Mapping) or not weights:
        raise InvalidWeightsError(
            f"weights must be a non-empty mapping like {{'v1': 90, 'v2': 10}}, got {weights!r}"
        )
    known = list(versions)
    unknown = [v for v in weights if v not in known]
    if unknown:
        raise InvalidWeightsError(
            f"unknown version(s) {', '.join(map(repr, unknown))}; this endpoint has "
            f"{', '.join(map(repr, known)) or 'no versions'}"
            " (deploy a version before routing to it)"
        )
    out: dict[str, int] = dict.fromkeys(known, 0)
    for version, raw in weights.items():
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise InvalidWeightsError(
                f"weight of {version!r} must be an integer 0-100, got {raw!r}"
            )
        if isinstance(raw, float) and not raw.is_integer():
            raise InvalidWeightsError(
                f"weight of {version!r} must be a whole number, got {raw!r} (round it)"
            )
        value = int(raw)
        if not 0 <= value <= 100:
            raise InvalidWeightsError(f"weight of {version!r} must be within 0-100, got {value}")
        out[version] = value
    total = sum(out.values())
    if total != 100:
        listed = ", ".join(f"{v}={w}" for v, w in out.items() if w)
        raise InvalidWeightsError(
            f"weights must sum to 100, these sum to {total} ({listed or 'all zero'})"
        )
    if ready is not None:
        not_ready = [v for v, w in out.items() if w and v not in ready]
        if not_ready:
            raise InvalidWeightsError(
                f"version(s) {', '.join(map(repr, not_ready))} are not ready and cannot take "
                "traffic; wait for them (ep.status()) or give them weight 0"
            )
    return out


def rest_pro_rata(current: Mapping[str, int], version: str, percent: object) -> dict[str, int]:
    """Give ``version`` ``percent`` and split the rest over the others in their current ratio.

    Rounding uses largest remainders, so the result always sums to 100. When the others carry
    no weight at all, the rest is split evenly between them.

    Example:
        >>> rest_pro_rata({"v1": 90, "v2": 10, "v3": 0}, "v2", 50)
        {'v1': 50, 'v2': 50, 'v3': 0}
    """
    if version not in current:
        raise InvalidWeightsError(
            f"unknown version {version!r}; this endpoint has {', '.join(map(repr, current))}"
        )
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise InvalidWeightsError(
            f"weight of {version!r} must be an integer 0-100, got {percent!r}"
        )
    if isinstance(percent, float) and not percent.is_integer():
        raise InvalidWeightsError(f"weight of {version!r} must be a whole number, got {percent!r}")
    share = int(percent)
    if not 0 <= share <= 100:
        raise InvalidWeightsError(f"weight of {version!r} must be within 0-100, got {share}")
    others = [v for v in current if v != version]
    rest = 100 - share
    if rest and not others:
        raise InvalidWeightsError(
            f"{version!r} is the only version, so it must carry 100, not {share}"
        )
    basis = {v: current[v] for v in others}
    if rest and sum(basis.values()) == 0:
        basis = dict.fromkeys(others, 1)
    total = sum(basis.values())
    exact = {v: rest * basis[v] / total if total else 0.0 for v in others}
    out = {v: int(exact[v]) for v in others}
    leftover = rest - sum(out.values())
    for v in sorted(others, key=lambda v: (exact[v] - out[v], basis[v]), reverse=True)[:leftover]:
        out[v] += 1
    result = {v: out.get(v, share) for v in current}
    result[version] = share
    return result
