"""The runner end to end in subprocesses: every quick config, resume, SIGKILL, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_python
from energy_ae.metrics_io import read_metrics

# The DAE (the slowest quick config, ~45 s) runs with the slow tests; the AE and CAE share its code.
CONFIGS = ["ellipse", "target_prop", "ae", pytest.param("dae", marks=pytest.mark.slow), "cae", "vae"]


def run_cli(config, workdir, *overrides, check=True, devices=1):
  return run_python(["-m", "experiments.run", f"--config={config}", f"--workdir={workdir}",
                     *overrides], devices=devices, check=check)


@pytest.mark.parametrize("name", CONFIGS)
def test_quick_config_runs_writes_everything_and_resumes(name, tmp_path):
  run_cli(f"experiments/{name}.py:quick", tmp_path)
  records = read_metrics(str(tmp_path / "metrics.jsonl"))
  assert {r["split"] for r in records} == {"train", "test", "timing"}
  timing = [r for r in records if r["split"] == "timing"]
  # One record of the wall time per phase at the end; the train phase excludes evaluations.
  assert len(timing) == 1 and {"data_s", "compile_s", "train_s", "evaluation_s",
                               "checkpoint_s"} <= set(timing[0])
  records = [r for r in records if r["split"] != "timing"]
  assert all("loss" in r or "free_energy" in r or "energy_inferred" in r for r in records)
  last_step = records[-1]["step"]
  steps = sorted(os.listdir(tmp_path / "checkpoints"))
  assert str(last_step) in steps
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
  assert json.loads((tmp_path / "config.json").read_text())["model"]["name"] == name
  # Resume: more epochs in the same workdir continue from the last checkpoint.
  config = json.loads((tmp_path / "config.json").read_text())
  epochs = config["train"]["num_epochs"]
  proc = run_cli(f"experiments/{name}.py:quick", tmp_path,
                 f"--config.train.num_epochs={epochs * 2}")
  assert f"Resumed from the checkpoint at step {last_step}" in proc.stderr
  resumed = read_metrics(str(tmp_path / "metrics.jsonl"))
  keys = [(r["step"], r["split"]) for r in resumed]
  assert len(keys) == len(set(keys))  # no duplicated steps
  assert resumed[-1]["step"] == 2 * last_step


def _final_test_record(workdir):
  return [r for r in read_metrics(str(workdir / "metrics.jsonl")) if r["split"] == "test"][-1]


def test_sigkill_after_the_first_checkpoint_then_restart_ends_where_an_uninterrupted_run_ends(
    tmp_path):
  args = ["--config.train.num_epochs=6", "--config.train.checkpoint_every=10"]
  run_cli("experiments/vae.py:quick", tmp_path / "clean", *args)

  workdir = tmp_path / "killed"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.run", "--config=experiments/vae.py:quick",
       f"--workdir={workdir}", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if (workdir / "checkpoints" / "10").exists():
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(r["step"] for r in read_metrics(str(workdir / "metrics.jsonl")))
  assert killed_at < 90  # it really was interrupted
  run_cli("experiments/vae.py:quick", workdir, *args)

  clean, resumed = _final_test_record(tmp_path / "clean"), _final_test_record(workdir)
  assert clean == resumed
  records = read_metrics(str(workdir / "metrics.jsonl"))
  keys = [(r["step"], r["split"]) for r in records]
  assert len(keys) == len(set(keys))


def _last_line(proc):
  return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("overrides,expected", [
    (["--config.model.name=autoencoder"], "error: unknown model 'autoencoder'; valid names: ae, cae"),
    (["--config.data.name=mnsit"], "error: unknown dataset 'mnsit'; valid names:"),
    (["--config.train.batch_size=0"], "error: config.train.batch_size = 0: must be a positive integer"),
    (["--config.train.learning_rate=-1"], "error: config.train.learning_rate = -1.0: must be finite"),
    (["--config.train.learning_rate=nan"], "error: config.train.learning_rate = nan: must be finite"),
    (["--config.model.latent_dim=0"], "error: config.model.latent_dim = 0: must be > 0"),
    (["--config.train.optimizer=adamax"], "error: config.train.optimizer = 'adamax': unknown optimiser"),
    (["--config.model.corruption=blur"], "error: unknown corruption 'blur'; valid names: dropout"),
    (["--config.train.batch_size=5000"], "error: config.train.batch_size = 5000 exceeds the 4000"),
])
def test_bad_input_is_one_clear_line_and_a_nonzero_exit(tmp_path, overrides, expected):
  proc = run_cli("experiments/dae.py:quick", tmp_path, *overrides, check=False)
  assert proc.returncode != 0
  assert _last_line(proc).startswith(expected), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


def test_vae_beta_must_not_be_negative(tmp_path):
  proc = run_cli("experiments/vae.py:quick", tmp_path, "--config.model.beta=-1", check=False)
  assert proc.returncode != 0 and _last_line(proc).startswith("error: config.model.beta = -1.0")


def _assert_one_clear_line(proc, expected):
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert _last_line(proc).startswith(expected), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-4000:]


@pytest.mark.parametrize("overrides,expected", [
    (["--config.model.latnet_dim=3"],
     "error: --config.model.latnet_dim=3: the config has no key 'model.latnet_dim'"),
    (["--config.trian.batch_size=3"], "error: --config.trian.batch_size=3: the config has no key"),
    (["--config.model.energy.C.term=squared_eror"],
     "error: unknown energy term 'squared_eror'; valid names: bernoulli_nll"),
    (["--config.train.on_nonfinite=ignore"],
     "error: config.train.on_nonfinite = 'ignore': must be one of stop, skip"),
    (["--config.model.corruption_kwargs.dropout.sigma=0.5"],
     # keyword dicts are creatable from the CLI (issue #24), so a wrong keyword is
     # caught by the corruption's own check, naming the keywords it takes.
     "error: config.model.corruption_kwargs: corruption 'dropout' has no keyword 'sigma'; "
     "its keywords: p"),
    # a conv net on flattened digits: named with the key that flattened them
    (["--config.model.architecture=conv"],
     "error: model.architecture = 'conv' needs image examples, got examples of shape (784,): "
     "set data.flatten=False"),
])
def test_bad_keys_and_names_through_the_cli(tmp_path, overrides, expected):
  _assert_one_clear_line(run_cli("experiments/dae.py:quick", tmp_path, *overrides, check=False),
                         expected)


def test_missing_config_file_and_config_without_get_config(tmp_path):
  proc = run_cli("experiments/nope.py", tmp_path, check=False)
  assert proc.returncode != 0 and "nope.py" in _last_line(proc)
  assert "Traceback" not in proc.stderr
  (tmp_path / "not_a_config.py").write_text("BATCH_SIZE = 32\n")
  _assert_one_clear_line(run_cli(str(tmp_path / "not_a_config.py"), tmp_path, check=False),
                         f"error: config file {tmp_path / 'not_a_config.py'} has no get_config()")


def test_importance_samples_must_be_positive(tmp_path):
  _assert_one_clear_line(
      run_cli("experiments/vae.py:quick", tmp_path, "--config.model.iw_samples=0", check=False),
      "error: config.model.iw_samples = 0: must be a positive integer")


def _npz_cases(directory):
  rng = np.random.default_rng(0)
  good = rng.uniform(size=(300, 16)).astype(np.float32)
  with_nan, with_inf = good.copy(), good[:50].copy()
  with_nan[3, 4], with_inf[5, 1] = np.nan, np.inf
  arrays = {
      "nan": dict(train=with_nan, test=good[:50]),
      "inf": dict(train=good, test=with_inf),
      "shape": dict(train=good, test=good[:50, :15]),
      "wide": dict(train=good * 6 - 3, test=good[:50] * 6 - 3),
      "empty": dict(train=good, test=good[:0]),
      "notest": dict(train=good),
  }
  for name, a in arrays.items():
    np.savez(directory / f"{name}.npz", **a)


@pytest.mark.parametrize("name,extra,expected", [
    ("nan", [], "the train split holds 1 NaN or infinite 'y' values"),
    ("inf", [], "the test split holds 1 NaN or infinite 'y' values"),
    ("shape", [], "train examples have shape (16,) but test examples (15,)"),
    ("wide", ["--config.data.range=raw"],
     "'bernoulli' needs targets in [0, 1] but data 'npz:"),
    ("empty", [], "the test split is empty"),
    ("notest", [], "has no 'test' array (it holds ['train'])"),
    ("missing", [], "no such file"),
])
def test_bad_data_is_one_clear_line_naming_the_dataset(tmp_path, name, extra, expected):
  _npz_cases(tmp_path)
  path = tmp_path / f"{name}.npz"
  proc = run_cli("experiments/vae.py:quick", tmp_path / "run", f"--config.data.name=npz:{path}",
                 *extra, check=False)
  # The data set's own faults name it first; the model's misfit names the model's key.
  prefix = "error: model.likelihood" if name == "wide" else f"error: dataset 'npz:{path}'"
  _assert_one_clear_line(proc, prefix)
  assert expected in _last_line(proc)


def test_own_npz_data_trains(tmp_path):
  digits = sklearn_digits()
  np.savez(tmp_path / "digits.npz", train=digits[:1400], test=digits[1400:],
           train_label=np.zeros(1400, np.int32), test_label=np.zeros(len(digits) - 1400, np.int32))
  run_cli("experiments/vae.py:quick", tmp_path / "run", f"--config.data.name=npz:{tmp_path}/digits.npz")
  records = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
  losses = [r["loss"] for r in records if r["split"] == "train"]
  assert losses[-1] < losses[0]


def sklearn_digits():
  from sklearn.datasets import load_digits

  return load_digits().data.reshape(-1, 8, 8).astype(np.float32)  # 0..16: rescaled as raw data


def test_config_errors_come_before_any_data_or_compilation(tmp_path):
  proc = run_cli("experiments/dae.py:quick", tmp_path, "--config.model.corruption=blur",
                 check=False)
  assert proc.returncode == 1 and "Training" not in proc.stderr and "mnist" not in proc.stderr
  assert not (tmp_path / "metrics.jsonl").exists()


def test_an_unknown_config_variant_lists_the_known_ones(tmp_path):
  _assert_one_clear_line(
      run_cli("experiments/vae.py:qick", tmp_path, check=False),
      "error: --config=experiments/vae.py:qick: unknown config variant 'qick'; known variants: "
      "quick")
  assert not os.listdir(tmp_path)


def test_a_workdir_that_is_a_file_is_one_clear_line_and_the_file_is_kept(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("mine")
  _assert_one_clear_line(run_cli("experiments/ae.py:quick", path, check=False),
                         f"error: --workdir={path} is an existing file, not a directory")
  assert path.read_text() == "mine"


def test_switching_the_corruption_from_the_command_line_brings_its_own_arguments(tmp_path):
  run_cli("experiments/dae.py:quick", tmp_path, "--config.model.corruption=gaussian",
          "--config.model.corruption_kwargs.gaussian.sigma=0.2", "--config.train.num_epochs=1")
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["model"]["corruption"] == "gaussian"
  test = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if r["split"] == "test"][-1]
  # ŷ = y + 0.2 ε on [−1, 1] images, PSNR on [0, 1]: MSE = (0.2 / 2)² = 0.01 → 20 dB before
  # clipping to the range; clipping removes at most the outward half of a pixel's noise (a
  # pixel at the edge), so MSE ≥ 0.005 → PSNR ≤ 23.0 dB. (Dropout's p = 0.5 gives ~15 dB.)
  assert 20.0 <= test["psnr_in"] <= 23.02, test


def test_a_corruption_keyword_the_function_lacks_is_named_before_any_work(tmp_path):
  (tmp_path / "my_dae.py").write_text(
      "from experiments import dae\n\n"
      "def get_config(arg=None):\n"
      "  config = dae.get_config(arg)\n"
      "  config.model.corruption_kwargs = {'dropout': {'sigma': 0.5}}\n"
      "  return config\n")
  _assert_one_clear_line(
      run_cli(f"{tmp_path / 'my_dae.py'}:quick", tmp_path / "run", check=False),
      "error: config.model.corruption_kwargs: corruption 'dropout' has no keyword 'sigma'; "
      "its keywords: p")


def test_a_model_too_large_for_memory_fails_at_once_naming_size_and_field(tmp_path):
  proc = run_cli("experiments/ae.py:quick", tmp_path, "--config.model.latent_dim=2000000000",
                 check=False)  # it used to hang for good in a futex wait
  _assert_one_clear_line(proc, "error: the model does not fit in memory: its parameters, "
                               "gradients and optimiser state need at least 6.28e+04 GB")
  assert _last_line(proc).endswith("set by model.latent_dim = 2000000000")


@pytest.mark.parametrize("override,expected", [
    ("--config.model.objective=vimco", "error: config.model.objective = 'vimco': unknown objective; "
                                       "valid names: elbo, iwae"),
    ("--config.model.train_samples=0", "error: config.model.train_samples = 0: must be an integer "
                                       ">= 1"),
    ("--config.model.free_bits=-0.5", "error: config.model.free_bits = -0.5: must be >= 0"),
    ("--config.data.range=symmetric", "error: model.likelihood = 'bernoulli' needs targets in "
                                      "[0, 1] but data 'mnist5k' spans [-1, 1]"),
])
def test_vae_objective_keys_are_checked_through_the_cli_and_nothing_is_written(
    tmp_path, override, expected):
  _assert_one_clear_line(run_cli("experiments/vae.py:quick", tmp_path / "run", override,
                                 check=False), expected)
  assert not (tmp_path / "run" / "metrics.jsonl").exists()
  assert not (tmp_path / "run" / "checkpoints").exists() or not os.listdir(
      tmp_path / "run" / "checkpoints")
