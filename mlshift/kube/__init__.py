"""The Kubernetes target: deploy versions as Istio subsets and move weights safely.

``Kubernetes`` is the target (settings, cluster discovery, image push through
``mlshift.image``); its engine (``_engine``) applies the renderer's objects in the safe
order and reads them back (``_live``), through one thin client layer (``_api``); metrics
come from Prometheus through ``mlshift.metrics``; ``rbac`` gives the minimal Role the SDK
needs. Routing is Istio's VirtualService or a Gateway API HTTPRoute (``_gateway``;
``waypoint`` renders the Gateway ambient mode needs). Importing this package does not import
the ``kubernetes`` client.

Example:
    >>> import mlshift
    >>> target = mlshift.Kubernetes(namespace="ml", registry="registry.example.com/ml")
    >>> ep = mlshift.endpoint("churn", target=target)  # doctest: +SKIP
"""

from mlshift.kube._gateway import waypoint
from mlshift.kube._rbac import manifest_yaml, rbac
from mlshift.kube._target import Kubernetes

__all__ = ["Kubernetes", "manifest_yaml", "rbac", "waypoint"]
