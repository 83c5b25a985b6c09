r"""Training: the train step, the loop, and its CLI.

    python -m musicgen_jax.train --model=lstm --dataset=bach_chorales \
        --seq_len=48 --batch_size=64 --num_steps=2000 --workdir=W

The batch is sharded over a `data` mesh axis with `jax.jit` + `NamedSharding`
(`--parallel=jit`, the default); `--parallel=pmap` is the legacy path and runs the same
step body. Running again on the same W resumes from the newest intact checkpoint and
ends exactly where an uninterrupted run ends: batches and RNG are functions of
(seed, step) alone, and a state carried across steps is checkpointed with the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import queue
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags, logging
from flax.training import train_state

from musicgen_jax import checkpoint as ckpt_lib
from musicgen_jax import cli, losses, models, parallel
from musicgen_jax import workdir as workdir_lib
from musicgen_jax.config import RunConfig, TrainConfig, define_run_flags, resume
from musicgen_jax.encoding import HIGHEST_PITCH, LOWEST_PITCH
from musicgen_jax.evaluate import evaluate_pieces
from musicgen_jax.models import ModelConfig, apply_model, init_params

PREFETCH = 2  # batches prepared ahead of the step that needs them


class TrainState(train_state.TrainState):
  """Flax's TrainState plus `carry`: the recurrent state carried across steps (or None)."""

  carry: Any = None


def checkpoint_tree(state: TrainState) -> dict:
  """What a checkpoint holds: {step, params, opt_state} and, when there is one, carry."""
  tree = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
  if state.carry is not None:
    tree["carry"] = state.carry
  return tree


def from_checkpoint_tree(template: TrainState, tree: dict) -> TrainState:
  return template.replace(step=tree["step"], params=tree["params"],
                          opt_state=tree["opt_state"], carry=tree.get("carry"))


class NonFiniteError(RuntimeError):
  """The training loss or the validation NLL is not finite."""


NonFiniteLossError = NonFiniteError


def make_optimizer(cfg: TrainConfig, num_steps: int) -> optax.GradientTransformation:
  """AdamW with global-norm clipping, linear warm-up, then cosine decay or constant."""
  warmup = min(cfg.warmup_steps, max(num_steps - 1, 0))
  if cfg.lr_schedule == "cosine":
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else cfg.learning_rate, peak_value=cfg.learning_rate,
        warmup_steps=warmup, decay_steps=max(num_steps, warmup + 1),
        end_value=cfg.learning_rate * 0.01)
  else:
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, max(warmup, 1)),
         optax.constant_schedule(cfg.learning_rate)], [warmup]) if warmup else cfg.learning_rate
  parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
  parts.append(optax.adamw(schedule, weight_decay=cfg.weight_decay))
  return optax.chain(*parts)


def train_window(config: RunConfig) -> int:
  """Frames predicted per training row: --train_window, else the model's choice."""
  if config.train.train_window:
    return config.train.train_window
  return models.default_train_window(config.model)


def num_train_steps(config: RunConfig, train_frames: int) -> int:
  """--num_epochs as steps (an epoch predicts about every training frame once), or --num_steps."""
  cfg = config.train
  if cfg.num_epochs > 0:
    frames_per_step = cfg.batch_size * train_window(config)
    return max(1, math.ceil(cfg.num_epochs * train_frames / frames_per_step))
  return cfg.num_steps


def _dropout_rng(seed: int, step):
  """The step's dropout key: a function of (seed, step) alone."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), step)


def window_loss(cfg: ModelConfig, params, batch: dict, rng, carry, denominator):
  """Summed NLL over the batch's real targets / denominator, (metric sums, new carry)."""
  frames = batch["frames"]
  inputs = frames[:, :-1]
  targets, mask = (frames[:, 1:], batch["mask"]) if models.is_causal(cfg) else (
      frames[:, -1:], batch["mask"][:, -1:])
  if carry is None:
    pred = apply_model(cfg, params, inputs, train=True, rng=rng)
  else:
    reset = batch["reset"]
    carry = jax.tree.map(lambda c: jnp.where(reset.reshape((-1,) + (1,) * (c.ndim - 1)), 0, c),
                         carry)
    pred, carry = apply_model(cfg, params, inputs, train=True, rng=rng, carry=carry)
    carry = jax.lax.stop_gradient(carry)
  _, sums = losses.loss_and_metrics(pred, targets, mask)
  return sums["nll_total"] / jnp.maximum(denominator, 1.0), (sums, carry)


