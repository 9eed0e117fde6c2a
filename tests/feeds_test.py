"""Data beyond one device's memory: the training split sharded over the devices or streamed
from disk gives the run of the replicated split, on any number of devices; a streamed run
resumes after SIGKILL mid-epoch exactly; tfds sets by name and split; resident sets that do
not fit are refused with one line."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_python
from energy_ae import data, sources
from energy_ae.metrics_io import read_metrics
from sweep_test import _assert_same_run, _records


def _cli(workdir, *overrides, devices=1, check=True, config="experiments/vae.py:quick"):
  return run_python(["-m", "experiments.run", f"--config={config}", f"--workdir={workdir}",
                     "--config.train.linear_probe=False", *overrides], devices=devices,
                    check=check)


def _strip(records):
  return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in records]


def test_every_placement_on_two_devices_is_the_one_device_run(tmp_path):
  # One device: the replicated split (the reference). Two devices: each placement must give
  # the same records up to the reordering of float sums across devices (sweep_test's RTOL);
  # on one device a streamed run is the resident run bit for bit (the same gathers).
  _cli(tmp_path / "one")
  _cli(tmp_path / "one_stream", "--config.data.pipeline=stream")
  assert _strip(_records(tmp_path / "one")) == _strip(_records(tmp_path / "one_stream"))
  for name, overrides in [("sharded", ["--config.data.placement=sharded"]),
                          ("replicated", ["--config.data.placement=replicated"]),
                          ("stream", ["--config.data.pipeline=stream"])]:
    _cli(tmp_path / name, *overrides, devices=2)
    _assert_same_run(_records(tmp_path / "one"), _records(tmp_path / name))


@pytest.mark.slow  # a sweep and its runs, streamed and sharded
def test_a_sweep_streams_and_shards_like_a_run(tmp_path):
  sweep = ["--config.sweep.key=model.beta", "--config.sweep.values=0.5,2",
           "--config.train.num_epochs=1"]
  _cli(tmp_path / "resident", *sweep, devices=2)
  _cli(tmp_path / "stream", *sweep, "--config.data.pipeline=stream", devices=2)
  for name in ("model.beta=0.5", "model.beta=2"):
    _assert_same_run(_records(tmp_path / "resident" / "sweep" / name),
                     _records(tmp_path / "stream" / "sweep" / name))


def test_a_streamed_run_killed_mid_epoch_resumes_where_an_uninterrupted_run_ends(tmp_path):
  # Epochs of 15 steps, checkpoints every 10: the kill falls after step 10, inside epoch 0.
  args = ["--config.train.num_epochs=3", "--config.train.checkpoint_every=10",
          "--config.data.pipeline=stream"]
  _cli(tmp_path / "clean", *args)
  workdir = tmp_path / "killed"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.run", "--config=experiments/vae.py:quick",
       f"--workdir={workdir}", "--config.train.linear_probe=False", *args], cwd=ROOT, env=env,
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if (workdir / "checkpoints" / "10" / "energy_ae_extra.json").exists():
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  saved = json.loads((workdir / "checkpoints" / "10" / "energy_ae_extra.json").read_text())
  assert saved == {"data_pipeline": {"next_index": 10}}  # the iterator's state, with the step
  assert max(r["step"] for r in read_metrics(str(workdir / "metrics.jsonl"))) < 45
  _cli(workdir, *args)
  clean = [r for r in _strip(_records(tmp_path / "clean"))]
  resumed = {(r["step"], r["split"]): r for r in _strip(_records(workdir))}
  assert [resumed[(r["step"], r["split"])] for r in clean] == clean


def _tfds_set(data_dir):
  """A CIFAR-10-shaped tfds set (32 × 32 × 3 PNG images, 10 labels) prepared locally in the
  array_record format by a tfds builder over generated files, as `tfds build` prepares one."""
  import tensorflow_datasets as tfds
  from PIL import Image

  png_dir = os.path.join(data_dir, "png")
  os.makedirs(png_dir, exist_ok=True)

  class TinyCifar(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(32, 32, 3)),
          "label": tfds.features.ClassLabel(num_classes=10)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(96, 0), "test": self._generate_examples(32, 1)}

    def _generate_examples(self, num, seed):
      rng = np.random.default_rng(seed)
      for i in range(num):
        path = os.path.join(png_dir, f"{seed}_{i}.png")
        label = i % 10  # images whose brightness tells the label
        Image.fromarray(np.clip(rng.normal(25 * label, 20, (32, 32, 3)), 0, 255).astype(
            np.uint8)).save(path)
        yield i, {"image": path, "label": label}

  TinyCifar(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return "tiny_cifar"


def test_a_tfds_set_by_name_and_split_trains_with_conv_nets_on_its_own_image_shape(tmp_path):
  name = _tfds_set(str(tmp_path / "tfds"))
  base = {"name": f"tfds:{name}", "data_dir": str(tmp_path / "tfds"), "range": "unit",
          "train_split": "train[:64]", "test_split": "test"}
  dataset = data.load(base)
  assert dataset.train["y"].shape == (64, 32, 32, 3) and dataset.test["y"].shape == (32, 32, 32, 3)
  assert dataset.value_range == (0.0, 1.0) and 0.0 <= dataset.train["y"].min() <= 1.0
  streamed = data.load({**base, "pipeline": "stream"})
  assert isinstance(streamed.train["y"], sources.LazyArray)
  rows = [3, 60, 0]  # random access reads the same rows, pre-processed the same way
  np.testing.assert_array_equal(streamed.train["y"][rows], dataset.train["y"][rows])
  np.testing.assert_array_equal(streamed.train["label"][rows], dataset.train["label"][rows])
  # The CIFAR-10 config (a conv VAE on 32 × 32 × 3 images) on it, streamed, two devices.
  workdir = tmp_path / "run"
  _cli(workdir, f"--config.data.name=tfds:{name}", f"--config.data.data_dir={tmp_path / 'tfds'}",
       "--config.data.train_split=train[:64]", "--config.data.pipeline=stream",
       "--config.train.batch_size=16", devices=2, config="experiments/cifar10.py:quick")
  tests = [r for r in read_metrics(str(workdir / "metrics.jsonl")) if r["split"] == "test"]
  assert tests[-1]["step"] == 8 and np.isfinite(tests[-1]["nelbo"])
  # A split the set does not have is one line naming it.
  proc = _cli(tmp_path / "bad", f"--config.data.name=tfds:{name}",
              f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.test_split=valid",
              config="experiments/cifar10.py:quick", check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f"error: dataset 'tfds:{name}' (split 'valid') is not prepared")


def _write_npz(path, num, dim, seed=0):
  rng = np.random.default_rng(seed)
  # np.savez stores arrays uncompressed: read by random access (savez_compressed would not be)
  np.savez(path, train=rng.uniform(size=(num, dim)).astype(np.float32),
           test=rng.uniform(size=(64, dim)).astype(np.float32))


def test_an_uncompressed_npz_is_read_row_by_row_and_a_compressed_one_refused_for_stream(tmp_path):
  _write_npz(tmp_path / "a.npz", 300, 7)
  member = sources.NpyMember(str(tmp_path / "a.npz"), "train")
  with np.load(tmp_path / "a.npz") as f:
    np.testing.assert_array_equal(member.read(np.array([299, 0, 17])), f["train"][[299, 0, 17]])
  rng = np.random.default_rng(0)
  np.savez_compressed(tmp_path / "c.npz", train=rng.uniform(size=(10, 4)),
                      test=rng.uniform(size=(5, 4)))
  with pytest.raises(ValueError, match="compressed .*np.savez"):
    sources.NpyMember(str(tmp_path / "c.npz"), "train")


def test_a_resident_set_over_the_budget_is_refused_and_streams_instead(tmp_path):
  _write_npz(tmp_path / "big.npz", 20000, 784)  # 62.7 MB of float32 training rows
  common = [f"--config.data.name=npz:{tmp_path / 'big.npz'}", "--config.data.range=raw",
            "--config.data.memory_budget_gb=0.05", "--config.train.num_epochs=1",
            "--config.train.eval_every=1000000", "--config.train.checkpoint_every=1000000"]
  proc = _cli(tmp_path / "resident", *common, check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f"error: dataset 'npz:{tmp_path / 'big.npz'}': the train split (20000 examples of shape "
      "(784,)) takes 0.0627 GB resident as float32 but data.memory_budget_gb = 0.05 is 0.05 GB: "
      "set data.pipeline=stream")
  assert not (tmp_path / "resident" / "config.json").exists()
  _cli(tmp_path / "stream", *common, "--config.data.pipeline=stream")
  assert read_metrics(str(tmp_path / "stream" / "metrics.jsonl"))[-1]["step"] == 78


# The peak from /proc/self/status (VmHWM, this process's memory map): getrusage's ru_maxrss
# would carry over the forking pytest worker's peak across exec.
PEAK_RSS = '''
import sys
from energy_ae import train
from experiments import common
config = common.load_config("ae", "quick", **{
    "data.name": "npz:" + sys.argv[1], "data.range": "raw", "data.pipeline": sys.argv[2],
    "train.num_epochs": 1, "train.linear_probe": False, "train.eval_every": 10**6,
    "train.checkpoint_every": 10**6, "train.progress": False, "data.max_test_examples": 64})
train.train_and_evaluate(config, sys.argv[3])
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]) * 1024)
'''


@pytest.mark.slow  # writes 0.5 GB and trains three times
def test_a_streamed_set_larger_than_memory_budget_trains_with_bounded_resident_memory(tmp_path):
  # The resident run holds the split (0.5 GB as float32, host and device copies); the streamed
  # run holds a few batches. Peak RSS measured in each process; the margins are a quarter of
  # the set, far above the tens of MB a JAX process's RSS varies by between runs.
  num, dim = 160000, 784
  _write_npz(tmp_path / "big.npz", num, dim)
  _write_npz(tmp_path / "small.npz", 2000, dim)
  size = num * dim * 4

  def peak(name, pipeline):
    proc = run_python(["-c", PEAK_RSS, str(tmp_path / name), pipeline, str(tmp_path / pipeline
                                                                           / name)])
    return int(proc.stdout.strip().splitlines()[-1])

  baseline = peak("small.npz", "resident")
  streamed = peak("big.npz", "stream")
  resident = peak("big.npz", "resident")
  assert streamed - baseline < 0.25 * size, (baseline, streamed, resident, size)
  assert resident - streamed > 0.75 * size, (baseline, streamed, resident, size)
