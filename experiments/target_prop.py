r"""Target propagation with an L1 code (predictive sparse decomposition) on the embedded digits.

  python -m experiments.run --config=experiments/target_prop.py
  python -m experiments.run --config=experiments/target_prop.py --config.model.inner_steps=50
"""

import math

from experiments import common


def get_config(arg: str | None = None):
  config = common.base_config(arg)
  config.data.range = "unit"
  config.model.name = "target_prop"
  config.model.latent_dim = 64
  config.model.architecture = "mlp"
  config.model.encoder_widths = (256,)
  config.model.decoder_widths = (256,)
  config.model.activation = "relu"
  config.model.output_activation = "sigmoid"
  config.model.energy = {
      "C": {"term": "squared_error", "weight": 1.0},
      "R": {"term": "l1", "weight": 0.05},
      "D": {"term": "squared_distance", "weight": 1.0},
  }
  config.model.inner_steps = 20
  # Nesterov momentum at its own default step (inner_lr = 0: 0.02): of sgd, momentum, adam,
  # ista and fista the fastest to within 1% of the 200-step minimum of E, in steps (5, with
  # fista) and in time (BENCHMARKS.md, the inner-loop table).
  config.model.inner_optimizer = "momentum"
  config.model.inner_lr = 0.0
  # The backtracking inner loops (ista_bt, fista_bt, fista_bt_restart): L grows to η L per
  # failed sufficient-decrease test, at most inner_max_backtracks times per inner step (a
  # static bound; 2^10 covers any initial step 1000× too long in one step, and L carries over).
  config.model.inner_backtrack_factor = 2.0
  config.model.inner_max_backtracks = 10
  # inner_relative_change = |E(z_{n−m}) − E(ž)| / |E(ž)| over the last m inner steps: what m
  # more steps would still gain. m > 1 because a linearly converging loop gains a fraction
  # (1 − ρ) of its gap per step, tiny at m = 1 even when far from the minimum, and because
  # momentum's energy does not fall monotonically; 5 is a quarter of the default 20 steps.
  config.model.inner_convergence_window = 5
  # The loss's free energy: 'min' F∞ = E(y, ž) (the lecture's target propagation), or
  # 'softmin' F_β = −(1/β) log ∫ exp(−βE) dz at a finite beta, by importance sampling with
  # num_samples draws per example from 𝒩(z̃, proposal_scale²) (σ ≥ 1/√(2β λ_D) bounds the
  # weights: 0.71 at β = 1 with D's weight λ_D = 1).
  config.model.free_energy = "min"
  config.model.beta = math.inf
  config.model.num_samples = 32
  config.model.proposal_scale = 0.75
  # The proposal q: 'encoder' (𝒩(z̃, proposal_scale²) as above) or 'laplace' (𝒩(ž, diag σ²),
  # σ_j = 1/√(β ∂²E/∂z_j²) at the inner loop's ž, at most laplace_max_scale: wider than
  # 1/√(2βλ_D) = 0.71, the width D alone gives at β = 1, so it binds only where E is flat or
  # concave along z_j). experiments/softmin_study.py compares the two.
  config.model.softmin_proposal = "encoder"
  config.model.laplace_max_scale = 1.0
  # Samples (y, z) ~ exp(−β E(y, z)) by MALA, shown as Dec(z). β = 1: E as a negative log
  # density. One ε moves y and z: the decoder makes E far more curved in z than in y (2β), and
  # εβ = 0.01 keeps ~90% of the moves (at εβ = 0.1 under 2% are accepted).
  config.sample.sampler = "mala"
  config.sample.beta = 1.0
  config.sample.step_size = 0.01
  config.sample.num_steps = 500
  if arg == "quick":
    common.quick(config)
  return config
