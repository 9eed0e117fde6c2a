r"""The 2-D denoising autoencoder of week 7 ("DAE output"): a two-turn spiral in [−1, 1]²,
noisy copies of its points, and an MLP DAE that maps them back to the spiral.

  python -m experiments.run --config=experiments/spiral_dae.py

The lecture gives neither the spiral, the noise nor the network; these are the choices.
"""

from experiments import common


def get_config(arg: str | None = None):
  config = common.base_config(arg)
  config.data.name = "spiral"
  config.data.range = "raw"
  config.data.flatten = False
  config.data.turns = 2.0
  config.data.num_train = 4000
  config.data.num_test = 1000
  config.model.name = "dae"
  config.model.architecture = "mlp"
  config.model.encoder_widths = (128, 128)
  config.model.decoder_widths = (128, 128)
  config.model.activation = "relu"
  config.model.latent_dim = 64
  config.model.latent_activation = "relu"
  config.model.output_activation = "identity"
  config.model.corruption = "gaussian"
  config.model.corruption_kwargs = {"gaussian": {"sigma": 0.1}}
  # Every role the model can use, R disabled (term ""), so that the command line can switch
  # it on: --config.model.energy.R.term=l1 --config.model.energy.R.weight=0.01.
  config.model.energy = {"C": {"term": "squared_error", "weight": 1.0},
                         "R": {"term": "", "weight": 1.0}}
  config.train.batch_size = 200
  config.train.num_epochs = 150
  config.train.learning_rate = 2e-3
  config.train.eval_every = 500
  config.train.checkpoint_every = 1000
  config.train.linear_probe = False
  # The walk-back chain (corrupt, denoise) from uniform noise in [−1, 1]²: on the spiral
  # within a few steps (tests/samplers_test.py), 100 to spread along it.
  config.sample.sampler = "walkback"
  config.sample.num_steps = 100
  if arg == "quick":
    common.quick(config, num_epochs=10)
  return config
