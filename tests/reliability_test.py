"""Numerical faults and interruptions lose nothing already written."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT
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
  (tmp_path / "faulty").mkdir()
  (tmp_path / "faulty" / "__init__.py").write_text("")
  (tmp_path / "faulty" / "exploding.py").write_text(EXPLODING_MODEL)
  monkeypatch.syspath_prepend(str(tmp_path))
  config = ae.get_config("quick")
  config.model.name = "faulty.exploding"
  config.train.optimizer = "sgd"
  config.train.learning_rate = 0.3  # w: 0 → 3.3 → (5.6: log of a negative number)
  config.train.checkpoint_every = 1
  config.train.log_every = 1
  workdir = tmp_path / "run"
  with pytest.raises(train.TrainingError, match=r"non-finite values at step 2: R, loss"):
    train.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1"]
  records = read_metrics(str(workdir / "metrics.jsonl"))
  assert [r["step"] for r in records if r["split"] == "train"] == [1]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.run", "--config=experiments/vae.py:quick",
       f"--workdir={tmp_path}", "--config.train.num_epochs=200",
       "--config.train.checkpoint_every=100000", "--config.train.eval_every=100000"],
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while time.time() < deadline and not read_metrics(str(tmp_path / "metrics.jsonl")):
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  assert "Stopped by signal" in err
  steps = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
  assert len(steps) == 1 and 0 < steps[0] < 200 * 15
