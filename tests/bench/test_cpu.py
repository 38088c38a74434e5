"""The benches' CPU accounting counts a supervised child with the processes it forked."""

from __future__ import annotations

import sys
import time

from bench.cpu import BENCH, CpuReading, cpu_rows, read_cpu
from runtime.children import Child

# A parent that forks a child, both spinning for half a second of CPU each.
SPIN = """
import os, time
def spin():
    end = time.process_time() + 0.5
    while time.process_time() < end:
        sum(range(1000))
if os.fork() == 0:
    spin()
    os._exit(0)
spin()
time.sleep(30)
"""


def test_a_session_counts_its_forked_processes(tmp_path):
    spinner = Child("spinner", [sys.executable, "-c", SPIN], tmp_path / "spinner.log")
    spinner.start()
    try:
        before = read_cpu({"spinner": spinner.pid}, "no_such_database")
        deadline = time.monotonic() + 20
        used = 0.0
        while used < 0.9 and time.monotonic() < deadline:
            time.sleep(0.1)
            used = read_cpu({"spinner": spinner.pid}, "no_such_database").since(before)["spinner"]
    finally:
        spinner.stop(10)
    # Both processes' half seconds: the forked one counts with its parent's session.
    assert used >= 0.9


def test_rows_per_unit_and_cores_busy():
    used = CpuReading({"worker": 3.0, BENCH: 1.0}).since(CpuReading({"worker": 1.0}))
    rows = dict(cpu_rows(used, per=1_000, unit="request", elapsed=2.0))
    assert rows["CPU: worker"] == "2.00 ms per request"
    assert rows[f"CPU: {BENCH}"] == "1.00 ms per request"
    assert rows["CPU: all parts"] == "3.00 ms per request"
    assert rows["cores kept busy"].startswith("1.50 of ")
