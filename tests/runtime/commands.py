"""Running the real `matchops` console script from tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

MATCHOPS = str(Path(sys.executable).with_name("matchops"))


def matchops(
    *args: str,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    """Run `matchops ARGS` with this session's environment (plus `env`, minus `unset`)."""
    environment = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    return subprocess.run(
        [MATCHOPS, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
