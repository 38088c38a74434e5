"""`make bench` finds every benchmark module and nothing else."""

from __future__ import annotations

from runtime.benches import bench_modules


def test_every_bench_module_but_the_helpers(tmp_path):
    for name in ("__init__", "harness", "cpu", "peer_sweep", "carpool", "_scratch"):
        (tmp_path / f"{name}.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert bench_modules(tmp_path) == ["bench.carpool", "bench.peer_sweep"]
