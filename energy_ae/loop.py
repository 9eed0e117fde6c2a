"""The training loop, written once: a run is one variant, a sweep V variants stacked.

``run(program, phases)`` resumes every variant from its run directory, then steps (k optimiser
steps per dispatch where k steps stay inside one epoch and the run), logs, evaluates,
checkpoints, handles SIGINT / SIGTERM and non-finite steps, and times each phase — at the same
steps for a run and for a sweep. It knows no model and no config key of a model: a
``Program`` (built by ``train.program`` for a run, ``sweep.program`` for a sweep) says what to
run.

Periodic actions ask ``itstime(step, every, n=k)``: was a multiple of ``every`` crossed by the
dispatch that ended at ``step`` after k steps (or is it the last step)? With k = 1 that is
``step % every == 0``; with k > 1 logs, evaluations and checkpoints fall on the dispatch that
crosses them, and since dispatches of k start at multiples of k, at the same steps as k = 1
whenever ``every`` is a multiple of k.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from energy_ae import run_dir
from energy_ae.metrics_io import MetricWriter


class TrainingError(RuntimeError):
  """Training cannot go on (non-finite values, bad checkpoint); the message says why."""


class Interrupted(Exception):
  """SIGINT / SIGTERM stopped the run after saving a checkpoint; ``signum`` says which."""

  def __init__(self, signum: int, step: int, workdir: str):
    name = signal.Signals(signum).name
    super().__init__(f"interrupted by {name} at step {step}; the checkpoint of step {step} is "
                     f"saved in {workdir}: run the same command again to resume")
    self.signum, self.step = signum, step


FEED_STATE = "data_pipeline"  # the key of the feed's state in a checkpoint's extra record


class Variant(NamedTuple):
  """One trained configuration: its name in a sweep ('' for a run), config and run directory."""

  name: str
  config: Any
  workdir: str


class Program(NamedTuple):
  """What the loop runs; built by ``train.program`` (a run) or ``sweep.program`` (a sweep).

  ``step(state, *feed.args(s, 1)) -> (state, metrics)`` is optimiser step s, its data
  arguments from ``feed`` (``energy_ae.feeds``: the resident split and the epoch's order, or
  the streamed batch); ``multi_step`` the same for ``steps_per_dispatch`` = k steps in one
  call (metrics stacked along a leading axis of k). With ``stacked`` (a sweep) states and
  metrics carry a variants axis after it. ``evaluate(params, final=..., phases=...)``
  returns each variant's test metrics.
  """

  variants: list[Variant]
  stacked: bool
  initial: list  # each variant's initial train state, on the host
  place: Callable[[list], Any]  # host states -> the state ``step`` takes (on the devices)
  step: Callable
  multi_step: Callable | None
  steps_per_dispatch: int
  feed: Any  # feeds.Feed
  evaluate: Callable[..., list]
  total_steps: int
  steps_per_epoch: int
  train: Any  # the train config every variant shares (batch size, cadences, non-finite policy)
  freeze: bool = False  # a variant whose step turns non-finite is frozen, the others go on
  root: str = ""  # the directory named in messages (a sweep's workdir)


def itstime(step: int, every: int, *, n: int = 1, total: int | None = None) -> bool:
  """True when a multiple of ``every`` lies in (step − n, step], or ``step`` is ``total``."""
  return step // every > (step - n) // every or step == total


# ----------------------------------------------------------------------------
# Signals, non-finite steps, phases
# ----------------------------------------------------------------------------


class StopRequest:
  """SIGINT / SIGTERM set a flag; the loop saves a checkpoint and returns."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no handler, no graceful stop
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _nonfinite_names(metrics: Mapping[str, Any]) -> list[str]:
  return [k for k, v in metrics.items() if k != "finite" and not np.all(np.isfinite(v))]


