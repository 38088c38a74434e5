"""The suite refuses, once and before any test, a database it would have to wipe."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy.engine import make_url

from tests.support import ROOT


def test_a_database_that_is_not_scratch_stops_the_run_with_one_message():
    url = make_url(os.environ["DATABASE_URL"]).set(database="matchops")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_compose.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert output.count("refusing to wipe database 'matchops'") == 1, output
    assert "passed" not in output
