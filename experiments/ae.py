r"""Under-complete autoencoder of the practicum: 784 → 30 (tanh) → 784 (tanh) on [−1, 1] images.

  python -m experiments.run --config=experiments/ae.py
  python -m experiments.run --config=experiments/ae.py --config.model.latent_dim=500

Training budget: 300 epochs of the 4,000 embedded digits at batch 256 (15 steps an epoch,
4,500 steps), the order of the notebook's 20 epochs of 60,000 MNIST images (~4,700 steps).
Test curve of this config (C = Σ_j (y_j − ỹ_j)² on [−1, 1] images, 1,000 test digits, run for
400 epochs): 61.2, 47.0, 42.5, 40.5 at epochs 100, 200, 300, 400. It never overfits (the test
loss still falls at 400 epochs, by 5 % over the last 100), so there is no early-stopping point
to take; 300 epochs keep the notebook's step budget, and the last 100 of a 400-epoch run would
buy 0.2 dB for a third more time. At 300 epochs the test PSNR is ≈ 19 dB (½(y + 1) units) and
every digit of the reconstruction row is recognisable.
"""

from experiments import common


def get_config(arg: str | None = None):
  config = common.base_config(arg)
  config.data.range = "symmetric"  # (x − 0.5) / 0.5
  config.model.name = "ae"
  config.model.latent_dim = 30
  config.model.architecture = "mlp"  # or 'conv'
  config.model.encoder_widths = ()  # hidden layers before the code h
  config.model.decoder_widths = ()
  config.model.activation = "relu"  # hidden layers
  config.model.latent_activation = "tanh"  # f
  config.model.output_activation = "tanh"  # g
  # Every role the model can use, R disabled (term ""), so that the command line can switch
  # it on: --config.model.energy.R.term=l1 --config.model.energy.R.weight=0.01.
  config.model.energy = {"C": {"term": "squared_error", "weight": 1.0},
                         "R": {"term": "", "weight": 1.0}}
  config.train.num_epochs = 300  # the notebook's ~4,700 steps (see the docstring)
  config.train.eval_every = 750  # a test point every 50 epochs
  # Samples: Dec(z), z from a Gaussian mixture fitted to the training codes (no other sampler
  # fits a deterministic autoencoder); the DAE adds its walk-back chain.
  config.sample.sampler = "gmm"
  config.sample.gmm_components = 10
  if arg == "quick":
    common.quick(config)
  return config
