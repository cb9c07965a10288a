"""Image benchmark: daemonless build-and-push vs uploading the same bytes as one blob.

For a 1 MB and a 100 MB model file (random bytes: the worst case for gzip), against a real
``docker-registry`` on loopback started here, measured side by side in the same run:

- limit: ``POST`` + one ``PUT`` of the model bytes as a single blob (raw httpx);
- build: ``mlshift.image.build_image`` into a fresh repository (base layers mounted,
  model_server and bundle layers uploaded, config, manifest, tag);
- v2: a second version with unchanged dependencies in the same repository (only its bundle
  layer and config are new).

Goal: build <= 1.3 x limit + 0.5 s. Writes ``benchmarks/results/image.md``.
Run: ``.venv/bin/python -m benchmarks.image``.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mlshift.image import build_image_result
from tests.fixtures.registry import _start_registry, _stop, make_bundle, push_base_image
from tests.integration.test_image_build import base_labels

RESULTS = Path(__file__).parent / "results" / "image.md"
ROUNDS = 3


def upload_one_blob(url: str, repo: str, data: bytes) -> float:
    """Seconds to push ``data`` as one blob (digest computed as part of the work)."""
    started = time.perf_counter()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    with httpx.Client(base_url=url, timeout=120) as client:
        location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
        sep = "&" if "?" in location else "?"
        response = client.put(f"{location}{sep}digest={digest}", content=data)
        response.raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    """Run the benchmark and write the markdown table."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-image-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["MLSHIFT_CACHE_DIR"] = str(tmp / "cache")
        reg = _start_registry(tmp / "registry")
        try:
            push_base_image(reg, "bench/base", "1", labels=base_labels())
            base = f"{reg.host}/bench/base:1"
            for label, size in (("1 MB", 1 << 20), ("100 MB", 100 << 20)):
                limit, build, second = [], [], []
                for i in range(ROUNDS):
                    payload = os.urandom(size)
                    limit.append(upload_one_blob(reg.url, f"bench/raw{size}-{i}", payload))
                    bundle = make_bundle(tmp / f"b{size}-{i}", payload=payload)
                    repo = f"{reg.host}/bench/m{size}-{i}"
                    started = time.perf_counter()
                    build_image_result(
                        bundle, "v1", repository=repo, endpoint="bench", base=base, progress=False
                    )
                    build.append(time.perf_counter() - started)
                    bundle2 = make_bundle(tmp / f"c{size}-{i}", payload=os.urandom(size))
                    started = time.perf_counter()
                    result = build_image_result(
                        bundle2, "v2", repository=repo, endpoint="bench", base=base, progress=False
                    )
                    second.append(time.perf_counter() - started)
                    assert len(result.stats.uploaded) == 2, result.stats  # bundle + config
                lim, bld, sec = (statistics.median(x) for x in (limit, build, second))
                goal = 1.3 * lim + 0.5
                rows.append((label, lim, bld, sec, bld / lim, goal, bld <= goal))
        finally:
            _stop(reg)
    lines = [
        "# Image build benchmark",
        "",
        f"Median of {ROUNDS} rounds; docker-registry 2.8 on loopback, filesystem storage;"
        " random model bytes. Goal: build <= 1.3 x limit + 0.5 s.",
        "",
        "| model | limit: one blob upload (s) | build + push v1 (s) | v2, same deps (s) |"
        " build / limit | goal (s) | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, lim, bld, sec, ratio, goal, met in rows:
        lines.append(
            f"| {label} | {lim:.3f} | {bld:.3f} | {sec:.3f} | {ratio:.2f}x | {goal:.3f} |"
            f" {'yes' if met else 'no'} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))  # a benchmark script, not library code


if __name__ == "__main__":
    main()
