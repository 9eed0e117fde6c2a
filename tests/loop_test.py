"""The one loop (energy_ae.loop) that runs and sweeps share: periodic actions exact under k
steps per dispatch, sweeps with k > 1, grids over several keys, frozen variants."""

import json
import os
import sys

import pytest

from conftest import run_python
from energy_ae import loop, run_dir, sweep, train
from experiments import common
from sweep_test import _assert_same_run, _config, _records


def test_itstime_is_a_multiple_crossed_by_the_dispatch_or_the_last_step():
  # k = 1: multiples of every; the last step always.
  assert [s for s in range(1, 13) if loop.itstime(s, 4)] == [4, 8, 12]
  assert loop.itstime(13, 4, total=13) and not loop.itstime(13, 4, total=14)
  # k = 4 dispatches ending at 4, 8, 12: every = 6 is crossed by the ones ending at 8 and 12.
  assert [s for s in (4, 8, 12) if loop.itstime(s, 6, n=4)] == [8, 12]
  # A single step at 7 crosses no multiple of 4; the dispatch 5 → 8 does.
  assert not loop.itstime(7, 4, n=1) and loop.itstime(8, 4, n=3)


def test_a_sweep_at_four_steps_per_dispatch_equals_the_sweep_at_one(tmp_path):
  # Logs, evaluations and checkpoints at multiples of k = 4; epochs of 15 steps, so that some
  # dispatches are single steps around the epoch boundaries (as for a run, reliability_test).
  overrides = {"sweep.key": "model.beta", "sweep.values": (0.5, 2.0), "train.log_every": 4,
               "train.eval_every": 12, "train.checkpoint_every": 8}
  sweep.train_and_evaluate(_config("vae", **overrides), str(tmp_path / "k1"))
  sweep.train_and_evaluate(_config("vae", **overrides, **{"train.steps_per_dispatch": 4}),
                           str(tmp_path / "k4"))
  for name in ("model.beta=0.5", "model.beta=2"):
    one, four = (tmp_path / k / "sweep" / name for k in ("k1", "k4"))
    strip = lambda records: [{k: v for k, v in r.items() if k != "samples_per_s"}
                             for r in records]
    assert strip(_records(one)) == strip(_records(four))  # bit for bit: the same programs
    assert sorted(os.listdir(one / "checkpoints")) == sorted(os.listdir(four / "checkpoints"))


@pytest.mark.slow  # four variants and their four runs (~40 s); the one-key sweep tests stay quick
def test_a_grid_over_two_keys_gives_each_variant_its_own_run(tmp_path):
  grid = {"sweep.key": "model.beta,seed", "sweep.values": ((0.5, 2.0), (0, 3)),
          "train.num_epochs": 1}
  finals = sweep.train_and_evaluate(_config("vae", **grid), str(tmp_path / "grid"))
  names = sorted(os.listdir(tmp_path / "grid" / "sweep"))
  assert names == ["model.beta=0.5,seed=0", "model.beta=0.5,seed=3", "model.beta=2,seed=0",
                   "model.beta=2,seed=3"] and len(finals) == 4
  for beta, seed in ((0.5, 3), (2.0, 0)):  # one variant off each diagonal
    single = tmp_path / f"single_{beta}_{seed}"
    train.train_and_evaluate(_config("vae", **{"model.beta": beta, "seed": seed,
                                               "train.num_epochs": 1}), str(single))
    variant = tmp_path / "grid" / "sweep" / f"model.beta={beta:g},seed={seed}"
    _assert_same_run(_records(single), _records(variant))
    stored = json.loads((variant / "config.json").read_text())
    assert (stored["model"]["beta"], stored["seed"]) == (beta, seed)


EXPLODING = '''
import jax.numpy as jnp
from energy_ae.models import Model

def make(config, example_shape):
  """E = (w − 10)² + log(5 − w): SGD at rate 0.3 jumps past w = 5 at step 1 (NaN at step 2);
  at 0.001 it creeps from 0 by ~0.02 a step and stays finite for a run of 30 steps."""
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
'''


@pytest.fixture
def exploding(tmp_path, monkeypatch):
  (tmp_path / "faulty_sweep").mkdir()
  (tmp_path / "faulty_sweep" / "__init__.py").write_text("")
  (tmp_path / "faulty_sweep" / "exploding.py").write_text(EXPLODING)
  monkeypatch.syspath_prepend(str(tmp_path))
  for name in [m for m in sys.modules if m.startswith("faulty_sweep")]:
    monkeypatch.delitem(sys.modules, name)

  def config(**overrides):
    config = common.load_config("ae", "quick", **{
        "model.name": "faulty_sweep.exploding", "train.optimizer": "sgd",
        "train.learning_rate": 0.001, "train.log_every": 1, "train.checkpoint_every": 10,
        "train.linear_probe": False, "train.progress": False})
    return common.apply_overrides(config, overrides)

  return config


def test_a_variant_that_diverges_is_frozen_and_reported_while_the_others_go_on(
    tmp_path, exploding):
  lr_sweep = {"sweep.key": "train.learning_rate", "sweep.values": (0.001, 0.3)}
  finals = sweep.train_and_evaluate(exploding(**lr_sweep), str(tmp_path / "sweep"))
  good, bad = (tmp_path / "sweep" / "sweep" / f"train.learning_rate={v:g}" for v in (0.001, 0.3))
  status = run_dir.read_status(str(bad))
  assert status["status"] == "diverged" and status["frozen"] and status["step"] == 2
  assert "non-finite values at step 2: R, loss" in status["reason"]
  # The frozen variant keeps what it had: no record, no checkpoint after its last good step.
  assert max(r["step"] for r in _records(bad)) == 1 and not os.listdir(bad / "checkpoints")
  # The other goes on to the end, the run of its own config, traced learning rate and all.
  assert run_dir.read_status(str(good))["status"] == "finished"
  train.train_and_evaluate(exploding(), str(tmp_path / "single"))
  _assert_same_run(_records(tmp_path / "single"), _records(good))
  assert finals[0]["C"] == _records(good)[-1]["C"]
  # The tools say which stopped, where and why.
  proc = run_python(["-m", "experiments.compare", str(good), str(bad), "--csv="])
  rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:3]}
  assert " finished " in rows[str(good)] and " diverged@2 " in rows[str(bad)]
  assert f"{bad}: diverged at step 2: non-finite values at step 2" in proc.stdout

  # sweep.on_nonfinite = stop: the first diverging variant ends the sweep, named.
  with pytest.raises(train.TrainingError, match=r"variant train.learning_rate=0.3: non-finite "
                                                r"values at step 2"):
    sweep.train_and_evaluate(exploding(**lr_sweep, **{"sweep.on_nonfinite": "stop"}),
                             str(tmp_path / "stopped"))
