r"""The lecture's ellipse latent-variable energy model, trained with the energy loss ℓ = F(y).

  python -m experiments.run --config=experiments/ellipse.py
  python -m experiments.run --config=experiments/ellipse.py --config.model.free_energy=softmin \
      --config.model.beta=1.0 --config.model.softmin_estimator=mc
"""

import math

from experiments import common


def get_config(arg: str | None = None):
  config = common.base_config(arg)
  config.data.name = "ellipse"
  config.data.range = "raw"
  config.data.num_train = 24
  config.data.num_test = 240
  config.data.noise = 1 / 20

  config.model.name = "ellipse"
  config.model.latent_dim = 1
  config.model.init_w = (-1.5, 0.4)  # the lecture's untrained model
  config.model.num_latent_points = 48  # z ∈ [0 : π/24 : 2π[
  # F = F∞ = E(y, ž); 'softmin': F_β = −(1/β) log((1/2π) ∫ exp(−βE) dz) at a finite beta (a
  # finite beta with 'min' also gives F_β, as before this key existed).
  config.model.free_energy = "min"
  config.model.beta = math.inf
  # F_β by 'grid' (the num_latent_points rule) or 'mc' (importance sampling, num_samples draws
  # per example from q = α U[0, 2π[ + (1 − α) wrapped 𝒩(ž, σ²), α = proposal_uniform_weight,
  # σ = proposal_scale in radians: about the width 1/√(βE'') of exp(−βE) at β ≈ 10, E'' ≈ 8).
  config.model.softmin_estimator = "grid"
  config.model.num_samples = 256
  config.model.proposal_scale = 0.1
  config.model.proposal_uniform_weight = 0.5
  # The wrapped Gaussian's σ: 'wrapped' (proposal_scale) or 'laplace' (1/√(βE''(ž)), the width
  # of exp(−βE) at ž, for any β), at most laplace_max_scale radians (a sixth of the period:
  # wider is nearly uniform); experiments/softmin_study.py compares the two.
  config.model.softmin_proposal = "wrapped"
  config.model.laplace_max_scale = 1.0
  config.model.inference = "argmin"  # ž from the grid's best point, refined by gradient descent
  config.model.inner_steps = 30
  config.model.inner_lr = 0.1
  config.model.energy = {"C": {"term": "squared_error", "weight": 1.0}}

  config.train.batch_size = 24  # the whole training set in each step
  config.train.num_epochs = 300
  config.train.learning_rate = 0.02
  config.train.log_every = 10
  config.train.eval_every = 50
  config.train.checkpoint_every = 100
  # Samples y ~ exp(−β F(y)) by MALA (python -m experiments.sample): at β = 1/2σ² = 200 the
  # offset across the curve has the data's noise σ = 1/20 (E[F∞] = 1/2β = σ²); ε·2β = 0.8.
  config.sample.sampler = "mala"
  config.sample.beta = 200.0
  config.sample.step_size = 2e-3
  config.sample.num_steps = 1000
  if arg == "quick":
    common.quick(config, num_epochs=20)
  return config
