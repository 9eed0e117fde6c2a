r"""Samples of a trained run by any sampler its model supports, as PNGs, with their quality.

  python -m experiments.sample --workdir=runs/vae [--sampler=prior|gmm] [--num=16] [--seed=0]
  python -m experiments.sample --workdir=runs/ellipse --sampler=langevin --step_size=1e-4
  python -m experiments.sample --workdir=runs/dae --sampler=walkback --init=data

Restores the latest checkpoint of the run in WORKDIR (its ``config.json`` says which model and
data, and its ``sample`` block how to sample: ``energy_ae.samplers``; a run older than that
block takes its model's experiment config's), draws ``sample.num_samples`` samples (at least
--num) with key --seed, and writes under ``WORKDIR/samples/``:

* ``samples.png`` (the run's default sampler, ``sample.sampler``) or ``samples_<NAME>.png``
  (--sampler=NAME): the first --num samples (digits as a mosaic, 2-D data as points over the
  training data);
* for image models with an encoder, ``reconstructions.png`` (test images over their
  reconstructions) and ``interpolation.png`` (decoded codes on the line between the first two
  test images of different digits);
* ``quality.json``: per sampler, the samples' quality against the training split (a larger
  fresh draw for a small synthetic one: ``sample_quality.reference_dataset``; Fréchet
  distance, KID, precision / recall, label entropy: ``energy_ae.sample_quality``),
  the sampler's keys and diagnostics, the seed; on the digits the classifier they were measured
  with is trained once and cached in --classifier_dir (default ``WORKDIR/samples/classifier``).

The --step_size, --num_steps, --beta, --num_samples and --init flags override ``config.sample``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags, defined only when run as a program (experiments.sample_quality
  imports this module's functions with its own flags)."""
  flags.DEFINE_string("workdir", None, "A trained run (a --workdir of experiments.run).")
  flags.DEFINE_string("sampler", None, "langevin, mala, walkback, gmm or prior, as the model "
                      "supports (default: the run's config.sample.sampler).")
  flags.DEFINE_integer("num", 16, "Samples, reconstructions and interpolation steps shown.")
  flags.DEFINE_integer("seed", 0, "Key of the sampler.")
  flags.DEFINE_integer("num_samples", None, "config.sample.num_samples: samples drawn and scored.")
  flags.DEFINE_integer("num_steps", None, "config.sample.num_steps: Markov chain length.")
  flags.DEFINE_float("step_size", None, "config.sample.step_size: ε of Langevin / MALA.")
  flags.DEFINE_float("beta", None, "config.sample.beta: inverse temperature.")
  flags.DEFINE_string("init", None, "config.sample.init: noise or data.")
  flags.DEFINE_string("classifier_dir", None, "Where the digit classifier is cached "
                      "(default WORKDIR/samples/classifier).")
  flags.DEFINE_bool("quality", True, "Measure the samples' quality (quality.json).")


OVERRIDES = ("num_samples", "num_steps", "step_size", "beta", "init")


def sample_config_of(config):
  """The run's ``config.sample``, or (a run from before that block) its model's experiment
  config's; a copy, free to change."""
  import ml_collections

  if "sample" in config:
    return ml_collections.ConfigDict(config.sample.to_dict())
  name = config.model.name
  try:
    module = importlib.import_module(f"experiments.{'spiral_dae' if config.data.name == 'spiral' else name}")
  except ModuleNotFoundError:
    module = importlib.import_module("experiments.common")
    return module.base_config().sample
  return module.get_config().sample


def draw_and_score(model, params, dataset, sc, *, seed: int, scorer=None):
  """(Samples, quality entry) of ``sc.num_samples`` samples by ``sc.sampler`` with key ``seed``;
  the entry holds the sampler's keys, its diagnostics and, given a ``scorer``, the metrics."""
  import jax

  from energy_ae import sample_quality, samplers

  samples = samplers.draw(model, params, jax.random.key(seed), sc, train=dataset.train,
                          value_range=dataset.value_range)
  if samples.info.get("finite_fraction", 1.0) < 1.0:
    raise ValueError(f"config.sample.step_size = {sc.step_size!r}: {1 - samples.info['finite_fraction']:.1%} "
                     f"of the {sc.sampler} chains diverged (non-finite); try a smaller step")
  keys = ("sampler", "num_samples", "num_steps", "step_size", "beta", "init",
          "reconstruction_noise", "gmm_components", "gmm_covariance")
  entry = {"seed": seed, "sample_config": {k: sc[k] for k in keys}, "info": dict(samples.info)}
  if scorer is not None:
    entry["metrics"] = sample_quality.score(scorer, samples.y, samples.x,
                                            value_range=dataset.value_range, seed=seed)
    entry["features"] = scorer.info
  return samples, entry


def image_tile(dataset):
  """The (H, W) of one example drawn as an image, or None for data that are not images."""
  import numpy as np

  size = int(np.prod(dataset.train["y"].shape[1:]))
  side = int(round(np.sqrt(size)))
  return (side, side) if side * side == size and size > 3 else None


