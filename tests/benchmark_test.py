"""`experiments.benchmark --quick` runs end to end and writes the documented JSON (slow)."""

import json

import pytest

from conftest import run_python

ROW_KEYS = {"model", "batch_size", "samples_per_s", "torch_samples_per_s", "speedup_vs_torch",
            "gflops", "fraction_of_matmul_peak"}


@pytest.mark.slow
def test_quick_benchmark_writes_every_documented_field(tmp_path):
  out = tmp_path / "bench.json"
  run_python(["-m", "experiments.benchmark", "--quick", f"--out={out}"], timeout=900)
  result = json.loads(out.read_text())
  assert result["matmul_gflops"] > 0
  rows = result["results"]
  assert [(r["model"], r["batch_size"]) for r in rows] == [
      ("vae", 32), ("vae", 256), ("vae", 1024), ("target_prop", 256)]
  assert all(ROW_KEYS <= set(r) and r["samples_per_s"] > 0 for r in rows)
  assert {r["config"] for r in result["first_steps"]} == {
      "ellipse", "target_prop", "ae", "dae", "cae", "vae"}
  assert {r["inner_optimizer"] for r in result["inner_loop"]} == {
      "sgd", "momentum", "adam", "ista", "fista"}
