"""bench/kernels.py builds and checks every case (CPU, interpreter, tiny shapes)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_bench_dry_run_builds_and_checks_every_case(tmp_path, device):
    if device != "cpu":
        pytest.skip("the dry run is the CPU mode of the benchmark")
    path = Path(__file__).resolve().parents[2] / "bench" / "kernels.py"
    spec = importlib.util.spec_from_file_location("braze_bench_kernels", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod       # dataclasses look their module up there
    spec.loader.exec_module(mod)
    result = mod.main(["--dry-run", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "kernels.json").read_text())["rows"]
    assert len(rows) == len(result["rows"]) == 6
    assert all(r["ok"] for r in rows), [r.get("failure") for r in rows]
    assert {r["op"] for r in rows} >= {"add+rmsnorm", "silu(gate)*up", "rotary q+k", "gemm dual (tiny)"}
    assert all(r["error"] < 3e-2 and r["configs"] for r in rows)
    # the user's call of the same function through braze.jit, checked against the reference
    assert all(r["plain"]["error"] < 3e-2 for r in rows), [r["plain"] for r in rows]