def write_figures(out_dir, name, title, samples, dataset, num, model=None,
                  params=None) -> list[str]:
  """The PNGs of the module docstring (the samples' as ``name``.png, titled by ``title``);
  returns their paths."""
  import jax.numpy as jnp
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  from experiments.figures.common import image_grid, show_mosaic

  tile = image_tile(dataset)
  low, high = dataset.value_range
  unit = lambda a: np.clip((np.asarray(a).reshape(len(a), -1) - low) / (high - low), 0, 1)
  paths = []

  def save(fig, file):
    path = os.path.join(out_dir, file)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    paths.append(path)

  def mosaic(images, rows, cols, title, file):
    m = image_grid(images, rows, cols, tile)
    fig, ax = plt.subplots(figsize=(max(4, m.shape[1] / 28 * 0.9), max(2.5, m.shape[0] / 28 * 0.9 + 0.6)))
    show_mosaic(ax, m)
    ax.set(xticks=[], yticks=[], title=title)
    save(fig, file)

  if tile is None:  # 2-D data: the samples over the training data
    fig, ax = plt.subplots(figsize=(5, 5))
    train = np.asarray(dataset.train["y"]).reshape(len(dataset.train["y"]), -1)
    ax.scatter(train[:, 0], train[:, 1], s=4, c="0.7", label="training data")
    y = np.asarray(samples.y).reshape(len(samples.y), -1)
    colour = None if samples.x is None else np.asarray(samples.x).reshape(-1)
    ax.scatter(y[:, 0], y[:, 1], s=4, c=colour if colour is not None else "C0", label=f"{len(y)} samples")
    ax.set(aspect="equal", title=f"samples: {title}")
    ax.legend(loc="upper right", fontsize=8)
    save(fig, f"{name}.png")
    return paths
  cols = int(np.ceil(np.sqrt(num)))
  mosaic(unit(samples.y[:num]), -(-num // cols), cols, f"{num} samples: {title}", f"{name}.png")
  if model is None or model.encode is None or model.decode is None or model.reconstruct is None:
    return paths
  test = dataset.test
  y = test["y"][:num]
  recon = np.asarray(model.reconstruct(params, jnp.asarray(y)))
  mosaic(np.concatenate([unit(y), unit(recon)]), 2, num, "test images (top) and reconstructions",
         "reconstructions.png")
  labels = test["label"]
  b = int(np.flatnonzero(labels != labels[0])[0]) if len(np.unique(labels)) > 1 else 1
  codes = np.asarray(model.encode(params, jnp.asarray(test["y"][[0, b]])))
  t = np.linspace(0, 1, num)[:, None]
  path = np.asarray(model.decode(params, jnp.asarray((1 - t) * codes[0] + t * codes[1])))
  mosaic(np.concatenate([unit(test["y"][:1]), unit(path), unit(test["y"][b:b + 1])]), 1, num + 2,
         "y_a, Dec on the line Enc(y_a) → Enc(y_b), y_b", "interpolation.png")
  return paths


def update_quality(path: str, sampler: str, entry: dict) -> None:
  """Writes ``entry`` as ``sampler``'s in the JSON file at ``path`` (other samplers' kept)."""
  found = {}
  if os.path.isfile(path):
    with open(path) as f:
      found = json.load(f)
  found[sampler] = entry
  with open(path + ".tmp", "w") as f:
    json.dump(found, f, indent=1)
  os.replace(path + ".tmp", path)


def sample_run(workdir: str, sampler: str | None, num: int, seed: int, overrides: dict,
               classifier_dir: str | None, quality: bool) -> tuple[list[str], dict]:
  """Restores the run, samples, scores and writes; returns (paths written, quality entry)."""
  from energy_ae import run_dir, sample_quality, samplers, train

  config = run_dir.load_config(workdir, "--workdir=")
  sc = sample_config_of(config)
  for key, value in overrides.items():
    if value is not None:
      sc[key] = value
  sc.num_samples = max(int(sc.num_samples), num)
  if sampler is not None:
    sc.sampler = sampler
  samplers.validate(sc)
  model, _, latest, dataset = train.restore_run(config, workdir)
  if sc.sampler not in samplers.supported(model):
    flag = f"--sampler={sc.sampler}" if sampler else f"config.sample.sampler = {sc.sampler!r}"
    raise ValueError(f"{flag}: the {config.model.name} model supports "
                     f"{', '.join(samplers.supported(model)) or 'no sampler'}")
  out_dir = os.path.join(workdir, "samples")
  os.makedirs(out_dir, exist_ok=True)
  scorer = None
  if quality:
    scorer = sample_quality.make_scorer(sample_quality.reference_dataset(config.data), sc,
                                        classifier_dir or os.path.join(out_dir, "classifier"))
  samples, entry = draw_and_score(model, latest["params"], dataset, sc, seed=seed, scorer=scorer)
  name = "samples" if sampler is None else f"samples_{sc.sampler}"
  paths = write_figures(out_dir, name, sc.sampler, samples, dataset, num, model, latest["params"])
  if quality:
    update_quality(os.path.join(out_dir, "quality.json"), sc.sampler, entry)
    paths.append(os.path.join(out_dir, "quality.json"))
  return paths, entry


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir=RUN_DIR is required")
  if FLAGS.num < 2:
    print(f"error: --num={FLAGS.num}: must be >= 2", file=sys.stderr)
    sys.exit(1)
  from energy_ae import checkpoints, data

  checkpoints.quiet_orbax_logging()
  try:
    paths, entry = sample_run(FLAGS.workdir, FLAGS.sampler, FLAGS.num, FLAGS.seed,
                              {k: FLAGS[k].value for k in OVERRIDES}, FLAGS.classifier_dir,
                              FLAGS.quality)
  except (ValueError, data.DataError, checkpoints.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  metrics = entry.get("metrics", {})
  shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
  print(f"{entry['sample_config']['sampler']}: {shown}" if shown else entry["sample_config"]["sampler"])
  print(f"wrote {', '.join(paths)}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
