"""Endpoint names are DNS-1035 labels on Kubernetes, refused before anything is applied.

The API server takes the Deployment ``9churn-v1`` (a DNS-1123 subdomain) but refuses the
Service ``9churn`` (a DNS-1035 label must start with a letter) with 422: without an up-front
check the version would roll out and the deploy fail half-way. (The facade and
``EndpointState`` check too; the engine is the last door before the cluster.)
"""

from __future__ import annotations

import pytest

from mlshift._exceptions import InvalidNameError
from tests.fixtures.kube import KubeEmulator
from tests.integration.test_kube_engine import _target


def test_an_endpoint_name_starting_with_a_digit_is_refused(kube_emulator: KubeEmulator) -> None:
    with pytest.raises(InvalidNameError, match=r"DNS-1035.*for example 'ep-9churn'"):
        _target(kube_emulator).engine("9churn")
    assert kube_emulator.run(lambda: list(kube_emulator.kmock)) == []
