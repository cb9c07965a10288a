"""Run every benchmark and gather their tables into benchmarks/README.md.

    .venv/bin/python -m benchmarks            # all (serving alone: about 21 minutes on 2 cores)
    .venv/bin/python -m benchmarks local      # one

Each benchmark writes benchmarks/results/<name>.md; this joins them under a short header.
Run on a quiet machine: other load inflates latencies (the ratios hold up better).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["serving", "local", "routing", "image", "canary"]
HEADER = """# Benchmarks

Every goal is measured side by side against a baseline in the same run, on this project's
reference machine (2 cores, 24 GiB, loopback only). Re-run with `make bench` (or
`.venv/bin/python -m benchmarks NAME`); each section below is written by
`benchmarks/NAME.py` into `benchmarks/results/NAME.md`.
"""


def assemble() -> str:
    """Join the result tables into the README text."""
    parts = [HEADER]
    for name in BENCHMARKS:
        result = HERE / "results" / f"{name}.md"
        if result.exists():
            # Each result file starts at "#": push its headings one level down.
            parts.append(re.sub(r"^(#+) ", r"#\1 ", result.read_text(), flags=re.MULTILINE))
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    """Run the named benchmarks (default all), then rewrite benchmarks/README.md.

    ``--assemble`` only rewrites the README from the existing result files.
    """
    if argv == ["--assemble"]:
        argv, names = [], []
    else:
        names = argv or BENCHMARKS
    for name in names:
        if name not in BENCHMARKS:
            sys.stderr.write(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}\n")
            return 2
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=HERE.parent)
        if code:
            return code
    (HERE / "README.md").write_text(assemble())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
