"""What a bundle directory holds: a value, no I/O.

The bundle writer (``mlshift._bundle``) returns it, targets turn it into what they serve
(``Target.prepare_version``), and the image builder reads it. It lives in the core so the
engine protocol can name it without depending on the writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BundleInfo"]


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle directory holds, as written or as read back and verified.

    Attributes:
        path: The bundle directory.
        sha256: Hex sha256 of the model file.
        flavor: ``sklearn``, ``xgboost``, ``lightgbm`` or ``pyfunc``.
        serializer: ``skops`` or ``cloudpickle``.
        requirements: Pip distribution name -> exact version the model needs.
        manifest: The full ``mlshift.json``.

    Example:
        >>> info = mlshift.bundle(model, "v2")  # doctest: +SKIP
        >>> info.flavor, info.sha256[:12]  # doctest: +SKIP
        ('sklearn', '3f1c0a9e7b2d')
    """

    path: Path
    sha256: str
    flavor: str
    serializer: str
    requirements: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def version(self) -> str:
        """The version label recorded in the manifest."""
        return str(self.manifest.get("version", ""))

    @property
    def trusts_pickle(self) -> bool:
        """A pickle whose writer said ``trust_pickle=True`` (recorded in the manifest).

        A record in a bundle you did not write yourself is only as trustworthy as its source;
        with a signing key set, only a bundle signed with it is read at all.
        """
        return self.serializer == "cloudpickle" and self.manifest.get("trust_pickle") is True

    @property
    def name(self) -> str:
        """The model name recorded in the manifest, or ``"model"``."""
        return str(self.manifest.get("name") or "model")
