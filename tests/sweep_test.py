"""Sweeps in one step: every variant equals the run of its own config, through the CLI too."""

import json
import os

import numpy as np
import pytest

from conftest import run_python
from energy_ae import sweep, train
from energy_ae.metrics_io import read_metrics
from experiments import common

# A variant and its own run differ only by the order of floating-point sums (a vmapped matmul
# accumulates in another order): measured 1e-6 relative on every metric of a 30-step VAE run.
# Adam can amplify such noise ~10× over a run (measured 7.8e-6 to 1.5e-5 after 20 steps on
# AVX-512 and AVX2 machines, issue 12), so 2e-4 keeps ≥ 10× headroom while any real
# difference (another β, seed or learning rate: ≥ 1e-2 here) fails.
RTOL = 2e-4


def _config(name, **overrides):
  config = common.load_config(name, "quick", **overrides)
  config.train.progress = False
  config.train.linear_probe = False
  return config


def _records(workdir):
  return [r for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))
          if r["split"] in ("train", "test")]


def _assert_same_run(a, b):
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  for x, y in zip(a, b):
    for k, v in x.items():
      if isinstance(v, float) and k != "samples_per_s":
        np.testing.assert_allclose(y[k], v, rtol=RTOL, atol=1e-6, err_msg=f"{x['step']} {k}")


def _differ(a, b, key):
  """Some record's ``key`` differs by far more than the rounding bound."""
  return max(abs(x[key] - y[key]) / abs(x[key]) for x, y in zip(a, b)) > 10 * RTOL


@pytest.mark.parametrize("name,key,values", [
    ("vae", "model.beta", (0.5, 4.0)),
    # Each variant's own keys (init, data order, sampling): quick, where a shared key is caught.
    ("vae", "seed", (0, 3)),
    pytest.param("cae", "model.contractive_weight", (0.0, 5.0), marks=pytest.mark.slow),
    # Rates at which the DAE's run is not chaotic: at 1e-2 a rounding difference of 1e-7 grows
    # to 3e-4 within 8 steps (measured), so no comparison of two runs could be exact there.
    pytest.param("dae", "train.learning_rate", (1e-3, 2e-3), marks=pytest.mark.slow),
])
def test_each_variant_is_the_run_of_its_own_config(tmp_path, name, key, values):
  config = _config(name, **{"sweep.key": key, "sweep.values": values})
  finals = sweep.train_and_evaluate(config, str(tmp_path / "sweep"))
  assert len(finals) == len(values)
  variants = []
  for value in values:
    variant_dir = tmp_path / "sweep" / "sweep" / sweep.variant_name(key, value)
    single = _config(name, **{key: value})
    train.train_and_evaluate(single, str(tmp_path / f"single_{value}"))
    _assert_same_run(_records(tmp_path / f"single_{value}"), _records(variant_dir))
    # Its config.json holds its own value and no sweep: the tools read it as any run.
    with open(variant_dir / "config.json") as f:
      stored = json.load(f)
    node = stored
    for part in key.split("."):
      node = node[part]
    assert node == value and stored["sweep"]["key"] == ""
    variants.append(_records(variant_dir))
  assert _differ(variants[0], variants[1], "loss")  # the values did change something


@pytest.mark.slow
def test_a_sweep_resumes_from_its_checkpoints_and_ends_where_one_run_ends(tmp_path):
  overrides = {"sweep.key": "model.beta", "sweep.values": (0.5, 2.0)}
  straight = _config("vae", **overrides)
  sweep.train_and_evaluate(straight, str(tmp_path / "straight"))
  interrupted = _config("vae", **overrides, **{"train.num_epochs": 1})
  sweep.train_and_evaluate(interrupted, str(tmp_path / "resumed"))
  sweep.train_and_evaluate(_config("vae", **overrides), str(tmp_path / "resumed"))
  for value in (0.5, 2.0):
    name = sweep.variant_name("model.beta", value)
    straight_records = _records(tmp_path / "straight" / "sweep" / name)
    # The one-epoch sweep also wrote its own end (records at step 15); every other record,
    # before and after the resume, is the uninterrupted sweep's.
    steps = {(r["step"], r["split"]) for r in straight_records}
    resumed = [r for r in _records(tmp_path / "resumed" / "sweep" / name)
               if (r["step"], r["split"]) in steps]
    _assert_same_run(straight_records, resumed)
    # A variant's directory restores like a run of its own.
    config = _config("vae", **{"model.beta": value})
    _, _, latest, _ = train.restore_run(config, str(tmp_path / "resumed" / "sweep" / name))
    assert int(latest["step"]) == 30


def test_sweep_on_two_devices_equals_one_device_and_bad_sweeps_are_one_line(tmp_path):
  argv = ["-m", "experiments.run", "--config=experiments/vae.py:quick",
          "--config.sweep.key=model.beta", "--config.sweep.values=0.5,2",
          "--config.train.linear_probe=False"]
  run_python([*argv, f"--workdir={tmp_path / 'one'}"], devices=1)
  run_python([*argv, f"--workdir={tmp_path / 'two'}"], devices=2)
  for name in ("model.beta=0.5", "model.beta=2"):
    _assert_same_run(_records(tmp_path / "one" / "sweep" / name),
                     _records(tmp_path / "two" / "sweep" / name))

  base = ["-m", "experiments.run", "--config=experiments/vae.py:quick"]
  for overrides, message in [
      (["--config.sweep.key=model.latent_dim", "--config.sweep.values=2,4"],
       "config.sweep.key = 'model.latent_dim': the value 4 changes the shapes of the parameters; "
       "a sweep varies a scalar that does not"),
      (["--config.sweep.key=model.free_bits", "--config.sweep.values=0,0.5"],
       "config.sweep.key = 'model.free_bits' cannot be swept in one step: the vae model reads it "
       "as a Python number when it is built"),
      (["--config.sweep.key=train.batch_size", "--config.sweep.values=16,64"],
       "config.sweep.key = 'train.batch_size': a sweep varies seed, train.learning_rate or a "
       "model.* key"),
      (["--config.sweep.key=model.betta", "--config.sweep.values=1,2"],
       "config.sweep.key = 'model.betta': the config has no such key"),
      (["--config.sweep.key=model.likelihood", "--config.sweep.values=1,2"],
       "config.sweep.key = 'model.likelihood': a sweep varies one number, and model.likelihood "
       "is 'bernoulli'"),
      (["--config.sweep.key=model.beta", "--config.sweep.values=1,-1"],
       "config.model.beta = -1.0: must be >= 0"),
  ]:
    workdir = tmp_path / "bad"
    proc = run_python([*base, f"--workdir={workdir}", *overrides], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {message}"), (
        proc.stderr.strip().splitlines()[-1])
    assert not (workdir / "sweep").exists()  # nothing written
