"""Numerical faults and interruptions lose nothing already written."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import ROOT, run_python
from energy_ae import train
from energy_ae.metrics_io import read_metrics
from experiments import ae

EXPLODING_MODEL = textwrap.dedent('''
    import jax.numpy as jnp
    from energy_ae.models import Model

    def make(config, example_shape):
      """E = (w − 10)² + log(5 − w): finite until gradient descent pushes w past 5."""
      def terms(params):
        w = params["w"]
        return {"C": (w - 10.0) ** 2, "R": jnp.log(5.0 - w)}

      def init(key, batch):
        return {"w": jnp.zeros(())}

      def loss(params, batch, keys):
        t = terms(params)
        return t["C"] + t["R"], {"loss": t["C"] + t["R"], **t}

      def evaluate(params, batch, keys):
        return terms(params)

      return Model(init, loss, evaluate)
''')


def test_a_non_finite_loss_stops_at_once_naming_the_step_and_term(tmp_path, monkeypatch):
  # w: 0 → 3.3 → (5.6: log of a negative number)
  config = _faulty_config(tmp_path, monkeypatch, "exploding", 0.3)
  config.train.checkpoint_every = 1
  config.train.log_every = 1
  workdir = tmp_path / "run"
  with pytest.raises(train.TrainingError, match=r"non-finite values at step 2: R, loss"):
    train.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1"]
  records = read_metrics(str(workdir / "metrics.jsonl"))
  assert [r["step"] for r in records if r["split"] == "train"] == [1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.run", "--config=experiments/vae.py:quick",
       f"--workdir={tmp_path}", "--config.train.num_epochs=200",
       "--config.train.checkpoint_every=100000", "--config.train.eval_every=100000"],
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while time.time() < deadline and not read_metrics(str(tmp_path / "metrics.jsonl")):
    time.sleep(0.1)
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=120)
  # As a shell reports a process killed by the signal: 130 for SIGINT, 143 for SIGTERM.
  assert proc.returncode == 128 + int(sig), err[-2000:]
  assert f"Stopped by signal {int(sig)}" in err and "Final test metrics" not in err
  steps = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
  assert len(steps) == 1 and 0 < steps[0] < 200 * 15
  assert err.strip().splitlines()[-1] == (
      f"stopped: interrupted by {sig.name} at step {steps[0]}; the checkpoint of step "
      f"{steps[0]} is saved in {tmp_path}: run the same command again to resume")
  # No evaluation at the interrupted step: a finished run would not have written one.
  tests = [r["step"] for r in read_metrics(str(tmp_path / "metrics.jsonl")) if r["split"] == "test"]
  assert tests == [0]


FLAKY_MODEL = textwrap.dedent('''
    import jax
    import jax.numpy as jnp
    from energy_ae.models import Model

    def make(config, example_shape):
      """E = (w − 1)², made NaN on the steps whose first example key draws u < 0.3."""
      def init(key, batch):
        return {"w": jnp.zeros(())}

      def loss(params, batch, keys):
        fault = jax.random.uniform(keys[0]) < 0.3
        c = (params["w"] - 1.0) ** 2 + jnp.where(fault, jnp.nan, 0.0)
        return c, {"loss": c, "C": c}

      def evaluate(params, batch, keys):
        return {"C": (params["w"] - 1.0) ** 2}

      return Model(init, loss, evaluate)
''')


OVERFLOWING_MODEL = textwrap.dedent('''
    import jax.numpy as jnp
    from energy_ae.models import Model

    def make(config, example_shape):
      """E = 10¹⁸ w: finite loss, gradient and gradient norm, but one SGD step of rate 10³⁰
      overflows w."""
      def init(key, batch):
        return {"w": jnp.zeros(())}

      def loss(params, batch, keys):
        e = 1e18 * params["w"]
        return e, {"loss": e}

      def evaluate(params, batch, keys):
        return {"loss": 1e18 * params["w"]}

      return Model(init, loss, evaluate)
''')


def _faulty_package(tmp_path, monkeypatch):
  (tmp_path / "faulty").mkdir()
  (tmp_path / "faulty" / "__init__.py").write_text("")
  (tmp_path / "faulty" / "exploding.py").write_text(EXPLODING_MODEL)
  (tmp_path / "faulty" / "flaky.py").write_text(FLAKY_MODEL)
  (tmp_path / "faulty" / "overflowing.py").write_text(OVERFLOWING_MODEL)
  monkeypatch.syspath_prepend(str(tmp_path))
  for name in [m for m in sys.modules if m == "faulty" or m.startswith("faulty.")]:
    monkeypatch.delitem(sys.modules, name)  # import this test's copy


def _faulty_config(tmp_path, monkeypatch, model: str, learning_rate: float):
  """The AE quick config with one of the faulty models above, trained by SGD at this rate."""
  _faulty_package(tmp_path, monkeypatch)
  config = ae.get_config("quick")
  config.model.name = f"faulty.{model}"
  config.train.optimizer = "sgd"
  config.train.learning_rate = learning_rate
  return config


def test_skip_mode_skips_and_counts_non_finite_steps(tmp_path, monkeypatch):
  config = _faulty_config(tmp_path, monkeypatch, "flaky", 0.1)
  config.train.num_epochs = 4  # 60 steps
  config.train.log_every = 1
  config.train.on_nonfinite = "skip"
  final = train.train_and_evaluate(config, str(tmp_path / "run"))
  records = [r for r in read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
             if r["split"] == "train"]
  skipped = [r["step"] for r in records if not np.isfinite(float(r["loss"]))]  # "nan" in JSON
  assert 5 < len(skipped) < 40
  assert records[-1]["nonfinite_steps"] == len(skipped)
  assert final["C"] < 1e-3  # the finite steps still reach w = 1


def test_skip_mode_stops_after_too_many_non_finite_steps_in_a_row(tmp_path, monkeypatch):
  config = _faulty_config(tmp_path, monkeypatch, "exploding", 0.3)
  config.train.on_nonfinite = "skip"
  config.train.max_consecutive_nonfinite = 4
  with pytest.raises(train.TrainingError, match=r"non-finite values at step 5: R, loss .*, 4 "
                                               r"skipped steps in a row"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def _run(config, workdir, *overrides, check=True):
  return run_python(["-m", "experiments.run", f"--config={config}", f"--workdir={workdir}",
                     *overrides], check=check)


def _snapshot(directory):
  return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage,expected", [
    ("other_model", r"belongs to another model or config; shapes differ \(stored vs this run\): "
                    r"opt_state/0/mu/params/decoder/dense_0/kernel \(30, 784\) vs \(10, 784\)"),
    # The verb agrees with the count: "1 of the 15 files saved has changed", "2 ... have".
    ("corrupt_arrays", r"is damaged: (1 of the \d+ files saved has|([02-9]|\d\d+) of the \d+ "
                       r"files saved have) changed since it was saved"),
    ("no_metadata", r"is damaged: its metadata is missing"),
])
def test_an_incompatible_or_damaged_checkpoint_is_a_clear_error_that_keeps_everything(
    tmp_path, damage, expected):
  _run("experiments/ae.py:quick", tmp_path)
  last = tmp_path / "checkpoints" / "30"
  if damage == "corrupt_arrays":
    for f in last.rglob("*"):
      if f.is_file() and f.parent.name == "d":
        f.write_bytes(b"\0" * 100)
  elif damage == "no_metadata":
    (last / "default" / "_METADATA").unlink()
    (last / "default" / "manifest.ocdbt").unlink()
    (last / "energy_ae_digest.json").unlink()  # as if killed before the digest was written
  before = _snapshot(tmp_path)
  # Another model: past the resume check (which would refuse the changed key first) with the
  # explicit flag, the checkpoint itself must name the arrays that differ.
  overrides = (["--config.model.latent_dim=10", "--allow_config_change"] if damage == "other_model"
               else [])
  proc = _run("experiments/ae.py:quick", tmp_path, "--config.train.num_epochs=3", *overrides,
              check=False)
  assert proc.returncode == 1
  last_line = proc.stderr.strip().splitlines()[-1]
  assert re.match(f"error: the checkpoint at step 30 in {re.escape(str(tmp_path))}/checkpoints "
                  f"{expected}", last_line), proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert _snapshot(tmp_path) == before  # nothing written, nothing lost


def test_same_config_and_seed_give_identical_metrics(tmp_path):
  config = "experiments/vae.py:quick"  # random in every step (z = μ + ε √v)
  _run(config, tmp_path / "a")
  _run(config, tmp_path / "b")

  def records(name):
    return [{k: v for k, v in r.items() if k != "samples_per_s"}  # wall-clock numbers differ
            for r in read_metrics(str(tmp_path / name / "metrics.jsonl")) if r["split"] != "timing"]

  assert records("a") == records("b")





def test_parameters_that_overflow_are_never_applied_or_checkpointed(tmp_path, monkeypatch):
  config = _faulty_config(tmp_path, monkeypatch, "overflowing", 1e30)
  config.train.checkpoint_every = 1
  config.train.linear_probe = False
  with pytest.raises(train.TrainingError, match=r"non-finite values at step 1: the updated "
                                               r"parameters or optimiser state .*; the run "
                                               r"stopped there, before that state was evaluated "
                                               r"or saved; no checkpoint was saved yet"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.listdir(tmp_path / "run" / "checkpoints")


def test_skip_mode_never_goes_on_from_overflowed_parameters(tmp_path, monkeypatch):
  config = _faulty_config(tmp_path, monkeypatch, "overflowing", 1e30)
  config.train.num_epochs = 1  # 15 steps, each overflowing: all skipped, w stays 0
  config.train.on_nonfinite = "skip"
  config.train.max_consecutive_nonfinite = 100
  config.train.log_every = 1
  config.train.linear_probe = False
  final = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert final["loss"] == 0.0  # E = 10¹⁸ w at the initial w = 0
  records = [r for r in read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
             if r["split"] == "train"]
  assert records[-1]["nonfinite_steps"] == 15


def test_several_steps_per_dispatch_give_the_same_run_as_one(tmp_path):
  # Logs, evaluations and checkpoints at multiples of k = 4; epochs of 15 steps, so that some
  # dispatches are single steps around the epoch boundaries.
  common = ["--config.train.log_every=4", "--config.train.eval_every=12",
            "--config.train.checkpoint_every=8"]
  _run("experiments/vae.py:quick", tmp_path / "k1", *common)
  _run("experiments/vae.py:quick", tmp_path / "k4", *common, "--config.train.steps_per_dispatch=4")

  def records(name):
    return [{k: v for k, v in r.items() if k != "samples_per_s"}
            for r in read_metrics(str(tmp_path / name / "metrics.jsonl")) if r["split"] != "timing"]

  assert records("k1") == records("k4")
  assert sorted(os.listdir(tmp_path / "k1" / "checkpoints")) == sorted(
      os.listdir(tmp_path / "k4" / "checkpoints"))