def train_step(state: TrainState, batch: dict, *, model_cfg: ModelConfig, seed: int,
               axis_name: str | None = None) -> tuple[TrainState, dict]:
  """One update; pure. Returns the new state and metric sums (host divides by 'count')."""
  rng = _dropout_rng(seed, state.step)
  count = jnp.sum(batch["mask"] if models.is_causal(model_cfg) else batch["mask"][:, -1:])
  if axis_name is not None:  # pmap: the loss of the whole batch, summed across devices
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    count = jax.lax.psum(count, axis_name)
  grad_fn = jax.value_and_grad(window_loss, argnums=1, has_aux=True)
  (_, (sums, carry)), grads = grad_fn(model_cfg, state.params, batch, rng, state.carry, count)
  if axis_name is not None:
    grads = jax.lax.psum(grads, axis_name)
    sums = jax.lax.psum(sums, axis_name)
  state = state.apply_gradients(grads=grads).replace(carry=carry)
  return state, dict(sums, grad_norm=optax.tree.norm(grads))


@functools.lru_cache(maxsize=16)
def compiled_step(model_cfg: ModelConfig, train_cfg: TrainConfig, mesh):
  """The jit train step, the state donated; cached across runs in one process.

  The batch is sharded over the mesh's `data` axis; the parameters and optimizer state
  are replicated and a carried state is sharded by rows, as `_Placement` puts them, and
  the outputs keep those shardings.
  """
  del mesh  # part of the cache key: a new mesh compiles anew
  step = functools.partial(train_step, model_cfg=model_cfg, seed=train_cfg.seed)
  return jax.jit(step, donate_argnums=0)


@functools.lru_cache(maxsize=16)
def compiled_pmap_step(model_cfg: ModelConfig, train_cfg: TrainConfig):
  step = functools.partial(train_step, model_cfg=model_cfg, seed=train_cfg.seed,
                           axis_name=parallel.DATA_AXIS)
  return jax.pmap(step, axis_name=parallel.DATA_AXIS, donate_argnums=0)


def _initial_carry(config: RunConfig) -> Any:
  """The zero state of every row this process trains, when state is carried."""
  if not config.train.carry_state:
    return None
  return models.init_carry(config.model, config.train.batch_size // jax.process_count())


class _Placement:
  """How states and batches meet the devices: jit with shardings, or pmap."""

  def __init__(self, config: RunConfig):
    self.config, self.pmap = config, config.train.parallel == "pmap"
    self.mesh = parallel.make_mesh()

  def step_fn(self):
    cfg = self.config
    if self.pmap:
      return compiled_pmap_step(cfg.model, cfg.train)
    return compiled_step(cfg.model, cfg.train, self.mesh)

  def put_state(self, state: TrainState) -> TrainState:
    carry, state = state.carry, state.replace(carry=None)
    if self.pmap:
      n = jax.local_device_count()
      state = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), state)
      carry = None if carry is None else jax.tree.map(parallel.pmap_split, carry)
      return state.replace(carry=carry)
    state = parallel.replicate(state, self.mesh)
    sharding = parallel.data_sharding(self.mesh)
    carry = None if carry is None else jax.tree.map(
        lambda c: parallel.global_batch(np.asarray(c), sharding), carry)
    return state.replace(carry=carry)

  def put_batch(self, batch: dict) -> dict:
    if self.pmap:
      return jax.tree.map(parallel.pmap_split, batch)
    sharding = parallel.data_sharding(self.mesh)
    return {k: parallel.global_batch(v, sharding) for k, v in batch.items()}

  def host_state(self, state: TrainState) -> TrainState:
    """The state as checkpointed: one copy of the parameters; the carry as global rows."""
    if not self.pmap:
      return state
    carry = state.carry
    state = jax.tree.map(lambda x: x[0], state.replace(carry=None))
    if carry is not None:
      carry = jax.tree.map(lambda c: np.asarray(c).reshape((-1,) + c.shape[2:]), carry)
    return state.replace(carry=carry)


class _Prefetcher:
  """Prepares (and places on devices) the batches of the next steps in a thread."""

  def __init__(self, make_batch, steps: range, depth: int = PREFETCH):
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(make_batch, steps), daemon=True)
    self._thread.start()

  def _run(self, make_batch, steps):
    for step in steps:
      try:
        item = make_batch(step)
      except Exception as e:  # pylint: disable=broad-except  # handed to the loop
        item = e
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if self._stop.is_set() or isinstance(item, Exception):
        return

  def next(self):
    item = self._queue.get()
    if isinstance(item, Exception):
      raise item
    return item

  def close(self):
    """Stops the thread and waits for it: a thread left inside JAX at exit aborts Python."""
    self._stop.set()
    while self._thread.is_alive():
      try:
        self._queue.get(timeout=0.05)
      except queue.Empty:
        pass
    self._thread.join()


