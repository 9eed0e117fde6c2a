"""`experiments.benchmark --quick` runs end to end and writes the documented JSON (slow);
`--only` measures the parts it names."""

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
  steps = [r for r in rows if r["model"] != "vae_cli"]
  assert [(r["model"], r["batch_size"], r.get("sweep_size")) for r in steps] == [
      ("vae", 32, None), ("vae", 256, None), ("vae", 1024, None), ("vae", 32, None),
      ("vae", 32, 8), ("target_prop", 256, None)]
  assert steps[3]["on_nonfinite"] == "skip"
  assert all(ROW_KEYS <= set(r) and r["samples_per_s"] > 0 for r in steps
             if "sweep_size" not in r and "on_nonfinite" not in r)
  for r in steps:  # median of the repeats, within their range
    low, high = r["samples_per_s_range"]
    assert low <= r["samples_per_s"] <= high, r
  sweep = steps[4]
  assert sweep["speedup_vs_sequential"] == round(sweep["samples_per_s"] / steps[0]["samples_per_s"],
                                                 2)
  if result["machine"].get("torch"):  # the end-to-end row needs the PyTorch script
    cli = [r for r in rows if r["model"] == "vae_cli"]
    assert len(cli) == 1 and cli[0]["seconds"] > 0 and cli[0]["torch_seconds"] > 0, cli
  assert {r["config"] for r in result["first_steps"]} == {
      "ellipse", "target_prop", "ae", "dae", "cae", "vae"}
  assert {r["inner_optimizer"] for r in result["inner_loop"]} == {
      "sgd", "momentum", "adam", "ista", "fista", "ista_bt", "fista_bt", "fista_bt_restart"}
  placements = result["data_placements"]
  assert [r["placement"] for r in placements["placements"]] == ["replicated", "sharded", "stream"]
  assert placements["devices"] == 8 and all(r["samples_per_s"] > 0
                                            for r in placements["placements"])
  # Each device holds 1/8 of the sharded split (its rows padded to a multiple of 8).
  replicated, sharded = (r["device_mib"] for r in placements["placements"][:2])
  assert abs(sharded - replicated / 8) < 0.01 * replicated
  assert placements["multi_process"]["processes"] == 2
  # Each form of experiments.results from its own empty compilation cache, then warm.
  sweep = result["results_sweep"]
  assert sweep["seeds"] == 2 and all(sweep[k] > 0 for k in (
      "sweep_s", "sequential_s", "sweep_s_warm_cache", "sequential_s_warm_cache"))
  assert sweep["speedup_vs_sequential_warm_cache"] == round(
      sweep["sequential_s_warm_cache"] / sweep["sweep_s_warm_cache"], 2)


@pytest.mark.slow  # the matmul peak, imports and start-up timings (~30 s)
def test_only_measures_the_named_parts_and_rejects_unknown_ones(tmp_path):
  out = tmp_path / "bench.json"
  run_python(["-m", "experiments.benchmark", "--quick", "--only=startup", f"--out={out}"])
  result = json.loads(out.read_text())
  assert result["results"] == [] and result["command"].endswith("--only=startup")
  assert result["startup"]["help_seconds"] > 0
  assert not {"first_steps", "inner_loop", "data_placements", "results_sweep", "vae_parity"} & set(
      result)
  proc = run_python(["-m", "experiments.benchmark", "--only=startup,nope", f"--out={out}"],
                    check=False)
  assert proc.returncode != 0 and "unknown part(s) ['nope']" in proc.stderr


@pytest.mark.slow
def test_the_accelerator_table_runs_on_any_device(tmp_path):
  # Written on a GPU by `make bench`; here on the CPU with tiny sizes, so that the code that
  # writes it cannot rot where no GPU is lent.
  out = tmp_path / "accelerator.json"
  run_python(["-m", "experiments.bench_data", "--accelerator", "--accelerator_batches=32,64",
              "--accelerator_sweep=2", "--steps=3", "--repeats=1", f"--out={out}"])
  table = json.loads(out.read_text())["accelerator"]
  assert [r["batch_size"] for r in table["steps"]] == [32, 64]
  assert table["sweep"]["variants"] == 2 and table["sweep"]["samples_per_s"] > 0
  assert [r["placement"] for r in table["stream"]] == ["replicated", "sharded", "stream"]


@pytest.mark.slow
def test_bench_versions_times_both_trees_and_removes_its_worktree(tmp_path):
  # Against HEAD itself: both trees are the same code, so the run must finish with a row per
  # batch from each tree and leave no worktree behind (a leftover would block the next run).
  out = tmp_path / "versions.json"
  run_python(["-m", "experiments.bench_versions", "--against=HEAD", "--batches=32",
              "--rounds=1", f"--out={out}"])
  result = json.loads(out.read_text())
  (row,) = result["rows"]
  assert row["batch"] == 32 and row["this"] > 0 and row["against"] > 0
  worktrees = run_python(["-c", "import subprocess; print(subprocess.run(['git', 'worktree', "
                          "'list'], capture_output=True, text=True).stdout)"]).stdout
  assert len(worktrees.strip().splitlines()) == 1, worktrees
