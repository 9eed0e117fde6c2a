"""Data parallelism: N devices give the same parameters as 1 device with the same global batch."""

import json
import textwrap

import pytest

from conftest import run_python

SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from energy_ae import data, models, train
    from experiments import {name} as experiment

    config = experiment.get_config("quick")
    ds = data.load(config.data)
    model = models.make(config, ds.train["y"].shape[1:])
    tx = train.make_optimizer(config.train)
    key = jax.random.key(0)
    finals = {{}}
    for n in (1, len(jax.devices())):
      mesh = train.make_mesh(jax.devices()[:n])
      train_data = train.replicate(mesh, {{"y": ds.train["y"]}})
      state = train.init_state(model, tx, key, {{"y": train_data["y"][:1]}})
      state = train.replicate(mesh, jax.device_get(state))
      step = train.make_train_step(model, tx, mesh, global_batch=64, binarize="none")
      perm = data.epoch_permutation(key, 0, ds.train["y"].shape[0])
      for i in range(20):
        state, metrics = step(state, train_data, perm, i * 64, key)
      finals[n] = jax.device_get(state["params"])
    one, many = (jax.tree.leaves(finals[n]) for n in sorted(finals))
    # Relative difference per parameter array, ‖a − b‖ / ‖a‖. (Element-wise, a few weights of
    # near-blank pixels differ more: Adam divides their tiny gradients by tiny second moments,
    # which magnifies float32 reduction-order noise.)
    rel = max(float(np.linalg.norm(a - b) / np.linalg.norm(a)) for a, b in zip(one, many))
    print(json.dumps({{"devices": len(jax.devices()), "rel": rel, "sizes": sorted(finals)}}))
''')


@pytest.mark.parametrize("name", ["vae", "dae", "target_prop"])
def test_four_devices_match_one_device(name):
  proc = run_python(["-c", SCRIPT.format(name=name)], devices=4)
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4 and result["sizes"] == [1, 4]
  assert result["rel"] < 1e-5, result


def test_the_log_says_how_many_devices_were_used(tmp_path):
  proc = run_python(["-m", "experiments.run", "--config=experiments/ae.py:quick",
                     f"--workdir={tmp_path}", "--config.train.num_epochs=1"], devices=2)
  assert "on 2 device(s)" in proc.stderr


def test_a_batch_not_divisible_by_the_device_count_is_a_clear_error(tmp_path):
  proc = run_python(["-m", "experiments.run", "--config=experiments/ae.py:quick",
                     f"--workdir={tmp_path}", "--config.train.batch_size=255"], devices=2,
                    check=False)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: config.train.batch_size = 255 is not divisible by the 2 devices")
