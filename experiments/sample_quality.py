r"""Sample quality of every model and sampler over seeds: a Markdown table and a figure.

  python -m experiments.sample_quality --seeds=3                  # the full experiment
  python -m experiments.sample_quality --quick --seeds=2 --workdir=/tmp/sq

Trains each model's experiment config (``:quick`` with --quick) with seeds ``config.seed`` +
0 … N−1 in ``WORKDIR/runs/<config>/seed_<s>`` (a finished run is reused), draws
``config.sample.num_samples`` samples from it with each sampler of ``ROWS`` (sampling key: the
seed), and scores them against the training split (a larger fresh draw of a small synthetic
one: ``sample_quality.reference_dataset``; ``energy_ae.sample_quality``; the digit
classifier is trained once, cached in ``WORKDIR/classifier``). Writes ``WORKDIR/quality.json``
(every record; a record of the same run, sampler keys and seed is reused), the table to --out
(default ``WORKDIR/SAMPLE_QUALITY.md``: mean ± standard deviation over seeds, n − 1 in the
denominator, with reference rows — held-out real data, uniform noise, one training example
repeated — scored the same way) and ``WORKDIR/samples_digits.png`` and ``samples_2d.png``
(seed 0's samples side by side).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags, defined only when run as a program: importing this module
  (a test, another tool) must not claim flag names that other tools define too."""
  flags.DEFINE_string("workdir", "runs/sample_quality", "Runs, records and the figure go here.")
  flags.DEFINE_string("out", None, "The Markdown table (default WORKDIR/SAMPLE_QUALITY.md).")
  flags.DEFINE_integer("seeds", 3, "Seeds per model: config.seed + 0 … N−1.")
  flags.DEFINE_bool("quick", False, "The :quick variant of every config (a smoke run).")
  flags.DEFINE_list("only", [], "Configs to run (default: all of ROWS').")

# (experiment config, sampler, config.sample overrides): one table row each. The digits first.
ROWS = (
    ("ae", "gmm", {}),
    ("dae", "walkback", {}),
    ("dae", "walkback", {"init": "data"}),
    ("dae", "gmm", {}),
    ("cae", "gmm", {}),
    ("vae", "prior", {}),
    ("vae", "gmm", {}),
    ("target_prop", "mala", {}),
    ("target_prop", "langevin", {}),
    ("target_prop", "gmm", {}),
    ("ellipse", "mala", {}),
    ("ellipse", "langevin", {}),
    ("horn", "mala", {}),
    ("horn", "langevin", {}),
    ("spiral_dae", "walkback", {}),
    ("spiral_dae", "gmm", {}),
)
METRICS = (("fd", "FD ↓"), ("kid", "KID ↓"), ("precision", "precision ↑"), ("recall", "recall ↑"),
           ("label_entropy", "label entropy (nats) ↑"))
REFERENCES = (("held_out", "held-out real data (test split)"), ("noise", "uniform noise"),
              ("one_example", "one training example, repeated"))


def row_label(sampler: str, overrides: dict) -> str:
  return sampler + "".join(f", {k}={v}" for k, v in overrides.items())


def finished(workdir: str) -> bool:
  """A run that wrote its final timing record (it ended; an interrupted one has not)."""
  from energy_ae import run_dir

  return run_dir.is_run_dir(workdir) and bool(run_dir.records(workdir, "timing"))


def train_run(name: str, seed: int, quick: bool, workdir: str):
  """(config, run directory) of ``name`` at ``seed``, trained unless finished."""
  from energy_ae import train
  from experiments import common

  config = common.load_config(name, "quick" if quick else None)
  config.seed = config.seed + seed
  run = os.path.join(workdir, "runs", name, f"seed_{seed}")
  if not finished(run):
    os.makedirs(run, exist_ok=True)
    train.train_and_evaluate(config, run)
  return config, run


def load_records(path: str) -> list[dict]:
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return json.load(f)


def sample_rows(name: str, rows, seed: int, config, run: str, workdir: str,
                records: list) -> None:
  """Appends to ``records`` the scores of each of ``rows`` (sampler, overrides) on ``run`` and
  saves the samples (``WORKDIR/samples/<config>/<label>/seed_<s>.npz``); a record of the same
  run, sampler keys and seed whose samples are saved is reused."""
  import ml_collections
  import numpy as np

  from energy_ae import sample_quality, train
  from experiments import sample as sample_cli

  loaded = None
  for sampler, overrides in rows:
    sc = ml_collections.ConfigDict(config.sample.to_dict())
    sc.sampler = sampler
    for key, value in overrides.items():
      sc[key] = value
    label = row_label(sampler, overrides)
    path = os.path.join(workdir, "samples", name, label.replace(", ", ",").replace("=", "-"),
                        f"seed_{seed}.npz")
    if any((r["config"], r["label"], r["seed"]) == (name, label, seed) and os.path.isfile(path)
           and r["sample_config"] == {k: sc[k] for k in r["sample_config"]} for r in records):
      continue
    if loaded is None:
      model, _, latest, dataset = train.restore_run(config, run)
      scorer = sample_quality.make_scorer(sample_quality.reference_dataset(config.data),
                                          config.sample, os.path.join(workdir, "classifier"))
      loaded = model, latest["params"], dataset, scorer
    model, params, dataset, scorer = loaded
    start = time.perf_counter()
    samples, entry = sample_cli.draw_and_score(model, params, dataset, sc, seed=seed, scorer=scorer)
    entry.update(config=name, label=label, data=config.data.name, run=run, samples_file=path,
                 seconds=time.perf_counter() - start)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, y=np.asarray(samples.y), **({} if samples.x is None else {"x": np.asarray(samples.x)}))
    records[:] = [r for r in records if (r["config"], r["label"], r["seed"]) != (name, label, seed)]
    records.append(entry)
    print(f"{name} / {label} / seed {seed}: " + ", ".join(
        f"{k} {v:.4g}" for k, v in entry["metrics"].items() if isinstance(v, float)), flush=True)


