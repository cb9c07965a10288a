"""Which version of Istio's networking API the cluster serves, found the way kubectl finds it.

Istio serves ``networking.istio.io/v1`` from 1.22; 1.20 and 1.21 serve only ``v1beta1`` and
``v1alpha3`` (the same schema under another name). So the version is not hard-coded: the
group's discovery document (``GET /apis/networking.istio.io``) is read once per target (the
``KubeAPI`` caches it) and the first of ``ISTIO_VERSIONS`` the cluster serves is used for
every DestinationRule and VirtualService call, their ``apiVersion`` included.

A cluster that serves none of them has no Istio CRDs: that is a ``ConfigError`` raised
before anything is applied, rather than a plain-text 404 read as "the object does not
exist" (which made ``deploy`` half-apply and ``delete`` report success having done nothing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mlshift._exceptions import ConfigError
from mlshift.kube._api import RESOURCES, KubeAPI, Resource

__all__ = ["ISTIO_GROUP", "ISTIO_KINDS", "ISTIO_VERSIONS", "istio_version", "resource", "versioned"]

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
"""Preferred first: v1 (Istio 1.22+), then v1beta1 (1.20-1.21), then v1alpha3."""
ISTIO_KINDS = frozenset({"DestinationRule", "VirtualService"})


def istio_version(api: KubeAPI) -> str:
    """The Istio networking version to use on this cluster; ``ConfigError`` if none is served.

    Example:
        >>> istio_version(target.api)  # doctest: +SKIP
        'v1beta1'
    """
    served = api.served_versions(ISTIO_GROUP)
    for version in ISTIO_VERSIONS:
        if version in served:
            return version
    where = f" at {api.server}" if api.server else ""
    found = f" (it serves only {', '.join(served)})" if served else ""
    raise ConfigError(
        f"the cluster{where} does not serve Istio's networking API ({ISTIO_GROUP}"
        f" {', '.join(ISTIO_VERSIONS)}){found}: Istio or its CRDs are missing. Install Istio"
        " 1.20 or newer (`istioctl install`, or the istio/base Helm chart for the CRDs);"
        " nothing was changed"
    )


def resource(api: KubeAPI, kind: str) -> Resource:
    """The resource of ``kind``, at the served version for Istio's kinds.

    Example:
        >>> resource(target.api, "VirtualService").version  # doctest: +SKIP
        'v1'
    """
    res = RESOURCES[kind]
    if kind in ISTIO_KINDS:
        return dataclasses.replace(res, version=istio_version(api))
    return res


def versioned(obj: Mapping[str, Any], res: Resource) -> dict[str, Any]:
    """``obj`` with the ``apiVersion`` of ``res`` (the renderer writes Istio's v1).

    Example:
        >>> res = Resource("networking.istio.io", "v1beta1", "destinationrules", "DestinationRule")
        >>> versioned({"apiVersion": "networking.istio.io/v1"}, res)["apiVersion"]
        'networking.istio.io/v1beta1'
    """
    group_version = f"{res.group}/{res.version}" if res.group else res.version
    return {**obj, "apiVersion": group_version}
