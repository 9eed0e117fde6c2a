"""Sample quality: how alike a model's samples and the training data are (issue #23).

Feature space: on the digits (``mnist5k``) the 128 units before the logits of a small MLP
(``Classifier``) trained once, seeded, on the 4,000 embedded training digits (cached by
``load_or_train_classifier``; its test accuracy is reported); on 2-D data the coordinates
themselves (with the condition x of a conditional model: (x, y)). Either is standardised by
the training split's per-unit mean and standard deviation. There, a sample Y is compared with
the reference X, the training split:

* ``fd``: the Fréchet distance of Gaussians fitted to both,
  ‖μ_X − μ_Y‖² + Tr(Σ_X + Σ_Y − 2 (Σ_X Σ_Y)^{1/2}) (Heusel et al. 2017's FID, with this
  classifier in place of Inception). Biased upward at finite n, so only values at equal n
  compare: every row of a table scores the same number of samples.
* ``kid``: the squared MMD with the kernel k(a, b) = (a·b/d + 1)³, by its unbiased
  U-statistic (Bińkowski et al. 2018): 0 in expectation for two samples of one law.
* ``precision`` / ``recall`` (Kynkäänniemi et al. 2019): the fraction of samples inside the
  real manifold — the union of balls around each real feature reaching its k-th nearest real
  neighbour (k = ``pr_neighbours``) — and of real features inside the samples' manifold.
  Computed against a reference subset of the samples' size (the radii depend on n).
* ``label_entropy`` (digits): the entropy in nats of the classifier's predicted labels over the
  samples, log 10 = 2.30 when every digit is as frequent, 0 for one digit (mode coverage);
  ``label_counts`` gives the histogram.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

DIGITS = "mnist5k"
NUM_CLASSES = 10

# ----------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------


def frechet_distance_gaussians(mu1, cov1, mu2, cov2) -> float:
  """‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁Σ₂)^{1/2}; Tr (Σ₁Σ₂)^{1/2} = Σ √λ of the symmetric
  PSD matrix Σ₁^{1/2} Σ₂ Σ₁^{1/2} (same eigenvalues as Σ₁Σ₂), stable where Σ₁Σ₂ is singular."""
  mu1, mu2, cov1, cov2 = (np.asarray(a, np.float64) for a in (mu1, mu2, cov1, cov2))
  w, v = np.linalg.eigh(cov1)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  lam = np.linalg.eigvalsh(root1 @ cov2 @ root1)
  cross = np.sum(np.sqrt(np.clip(lam, 0, None)))
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross)


def frechet_distance(features_a, features_b) -> float:
  """The Fréchet distance of Gaussians fitted to two feature sets (N, d)."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  return frechet_distance_gaussians(a.mean(0), np.cov(a.T, ddof=1).reshape(a.shape[1], -1),
                                    b.mean(0), np.cov(b.T, ddof=1).reshape(b.shape[1], -1))


def kernel_inception_distance(features_a, features_b) -> float:
  """Unbiased MMD² with k(a, b) = (a·b/d + 1)³: mean k over pairs i ≠ j within each set
  minus twice the mean k across them."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  d = a.shape[1]
  k = lambda u, v: (u @ v.T / d + 1.0) ** 3
  m, n = len(a), len(b)
  kaa, kbb = k(a, a), k(b, b)
  within_a = (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
  within_b = (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
  return float(within_a + within_b - 2 * k(a, b).mean())


@jax.jit
def _squared_distances(a, b):
  return jnp.maximum(jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None] - 2 * a @ b.T, 0.0)


def _kth_neighbour_radii(x: np.ndarray, k: int, chunk: int = 1000) -> np.ndarray:
  """Squared distance from each point of x to its k-th nearest other point of x."""
  out = []
  for i in range(0, len(x), chunk):
    d = np.asarray(_squared_distances(jnp.asarray(x[i:i + chunk]), jnp.asarray(x)))
    out.append(np.sort(d, axis=1)[:, k])  # column 0 is the point itself
  return np.concatenate(out)


def _inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = 1000):
  """Whether each point lies in some ball (centre, squared radius)."""
  out = []
  for i in range(0, len(points), chunk):
    d = np.asarray(_squared_distances(jnp.asarray(points[i:i + chunk]), jnp.asarray(centres)))
    out.append(np.any(d <= radii[None], axis=1))
  return np.concatenate(out)


def precision_recall(real, fake, *, k: int = 3) -> tuple[float, float]:
  """Kynkäänniemi et al.'s improved precision and recall with k-NN balls."""
  real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
  precision = _inside(fake, real, _kth_neighbour_radii(real, k)).mean()
  recall = _inside(real, fake, _kth_neighbour_radii(fake, k)).mean()
  return float(precision), float(recall)


