"""Shared test helpers. Multi-device tests run in subprocesses that set XLA_FLAGS first."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(args, *, devices=1, cwd=ROOT, timeout=600, env_extra=None, check=True):
  """Runs ``python ARGS`` with ``devices`` host CPU devices; returns the CompletedProcess."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  env.update(env_extra or {})
  proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"python {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc


@pytest.fixture
def python():
  return run_python
