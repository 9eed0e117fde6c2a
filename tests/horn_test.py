"""The conditional "horn" model: a dataset with an input x beside y, and a model reading it."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from energy_ae import data, models, train
from energy_ae.metrics_io import read_metrics
from experiments import ellipse as ellipse_config, horn as horn_config

RHO_ENDS = np.array([[2.0, 1.5], [1.5 * np.e**2, 2.0 * np.e**2]])  # ρ(0), ρ(1) of the lecture


def test_horn_radii_follow_the_lecture():
  # ρ(x) = [αx + β(1 − x), βx + α(1 − x)]·e^{2x}, α = 1.5, β = 2, at both ends and halfway.
  np.testing.assert_allclose(data.horn_radii(np.array([0.0, 1.0])), RHO_ENDS, rtol=1e-12)
  np.testing.assert_allclose(data.horn_radii(0.5), [1.75 * np.e, 1.75 * np.e], rtol=1e-12)


def test_horn_dataset_carries_x_and_y_on_the_horn():
  config = horn_config.get_config().data
  ds = data.load(config)
  n = 51 * config.num_train
  assert ds.train["x"].shape == (n, 1) and ds.train["y"].shape == (n, 2)
  assert ds.test["x"].shape == (51 * config.num_test, 1)
  assert ds.train["x"].dtype == np.float32
  # Every x ∈ [0 : 1/50 : 1], num_train samples each.
  values, counts = np.unique(ds.train["x"], return_counts=True)
  np.testing.assert_allclose(values, np.linspace(0, 1, 51), atol=1e-7)
  assert set(counts) == {config.num_train}
  assert set(data.model_inputs(ds.train)) == {"y", "x"}

  # Without noise every y lies on the ellipse of its x: (y₁/ρ₁)² + (y₂/ρ₂)² = 1 up to float32
  # rounding (relative 6e-8 on each y, so 1e-6 on the sum).
  clean = data.load(dict(config.to_dict(), noise=0.0))
  rho = data.horn_radii(clean.train["x"][:, 0])
  r2 = np.sum(np.square(clean.train["y"] / rho), -1)
  np.testing.assert_allclose(r2, 1.0, atol=1e-6)

  # With noise σ = 1/20: y − ρ(x)⊙[cos θ, sin θ] has per-component std σ. The radial residual
  # ‖y ⊘ ρ‖ − 1 ≈ ε_r/ρ_r is checked through its scaled version (‖y ⊘ ρ‖ − 1)·ρ_r, with
  # ρ_r = 1/‖ĝ ⊘ ρ‖ the radius along the sample's direction: its std is σ; over n ≈ 1224
  # samples the sample std is within σ·(1 ± 5/√(2n)) (5 standard errors).
  g_hat = ds.train["y"] / rho
  norm = np.linalg.norm(g_hat, axis=-1)
  rho_r = 1.0 / np.linalg.norm((g_hat / norm[:, None]) / rho, axis=-1)
  residual = (norm - 1.0) * rho_r
  sigma = config.noise
  assert abs(residual.mean()) < 5 * sigma / np.sqrt(n)
  assert abs(residual.std() / sigma - 1) < 5 / np.sqrt(2 * n)


def test_datasets_without_x_are_unchanged():
  ds = data.load(ellipse_config.get_config().data)
  assert "x" not in ds.train and set(data.model_inputs(ds.train)) == {"y"}


def test_mismatched_x_is_refused():
  @data.register_dataset("_horn_bad_x")
  def _bad(config):
    y = np.zeros((4, 2), np.float32)
    return ({"y": y, "x": np.zeros((3, 1), np.float32), "label": np.zeros(4)},
            {"y": y, "label": np.zeros(4)}, (0.0, 1.0))

  with pytest.raises(data.DataError, match="3 'x' values for 4 examples"):
    data.load({"name": "_horn_bad_x"})


def _quick(config, **train):
  config.train.progress = False
  config.train.linear_probe = False
  for key, value in train.items():
    config.train[key] = value
  return config


def test_horn_trains_through_the_trainer(tmp_path):
  # Mini-batches of 204 (6 per epoch), so x and y must be gathered by the same shuffled indices:
  # a mismatch would pair y with the wrong ellipse and the fit below would not happen.
  config = _quick(horn_config.get_config("quick"), batch_size=204, num_epochs=40,
                  eval_every=10**9, checkpoint_every=10**9)
  workdir = str(tmp_path)
  final = train.train_and_evaluate(config, workdir)
  records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  test = [r for r in records if r["split"] == "test"]
  losses = [r["loss"] for r in records if r["split"] == "train"]
  assert test[0]["step"] == 0 and test[-1]["step"] == 240
  assert losses[-1] < 0.1 * losses[0]
  assert final["free_energy"] < 0.1 * test[0]["free_energy"]

  def radius_error(metrics):
    fitted = np.array([[metrics["radius1_x0"], metrics["radius2_x0"]],
                       [metrics["radius1_x1"], metrics["radius2_x1"]]])
    return np.abs(fitted / RHO_ENDS - 1)

  # The untrained radii start at 2 (init_radius): ≥ 80% off at x = 1, where the loss weighs
  # most (a misfit δ costs δ²/2 whatever the radius, and ρ(1) is 7 times ρ(0)). After 240 quick
  # steps they are within 10% there, and the summed error of both ends has halved; the slow
  # end x = 0 needs the full run's 3,000 steps (a few percent: figure_facts_ellipse).
  assert radius_error(test[0])[1].min() > 0.8
  assert radius_error(final)[1].max() < 0.1
  assert radius_error(final).sum() < 0.5 * radius_error(test[0]).sum()

  # restore_run gives the model back with its x: the public extras read it.
  model, initial, latest, dataset = train.restore_run(config, workdir)
  assert set(data.model_inputs(dataset.test)) == {"y", "x"}
  x = jnp.array([[0.0], [1.0]])
  reported = [[final["radius1_x0"], final["radius2_x0"]], [final["radius1_x1"], final["radius2_x1"]]]
  np.testing.assert_allclose(model.extras["radii"](latest["params"], x), reported, rtol=1e-5)
  f, z_check = model.extras["free_energy"](latest["params"], jnp.asarray(dataset.test["y"]),
                                           jnp.asarray(dataset.test["x"]))
  assert f.shape == (len(dataset.test["y"]),) and z_check.shape == (len(f), 1)
  y_rec = model.decode(latest["params"], z_check, jnp.asarray(dataset.test["x"]))
  np.testing.assert_allclose(jnp.sum(jnp.square(jnp.asarray(dataset.test["y"]) - y_rec), -1), f,
                             rtol=1e-4, atol=1e-6)


def test_a_dataset_without_x_still_trains(tmp_path):
  config = _quick(ellipse_config.get_config("quick"), eval_every=10**9, checkpoint_every=10**9)
  final = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(final["free_energy"])
  _, initial, latest, _ = train.restore_run(config, str(tmp_path))
  assert not np.allclose(initial["params"]["w"], latest["params"]["w"])


def test_horn_model_shapes():
  config = horn_config.get_config("quick")
  model = models.make(config, (2,))
  batch = {"y": jnp.ones((5, 2)), "x": jnp.linspace(0, 1, 5)[:, None]}
  params = model.init(jax.random.key(0), batch)
  loss, metrics = jax.jit(model.loss)(params, batch, None)
  assert loss.shape == () and set(metrics) == {"loss", "free_energy"}
  out = jax.jit(model.evaluate)(params, batch, None)
  assert out["free_energy"].shape == (5,) and out["radius1_x0"].shape == ()
  # f's output bias starts at init_radius: f(x) ≈ init_radius + (a small ReLU-net term).
  assert model.extras["radii"](params, batch["x"]).shape == (5, 2)
  with pytest.raises(ValueError, match="zero temperature"):
    bad = horn_config.get_config("quick")
    bad.model.beta = 1.0
    models.make(bad, (2,))