def label_entropy(logits) -> tuple[float, list[int]]:
  """Entropy (nats) of the predicted labels' histogram, and the histogram."""
  counts = np.bincount(np.asarray(jnp.argmax(logits, -1)), minlength=logits.shape[-1])
  p = counts[counts > 0] / counts.sum()
  return float(-np.sum(p * np.log(p))), counts.tolist()


# ----------------------------------------------------------------------------
# The digit classifier
# ----------------------------------------------------------------------------


class Classifier(nn.Module):
  """A digit (flat, in [0, 1]) ↦ (features (B, 128), logits (B, 10)): an MLP 784-256-128-10
  with ReLU hidden layers; the features are the second hidden layer."""

  @nn.compact
  def __call__(self, y):
    h = nn.relu(nn.Dense(256)(y.reshape(y.shape[0], -1)))
    features = nn.relu(nn.Dense(128)(h))
    return features, nn.Dense(NUM_CLASSES)(features)


def classifier_spec(sample_config) -> dict:
  """The keys that define a trained classifier (its cache is reused only when they match)."""
  return {"data": DIGITS, "seed": int(sample_config.classifier_seed),
          "steps": int(sample_config.classifier_steps),
          "batch_size": int(sample_config.classifier_batch_size),
          "learning_rate": float(sample_config.classifier_learning_rate)}


def train_classifier(images, labels, *, seed: int, steps: int, batch_size: int,
                     learning_rate: float):
  """Adam on the mean cross-entropy, minibatches drawn with replacement from (images, labels)
  by the key of ``seed``; returns the parameters."""
  net = Classifier()
  images, labels = jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)
  k_init, k_batches = jax.random.split(jax.random.key(seed))
  params = net.init(k_init, images[:1])
  tx = optax.adam(learning_rate)

  def step(carry, key):
    params, opt = carry
    index = jax.random.randint(key, (batch_size,), 0, len(images))

    def loss(p):
      logits = net.apply(p, images[index])[1]
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels[index]).mean()

    updates, opt = tx.update(jax.grad(loss)(params), opt, params)
    return (optax.apply_updates(params, updates), opt), None

  run = jax.jit(lambda p, k: jax.lax.scan(step, (p, tx.init(p)), jax.random.split(k, steps))[0][0])
  return run(params, k_batches)