class _Meter:
  """Training loss and throughput over the steps since the last log line."""

  def __init__(self, frames_per_step: int, num_steps: int):
    self.frames_per_step, self.num_steps = frames_per_step, num_steps
    self.pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet read
    self.restart()

  def restart(self):
    self.start, self.steps, self.nll, self.count = time.perf_counter(), 0, 0.0, 0.0

  def add(self, step: int, metrics: dict) -> None:
    self.pending.append((step, metrics))
    self.steps += 1

  def drain(self) -> None:
    """Reads the pending metrics; raises NonFiniteError naming the first bad step."""
    first = lambda x: float(np.asarray(x).reshape(-1)[0])  # pmap: every device holds the sum
    for step, metrics in jax.device_get(self.pending):
      nll, count = first(metrics["nll_total"]), first(metrics["count"])
      loss = nll / max(count, 1.0)
      if not math.isfinite(loss):
        raise NonFiniteError(f"non-finite training loss ({loss}) at step {step}")
      self.nll, self.count = self.nll + nll, self.count + count
    self.pending = []

  def record(self, done: int) -> dict:
    elapsed = max(time.perf_counter() - self.start, 1e-9)
    return {"step": done, "train_loss": self.nll / max(self.count, 1.0),
            "frames_per_s": self.steps * self.frames_per_step / elapsed,
            "steps_per_s": self.steps / elapsed,
            "eta_s": (self.num_steps - done) * elapsed / max(self.steps, 1)}


def _every(n: int, done: int) -> bool:
  return n > 0 and done % n == 0


@dataclasses.dataclass
class _Run:
  """What the loop needs, prepared and checked before anything is written."""

  config: RunConfig
  workdir: str
  num_steps: int
  batches: Any
  valid: list
  window: int


def with_pitch_range(config: RunConfig, pieces, used=None) -> RunConfig:
  """The config with the pitches it trains on recorded (sampling keeps to them); `used`
  (bool[106], or the note indices used) where the pieces at hand are not all of them."""
  if config.model.pitch_high:
    return config  # recorded when the run started
  from musicgen_jax.data import batches  # pylint: disable=g-import-not-at-top
  if used is not None:
    used = np.asarray(used)
    used = np.flatnonzero(used) if used.dtype == bool else np.sort(used.astype(np.int64))
  elif not pieces:
    return config
  else:
    used = np.flatnonzero(batches.sparse_store(pieces).pitches_used())
  if not used.size:
    return config
  margin = config.train.transpose_range
  low = max(LOWEST_PITCH, LOWEST_PITCH + int(used[0]) - margin)
  high = min(HIGHEST_PITCH, LOWEST_PITCH + int(used[-1]) + margin)
  model = dataclasses.replace(config.model, pitch_low=low, pitch_high=high)
  return dataclasses.replace(config, model=model)


def _train_shares(config: RunConfig, dataset) -> dict:
  """{share: its pieces} for the shares this process holds (`batches.held_shares`)."""
  from musicgen_jax.data import batches  # pylint: disable=g-import-not-at-top
  shares = config.train.data_shares
  held = batches.held_shares(shares, jax.process_index(), jax.process_count())
  shard_of = getattr(dataset, "shard_of_train", None)
  train = dataset["train"]
  share_of = ((lambda i: shard_of[i] % shares) if shard_of is not None
              else (lambda i: i % shares))
  out = {h: [p for i, p in enumerate(train) if share_of(i) == h] for h in held}
  for h, pieces in out.items():
    logging.info("process %d of %d: training share %d of %d, %d pieces%s", jax.process_index(),
                 jax.process_count(), h, shares, len(pieces),
                 "" if shard_of is None else " of shards " + _ranges(
                     sorted({shard_of[i] for i in range(len(train)) if share_of(i) == h})))
  return out


def _ranges(numbers: list[int]) -> str:
  """'0, 2, 4' (at most a few, then how many)."""
  shown = ", ".join(map(str, numbers[:6]))
  return shown + (f", ... ({len(numbers)} shards)" if len(numbers) > 6 else "")


