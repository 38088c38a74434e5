"""`make bench`: every benchmark module under bench/, each as `python -m bench.<name>`.

When DATABASE_URL / BROKER_URL are unset, embedded servers start here once (or those of
a running `make run` are used) and every benchmark inherits their URLs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from runtime import embedded
from runtime.children import REPO_ROOT

BENCH_DIR = REPO_ROOT / "bench"
# Shared helpers, not benchmarks.
NOT_BENCHMARKS = {"__init__", "harness", "cpu"}


def bench_modules(directory: Path = BENCH_DIR) -> list[str]:
    """Module names of every benchmark, sorted."""
    return sorted(
        f"bench.{path.stem}"
        for path in directory.glob("*.py")
        if path.stem not in NOT_BENCHMARKS and not path.stem.startswith("_")
    )


def main() -> int:
    """Run each benchmark in turn; exit 1 if any failed (the others still run)."""
    modules = bench_modules()
    if not modules:
        print("no benchmarks under bench/")
        return 0
    failed = []
    with embedded.serving():
        for module in modules:
            print(f"\n=== {module}", flush=True)
            started = time.monotonic()
            code = subprocess.call([sys.executable, "-m", module], cwd=REPO_ROOT)
            elapsed = time.monotonic() - started
            print(f"=== {module}: exit {code} after {elapsed:.1f}s", flush=True)
            if code != 0:
                failed.append(module)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