def classify(params, images, chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """(features, logits) of images (N, 784) in [0, 1], ``chunk`` at a time."""
  apply = jax.jit(Classifier().apply)
  parts = [apply(params, jnp.asarray(images[i:i + chunk], jnp.float32))
           for i in range(0, len(images), chunk)]
  return (np.concatenate([np.asarray(f) for f, _ in parts]),
          np.concatenate([np.asarray(g) for _, g in parts]))


def digits():
  """The embedded digits flat in [0, 1]: the classifier's data and the reference."""
  from energy_ae import data

  return data.load({"name": DIGITS, "range": "unit", "flatten": True})


def load_or_train_classifier(cache_dir: str, spec: dict, dataset=None) -> tuple[Any, dict]:
  """(params, info) of the classifier ``spec`` describes, from ``cache_dir`` when it holds that
  one (``classifier.json`` + ``classifier.msgpack``), else trained and written there.
  ``info``: the spec, ``test_accuracy`` and ``train_accuracy``."""
  dataset = dataset or digits()
  meta_path = os.path.join(cache_dir, "classifier.json")
  weights_path = os.path.join(cache_dir, "classifier.msgpack")
  template = Classifier().init(jax.random.key(0), jnp.zeros((1, 784)))
  if os.path.isfile(meta_path) and os.path.isfile(weights_path):
    with open(meta_path) as f:
      info = json.load(f)
    if info.get("spec") == spec:
      with open(weights_path, "rb") as f:
        return flax.serialization.from_bytes(template, f.read()), info
  params = train_classifier(dataset.train["y"], dataset.train["label"], seed=spec["seed"],
                            steps=spec["steps"], batch_size=spec["batch_size"],
                            learning_rate=spec["learning_rate"])
  info = {"spec": spec}
  for split in ("train", "test"):
    logits = classify(params, getattr(dataset, split)["y"])[1]
    info[f"{split}_accuracy"] = float(np.mean(logits.argmax(-1) == getattr(dataset, split)["label"]))
  os.makedirs(cache_dir, exist_ok=True)
  with open(weights_path, "wb") as f:
    f.write(flax.serialization.to_bytes(params))
  with open(meta_path + ".tmp", "w") as f:
    json.dump(info, f, indent=1)
  os.replace(meta_path + ".tmp", meta_path)  # the metadata last: a half-written cache is retrained
  return params, info


# ----------------------------------------------------------------------------
# Scoring samples
# ----------------------------------------------------------------------------


class Scorer(NamedTuple):
  features: Callable[..., tuple[np.ndarray, np.ndarray | None]]  # (y unit/raw, x) -> (f, logits)
  reference: np.ndarray  # features of the training split
  held_out: np.ndarray | None  # features of the test split (the real-data floor)
  pr_neighbours: int
  info: dict  # what the features are: the classifier's accuracy, or "coordinates"


def standardised(features: Callable, reference_inputs) -> Callable:
  """``features`` followed by (f − m) / s, m and s the per-unit mean and standard deviation of
  the reference's features (s of a unit constant there: 1), so that the kernel's a·b/d is of
  order 1 whatever the units (a classifier's ReLU outputs, a horn's radii up to 15) and the FD
  is in units of the reference's variances."""
  f_ref = features(*reference_inputs)[0]
  mean, std = f_ref.mean(0), f_ref.std(0)
  std = np.where(std > 1e-8 * max(float(std.max()), 1e-30), std, 1.0)

  def out(y, x=None):
    f, logits = features(y, x)
    return (np.asarray(f, np.float64) - mean) / std, logits

  return out


REFERENCE_SIZE = 4000  # at least this many reference examples of a synthetic law


def reference_dataset(data_config):
  """The data the samples are compared with: the run's own (``data.load(data_config)``) with
  its whole test split (the held-out reference; a quick run's is cut short, and a split may be
  ordered), and for a synthetic law too small for k-NN balls and moments (the ellipse's 24
  training points) a fresh draw of the same law with ≥ ``REFERENCE_SIZE`` training examples
  (``num_train`` scaled up, data seed + 1,000) as the training split."""
  from energy_ae import data

  whole = dict(data_config.to_dict() if hasattr(data_config, "to_dict") else data_config)
  whole["max_test_examples"] = 0
  dataset = data.load(whole)
  n = len(dataset.train["y"])
  if "num_train" not in whole or n >= REFERENCE_SIZE:
    return dataset
  bigger = dict(whole)
  bigger["num_train"] = int(bigger["num_train"]) * math.ceil(REFERENCE_SIZE / n)
  bigger["seed"] = int(bigger.get("seed", 0)) + 1000
  return dataset._replace(train=data.load(bigger).train)


def make_scorer(dataset, sample_config, cache_dir: str) -> Scorer | None:
  """The scorer of samples of ``dataset`` (``reference_dataset``'s: its training split is the
  reference); None where there is no feature space for it (neither the digits nor 2-D)."""
  k = int(sample_config.pr_neighbours)
  if dataset.name == DIGITS:
    real = digits()
    spec = classifier_spec(sample_config)
    params, info = load_or_train_classifier(cache_dir, spec, real)
    features = standardised(lambda y, x=None: classify(params, y), (real.train["y"],))
    return Scorer(features, features(real.train["y"])[0], features(real.test["y"])[0], k,
                  dict(info, features="classifier", cache_dir=cache_dir))
  if int(np.prod(dataset.train["y"].shape[1:])) <= 3:
    def coordinates(y, x=None):
      parts = ([] if x is None else [np.asarray(x).reshape(len(y), -1)]) + [np.asarray(y)]
      return np.concatenate(parts, -1).astype(np.float64), None

    train, test = dataset.train, dataset.test
    features = standardised(coordinates, (train["y"], train.get("x")))
    return Scorer(features, features(train["y"], train.get("x"))[0],
                  features(test["y"], test.get("x"))[0], k,
                  {"features": "coordinates" + (" (x, y)" if "x" in train else "")})
  return None


def to_unit(y, value_range: tuple[float, float]) -> np.ndarray:
  """Samples in the data's range (low, high) as flat [0, 1] vectors, clipped."""
  low, high = value_range
  y = np.asarray(y, np.float32).reshape(len(y), -1)
  return np.clip((y - low) / (high - low), 0.0, 1.0)


def score(scorer: Scorer, y, x=None, *, value_range=None, seed: int = 0) -> dict:
  """fd, kid, precision, recall (and label_entropy, label_counts on the digits) of samples
  ``y`` (in the data's ``value_range``; the digits are mapped to [0, 1]) against the training
  split; precision / recall against a seeded reference subset of len(y)."""
  if not np.all(np.isfinite(np.asarray(y))):
    raise ValueError("samples hold NaN or infinite values: no quality to measure")
  is_digits = scorer.info.get("features") == "classifier"
  f, logits = scorer.features(to_unit(y, value_range) if is_digits else np.asarray(y), x)
  n = min(len(f), len(scorer.reference))
  subset = np.random.default_rng(seed).permutation(len(scorer.reference))[:n]
  precision, recall = precision_recall(scorer.reference[subset], f[:n], k=scorer.pr_neighbours)
  out = {"num_samples": int(len(f)), "fd": frechet_distance(f, scorer.reference),
         "kid": kernel_inception_distance(f, scorer.reference),
         "precision": precision, "recall": recall}
  if logits is not None:
    out["label_entropy"], out["label_counts"] = label_entropy(logits)
  return out


def baselines(scorer: Scorer, num: int, seed: int = 0) -> dict[str, dict]:
  """The scores of references with known answers, ``num`` samples each: ``held_out`` (real
  test data, a seeded subset: the floor a model can reach), ``noise`` (uniform over the data's
  bounding box) and ``one_example`` (one training example repeated: a collapsed sampler)."""
  rng = np.random.default_rng(seed)
  is_digits = scorer.info.get("features") == "classifier"
  real = digits() if is_digits else None
  # A random subset: a split may be ordered (the horn's test split by x).
  pick = rng.permutation(len(scorer.held_out))[:num]
  out = {}
  if is_digits:
    out["held_out"] = score(scorer, real.test["y"][pick], value_range=(0.0, 1.0), seed=seed)
    out["noise"] = score(scorer, rng.uniform(size=(num, 784)), value_range=(0.0, 1.0), seed=seed)
    out["one_example"] = score(scorer, np.repeat(real.train["y"][:1], num, 0), value_range=(0.0, 1.0),
                               seed=seed)
    return out
  f = scorer.held_out[pick]
  low, high = scorer.reference.min(0), scorer.reference.max(0)
  for name, feats in (("held_out", f), ("noise", rng.uniform(low, high, (num, len(low)))),
                      ("one_example", np.repeat(scorer.reference[:1], num, 0))):
    raw = Scorer(lambda y, x=None: (np.asarray(y, np.float64), None), *scorer[1:])
    out[name] = score(raw, feats, seed=seed)
  return out