class NonFiniteGuard:
  """Decides what a step reported as non-finite does: stop the run (``on_nonfinite =
  'stop'``) or skip it, counting, until ``max_consecutive`` skipped steps come in a row."""

  def __init__(self, *, skip: bool, max_consecutive: int, total: int, intact: Callable[[], str]):
    self.skip, self.max_consecutive, self.intact = skip, max_consecutive, intact
    self.total, self.consecutive = total, 0

  def check_one(self, host: dict, step: int) -> dict:
    """The host metrics of the step ending at ``step``; raises TrainingError if the run must
    stop there."""
    if host["finite"]:
      self.consecutive = 0
      return host
    self.total += 1
    self.consecutive += 1
    names = _nonfinite_names(host) or ["the updated parameters or optimiser state (an overflow "
                                       "in the update)"]
    values = ", ".join(f"{k}={host[k]}" for k in names if k in host)
    what = f"non-finite values at step {step}: {', '.join(names)}" + (
        f" ({values})" if values else "")
    if self.skip and self.consecutive < self.max_consecutive:
      logging.warning("%s; step skipped (%d skipped in all)", what, self.total)
      return host
    if self.skip:
      what += (f", {self.max_consecutive} skipped steps in a row "
               f"(train.max_consecutive_nonfinite = {self.max_consecutive})")
      raise TrainingError(f"{what}; the state was not updated; {self.intact()}")
    raise TrainingError(f"{what}; the run stopped there, before that state was evaluated or "
                        f"saved; {self.intact()}")


class PhaseTimer:
  """Wall time per phase of a run (data, compile, train, evaluation, probe, checkpoint)."""

  def __init__(self):
    self.seconds: dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, phase: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.add(phase, time.perf_counter() - start)

  def add(self, phase: str, seconds: float) -> None:
    self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

  def summary(self) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())


class _Clock:
  """Training time only (``samples_per_s``): paused, after the dispatched steps finish, for
  evaluations, checkpoints and logs."""

  def __init__(self, phases: PhaseTimer):
    self.phases, self.steps, self.seconds, self.mark = phases, 0, 0.0, time.perf_counter()

  def pause(self, state) -> None:
    jax.block_until_ready(state)
    now = time.perf_counter()
    self.seconds += now - self.mark
    self.phases.add("train", now - self.mark)

  def restart(self) -> None:
    self.mark = time.perf_counter()

  def take_rate(self, batch_size: int) -> float | None:
    """Samples per second since the last call (None if no step was timed)."""
    rate = self.steps * batch_size / max(self.seconds, 1e-9) if self.steps else None
    self.steps, self.seconds = 0, 0.0
    return rate


# ----------------------------------------------------------------------------
# Each variant's run directory: checkpoints, metrics, status
# ----------------------------------------------------------------------------


