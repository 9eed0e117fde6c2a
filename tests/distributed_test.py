"""Multi-host: two CPU processes joined by jax.distributed on localhost train as one."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from conftest import ROOT, run_python
from parallel_test import BOUND
from energy_ae.metrics_io import read_metrics

# Each process holds one CPU device; the global batch of 64 is split 32 / 32 across them.
SCRIPT = textwrap.dedent('''
    import sys
    import jax, numpy as np
    from energy_ae import data, train
    from experiments import vae

    config = vae.get_config("quick")
    config.train.optimizer, config.train.learning_rate = "sgd", 0.01  # see parallel_test.BOUND
    process_id, num_processes, address, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    if int(num_processes) > 1:
      config.distributed.enabled = True
      config.distributed.coordinator_address = address
      config.distributed.num_processes = int(num_processes)
      config.distributed.process_id = int(process_id)
    train.maybe_initialize_distributed(config)
    ds = data.load(config.data)
    key = jax.random.key(0)
    mesh = train.make_mesh()
    setup = train.setup_step(config, mesh, dataset=ds, batch_size=64, init_key=key)
    train_data, state, step = setup.train_data, setup.state, setup.step
    perm = train.replicate(mesh, np.asarray(data.epoch_permutation(key, 0, ds.train["y"].shape[0])))
    for i in range(10):
      state, metrics = step(state, train_data, perm, i * 64, key)
    # This process's own copy of the replicated parameters.
    local = jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), state["params"])
    leaves = jax.tree.leaves(local)
    np.savez(out, *leaves)
    print("devices", jax.device_count(), "processes", jax.process_count())
''')


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(args_per_process, *, devices=1):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  procs = [subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for args in args_per_process]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-3000:]
    outs.append((out, err))
  return outs


def _load(path):
  with np.load(path) as f:
    return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_two_processes_end_with_identical_parameters_equal_to_one_process(tmp_path):
  address = f"localhost:{_free_port()}"
  outs = _launch([["-c", SCRIPT, str(i), "2", address, str(tmp_path / f"p{i}.npz")]
                  for i in range(2)])
  assert all("devices 2 processes 2" in out for out, _ in outs)
  p0, p1 = _load(tmp_path / "p0.npz"), _load(tmp_path / "p1.npz")
  assert all(np.array_equal(a, b) for a, b in zip(p0, p1))  # bit-identical replicas
  # The same global batch on one process with two devices.
  run_python(["-c", SCRIPT, "0", "1", "", str(tmp_path / "single.npz")], devices=2)
  single = _load(tmp_path / "single.npz")
  rel = max(float(np.linalg.norm(a - b) / np.linalg.norm(a)) for a, b in zip(single, p0))
  assert rel < BOUND, rel


def test_two_process_cli_run_logs_once_and_agrees(tmp_path):
  address = f"localhost:{_free_port()}"
  outs = _launch([["-m", "experiments.run", "--config=experiments/vae.py:quick",
                   f"--workdir={tmp_path}", "--config.distributed.enabled=True",
                   f"--config.distributed.coordinator_address={address}",
                   "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"]
                  for i in range(2)])
  finals = [next(line for line in err.splitlines() if "Final test metrics" in line)
            .split("Final test metrics: ")[1] for _, err in outs]
  assert finals[0] == finals[1]
  assert "on 2 device(s)" in outs[0][1] and "process 1 of 2" in outs[1][1]
  records = read_metrics(str(tmp_path / "metrics.jsonl"))
  keys = [(r["step"], r["split"]) for r in records]
  assert len(keys) == len(set(keys))  # written by process 0 only
  assert records[-1]["step"] == 30 and os.path.isdir(tmp_path / "checkpoints" / "30")
  assert json.loads((tmp_path / "config.json").read_text())["distributed"]["num_processes"] == 2