def reference_rows(configs: dict, seeds: int, workdir: str) -> dict:
  """{data name: {reference: [scores per seed]}} for each data set of the runs (``configs``:
  {config name: its config}), with as many samples as its runs draw."""
  from energy_ae import sample_quality

  out = {}
  for config in configs.values():
    name = config.data.name
    if name in out:
      continue
    scorer = sample_quality.make_scorer(sample_quality.reference_dataset(config.data),
                                        config.sample, os.path.join(workdir, "classifier"))
    per_seed = [sample_quality.baselines(scorer, int(config.sample.num_samples), seed)
                for seed in range(seeds)]
    out[name] = {ref: [s[ref] for s in per_seed] for ref, _ in REFERENCES}
    out[name]["features"] = scorer.info
  return out


def mean_std(values: list[float]) -> tuple[float, float]:
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, float("nan")
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def cell(values: list[float]) -> str:
  """mean ± sd with as many decimals as three significant digits of the larger need."""
  if not values:
    return "—"
  mean, std = mean_std(values)
  scale = max(abs(mean), 0.0 if math.isnan(std) else std)
  decimals = 3 if scale == 0 else min(4, max(0, 2 - math.floor(math.log10(scale))))
  return f"{mean:.{decimals}f}" + ("" if math.isnan(std) else f" ± {std:.{decimals}f}")


def machine() -> str:
  import jax

  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return (f"{cpu}, {os.cpu_count()} cores; JAX {jax.__version__} on {jax.devices()[0].platform}; "
          f"Python {platform.python_version()}")


def table(rows: list[tuple[str, list[dict]]], metrics, with_time: bool) -> list[str]:
  """A Markdown table: one line per (name, records over seeds)."""
  lines = ["| model | sampler | " + " | ".join(h for _, h in metrics)
           + (" | s per draw |" if with_time else " |"),
           "|---|---|" + "---|" * (len(metrics) + with_time)]
  for name, records in rows:
    cells = [cell([v for v in (r["metrics"].get(m, r.get("info", {}).get(m)) for r in records)
                   if v is not None]) for m, _ in metrics]
    if with_time:
      cells.append(cell([r["seconds"] for r in records]) if records and "seconds" in records[0]
                   else "—")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return lines


def markdown(records: list[dict], references: dict, configs: dict, seeds: int, command: str,
             minutes: float) -> str:
  """The page: how it was made, then one table per data set."""
  from energy_ae import sample_quality
  digits = references.get("mnist5k", {}).get("features", {})
  lines = [
      "## Sample quality", "",
      f"Written by `{command}` on {datetime.date.today().isoformat()} in {minutes:.1f} min; "
      "regenerate with the same command (finished runs and drawn samples are reused).", "",
      f"- Each model: its experiment config (`experiments/<name>.py`{':quick' if FLAGS.quick else ''}), "
      f"trained with {seeds} seeds (config.seed + 0 … {seeds - 1}); each sampler draws with the "
      "seed's key; cells are the mean ± standard deviation over seeds (n − 1).",
      "- Samples per row: " + ", ".join(sorted({f"{n} {int(c.sample.num_samples)}" for n, c in
                                               configs.items()})) + ", scored against the "
      "training split (a synthetic one under "
      f"{sample_quality.REFERENCE_SIZE:,} examples, the ellipse's 24: a fresh draw of at least "
      "that many from its law); the reference rows: as many draws, scored the same way.",
      "- Metrics (`energy_ae/sample_quality.py`): Fréchet distance (biased upward at finite n: "
      "compare rows of one table), unbiased KID (polynomial kernel; may be < 0), precision / "
      "recall (Kynkäänniemi et al. 2019, k = 3), entropy of the predicted digits (log 10 = 2.303).",
  ]
  if digits:
    lines.append(f"- Digits: features of an MLP classifier (784-256-128-10, seed "
                 f"{digits['spec']['seed']}, {digits['spec']['steps']} Adam steps on the 4,000 "
                 f"training digits; test accuracy {digits['test_accuracy']:.3f}), standardised.")
  lines += ["- 2-D data: the coordinates (the horn: (x, y)), standardised.",
            f"- Machine: {machine()}. 's per draw': sampling and scoring one row, one seed.", ""]
  for data_name in dict.fromkeys(r["data"] for r in records):
    metrics = [m for m in METRICS if m[0] != "label_entropy" or data_name == "mnist5k"]
    if any("acceptance_rate" in r["info"] for r in records if r["data"] == data_name):
      metrics.append(("acceptance_rate", "MALA acceptance"))
    rows = [(f"reference | {title}", [{"metrics": m} for m in references[data_name][ref]])
            for ref, title in REFERENCES]
    for key in dict.fromkeys((r["config"], r["label"]) for r in records if r["data"] == data_name):
      rows.append((f"{key[0]} | {key[1]}", [r for r in records if (r["config"], r["label"]) == key]))
    lines += [f"### {data_name}", ""] + table(rows, metrics, with_time=True) + [""]
  return "\n".join(lines) + "\n"


