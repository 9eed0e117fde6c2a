"""A run's record can be trusted: a resume with another config is refused (or recorded as a new
segment), tools never overwrite the repository's files, every mistyped flag is one line."""

import json
import textwrap

import pytest

from conftest import run_python
from experiments import common


def _run(workdir, *overrides, config="experiments/vae.py:quick", check=True):
  """A one-epoch run (unless the overrides set the epochs)."""
  epochs = [] if any("num_epochs" in o for o in overrides) else ["--config.train.num_epochs=1"]
  return run_python(["-m", "experiments.run", f"--config={config}", f"--workdir={workdir}",
                     *epochs, "--config.train.linear_probe=False", *overrides], check=check)


def _snapshot(directory):
  return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _last_line(proc):
  return proc.stderr.strip().splitlines()[-1]


def test_a_resume_with_another_config_is_refused_or_recorded_as_a_new_segment(tmp_path):
  _run(tmp_path)
  before = _snapshot(tmp_path)
  for override, shown in [("--config.model.beta=4", "model.beta 1.0 → 4.0"),  # a model key
                          ("--config.train.learning_rate=0.01",  # an optimiser key
                           "train.learning_rate 0.001 → 0.01"),
                          ("--config.data.max_test_examples=100",  # a data key
                           "data.max_test_examples 200 → 100")]:
    proc = _run(tmp_path, override, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert _last_line(proc) == (
        f"error: {tmp_path} holds a run started with another config ({shown}); a run resumes "
        "only what it started: train the new config in a new --workdir, or pass "
        "--allow_config_change to continue this run with it, recorded as a new segment in "
        "config.json and metrics.jsonl")
    assert _snapshot(tmp_path) == before  # nothing written, nothing lost

  # A key safe on resume: more epochs continue the run, no segment.
  proc = _run(tmp_path, "--config.train.num_epochs=2")
  assert "Resumed from the checkpoint at step 15" in proc.stderr
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["train"]["num_epochs"] == 2 and "segments" not in config

  # Explicitly allowed: the change is a new segment in config.json and metrics.jsonl.
  _run(tmp_path, "--config.train.num_epochs=3", "--config.model.beta=4",
       "--allow_config_change")
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["model"]["beta"] == 4.0
  assert config["segments"] == [{"step": 30, "changes": {"model.beta": [1.0, 4.0]}}]
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  segment = [r for r in records if r["split"] == "segment"]
  assert segment == [{"step": 30, "split": "segment", "changes": {"model.beta": [1.0, 4.0]}}]
  assert max(r["step"] for r in records) == 45


@pytest.mark.parametrize("override,expected", [
    ("--config.model.beta=abc",
     "--config.model.beta=abc: model.beta takes a number, got 'abc'"),  # float
    ("--config.train.num_epochs=2.5",
     "--config.train.num_epochs=2.5: train.num_epochs takes an integer, got '2.5'"),  # int
    ("--config.train.learning_rate=1e-3,",
     "--config.train.learning_rate=1e-3,: train.learning_rate takes a number, got '1e-3,'"),
    ("--config.model.encoder_widths=400,2.5",  # a tuple of int
     "--config.model.encoder_widths=400,2.5: model.encoder_widths takes a tuple of int, got "
     "(400, 2.5) (2.5 is not)"),
    ("--config.model.encoder_widths=400,x",  # not even a tuple of numbers
     "--config.model.encoder_widths=400,x: model.encoder_widths takes a tuple of int, got "
     "('400,x',) ('400,x' is not)"),
])
def test_every_flag_parsing_error_is_one_line_naming_key_value_and_type(tmp_path, override,
                                                                         expected):
  proc = _run(tmp_path, override, check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert _last_line(proc).startswith(f"error: {expected}"), _last_line(proc)
  assert not tmp_path.joinpath("config.json").exists()


def test_a_key_given_twice_is_refused(tmp_path):
  proc = _run(tmp_path, "--config.sweep.key=model.beta", "--config.sweep.values=1,2",
              "--config.sweep.key=seed", check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert _last_line(proc).startswith(
      "error: --config.sweep.key is given twice ('model.beta' and 'seed'); give each key once")
  assert not (tmp_path / "sweep").exists()
  # The same value twice says nothing ambiguous (a script's default repeated): accepted.
  _run(tmp_path / "twice", "--config.model.beta=2", "--config.model.beta=2")


MY_TERMS = textwrap.dedent('''
    import jax.numpy as jnp

    def log_cosh(y, y_tilde, *, scale=1.0):
      """C(y, ỹ) = Σ_i log cosh((y_i − ỹ_i) / scale)."""
      return jnp.sum(jnp.log(jnp.cosh((y - y_tilde) / scale)), axis=-1)
''')


@pytest.mark.slow  # two quick trainings
def test_term_keyword_arguments_are_set_from_the_command_line(tmp_path):
  (tmp_path / "my_terms.py").write_text(MY_TERMS)
  env = {"PYTHONPATH": str(tmp_path)}
  for term, kwarg, value in [("squared_error", "feature_ndim", 1),
                             ("my_terms:log_cosh", "scale", 2.0)]:
    workdir = tmp_path / term.replace(":", "_")
    run_python(["-m", "experiments.run", "--config=experiments/dae.py:quick",
                f"--workdir={workdir}", "--config.train.num_epochs=1",
                "--config.train.linear_probe=False", f"--config.model.energy.C.term={term}",
                f"--config.model.energy.C.kwargs.{kwarg}={value}"], env_extra=env)
    stored = json.loads((workdir / "config.json").read_text())["model"]["energy"]["C"]
    assert stored == {"term": term, "weight": 1.0, "kwargs": {kwarg: value}}
  # A keyword the term does not take is named before any work.
  proc = run_python(["-m", "experiments.run", "--config=experiments/dae.py:quick",
                     f"--workdir={tmp_path / 'bad'}", "--config.model.energy.C.term=squared_error",
                     "--config.model.energy.C.kwargs.dleta=0.5"], check=False)
  assert _last_line(proc) == ("error: energy term 'C' (squared_error) has no keyword "
                              "hyper-parameter 'dleta'")
  assert not (tmp_path / "bad" / "config.json").exists()


@pytest.mark.slow  # two seed sweeps through experiments.results (~1 min)
def test_results_writes_under_its_workdir_with_the_model_s_own_columns(tmp_path):
  workdir = tmp_path / "results"
  proc = run_python(["-m", "experiments.results", "--config=experiments/dae.py:quick",
                     "--seeds=2", f"--workdir={workdir}", "--config.train.num_epochs=1",
                     "--config.train.linear_probe=False"])
  assert f"wrote {workdir / 'RESULTS.md'}" in proc.stdout
  text = (workdir / "RESULTS.md").read_text()
  header = next(line for line in text.splitlines() if line.startswith("| variant"))
  assert "PSNR out (dB)" in header and "| C |" in header  # the DAE's own metrics
  assert "binaris" not in text and "k = " not in text  # nothing of the VAE's header
  assert "model `dae`" in text


def test_a_tool_s_section_of_a_markdown_file_is_replaced_and_the_rest_kept(tmp_path):
  path = str(tmp_path / "RESULTS.md")
  common.write_section(path, "a", "# A\n\none")
  common.write_section(path, "b", "## B\n\ntwo")
  common.write_section(path, "a", "# A\n\nthree")  # a rerun of tool a: its section only
  text = open(path).read()
  assert "one" not in text and text.index("three") < text.index("two")
  assert text.count("<!-- begin section a -->") == 1 and text.count("<!-- end section b -->") == 1
