"""``python -m model_server --model-dir DIR``: load, verify and serve one bundle."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse settings, load the bundle (fail fast with a clear message) and serve it.

    With more than one worker (``--workers N``, or ``auto`` on a machine or pod with several
    CPUs) the process becomes a parent that forks the workers, each loading the bundle.

    Example:
        >>> main(["--model-dir", "bundle", "--port", "9000"])  # doctest: +SKIP
    """
    from model_server._capacity import auto_workers, model_bytes, read_capacity
    from model_server._settings import parse_settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger("mlshift.model_server")
    settings = parse_settings(argv)
    workers = settings.workers
    if workers is None:
        capacity = read_capacity()
        try:
            size = model_bytes(settings.model_dir)
        except OSError:
            size = 0  # a missing bundle is reported by the loader below
        workers = auto_workers(capacity, size)
        log.info(
            "workers auto: %d (%d CPUs from %s, memory %s from %s, model %.1f MiB)",
            workers,
            capacity.cpus,
            capacity.cpu_source,
            "unknown" if capacity.memory_bytes is None else f"{capacity.memory_bytes >> 20} MiB",
            capacity.memory_source,
            size / 2**20,
        )
    if workers > 1:
        from model_server._workers import supervise

        return supervise(settings, workers)

    from model_server._app import create_app
    from model_server._bundle import load_bundle
    from model_server._errors import BundleReadError
    from model_server._serve import serve

    try:
        loaded = load_bundle(
            settings.model_dir,
            trust_pickle=settings.trust_pickle,
            trust_types=settings.trust_types,
            signing_key=settings.signing_key,
        )
    except BundleReadError as exc:
        log.error("cannot serve: %s", exc)
        return 2
    serve(create_app(loaded, settings), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
