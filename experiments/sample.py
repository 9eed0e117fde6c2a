r"""Samples, reconstructions and an interpolation of a trained VAE, as PNGs.

  python -m experiments.sample --workdir=runs/vae [--num=16] [--seed=0]

Restores the latest checkpoint of the run in WORKDIR (its ``config.json`` says which model
and data) and writes ``WORKDIR/samples/samples.png`` (Dec(z), z ~ N(0, I)),
``reconstructions.png`` (test images over Dec(μ)) and ``interpolation.png`` (Dec on the line
from μ(y_a) to μ(y_b) between the first two test images of different digits).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A trained VAE run (a --workdir of experiments.run).")
flags.DEFINE_integer("num", 16, "Samples, reconstructions and interpolation steps.")
flags.DEFINE_integer("seed", 0, "Key of the samples z ~ N(0, I).")


def write_pngs(workdir: str, num: int, seed: int) -> list[str]:
  import jax
  import jax.numpy as jnp
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import ml_collections
  import numpy as np

  from energy_ae import train
  from experiments.figures.common import image_grid, show_mosaic

  config_path = os.path.join(workdir, "config.json")
  if not os.path.isfile(config_path):
    raise ValueError(f"--workdir={workdir} is not a run directory: it has no config.json")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.model.name != "vae":
    raise ValueError(f"--workdir={workdir} holds a {config.model.name!r} run; sampling needs a vae")
  model, _, latest, dataset = train.restore_run(config, workdir)
  params = latest["params"]
  shape = dataset.train["y"].shape[1:]
  side = int(round(np.sqrt(np.prod(shape))))
  tile = (side, side) if side * side == np.prod(shape) else (1, int(np.prod(shape)))
  z = jax.random.normal(jax.random.key(seed), (num, config.model.latent_dim))
  samples = np.asarray(model.decode(params, z))
  test = dataset.test
  y = test["y"][:num]
  recon = np.asarray(model.reconstruct(params, jnp.asarray(y)))
  b_index = int(np.flatnonzero(test["label"] != test["label"][0])[0]) if len(
      np.unique(test["label"])) > 1 else 1
  mu = np.asarray(model.encode(params, jnp.asarray(test["y"][[0, b_index]])))
  t = np.linspace(0, 1, num)[:, None]
  path = np.asarray(model.decode(params, jnp.asarray((1 - t) * mu[0] + t * mu[1])))
  low, high = dataset.value_range
  unit = lambda a: np.clip((np.asarray(a).reshape(len(a), -1) - low) / (high - low), 0, 1)

  out_dir = os.path.join(workdir, "samples")
  os.makedirs(out_dir, exist_ok=True)
  cols = int(np.ceil(np.sqrt(num)))
  pictures = {
      "samples": (image_grid(unit(samples), -(-num // cols), cols, tile),
                  f"{num} samples Dec(z), z ~ N(0, I)"),
      "reconstructions": (image_grid(np.concatenate([unit(y), unit(recon)]), 2, num, tile),
                          "test images (top) and Dec(μ) (bottom)"),
      "interpolation": (image_grid(np.concatenate([unit(test["y"][:1]), unit(path),
                                                   unit(test["y"][b_index:b_index + 1])]),
                                   1, num + 2, tile),
                        "y_a, Dec on the line μ(y_a) → μ(y_b), y_b"),
  }
  paths = []
  for name, (mosaic, title) in pictures.items():
    inches = (max(4, mosaic.shape[1] / 28 * 0.9), max(2.5, mosaic.shape[0] / 28 * 0.9 + 0.6))
    fig, ax = plt.subplots(figsize=inches)
    show_mosaic(ax, mosaic)
    ax.set(xticks=[], yticks=[], title=title)
    path_png = os.path.join(out_dir, f"{name}.png")
    fig.savefig(path_png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    paths.append(path_png)
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir=RUN_DIR is required")
  if FLAGS.num < 2:
    print(f"error: --num={FLAGS.num}: must be >= 2", file=sys.stderr)
    sys.exit(1)
  from energy_ae import checkpoints

  checkpoints.quiet_orbax_logging()
  try:
    paths = write_pngs(FLAGS.workdir, FLAGS.num, FLAGS.seed)
  except (ValueError, checkpoints.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"wrote {', '.join(paths)}")


if __name__ == "__main__":
  app.run(main)
