"""The local target: a real Envoy routing between model_server processes on this machine.

``Local`` is the target; its engine (``LocalEngine``) runs plans; ``find_envoy`` says which
Envoy binary would run (or why there is none).
"""

from mlshift.local._engine import LocalEngine
from mlshift.local._envoy import find_envoy
from mlshift.local._target import Local

__all__ = ["Local", "LocalEngine", "find_envoy"]