class _Session:
  """Each variant's checkpoint manager, metric writer and non-finite guard, and which
  variants are live (a frozen variant of a sweep is trained no further)."""

  def __init__(self, program: Program, allow_config_change: bool = False):
    self.program, self.allow_config_change = program, allow_config_change
    self.changes: list[dict] = []
    tc = program.train
    self.managers = [run_dir.checkpoint_manager(v.workdir, tc.get("checkpoints_to_keep", 3))
                     for v in program.variants]
    self.writers: list[MetricWriter] = []
    self.guards: list[NonFiniteGuard] = []
    self.live = [True] * len(program.variants)

  def label(self, i: int) -> str:
    name = self.program.variants[i].name
    return f"variant {name}: " if self.program.stacked else ""

  def intact(self, i: int) -> Callable[[], str]:
    def message() -> str:
      saved = self.managers[i].latest_step()
      last = ("no checkpoint was saved yet" if saved is None
              else f"the last checkpoint (step {saved})")
      return f"{last} and metrics.jsonl are intact"

    return message

  def restore(self) -> tuple[Any, int]:
    """(state on the devices, first step): every live variant from the newest step they all
    saved (a sweep stopped while saving has some one checkpoint ahead: they go back to the
    common one, which they keep unless checkpoints_to_keep = 1: then it starts over); a
    variant frozen earlier in the sweep from its own last checkpoint, frozen again."""
    variants = self.program.variants
    # Resume only what was started: nothing is read or written before this check passes.
    self.changes = [run_dir.check_resume(v.workdir, v.config,
                                         allow_changes=self.allow_config_change)
                    for v in variants]
    _warn_schedule_change(self.program)
    self.live = [not (self.program.stacked and run_dir.read_status(v.workdir).get("frozen"))
                 for v in variants]
    live_steps = [set(m.all_steps()) for m, live in zip(self.managers, self.live) if live]
    shared = set.intersection(*live_steps) if live_steps else set()
    common = max(shared) if shared else None
    states = []
    for i, (manager, initial) in enumerate(zip(self.managers, self.program.initial)):
      step = common if self.live[i] else manager.latest_step()
      states.append(manager.restore_latest(initial, step=step) if step is not None else initial)
    start = min([int(s["step"]) for s, live in zip(states, self.live) if live] or [0])
    self.restored = common is not None
    saved = (self.managers[self.live.index(True)].read_extra(common).get(FEED_STATE)
             if self.restored and any(self.live) else None)
    self.program.feed.start(start, saved)  # the data pipeline where the checkpoint left it
    return self.program.place(states), start

  def open_writers(self, start_step: int) -> None:
    tc = self.program.train
    is_main = jax.process_index() == 0
    for i, variant in enumerate(self.program.variants):
      # Records after the restored step are dropped (all of them when nothing was restored);
      # a frozen variant's are left as they are: it is not trained again.
      writer = MetricWriter(variant.workdir, enabled=is_main and self.live[i],
                            resume_step=start_step if self.restored else -1)
      self.writers.append(writer)
      if is_main and self.live[i]:
        history = run_dir.segments(variant.workdir)
        if self.changes[i]:  # accepted with --allow_config_change: a new segment
          changes = {k: [a, b] for k, (a, b) in self.changes[i].items()}
          history.append({"step": start_step, "changes": changes})
          writer.write_event(start_step, "segment", {"changes": changes})
          logging.warning("%s: continuing at step %d with changed config: %s", variant.workdir,
                          start_step, ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in
                                                self.changes[i].items()))
        run_dir.write_config_with_segments(variant.workdir, variant.config, history)
        run_dir.write_status(variant.workdir, "running", start_step)
      self.guards.append(NonFiniteGuard(
          skip=tc.get("on_nonfinite", "stop") == "skip",
          max_consecutive=tc.get("max_consecutive_nonfinite", 10),
          total=int((writer.last.get("train") or {}).get("nonfinite_steps", 0)),
          intact=self.intact(i)))

  def end(self, status: str, step: int, reason: str = "", only=None, frozen=False) -> None:
    """Writes how each live variant's segment ended into its run directory."""
    if jax.process_index() != 0:
      return
    for i, variant in enumerate(self.program.variants):
      if self.live[i] and (only is None or i in only):
        run_dir.write_status(variant.workdir, status, step, reason, frozen=frozen)

  def freeze(self, i: int, step: int, error: TrainingError) -> None:
    """Freezes variant i of a sweep after its non-finite step; raises when none is left."""
    name = self.program.variants[i].name
    logging.warning("variant %s frozen: %s; the other variants go on", name, error)
    self.end("diverged", step, f"{error} (frozen: the other variants of the sweep went on)",
             only={i}, frozen=True)
    self.live[i] = False
    if not any(self.live):
      raise TrainingError(f"every variant of the sweep stopped on non-finite values; the last, "
                          f"variant {name}: {error}")

  def close(self) -> None:
    self.program.feed.close()
    for manager in self.managers:
      manager.close()
    for writer in self.writers:
      writer.close()


def _warn_schedule_change(program: Program) -> None:
  """A cosine schedule is rebuilt for a changed number of epochs: its rate jumps on resume."""
  if program.train.get("lr_schedule", "constant") != "cosine":
    return
  for variant in program.variants:
    old = run_dir.config_changes(variant.workdir, variant.config).get("train.num_epochs")
    if old is not None and old[0] is not None:
      logging.warning("train.num_epochs %r → %r with lr_schedule = cosine: the schedule is "
                      "rebuilt for the new number of steps, so the learning rate jumps at the "
                      "resume step to the longer schedule's value", *old)
      return