def prepare(config: RunConfig, workdir: str, dataset=None) -> _Run:
  """Checks the run can start (data, sizes, devices) without writing to W."""
  from musicgen_jax.data import ShareBatches, StreamBatches, WindowBatches  # pylint: disable=g-import-not-at-top
  from musicgen_jax.data import batches as batches_lib  # pylint: disable=g-import-not-at-top
  parallel.check_batch_size(config.train.batch_size)
  shares = config.train.data_shares
  held = (batches_lib.held_shares(shares, jax.process_index(), jax.process_count())
          if shares > 1 else None)
  if dataset is None:
    dataset = _load_dataset_once(
        config.data, (lambda n: n % shares in held) if held is not None else None)
  if not dataset["train"]:
    raise ValueError("the train split is empty; add music or lower --valid_fraction/--test_fraction")
  sharded = getattr(dataset, "shard_of_train", None) is not None
  # A process holding a share of the shards has only its pieces: the pitches and frames
  # of the whole train split come from the load's summary, the same on every process.
  summary = getattr(dataset, "summary", {}) if sharded else {}
  config = with_pitch_range(config, dataset["train"], summary.get("train_pitches_used"))
  window = train_window(config)
  kind = StreamBatches if config.train.carry_state else WindowBatches
  if shares > 1:
    batches = ShareBatches(kind, _train_shares(config, dataset), shares, window,
                           config.train.batch_size, config.train.seed,
                           transpose_range=config.train.transpose_range)
  else:
    batches = kind(dataset["train"], window, config.train.batch_size, config.train.seed,
                   transpose_range=config.train.transpose_range,
                   process_index=jax.process_index(), process_count=jax.process_count())
  if "frames_per_split" in summary:
    train_frames = summary["frames_per_split"]["train"]
  else:
    train_frames = sum(getattr(p, "num_frames", None) or len(p.frames) for p in dataset["train"])
  return _Run(config=config, workdir=workdir, num_steps=num_train_steps(config, train_frames),
              batches=batches, valid=list(dataset["valid"]), window=window)


def _load_dataset_once(data_cfg, train_shards=None):
  """Process 0 encodes (and caches) first; the others then read its cache."""
  from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return load_dataset(data_cfg, train_shards=train_shards)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  dataset = (load_dataset(data_cfg, train_shards=train_shards) if jax.process_index() == 0
             else None)
  multihost_utils.sync_global_devices("musicgen_jax dataset cached")
  return dataset if dataset is not None else load_dataset(data_cfg, train_shards=train_shards)


class _Validation:
  """Validation NLL by the evaluation protocol; tracks the best and the patience left."""

  def __init__(self, run: _Run, history: list[dict]):
    """history: the metrics records of the steps already trained (a resumed run)."""
    self.run, self.best, self.since_best = run, None, 0
    for record in history:
      if "valid_nll" in record:
        self._count(record["valid_nll"])

  def _count(self, nll: float) -> None:
    if self.best is None or nll < self.best:
      self.best, self.since_best = nll, 0
    else:
      self.since_best += 1

  def __call__(self, params, done: int) -> dict:
    result = evaluate_pieces(self.run.config.model, parallel.to_host(params), self.run.valid)
    if not math.isfinite(result["nll"]):
      raise NonFiniteError(f"non-finite validation NLL ({result['nll']}) at step {done}")
    self._count(result["nll"])
    record = {"valid_nll": result["nll"], "valid_nll_notes": result["nll_notes"],
              "valid_note_accuracy": result["note_accuracy"]}
    if self.run.config.model.velocity_bins:
      record["valid_nll_velocity"] = result["nll_velocity"]
    if self.run.config.model.note_lengths:
      record["valid_nll_length"] = result["nll_length"]
    return record

  def exhausted(self) -> bool:
    patience = self.run.config.train.patience
    return patience > 0 and self.since_best >= patience


def _preemption_service_running() -> bool:
  """True when jax.distributed runs JAX's preemption service (it owns SIGTERM then)."""
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return getattr(distributed.global_state, "preemption_sync_manager", None) is not None


