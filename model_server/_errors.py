"""model_server's own exceptions (it never imports mlshift, so it cannot use mlshift's tree).

ModelServerError
├── BundleReadError        a bundle directory cannot be read or deserialized
│   └── DigestMismatch     the model file does not match mlshift.json's sha256
└── InvalidInput           a request the server refuses (a 4xx: 400 by default, as the Open
                           Inference Protocol, Triton and KServe answer a bad request)
"""

from __future__ import annotations

__all__ = ["BundleReadError", "DigestMismatch", "InvalidInput", "ModelServerError"]


class ModelServerError(Exception):
    """Base class of model_server's errors."""


class BundleReadError(ModelServerError):
    """A bundle cannot be read, verified or deserialized."""


class DigestMismatch(BundleReadError):
    """The model file's sha256 differs from the one in mlshift.json; nothing was deserialized."""

    def __init__(self, message: str, *, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class InvalidInput(ModelServerError):
    """A request the server refuses; ``status`` is the HTTP code, ``field`` names the culprit.

    ``allow`` lists the methods a path takes; a 405 carries them in its ``Allow`` header.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        status: int = 400,
        allow: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.allow = allow