def _per_variant(host, num_variants: int, stacked: bool, n: int) -> list[list[dict]]:
  """Host metrics of one dispatch → [step j][variant i] dicts: a metric comes with shape
  (k, V) from a sweep's k-step dispatch, (V,) from its single step, (k,) or () from a run's."""
  shaped = {}
  for name, value in host.items():
    value = np.asarray(value)
    value = value if stacked else value[..., None]
    shaped[name] = value if n > 1 else value[None]
  return [[{k: v[j, i] for k, v in shaped.items()} for i in range(num_variants)]
          for j in range(n)]


def _check(session: _Session, metrics, step: int, n: int) -> list[dict | None]:
  """Checks every live variant's metrics of the n steps ending at ``step``, one by one;
  returns each variant's metrics of the last step (None for a frozen variant)."""
  program = session.program
  per_step = _per_variant(jax.device_get(metrics), len(program.variants), program.stacked, n)
  last: list[dict | None] = [None] * len(program.variants)
  for j, per_variant in enumerate(per_step):
    for i, host in enumerate(per_variant):
      if not session.live[i]:
        continue
      try:
        last[i] = session.guards[i].check_one(host, step - n + 1 + j)
      except TrainingError as e:
        if program.freeze and program.stacked:
          session.freeze(i, step - n + 1 + j, e)
          continue
        session.end("diverged", step - n + 1 + j, f"{session.label(i)}{e}")
        raise TrainingError(f"{session.label(i)}{e}") from None
  return last


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------


def _variant_state(program: Program, state, i: int):
  return jax.tree.map(lambda x: x[i], state) if program.stacked else state


def _evaluate(session: _Session, state, step: int, phases: PhaseTimer, *, final: bool,
              only=None) -> list[dict]:
  metrics = session.program.evaluate(state["params"], final=final, phases=phases)
  for i, (writer, record) in enumerate(zip(session.writers, metrics)):
    if session.live[i] and (only is None or i in only):
      writer.write(step, "test", record)
  return metrics


def _save(session: _Session, state, step: int, phases: PhaseTimer) -> None:
  """Each live variant's state, and the data pipeline's state beside it (a streamed run)."""
  extra = {FEED_STATE: session.program.feed.state()}
  with phases("checkpoint"):
    for i, manager in enumerate(session.managers):
      if session.live[i]:  # finite: a step that is not is never applied, or it froze
        manager.save(step, _variant_state(session.program, state, i), extra=extra)


def _log(session: _Session, host: list, step: int, clock: _Clock, progress) -> None:
  tc = session.program.train
  rate = clock.take_rate(tc.batch_size)  # each variant's rate (a sweep's is V times it)
  for i, record in enumerate(host):
    if record is None:
      continue
    record = {k: v for k, v in record.items() if k != "finite"}
    if rate is not None:
      record["samples_per_s"] = rate
    if session.guards[i].skip:
      record["nonfinite_steps"] = session.guards[i].total
    session.writers[i].write(step, "train", record)
    if i == 0 and rate is not None:
      progress.set_postfix(loss=f"{float(record['loss']):.4g}", samples_s=f"{rate:.0f}")


def _final_records(session: _Session, state, step: int, phases: PhaseTimer) -> list[dict]:
  """Resumed at the end: each variant's final evaluation, read back where it was written."""
  previous = [w.last.get("test") for w in session.writers]
  missing = {i for i, p in enumerate(previous) if session.live[i] and (not p or p["step"] != step)}
  fresh = _evaluate(session, state, step, phases, final=True, only=missing) if missing else None
  return [fresh[i] if i in missing else
          {k: v for k, v in (p or {}).items() if k not in ("step", "split")}
          for i, p in enumerate(previous)]


def _dispatch(program: Program, state, step: int):
  """One dispatch from ``step``: k steps where k consecutive steps stay inside the epoch and
  the run and ``step`` is a multiple of k, one step elsewhere. Returns (state, metrics, n)."""
  k = program.steps_per_dispatch
  index = step % program.steps_per_epoch
  if (program.multi_step is not None and step % k == 0 and index + k <= program.steps_per_epoch
      and step + k <= program.total_steps):
    return (*program.multi_step(state, *program.feed.args(step, k)), k)
  return (*program.step(state, *program.feed.args(step, 1)), 1)