class _StopSignals:
  """SIGTERM and SIGINT (preemption, Ctrl-C) stop the loop after the step in progress.

  One process: the signal sets a flag, read after every step. Several processes: every host
  must stop at the same step, so JAX's preemption service decides: it receives SIGTERM on
  any host, tells the others, and `reached_preemption_sync_point` turns true on all of them
  at one step; a SIGINT here is passed to it as a SIGTERM (with the service turned off,
  jax_enable_preemption_service=False, each host would stop at its own step, so a multi-host
  run should keep it on).
  A second SIGINT, outside a checkpoint write, stops at once (from the last checkpoint).
  """

  def __enter__(self) -> _StopSignals:
    self.received: str | None = None
    self.saving = False
    self._pending_interrupt = False
    self._synced = jax.process_count() > 1 and _preemption_service_running()
    self._old = {}
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        if not (self._synced and sig == signal.SIGTERM):
          self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.received is not None and signum == signal.SIGINT:
      if not self.saving:
        raise KeyboardInterrupt
      self._pending_interrupt = True
      return
    self.received = signal.Signals(signum).name
    if self._synced:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption service, for every host

  def stop_at(self, step: int) -> bool:
    """Called by every host after every step: whether to checkpoint this step and stop."""
    if self._synced:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received is not None

  @contextlib.contextmanager
  def writing_checkpoint(self):
    """A second Ctrl-C waits until the checkpoint being written is whole."""
    self.saving = True
    try:
      yield
    finally:
      self.saving = False
      if self._pending_interrupt:
        raise KeyboardInterrupt

  def __exit__(self, *exc) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)

  def describe(self) -> str:
    return self.received or "a preemption notice (SIGTERM to one of the hosts)"

  @property
  def status(self) -> int:
    """The exit status: 128 + the signal's number, as a shell reports a signalled program."""
    number = signal.Signals[self.received] if self.received else signal.SIGTERM
    return 128 + int(number)


def _restore(run: _Run, checkpointer, placement: _Placement) -> tuple[TrainState, int]:
  """The newest intact checkpoint, else a fresh state; placed on the devices."""
  cfg = run.config
  params = init_params(cfg.model, jax.random.key(cfg.train.seed))
  tx = make_optimizer(cfg.train, run.num_steps)
  state = TrainState.create(apply_fn=None, params=params, tx=tx, carry=_initial_carry(cfg))
  state = state.replace(step=jnp.zeros((), jnp.int32))  # an array, as checkpoints hold it
  restored = checkpointer.restore(checkpoint_tree(state), set_aside_damaged=True)
  start = 0
  if restored is not None:
    tree, start = restored
    state = from_checkpoint_tree(state, tree)
    logging.info("resuming from checkpoint %d in %s", start, checkpointer.directory)
  return placement.put_state(state), start


def _loop(run: _Run, state, start: int, checkpointer, placement: _Placement, log,
          history: list[dict]) -> dict:
  step_fn = placement.step_fn()
  meter = _Meter(run.config.train.batch_size * run.window, run.num_steps)
  validate = _Validation(run, history)
  steps = range(start, run.num_steps)
  workers = None
  if run.config.train.input_workers:
    from musicgen_jax.data import workers as workers_lib  # pylint: disable=g-import-not-at-top
    workers = workers_lib.worker_batches(run.batches, steps, run.config.train.input_workers)
    make_batch = lambda s: placement.put_batch(next(workers))  # step s: the next in order
  else:
    make_batch = lambda s: placement.put_batch(run.batches.train_batch(s))
  prefetch = _Prefetcher(make_batch, steps)
  record, done = {"step": start}, start
  try:
    with _StopSignals() as signals:
      for done in range(start + 1, run.num_steps + 1):
        state, metrics = step_fn(state, prefetch.next())
        meter.add(done, metrics)
        record, go_on = _after_step(run, done, state, signals, record, meter, validate,
                                    checkpointer, placement, log)
        if not go_on:
          break
  except KeyboardInterrupt:
    raise cli.Interrupted(f"interrupted at step {done}; run the same command to resume "
                          f"(from checkpoint {checkpointer.latest_step() or 0})") from None
  finally:
    prefetch.close()
    if workers is not None and hasattr(workers, "close"):
      workers.close()
  return dict(record, stopped_early=done < run.num_steps)


