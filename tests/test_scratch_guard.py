"""The suite refuses, once and before any test, a database it would have to wipe."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from runtime.migrate import refuse_unless_scratch
from tests.support import ROOT

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/"


@pytest.mark.parametrize(
    "name",
    ["test", "matchops_test", "matchops_test_gw0", "matchops_test_h2_gw0", "matchops-bench-peer"],
)
def test_a_name_with_test_or_bench_as_a_word_is_scratch(name):
    refuse_unless_scratch(SERVER + name)


@pytest.mark.parametrize("name", ["latest", "contest", "matchops_latest", "testing", "benchmark"])
def test_a_name_that_only_contains_the_letters_is_refused(name):
    with pytest.raises(RuntimeError, match=f"refusing to wipe database '{name}'"):
        refuse_unless_scratch(SERVER + name)


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
