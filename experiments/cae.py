r"""Contractive autoencoder: sigmoid code h = σ(W y + b), F = C(y, ỹ) + λ ‖∂h/∂y‖²_F.

  python -m experiments.run --config=experiments/cae.py
  python -m experiments.run --config=experiments/cae.py --config.model.contractive_weight=0.0

Training budget: 150 epochs (2,250 steps), half the AE's. Test curves of this config at λ = 5
and λ = 0, run for 400 epochs (C = Σ_j (y_j − ỹ_j)² on [0, 1] images; ‖J‖_F = ‖∂h/∂y‖_F):
  λ = 5: ‖J‖_F 0.90, 0.90, 0.89, 0.88, 0.86 and C 24.3, 21.0, 18.7, 16.0, 14.2 at epochs
         100, 150, 200, 300, 400;
  λ = 0: ‖J‖_F 6.1, 7.4, 8.7, 11.0, 13.4 and C 13.1, 9.3, 7.3, 5.4, 4.4.
Neither overfits. What the §D figures measure, the contraction that λ buys, is settled by
epoch 100 (λ = 5 holds ‖J‖_F at 0.9 while λ = 0 lets it grow, 8× larger at 150 epochs and
12× at 300); C keeps falling slowly at any λ. The figures train five such runs (a λ sweep and
a DAE of the same shape), so 150 epochs keep all the figures' training within minutes.
"""

from experiments import ae


def get_config(arg: str | None = None):
  config = ae.get_config(arg)
  config.data.range = "unit"
  config.model.name = "cae"
  config.model.latent_dim = 100
  config.model.latent_activation = "sigmoid"  # the closed form of the lecture's Fig. 4
  config.model.output_activation = "sigmoid"
  # λ (not given in the lecture): at 150 epochs 5 makes ‖∂h/∂y‖_F 8× smaller than λ = 0
  # (0.90 vs 7.4) for 2.3× the reconstruction error (21.0 vs 9.3) on the embedded digits.
  config.model.contractive_weight = 5.0
  # 'contractive_sigmoid': ‖∂h/∂y‖²_F in closed form for this one-sigmoid-layer encoder
  # (08-3, Fig. 4), about 10× cheaper; 'contractive': the exact Jacobian of any encoder
  # (needed once encoder_widths or latent_activation change).
  config.model.contractive_penalty = "contractive_sigmoid"
  if arg != "quick":  # the quick variant keeps its own few epochs
    config.train.num_epochs = 150  # see the docstring
  return config