def _after_step(run: _Run, done: int, state, signals: _StopSignals, record: dict,
                meter: _Meter, validate: _Validation, checkpointer, placement: _Placement,
                log) -> tuple[dict, bool]:
  """Logs, validates and checkpoints where step `done` calls for it; (record, go on?)."""
  cfg = run.config.train
  stopped = signals.stop_at(done)
  last = done == run.num_steps
  do_eval = bool(run.valid) and (last or _every(cfg.eval_every, done))
  do_ckpt = last or do_eval or stopped or _every(cfg.checkpoint_every, done)
  if not (last or do_ckpt or _every(cfg.log_every, done)):
    return record, True
  meter.drain()
  record = meter.record(done)
  if do_eval:
    record.update(validate(placement.host_state(state).params, done))
  log(record)
  if do_ckpt:
    with signals.writing_checkpoint():
      checkpointer.save(done, checkpoint_tree(placement.host_state(state)),
                        valid_nll=record.get("valid_nll"))
  meter.restart()
  if stopped and not last:
    raise cli.Interrupted(
        f"{signals.describe()} at step {done} of {run.num_steps}: checkpoint {done} "
        "written; run the same command to resume", status=signals.status)
  if do_eval and validate.exhausted():
    logging.info("stopping at step %d: no better validation NLL in %d validations "
                 "(best %.4f)", done, cfg.patience, validate.best)
    return record, False
  return record, True


def train_and_evaluate(config: RunConfig, workdir: str, *, dataset=None) -> dict:
  """Trains (resuming from W when it holds checkpoints) and returns the final metrics.

  Args:
    config: model, data and training settings.
    workdir: W; gets config.json, metrics.jsonl and checkpoints/.
    dataset: an already loaded Dataset (else loaded from config.data).

  Returns:
    {'step', 'train_loss', 'valid_nll', ...} of the final step.
  """
  workdir_lib.check_writable_dir(workdir, "workdir")
  run = prepare(config, workdir, dataset)  # data and settings checked: W may be made now
  workdir_lib.ensure_writable_dir(workdir, "workdir")
  config = run.config
  with workdir_lib.WorkdirLock(workdir):
    if jax.process_index() == 0:
      config.save(workdir)
    placement = _Placement(config)
    checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints)
    metrics_log = workdir_lib.MetricsLog(workdir)
    state, start = _restore(run, checkpointer, placement)
    metrics_log.truncate(start)
    if start >= run.num_steps:
      logging.warning("the run in %s is already at step %d of %d: nothing to train (raise "
                      "--num_steps to train further)", workdir, start, run.num_steps)
    num_params = sum(x.size for x in jax.tree.leaves(init_params_shape(config.model)))
    logging.info("%s: %d parameters, %d devices, global batch %d x %d frames, steps %d..%d",
                 config.model.model, num_params, jax.device_count(), config.train.batch_size,
                 run.window, start, run.num_steps)
    started = time.perf_counter()

    def log(record):
      logging.info("step %d/%d  train_loss %.4f  %s%.0f frames/s  ETA %.0fs", record["step"],
                   run.num_steps, record["train_loss"],
                   f"valid_nll {record['valid_nll']:.4f}  " if "valid_nll" in record else "",
                   record["frames_per_s"], record["eta_s"])
      metrics_log.append(record)

    try:
      result = _loop(run, state, start, checkpointer, placement, log, metrics_log.records())
    finally:
      checkpointer.close()
  return dict(result, seconds=time.perf_counter() - started, num_steps=run.num_steps)


def init_params_shape(model_cfg: ModelConfig):
  return jax.eval_shape(lambda: init_params(model_cfg, jax.random.key(0)))


# The command line -----------------------------------------------------------------------


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Model, data and training flags (one per setting), the workdir, multi-host flags."""
  define_run_flags(flag_values)
  flags.DEFINE_string("workdir", None, "Output folder: config.json, metrics.jsonl, "
                      "checkpoints/.", flag_values=flag_values)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).",
                      flag_values=flag_values)
  flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).",
                       flag_values=flag_values)
  flags.DEFINE_integer("process_id", None, "This process's index (multi-host).",
                       flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues, workdir: str) -> RunConfig:
  """The flags' RunConfig; a run with checkpoints keeps what it trained (see config.resume)."""
  fresh = RunConfig.from_flags(flag_values)
  stored = RunConfig.load(workdir) if workdir else None
  if stored is None:
    return fresh
  if not workdir_lib.checkpoint_steps(workdir):
    logging.info("%s has a config but no checkpoint: these flags replace it", workdir)
    return fresh
  return resume(fresh, stored, lambda name: flag_values[name].present, workdir)


def main(flag_values: flags.FlagValues) -> None:
  cli.require(flag_values, "workdir")
  parallel.initialize_distributed(flag_values.coordinator_address, flag_values.num_processes,
                                  flag_values.process_id)
  config = config_from_flags(flag_values, flag_values.workdir)
  result = train_and_evaluate(config, flag_values.workdir)
  if jax.process_index() == 0:
    print(json.dumps(result))


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
