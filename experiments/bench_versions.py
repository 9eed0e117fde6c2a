r"""The VAE train step's rate in this checkout against an earlier commit, side by side.

  python -m experiments.bench_versions --against=fce20aa --out=runs/bench_versions.json

Checks ``--against`` out into a temporary git worktree and times, in alternating processes
(``--rounds`` of each, this checkout and the commit taking turns so that a slow spell of a
shared machine hits both), the default VAE's train step of each tree exactly as its own
``experiments.benchmark`` times it (``ProjectStep``, ``rate_stats``: the median of 3 timings of
≥ 1 s), at each batch of ``--batches``. Reports per tree and batch the median over rounds
of samples/s, the lowest and highest round, and the ratio this / against. Both trees run in
this checkout's virtual environment (the commit must share its dependencies).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS

# One process: the tree's own benchmark helpers, one rate per batch, printed as JSON.
_TIMER = r"""
import json, sys
from experiments import benchmark, common
rates = {}
for batch in [int(b) for b in sys.argv[1].split(",")]:
  step = benchmark.ProjectStep(common.load_config("vae"), batch)
  rates[batch] = benchmark.rate_stats(step.run, min_time=1.0, repeats=3).median * batch
print(json.dumps(rates))
"""


def _define_flags() -> None:
  flags.DEFINE_string("against", "fce20aa", "The commit to compare with.")
  flags.DEFINE_list("batches", ["32", "256", "1024"], "Batch sizes of the VAE step.")
  flags.DEFINE_integer("rounds", 3, "Processes per tree, alternating.")
  flags.DEFINE_string("out", "runs/bench_versions.json", "Where to write the JSON results.")


def _rates(tree: str, batches: list[str]) -> dict[int, float]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=tree)
  proc = subprocess.run([sys.executable, "-c", _TIMER, ",".join(batches)], cwd=tree, env=env,
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    raise SystemExit(f"error: timing the step in {tree} failed:\n{proc.stderr[-3000:]}")
  return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def compare(against: str, batches: list[str], rounds: int) -> dict:
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                        capture_output=True, check=True).stdout.strip()
  with tempfile.TemporaryDirectory() as tmp:
    old = os.path.join(tmp, "against")
    subprocess.run(["git", "worktree", "add", "--detach", old, against], cwd=here, check=True,
                   capture_output=True)
    try:
      runs = {"this": [], "against": []}
      for _ in range(rounds):
        runs["against"].append(_rates(old, batches))
        runs["this"].append(_rates(here, batches))
    finally:
      subprocess.run(["git", "worktree", "remove", "--force", old], cwd=here, check=False)
  rows = []
  for batch in (int(b) for b in batches):
    this = [r[batch] for r in runs["this"]]
    then = [r[batch] for r in runs["against"]]
    rows.append({"batch": batch, "this": round(statistics.median(this)),
                 "this_range": [round(min(this)), round(max(this))],
                 "against": round(statistics.median(then)),
                 "against_range": [round(min(then)), round(max(then))],
                 "ratio": round(statistics.median(this) / statistics.median(then), 3)})
  return {"command": f"python -m experiments.bench_versions --against={against}",
          "this_commit": head, "against": against, "rounds": rounds, "rows": rows}


def main(argv):
  del argv
  result = compare(FLAGS.against, FLAGS.batches, FLAGS.rounds)
  print(json.dumps(result, indent=1))
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
