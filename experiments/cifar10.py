r"""A convolutional VAE on CIFAR-10 (50,000 + 10,000 images of 32 × 32 × 3) from TensorFlow
Datasets, streamed from disk: the lecture's VAE on a set larger than the embedded digits.

  # where the network is reachable, once (tfds writes array_record files to DIR):
  tfds build cifar10 --file_format=array_record --data_dir=DIR
  # then, here:
  python -m experiments.run --config=experiments/cifar10.py --config.data.data_dir=DIR

The images enter the conv encoder as 32 × 32 × 3 arrays (``data.flatten = False``); the
decoder's transposed convolutions return 32 × 32 × 3 Bernoulli means of the pixels in [0, 1]
(the cross-entropy is a bound, ``bce_iw``, not −log p(y): the pixels are not binary). The
training split is read batch by batch by a grain pipeline (``data.pipeline = 'stream'``);
``--config.data.pipeline=resident`` holds it on the devices instead (600 MB of float32,
sharded over the devices). CIFAR-10 cannot be downloaded on the machines this project is
tested on: its code path is tested on a locally prepared set of the same format
(tests/feeds_test.py), not trained on the real images here.
"""

from experiments import common


def get_config(arg: str | None = None):
  config = common.base_config(arg)
  config.data.name = "tfds:cifar10"
  config.data.range = "unit"
  config.data.flatten = False  # images as H × W × C for the conv nets
  config.data.pipeline = "stream"
  config.data.max_test_examples = 2000
  config.train.batch_size = 128
  config.train.num_epochs = 30
  config.train.eval_every = 2000
  config.train.checkpoint_every = 1000
  config.model.name = "vae"
  config.model.latent_dim = 64
  config.model.architecture = "conv"
  config.model.activation = "relu"
  config.model.likelihood = "bernoulli"
  config.model.decoder_std = 1.0
  config.model.beta = 1.0
  config.model.energy = {"R": {"term": "", "weight": 1.0}}
  config.model.objective = "elbo"
  config.model.train_samples = 1
  config.model.free_bits = 0.0
  config.model.free_bits_form = "kingma"
  config.model.iwae_gradient = "standard"
  config.model.kl_warmup_steps = 0
  config.model.iw_samples = 10
  config.model.iw_samples_final = 100
  config.model.iw_chunk = 10
  config.model.active_units_threshold = 0.01
  config.train.linear_probe_examples = 5000
  config.sample.sampler = "prior"  # Dec(z), z ~ N(0, I)
  if arg == "quick":
    common.quick(config)
    config.train.linear_probe_examples = 64
    config.model.iw_samples = config.model.iw_samples_final = 2
    config.model.iw_chunk = 2
  return config
