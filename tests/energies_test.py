"""Energy terms against closed forms, independent numerical references and finite differences."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from jax.test_util import check_grads

from energy_ae import energies

RNG = np.random.default_rng(0)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
  with jax.enable_x64(request.param == "float64"):
    yield jnp.dtype(request.param)


def _tol(dtype):
  return 1e-5 if dtype == jnp.float32 else 1e-10


def test_squared_error_matches_numpy_and_keeps_batch_axes(dtype):
  y = RNG.normal(size=(3, 4, 5))
  y_tilde = RNG.normal(size=(3, 4, 5))
  got = jax.jit(energies.squared_error)(jnp.asarray(y, dtype), jnp.asarray(y_tilde, dtype))
  assert got.shape == (3, 4) and got.dtype == dtype
  np.testing.assert_allclose(got, ((y - y_tilde) ** 2).sum(-1), rtol=_tol(dtype))
  got2 = energies.squared_error(jnp.asarray(y, dtype), jnp.asarray(y_tilde, dtype), feature_ndim=2)
  np.testing.assert_allclose(got2, ((y - y_tilde) ** 2).sum((-1, -2)), rtol=_tol(dtype))


def test_shape_mismatch_is_an_error_naming_both_shapes():
  with pytest.raises(ValueError, match=r"\(2, 3\).*\(3,\)"):
    energies.squared_error(jnp.zeros((2, 3)), jnp.zeros((3,)))
  with pytest.raises(ValueError, match="logits"):
    energies.bernoulli_nll(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_bernoulli_nll_matches_the_lecture_formula(dtype):
  y = RNG.uniform(size=(4, 6))
  logits = RNG.normal(size=(4, 6)) * 3
  p = 1 / (1 + np.exp(-logits))
  expected = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(-1)
  got = jax.jit(energies.bernoulli_nll)(jnp.asarray(y, dtype), jnp.asarray(logits, dtype))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bernoulli_nll_is_exact_for_huge_logits():
  y = jnp.array([[1.0, 0.0, 1.0, 0.0, 0.5]])
  logits = jnp.array([[1e9, 1e9, -1e9, -1e9, 1e9]])
  got = energies.bernoulli_nll(y, logits)
  # 0 + 1e9 + 1e9 + 0 + 0.5e9: each saturated element costs |logit| where it is wrong.
  np.testing.assert_allclose(got, [2.5e9], rtol=1e-7)
  assert np.isfinite(jax.grad(lambda x: energies.bernoulli_nll(y, x).sum())(logits)).all()


def test_categorical_nll_against_numpy(dtype):
  logits = RNG.normal(size=(5, 7))
  labels = RNG.integers(0, 7, size=5)
  y = np.eye(7)[labels]
  log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = -log_softmax[np.arange(5), labels]
  got = energies.categorical_nll(jnp.asarray(y, dtype), jnp.asarray(logits, dtype))
  np.testing.assert_allclose(got, expected, rtol=_tol(dtype) * 10)


def test_l1_l2_squared_distance(dtype):
  z = RNG.normal(size=(3, 8))
  z_tilde = RNG.normal(size=(3, 8))
  np.testing.assert_allclose(energies.l1(jnp.asarray(z, dtype)), np.abs(z).sum(-1), rtol=_tol(dtype))
  np.testing.assert_allclose(energies.l2(jnp.asarray(z, dtype)), (z**2).sum(-1), rtol=_tol(dtype))
  np.testing.assert_allclose(
      energies.squared_distance(jnp.asarray(z, dtype), jnp.asarray(z_tilde, dtype)),
      ((z - z_tilde) ** 2).sum(-1),
      rtol=_tol(dtype),
  )


def test_gaussian_kl_closed_form_and_monte_carlo():
  mu = jnp.array([0.0, 1.0, -2.0])
  logvar = jnp.log(jnp.array([1.0, 0.25, 4.0]))
  v = jnp.exp(logvar)
  np.testing.assert_allclose(
      energies.gaussian_kl(mu, logvar), 0.5 * jnp.sum(v - jnp.log(v) - 1 + mu**2), rtol=1e-6
  )
  # Monte Carlo with 1e5 samples: E_q[log q(z) − log p(z)].
  z = mu + jnp.sqrt(v) * jax.random.normal(jax.random.key(0), (100_000, 3))
  log_q = -0.5 * ((z - mu) ** 2 / v + jnp.log(2 * jnp.pi * v))
  log_p = -0.5 * (z**2 + jnp.log(2 * jnp.pi))
  mc = jnp.mean(jnp.sum(log_q - log_p, -1))
  np.testing.assert_allclose(energies.gaussian_kl(mu, logvar), mc, rtol=0.01)


def test_gaussian_kl_diag_reference_values():
  sigma_a = jnp.array([1, 2, 3, 1.5, 2.5, 3.5])
  sigma_b = jnp.array([0.5, 1, 1.5, 2, 2.5, 3])
  mu_a, mu_b = jnp.full(6, 3.0), jnp.full(6, -3.0)
  kl = jax.vmap(
      lambda ma, la, mb, lb: energies.gaussian_kl_diag(ma, la, mb, lb, feature_ndim=0)
  )(mu_a, 2 * jnp.log(sigma_a), mu_b, 2 * jnp.log(sigma_b))
  np.testing.assert_allclose(
      kl, [72.806853, 18.806853, 8.806853, 4.568932, 2.88, 2.026405], rtol=1e-6
  )
  # Against N(0, I) it reduces to gaussian_kl.
  mu, logvar = jnp.array([[0.3, -1.0]]), jnp.array([[0.2, -0.7]])
  np.testing.assert_allclose(
      energies.gaussian_kl_diag(mu, logvar, jnp.zeros_like(mu), jnp.zeros_like(mu)),
      energies.gaussian_kl(mu, logvar),
      rtol=1e-6,
  )


@pytest.mark.parametrize(
    "fn,args",
    [
        (energies.squared_error, (2,)),
        (energies.bernoulli_nll, (2,)),
        (energies.categorical_nll, (2,)),
        (energies.l2, (1,)),
        (energies.squared_distance, (2,)),
        (energies.gaussian_kl, (2,)),
    ],
)
def test_gradients_match_finite_differences(fn, args):
  with jax.enable_x64(True):
    inputs = [jnp.asarray(RNG.normal(size=(3, 4))) for _ in range(args[0])]
    if fn is energies.bernoulli_nll:
      inputs[0] = jnp.asarray(RNG.uniform(size=(3, 4)))
    check_grads(lambda *a: jnp.sum(fn(*a)), inputs, order=2, modes=["fwd", "rev"])


def test_l1_gradient_away_from_zero():
  with jax.enable_x64(True):
    z = jnp.asarray(RNG.uniform(0.5, 1.5, size=(3, 4)) * RNG.choice([-1, 1], size=(3, 4)))
    check_grads(lambda z: jnp.sum(energies.l1(z)), (z,), order=1)


def test_terms_work_under_jit_vmap_and_grad():
  y = jnp.asarray(RNG.normal(size=(6, 4)), jnp.float32)
  y_tilde = jnp.asarray(RNG.normal(size=(6, 4)), jnp.float32)
  per_example = jax.vmap(lambda a, b: energies.squared_error(a, b))(y, y_tilde)
  np.testing.assert_allclose(per_example, jax.jit(energies.squared_error)(y, y_tilde), rtol=1e-6)
  g = jax.grad(lambda b: energies.squared_error(y, b).sum())(y_tilde)
  np.testing.assert_allclose(g, 2 * (y_tilde - y), rtol=1e-6)


def _sigmoid_layer(seed=0, n_in=12, n_out=5):
  k1, k2 = jax.random.split(jax.random.key(seed))
  kernel = jax.random.normal(k1, (n_in, n_out))
  bias = jax.random.normal(k2, (n_out,))
  return kernel, bias


@pytest.mark.parametrize("n_in,n_out", [(12, 5), (4, 9)])  # reverse- and forward-mode paths
def test_contractive_generic_equals_sigmoid_closed_form(n_in, n_out):
  kernel, bias = _sigmoid_layer(n_in=n_in, n_out=n_out)
  encode = lambda y: jax.nn.sigmoid(y @ kernel + bias)
  y = jax.random.normal(jax.random.key(1), (2, 3, n_in))
  generic = jax.jit(lambda y: energies.contractive(encode, y))(y)
  closed = energies.contractive_sigmoid(encode(y), kernel)
  assert generic.shape == (2, 3)
  np.testing.assert_allclose(generic, closed, rtol=1e-5)


def test_contractive_against_finite_difference_jacobian():
  kernel, bias = _sigmoid_layer(n_in=6, n_out=3)
  encode = lambda y: jnp.tanh(y @ kernel + bias) ** 2
  y = np.asarray(jax.random.normal(jax.random.key(2), (6,)), np.float64)
  eps = 1e-4
  f = lambda y: np.asarray(encode(jnp.asarray(y, jnp.float32)), np.float64)
  jac = np.stack([(f(y + eps * e) - f(y - eps * e)) / (2 * eps) for e in np.eye(6)], axis=1)
  np.testing.assert_allclose(
      energies.contractive(encode, jnp.asarray(y, jnp.float32)), (jac**2).sum(), rtol=1e-3
  )


def test_make_energy_weighted_sum_and_named_terms():
  energy = energies.make_energy(
      {"C": "squared_error", "R": ("l1", 0.1), "D": {"term": "squared_distance", "weight": 2.0}}
  )
  y, y_tilde = jnp.ones((3, 4)), jnp.zeros((3, 4))
  z, z_tilde = jnp.full((3, 2), -1.0), jnp.zeros((3, 2))
  total, terms = energy(y=y, y_tilde=y_tilde, z=z, z_tilde=z_tilde)
  assert set(terms) == {"C", "R", "D"}
  np.testing.assert_allclose(terms["C"], 4.0)
  np.testing.assert_allclose(terms["R"], 2.0)
  np.testing.assert_allclose(terms["D"], 2.0)
  np.testing.assert_allclose(total, 4.0 + 0.1 * 2.0 + 2.0 * 2.0)


def test_make_energy_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown energy term 'nope'.*squared_error"):
    energies.make_energy({"C": "nope"})
  with pytest.raises(ValueError, match="needs \\['z_tilde'\\]"):
    energies.make_energy({"D": "squared_distance"})(z=jnp.zeros((1, 2)))
  with pytest.raises(ValueError, match="no keyword hyper-parameter 'delta'"):
    energies.make_energy({"C": ("squared_error", 1.0, {"delta": 1.0})})
  with pytest.raises(ValueError, match="weight"):
    energies.make_energy({"C": ("squared_error", -1.0)})


def test_a_new_term_is_one_function_and_one_registration():
  @energies.register_term("huber_test")
  def huber(y, y_tilde, *, delta=1.0, feature_ndim=1):
    """C(y, ỹ) = Σ Huber_δ(y − ỹ)."""
    r = jnp.abs(y - y_tilde)
    per_element = jnp.where(r < delta, 0.5 * r**2, delta * (r - 0.5 * delta))
    return jnp.sum(per_element, axis=tuple(range(-feature_ndim, 0)))

  energy = energies.make_energy({"C": ("huber_test", 1.0, {"delta": 0.5})})
  total, terms = energy(y=jnp.array([[0.0, 2.0]]), y_tilde=jnp.zeros((1, 2)))
  np.testing.assert_allclose(total, [0.5 * (2.0 - 0.25)])
  assert "huber_test" in energies.term_names()
