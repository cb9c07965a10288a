"""``python -m model_server --model-dir DIR``: load, verify and serve one bundle."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse settings, load the bundle (fail fast with a clear message) and serve it.

    Example:
        >>> main(["--model-dir", "bundle", "--port", "9000"])  # doctest: +SKIP
    """
    from model_server._app import create_app
    from model_server._bundle import load_bundle
    from model_server._errors import BundleReadError
    from model_server._serve import serve
    from model_server._settings import parse_settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = parse_settings(argv)
    try:
        loaded = load_bundle(
            settings.model_dir,
            trust_pickle=settings.trust_pickle,
            trust_types=settings.trust_types,
            signing_key=settings.signing_key,
        )
    except BundleReadError as exc:
        logging.getLogger("mlshift.model_server").error("cannot serve: %s", exc)
        return 2
    serve(create_app(loaded, settings), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
