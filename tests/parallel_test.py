"""Data parallelism: N devices give the same update as 1 device with the same global batch.

The comparison uses plain SGD over two steps, so that float32 reduction-order noise is
not amplified (Adam divides the tiny gradients of blank pixels by tiny second moments, and
many steps of a chaotic trajectory magnify any rounding). The bound follows from the noise
itself: a mean over B = 64 per-example gradients summed in another order differs by at most
about B·u·κ relative (u = 2⁻²⁴ the float32 unit roundoff, κ = Σ|gᵢ| / |Σgᵢ| the cancellation
factor), and ``BOUND`` = 1e-4 ≈ 26·B·u leaves room for κ up to 26. Measured noise on x86-64
CPUs (AVX2 and AVX-512): 1e-7 … 2e-6. Each data-parallel bug the test injects — gradients
summed instead of averaged, one shard used by every device, per-example keys that depend on
the device count — moves the update by 0.1 or more, so each must fail the same bound.
"""

import json
import textwrap

import pytest

from conftest import run_python

BOUND = 1e-4

SCRIPT = textwrap.dedent('''
    import json
    import jax, numpy as np
    from jax import lax
    from energy_ae import data, keys as keys_lib, train
    from experiments import common

    config = common.load_config("{name}", "quick", **{{"train.optimizer": "sgd",
                                                       "train.learning_rate": 0.01}})
    ds = data.load(config.data)
    key = jax.random.key(0)
    GLOBAL_BATCH, STEPS = 64, 2
    originals = (lax.pmean, lax.axis_index, keys_lib.per_example_keys)

    def inject(bug, num_devices):
      """Restores the real functions, then swaps one for a data-parallel bug."""
      lax.pmean, lax.axis_index, keys_lib.per_example_keys = originals
      if bug == "summed_gradients":
        lax.pmean = lax.psum
      elif bug == "one_shard_everywhere":
        lax.axis_index = lambda axis_name: 0
      elif bug == "keys_by_local_position":
        local = GLOBAL_BATCH // num_devices
        keys_lib.per_example_keys = lambda k, p: originals[2](k, p % local)

    def run(num_devices, bug="none"):
      """(parameters before, parameters after STEPS steps) on the first num_devices."""
      inject(bug, num_devices)
      mesh = train.make_mesh(jax.devices()[:num_devices])
      setup = train.setup_step(config, mesh, dataset=ds, batch_size=GLOBAL_BATCH, init_key=key)
      train_data, state, step = setup.train_data, setup.state, setup.step
      before = jax.tree.leaves(jax.device_get(state["params"]))
      perm = data.epoch_permutation(key, 0, ds.train["y"].shape[0])
      for i in range(STEPS):
        state, _ = step(state, train_data, perm, i * GLOBAL_BATCH, key)
      return before, jax.tree.leaves(jax.device_get(state["params"]))

    before, one = run(1)
    n = len(jax.devices())
    result = {{"devices": n}}
    for bug in ("none", "summed_gradients", "one_shard_everywhere", "keys_by_local_position"):
      _, many = run(n, bug)
      # ‖Δ₁ − Δₙ‖ / ‖Δ₁‖ per parameter array, Δ the change of the parameters over the steps.
      result[bug] = max(float(np.linalg.norm(a - b) / np.linalg.norm(a - p))
                        for a, b, p in zip(one, many, before))
    print(json.dumps(result))
''')


@pytest.mark.parametrize("name,uses_keys", [("vae", True), ("dae", True), ("target_prop", False)])
def test_four_devices_match_one_device_and_each_parallel_bug_fails(name, uses_keys):
  proc = run_python(["-c", SCRIPT.format(name=name)], devices=4)
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4
  assert result["none"] < BOUND, result
  assert result["summed_gradients"] > BOUND, result
  assert result["one_shard_everywhere"] > BOUND, result
  if uses_keys:  # a deterministic model draws no noise, so its keys cannot matter
    assert result["keys_by_local_position"] > BOUND, result


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