def write_figures(records: list[dict], configs: dict, workdir: str) -> list[str]:
  """Seed 0's samples of every row side by side: ``samples_digits.png`` (first 36 of each)
  and ``samples_2d.png`` (all of them over the training data)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  from energy_ae import data
  from experiments.figures.common import image_grid, show_mosaic

  first = [r for r in records if r["seed"] == 0]
  paths = []
  for kind, chosen in (("digits", [r for r in first if r["data"] == "mnist5k"]),
                       ("2d", [r for r in first if r["data"] != "mnist5k"])):
    if not chosen:
      continue
    cols = min(4, len(chosen))
    rows = -(-len(chosen) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax, r in zip(axes.flat, chosen):
      saved = np.load(r["samples_file"])
      config = configs[r["config"]]
      dataset = data.load(config.data)
      low, high = dataset.value_range
      y = np.clip((saved["y"].reshape(len(saved["y"]), -1) - low) / (high - low), 0, 1)
      if kind == "digits":
        show_mosaic(ax, image_grid(y[:36], 6, 6, (28, 28)))
        ax.set(xticks=[], yticks=[])
      else:
        train = dataset.train["y"].reshape(len(dataset.train["y"]), -1)
        ax.scatter(train[:, 0], train[:, 1], s=2, c="0.75")
        y = saved["y"].reshape(len(saved["y"]), -1)
        ax.scatter(y[:, 0], y[:, 1], s=2, c=saved["x"].reshape(-1) if "x" in saved else "C0")
        ax.set(aspect="equal", xticks=[], yticks=[])
      ax.set_title(f"{r['config']}: {r['label']}", fontsize=9)
    for ax in list(axes.flat)[len(chosen):]:
      ax.axis("off")
    path = os.path.join(workdir, f"samples_{kind}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.seeds < 1:
    raise ValueError(f"--seeds={FLAGS.seeds}: must be >= 1")
  known = list(dict.fromkeys(name for name, _, _ in ROWS))
  unknown = [name for name in FLAGS.only if name not in known]
  if unknown:
    raise ValueError(f"--only: unknown config(s) {unknown}; known: {', '.join(known)}")
  names = [n for n in known if not FLAGS.only or n in FLAGS.only]
  workdir = FLAGS.workdir
  os.makedirs(workdir, exist_ok=True)
  records_path = os.path.join(workdir, "quality.json")
  records = load_records(records_path)
  start, configs = time.perf_counter(), {}
  for seed in range(FLAGS.seeds):
    for name in names:
      configs[name], run = train_run(name, seed, FLAGS.quick, workdir)
      rows = [(s, o) for n, s, o in ROWS if n == name]
      sample_rows(name, rows, seed, configs[name], run, workdir, records)
      with open(records_path + ".tmp", "w") as f:  # progress kept if interrupted
        json.dump(records, f, indent=1)
      os.replace(records_path + ".tmp", records_path)
  chosen = [r for r in records if r["config"] in names and r["seed"] < FLAGS.seeds
            and r["label"] in {row_label(s, o) for n, s, o in ROWS if n == r["config"]}]
  references = reference_rows(configs, FLAGS.seeds, workdir)
  command = "python -m experiments.sample_quality " + " ".join(sys.argv[1:])
  text = markdown(chosen, references, configs, FLAGS.seeds, command,
                  (time.perf_counter() - start) / 60)
  out = FLAGS.out or os.path.join(workdir, "SAMPLE_QUALITY.md")
  from experiments import common

  common.write_section(out, "experiments.sample_quality", text)  # beside RESULTS.md's VAE table
  paths = write_figures(chosen, configs, workdir)
  print(text)
  print(f"wrote {out}, {records_path}, {', '.join(paths)}")


def run():
  define_flags()
  from energy_ae import checkpoints, data, train

  checkpoints.quiet_orbax_logging()
  try:
    app.run(main)
  except (ValueError, data.DataError, train.TrainingError, checkpoints.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  run()
