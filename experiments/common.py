"""Keys shared by every experiment config; each config file overrides what it needs."""

import importlib

import ml_collections

from energy_ae import config_keys


def load_config(name: str, variant: str | None = None, **overrides) -> ml_collections.ConfigDict:
  """``experiments/<name>.py``'s ``get_config(variant)`` with dotted ``overrides``
  (``load_config("vae", "quick", **{"model.beta": 4.0})``): the one way the figures, the
  benchmark and the tests load an experiment config."""
  return apply_overrides(importlib.import_module(f"experiments.{name}").get_config(variant),
                         overrides)


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
  """Sets each ``{"dotted.key": value}`` of ``overrides`` (existing keys only, as the CLI)."""
  return config_keys.apply(config, overrides)


VARIANTS = ("quick",)  # --config=FILE:VARIANT; none: the full experiment


def base_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The shared keys; ``variant`` (the ``:quick`` of ``--config=FILE:quick``) is checked here
  so that a typo is an error, not a silent full run."""
  if variant not in (None, "", *VARIANTS):
    raise ValueError(f"unknown config variant {variant!r}; known variants: "
                     f"{', '.join(VARIANTS)} (or none, for the full experiment)")
  config = ml_collections.ConfigDict()
  config.seed = 0
  # JAX's persistent compilation cache for experiments.run ('' for none): a repeated run
  # loads its compiled programs. The JAX_COMPILATION_CACHE_DIR environment variable wins.
  config.compilation_cache_dir = "~/.cache/energy_ae/jax"
  config.compilation_cache_min_seconds = 0.0  # cache programs that compiled faster than this too
  config.compilation_cache_max_gb = 1.0  # the cache's size bound (least recently used go first)

  config.data = ml_collections.ConfigDict()
  config.data.name = "mnist5k"
  config.data.range = "unit"  # 'unit' [0, 1], 'symmetric' [-1, 1], 'raw'
  config.data.flatten = True
  config.data.binarize = "none"  # or 'dynamic': y ~ Bernoulli(y) per step
  # With 'dynamic', the test split is binarised once, by numpy's default_rng(this seed).
  config.data.test_binarization_seed = 0
  config.data.data_dir = ""  # for tfds:<name>: where it was prepared (array_record files)
  config.data.train_split = "train"  # tfds:<name>'s splits (tfds syntax: "train[:90%]")
  config.data.test_split = "test"
  # 'resident': the training split in memory, on the devices ('sharded': each device holds
  # its share of the rows, 'replicated': all of them); 'stream': read from disk batch by batch
  # by a grain pipeline (stream_threads threads, stream_prefetch steps ahead), for sets beyond
  # memory. The same batches either way. A resident set that would not fit is refused
  # (memory_budget_gb > 0: the budget instead of the device's or host's available memory).
  config.data.pipeline = "resident"
  config.data.placement = "sharded"
  config.data.memory_budget_gb = 0.0
  config.data.stream_threads = 2
  config.data.stream_prefetch = 4
  config.data.max_test_examples = 0  # 0: the whole test split
  # npz:<path> data: the (low, high) its stored values live in; () guesses: integer data in
  # 0 … 255 are 8-bit pixels, floats in [0, 1] are unit pixels, anything else its own min … max.
  config.data.pixel_range = ()

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 256
  config.train.num_epochs = 20
  config.train.optimizer = "adam"
  config.train.optimizer_kwargs = {}  # passed to the optimiser, e.g. {"eps": 1e-4} for Adam
  config.train.learning_rate = 1e-3
  # 'constant'; 'cosine': η·(0.01 + 0.99·(1 + cos πt/T)/2); 'burda': 3^i epochs at η·10^(−i/7)
  config.train.lr_schedule = "constant"
  config.train.grad_clip_norm = 0.0
  config.train.log_every = 10
  # k optimiser steps in one compiled call (lax.scan): the same results as k = 1, fewer
  # dispatches; logs, evaluations and checkpoints fall on the dispatch that crosses them.
  config.train.steps_per_dispatch = 1
  config.train.eval_every = 100
  config.train.eval_at_start = True  # a test record at step 0, before any update
  config.train.eval_batch_size = 500
  # At each evaluation (models with an encoder, data sets with labels): the test accuracy
  # of a ridge classifier fitted in closed form on the device to the training codes
  # (probe_accuracy); at the final one also of scikit-learn's logistic regression
  # (probe_accuracy_logistic, at most linear_probe_max_iter iterations).
  config.train.linear_probe = True
  config.train.linear_probe_l2 = 1e-3  # λ of the ridge classifier, per training example
  config.train.linear_probe_max_iter = 1000
  config.train.linear_probe_examples = 0  # training codes the probe is fitted on (0: all)
  config.train.checkpoint_every = 200
  config.train.checkpoints_to_keep = 3
  config.train.progress = True
  # A step with a non-finite loss, gradient or parameter is never applied; 'stop' ends
  # the run naming the step and terms, 'skip' goes on and counts it (nonfinite_steps),
  # stopping after max_consecutive_nonfinite skipped steps in a row.
  config.train.on_nonfinite = "stop"
  config.train.max_consecutive_nonfinite = 10

  config.model = ml_collections.ConfigDict()
  config.model.name = ""
  config.model.latent_dim = 1

  # Several variants trained at once, one step vmapped over them (energy_ae.sweep): the key
  # of one scalar that changes no shape and its values, e.g. --config.sweep.key=model.beta
  # --config.sweep.values=0.1,1,10; several keys make a grid, one tuple of values per key:
  # --config.sweep.key=model.beta,seed --config.sweep.values='(0.5,2),(0,1,2)'. Each variant
  # writes WORKDIR/sweep/<key>=<value>[,<key>=<value>...]/.
  config.sweep = ml_collections.ConfigDict()
  config.sweep.key = ""
  config.sweep.values = ()
  # A variant whose step turns non-finite (train.on_nonfinite gave up on it): 'freeze' it and
  # train the others on, or 'stop' the sweep.
  config.sweep.on_nonfinite = "freeze"

  # Sampling (energy_ae.samplers; python -m experiments.sample --workdir=RUN --sampler=NAME):
  # each model's config sets its default sampler and the values that work for it.
  config.sample = ml_collections.ConfigDict()
  config.sample.sampler = "gmm"  # langevin, mala, walkback, gmm, prior (as the model allows)
  config.sample.num_samples = 1000  # drawn and scored (Markov chains: one chain per sample)
  config.sample.num_steps = 500  # chain length (langevin, mala, walkback)
  # Where the chains start: 'noise' (uniform in the data's range) or 'data' (training examples:
  # then the samples are only as new as the chain mixes).
  config.sample.init = "noise"
  config.sample.step_size = 1e-3  # ε of Langevin / MALA: v ← v + ε ∇log p + √(2ε) ξ
  config.sample.beta = 1.0  # inverse temperature of p ∝ exp(−β F) (langevin, mala)
  config.sample.reconstruction_noise = 0.0  # σ of the walk-back's y = r(ŷ) + σ ε (0: the mean)
  config.sample.gmm_components = 10  # pythae's GaussianMixtureSampler default
  config.sample.gmm_covariance = "full"  # full, diag, tied, spherical
  # Sample quality on the digits (energy_ae.sample_quality): a small MLP trained once on the
  # embedded training digits, cached, whose features the metrics compare.
  config.sample.classifier_seed = 0
  config.sample.classifier_steps = 2000
  config.sample.classifier_batch_size = 128
  config.sample.classifier_learning_rate = 1e-3
  config.sample.pr_neighbours = 3  # k of precision / recall's k-NN balls (Kynkäänniemi et al.)

  # Multi-host: set enabled=True (or the JAX_COORDINATOR_ADDRESS environment variable).
  config.distributed = ml_collections.ConfigDict()
  config.distributed.enabled = False
  config.distributed.coordinator_address = ""
  config.distributed.num_processes = -1
  config.distributed.process_id = -1
  return config


def quick(config: ml_collections.ConfigDict, *, num_epochs: float = 2) -> ml_collections.ConfigDict:
  """A variant that finishes in seconds: few epochs, frequent logs/evals/checkpoints."""
  config.train.num_epochs = num_epochs
  config.train.log_every = 2
  config.train.eval_every = 10
  config.train.checkpoint_every = 5
  config.train.progress = False
  config.data.max_test_examples = 200
  config.train.linear_probe_examples = 1000
  # Samples: fewer and shorter chains, a classifier of a few seconds.
  config.sample.num_samples = 200
  config.sample.num_steps = min(config.sample.num_steps, 50)
  config.sample.classifier_steps = 300
  return config


def write_section(path: str, name: str, text: str) -> None:
  """Writes ``text`` into the Markdown file ``path`` as its section ``name``, between two
  comment lines that mark it: the section is replaced where the file has it, appended where it
  does not, and the rest of the file is kept (RESULTS.md holds one section per tool)."""
  import os

  begin, end = f"<!-- begin section {name} -->", f"<!-- end section {name} -->"
  block = f"{begin}\n{text.rstrip()}\n{end}\n"
  old = open(path).read() if os.path.exists(path) else ""
  if begin in old and end in old:
    head, rest = old.split(begin, 1)
    new = head + block + rest.split(end, 1)[1].lstrip("\n")
  else:
    new = old + ("\n" if old and not old.endswith("\n\n") else "") + block
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(new)
  os.replace(path + ".tmp", path)
