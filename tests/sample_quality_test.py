"""Sample-quality metrics (energy_ae.sample_quality) against closed forms, hand-worked cases
and the digits themselves."""

import math

import numpy as np
import pytest
import scipy.linalg

from energy_ae import data, sample_quality as sq
from experiments import common

NUM_SE = 4


def test_frechet_distance_matches_closed_forms():
  """Commuting (diagonal) covariances: FD = ‖μ₁ − μ₂‖² + Σ (σ₁ᵢ − σ₂ᵢ)²; general ones:
  Tr(Σ₁ + Σ₂ − 2 sqrtm(Σ₁Σ₂)) by scipy's matrix square root (an independent route)."""
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
  assert sq.frechet_distance_gaussians(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(
      expected, rel=1e-9)
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
  c1, c2 = a @ a.T + 0.1 * np.eye(3), b @ b.T
  reference = np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))
  assert sq.frechet_distance_gaussians(mu1, c1, mu1, c2) == pytest.approx(reference, rel=1e-7)
  assert sq.frechet_distance_gaussians(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("m, n", [(50, 50), (30, 70)])
def test_kid_is_unbiased_on_two_samples_of_one_law(m, n):
  """2,000 pairs of independent samples (m and n draws of N(0, I₈)): the mean KID is 0 within
  NUM_SE standard errors of the mean over pairs; the V-statistic (the diagonal k(a, a) kept),
  biased by O(1/m + 1/n), sits far above that; a shifted law (mean + 0.5) far above 0."""
  rng = np.random.default_rng(0)
  d, reps = 8, 2000
  kid, biased, shifted = [], [], []
  kernel = lambda u, v: (u @ v.T / d + 1.0) ** 3
  for _ in range(reps):
    a, b = rng.normal(size=(m, d)), rng.normal(size=(n, d))
    kid.append(sq.kernel_inception_distance(a, b))
    biased.append(kernel(a, a).mean() + kernel(b, b).mean() - 2 * kernel(a, b).mean())
    shifted.append(sq.kernel_inception_distance(a, b + 0.5))
  se = np.std(kid, ddof=1) / math.sqrt(reps)
  assert abs(np.mean(kid)) < NUM_SE * se
  assert np.mean(biased) > 10 * NUM_SE * se  # the estimator the unbiased one replaces
  assert np.mean(shifted) > 10 * NUM_SE * se


def test_precision_and_recall_by_hand_and_on_a_dropped_mode():
  """k = 1 on the line: real {0, 1, 2, 10} have radii 1, 1, 1, 8; fake {0.5, 5, 20} radii 4.5,
  4.5, 15. Fake 0.5 ∈ B(0, 1), 5 ∈ B(10, 8), 20 in no real ball: precision 2/3; every real
  point is in a fake ball (10 ∈ B(20, 15)): recall 1."""
  real, fake = np.array([[0.0], [1.0], [2.0], [10.0]]), np.array([[0.5], [5.0], [20.0]])
  assert sq.precision_recall(real, fake, k=1) == pytest.approx((2 / 3, 1.0))
  # Two far modes (±5 e₁) in the real data, samples from one: all samples are realistic, half
  # of the real data is never covered. With 1,000 points in 2-D the k = 3 balls cover all but a
  # thin rim of each mode (0.98 on the identical laws below).
  rng = np.random.default_rng(0)
  modes = np.where(rng.uniform(size=(1000, 1)) < 0.5, 5.0, -5.0) * np.array([1.0, 0.0])
  real = modes + rng.normal(size=(1000, 2))
  same = np.where(rng.uniform(size=(1000, 1)) < 0.5, 5.0, -5.0) * np.array([1.0, 0.0]) + \
      rng.normal(size=(1000, 2))
  one_mode = np.array([5.0, 0.0]) + rng.normal(size=(1000, 2))
  p_same, r_same = sq.precision_recall(real, same, k=3)
  assert p_same > 0.9 and r_same > 0.9
  p_one, r_one = sq.precision_recall(real, one_mode, k=3)
  half = np.mean(real[:, 0] > 0)
  assert p_one > 0.9
  # Recall: the fraction of real points in the covered mode, times that mode's coverage.
  assert r_one <= half + NUM_SE * math.sqrt(0.25 / 1000) and r_one > 0.9 * half
  assert sq.precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)


def test_label_entropy():
  logits = np.eye(10)[np.arange(1000) % 10]
  assert sq.label_entropy(logits) == (pytest.approx(math.log(10)), [100] * 10)
  assert sq.label_entropy(np.eye(10)[np.zeros(50, int)])[0] == 0.0


@pytest.fixture(scope="module")
def digit_scorer(tmp_path_factory):
  """A classifier of 300 steps (the cached one takes ``sample.classifier_steps``), cached in a
  temporary directory."""
  sc = common.load_config("vae").sample
  sc.classifier_steps = 300
  cache = str(tmp_path_factory.mktemp("classifier"))
  dataset = data.load({"name": "mnist5k", "range": "unit", "flatten": True})
  return sq.make_scorer(dataset, sc, cache), sc, cache


def test_classifier_is_cached_and_reused(digit_scorer):
  scorer, sc, cache = digit_scorer
  # 300 steps of a 784-256-128-10 MLP: well above the 10% of chance on the held-out digits.
  assert scorer.info["test_accuracy"] > 0.85
  params, info = sq.load_or_train_classifier(cache, sq.classifier_spec(sc))
  assert info == {k: v for k, v in scorer.info.items() if k not in ("features", "cache_dir")}
  sc.classifier_seed = 1  # another classifier: not the cached one
  assert sq.load_or_train_classifier(cache, sq.classifier_spec(sc), )[1]["spec"]["seed"] == 1


def test_held_out_digits_score_near_zero_noise_and_one_digit_badly(digit_scorer):
  """1,000 held-out test digits against the 4,000 training digits, uniform noise, and the first
  training digit 1,000 times. "Near zero": FD and KID of the held-out digits below 1% of the
  bad references' (they differ by orders of magnitude); the held-out digits' precision and
  recall high, their labels spread over the ten digits (entropy within 2% of log 10: a
  multinomial of 1,000 draws over ten near-equal classes loses ~0.005 nats); noise is not
  realistic (precision ~0), one digit covers nothing (recall ≤ 1/1,000, its own copy) and
  has label entropy 0."""
  scorer = digit_scorer[0]
  b = sq.baselines(scorer, 1000)
  held, noise, one = b["held_out"], b["noise"], b["one_example"]
  for metric in ("fd", "kid"):
    assert held[metric] < 0.01 * min(noise[metric], one[metric]), (metric, held, noise, one)
  assert held["precision"] > 0.8 and held["recall"] > 0.8
  assert held["label_entropy"] > 0.98 * math.log(10)
  assert noise["precision"] < 0.1 and noise["recall"] < 0.1
  assert one["recall"] <= 1 / 1000 and one["label_entropy"] == 0.0
