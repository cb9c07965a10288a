"""mlshift: ship model versions to production traffic from a notebook."""

from mlshift._exceptions import *  # noqa: F403  (the tree is curated in _exceptions.__all__)