def _train(session: _Session, state, start_step: int, phases: PhaseTimer, stop: StopRequest,
           progress) -> list[dict]:
  program, tc = session.program, session.program.train
  total = program.total_steps
  step, last_eval, pending = start_step, [], None
  if step == 0 and tc.get("eval_at_start", True):  # the untrained model: where curves start
    _evaluate(session, state, 0, phases, final=total == 0)
  clock, first = _Clock(phases), True
  while step < total:
    state, metrics, n = _dispatch(program, state, step)
    if first:  # compilation and the first dispatch: a phase of its own
      jax.block_until_ready(state)
      phases.add("compile", time.perf_counter() - clock.mark)
      first = False
      clock.restart()
    else:
      clock.steps += n
    if pending is not None:  # the previous dispatch's, checked one behind (dispatch stays async)
      _check(session, *pending)
    step += n
    pending = (metrics, step, n)
    if itstime(step, tc.log_every, n=n, total=total):
      clock.pause(state)
      host = _check(session, *pending)
      pending = None
      _log(session, host, step, clock, progress)
      clock.restart()
    progress.update(n)
    evaluate_now = itstime(step, tc.eval_every, n=n, total=total)
    save_now = itstime(step, tc.checkpoint_every, n=n, total=total)
    if evaluate_now or save_now or stop.signal is not None:
      clock.pause(state)
      if pending is not None:
        _check(session, *pending)
        pending = None
      if evaluate_now:
        last_eval = _evaluate(session, state, step, phases, final=step == total)
      if save_now or stop.signal is not None:
        _save(session, state, step, phases)
      clock.restart()
    if stop.signal is not None:
      logging.warning("Stopped by signal %d at step %d; checkpoint saved in %s", stop.signal,
                      step, program.root)
      session.end("interrupted", step, f"{signal.Signals(stop.signal).name}")
      # No final evaluation: an interrupted run must not look like a finished one.
      raise Interrupted(stop.signal, step, program.root)
  return last_eval or _final_records(session, state, step, phases)


def run(program: Program, phases: PhaseTimer, *, allow_config_change: bool = False
        ) -> list[dict]:
  """Trains every variant of ``program`` to its last step; returns each one's last test
  metrics (a frozen variant's last written ones). Each run directory gets its config.json,
  metrics.jsonl (with a ``timing`` record per trained segment), TensorBoard events,
  checkpoints and status.json (how the last segment ended).

  A run directory started with another config is refused (``run_dir.ConfigChanged``) unless
  the change is safe on resume or ``allow_config_change``: then it continues, the change
  recorded as a new segment (config.json's ``segments``, a ``segment`` record)."""
  session = _Session(program, allow_config_change)
  try:
    with phases("checkpoint"):
      state, start_step = session.restore()
    session.open_writers(start_step)
    if start_step:
      logging.info("Resumed from the checkpoint at step %d in %s", start_step, program.root)
    tc = program.train
    progress = _progress(program.total_steps, start_step,
                         enabled=jax.process_index() == 0 and tc.get("progress", True))
    try:
      with StopRequest() as stop:
        finals = _train(session, state, start_step, phases, stop, progress)
    finally:
      progress.close()
    if program.total_steps > start_step:  # a run that trained (not a rerun of a finished one)
      for i, writer in enumerate(session.writers):
        if session.live[i]:
          writer.write(program.total_steps, "timing",
                       {f"{k}_s": v for k, v in phases.seconds.items()})
    session.end("finished", program.total_steps)
    logging.info("Time: %s", phases.summary())
    return [f if session.live[i] else run_dir.last_record(program.variants[i].workdir)
            for i, f in enumerate(finals)]
  finally:
    session.close()


def _progress(total: int, initial: int, *, enabled: bool):
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, disable=(not enabled) or None, unit="step",
              dynamic_ncols=True, leave=False)
