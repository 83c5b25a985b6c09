"""Training: the train state, sharded train steps, the loop, and its CLI.

    python -m musicgen_jax.train --model=lstm --dataset=bach_chorales \
        --seq_len=48 --batch_size=64 --num_steps=2000 --workdir=W

The batch is sharded over a `data` mesh axis with `jax.jit` + `NamedSharding`
(`--parallel=jit`, the default); `--parallel=pmap` is the legacy path and gives
the same losses. Running again on the same W resumes from the newest intact
checkpoint and ends exactly where an uninterrupted run ends: batches and RNG
are functions of (seed, step) alone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

from musicgen_jax import checkpoint as ckpt_lib
from musicgen_jax import evaluate as eval_lib
from musicgen_jax import losses, parallel
from musicgen_jax.data import DataConfig
from musicgen_jax.models import ModelConfig, apply_model, init_params, is_causal

METRICS_FILE = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train; saved with the model and data configs in W/config.json."""

  batch_size: int = 64  # global batch, split over every device of every process
  num_steps: int = 2000
  num_epochs: float = 0.0  # > 0 overrides num_steps (an epoch ~ every train frame once)
  learning_rate: float = 3e-3
  weight_decay: float = 1e-4
  warmup_steps: int = 100
  grad_clip: float = 1.0  # global-norm clipping; 0 disables
  seed: int = 0  # model init, batches and dropout all follow from it
  transpose_range: int = 0  # random transposition in +-semitones (0 = off)
  parallel: str = "jit"  # 'jit' (NamedSharding) or 'pmap' (legacy)
  log_every: int = 50
  eval_every: int = 500  # validation NLL (the evaluation protocol); 0 = only at the end
  checkpoint_every: int = 500
  keep_checkpoints: int = 3  # latest kept; the best by validation NLL is kept too

  def __post_init__(self):
    for name in ("batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
    if self.num_steps < 1 and self.num_epochs <= 0:
      raise ValueError("set --num_steps to a positive number (or --num_epochs)")
    if self.learning_rate <= 0:
      raise ValueError(f"--learning_rate must be positive, got {self.learning_rate}")
    if self.parallel not in ("jit", "pmap"):
      raise ValueError(f"--parallel must be jit or pmap, got {self.parallel!r}")
    if self.transpose_range < 0:
      raise ValueError(f"--transpose_range must be >= 0, got {self.transpose_range}")
    if self.eval_every < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
      raise ValueError("--eval_every, --warmup_steps and --grad_clip must be >= 0")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  model: ModelConfig
  data: DataConfig
  train: TrainConfig

  def to_json(self) -> dict:
    return {"model": dataclasses.asdict(self.model), "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train)}

  @classmethod
  def from_json(cls, d: dict) -> "RunConfig":
    return cls(model=ModelConfig(**d["model"]), data=DataConfig(**d["data"]),
               train=TrainConfig(**d["train"]))


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32[]
  params: Any
  opt_state: Any


class NonFiniteLossError(RuntimeError):
  pass


def make_optimizer(cfg: TrainConfig, num_steps: int) -> optax.GradientTransformation:
  """AdamW with global-norm clipping and linear warm-up + cosine decay."""
  warmup = min(cfg.warmup_steps, max(num_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup else cfg.learning_rate, peak_value=cfg.learning_rate,
      warmup_steps=warmup, decay_steps=max(num_steps, warmup + 1),
      end_value=cfg.learning_rate * 0.01)
  parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
  parts.append(optax.adamw(schedule, weight_decay=cfg.weight_decay))
  return optax.chain(*parts)


def init_state(model_cfg: ModelConfig, optimizer, seed: int) -> TrainState:
  params = init_params(model_cfg, jax.random.key(seed))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def _loss(params, batch, rng, model_cfg: ModelConfig, train: bool = True):
  """batch: float32[B, seq_len + 1, 107] windows -> (mean NLL per frame, metric sums)."""
  inputs = batch[:, :-1]
  targets = batch[:, 1:] if is_causal(model_cfg) else batch[:, -1:]
  pred = apply_model(model_cfg, params, inputs, train=train, rng=rng)
  mask = jnp.ones(targets.shape[:-1], jnp.float32)
  return losses.loss_and_metrics(pred, targets, mask, model_cfg)


def _update(state: TrainState, grads, optimizer) -> TrainState:
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                    opt_state=opt_state)


def _dropout_rng(seed: int, step):
  """The step's dropout key: a function of (seed, step) alone."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), step)


@functools.lru_cache(maxsize=16)
def make_train_step(model_cfg: ModelConfig, train_cfg: TrainConfig, num_steps: int, mesh):
  """The pure jit train step: (state, batch) -> (state, metrics), state donated.

  Cached on its (hashable) settings, so runs in one process share the compile.
  """
  optimizer = make_optimizer(train_cfg, num_steps)

  def train_step(state: TrainState, batch):
    rng = _dropout_rng(train_cfg.seed, state.step)
    (loss, _), grads = jax.value_and_grad(_loss, has_aux=True)(
        state.params, batch, rng, model_cfg)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return _update(state, grads, optimizer), metrics

  rep = parallel.replicated(mesh)
  return jax.jit(train_step, in_shardings=(rep, parallel.data_sharding(mesh)),
                 out_shardings=(rep, rep), donate_argnums=0)


@functools.lru_cache(maxsize=16)
def make_pmap_train_step(model_cfg: ModelConfig, train_cfg: TrainConfig, num_steps: int):
  """The legacy pmap step: per-device means, gradients averaged with pmean."""
  optimizer = make_optimizer(train_cfg, num_steps)

  def train_step(state: TrainState, batch):
    rng = _dropout_rng(train_cfg.seed, state.step)
    rng = jax.random.fold_in(rng, jax.lax.axis_index(parallel.DATA_AXIS))
    (loss, _), grads = jax.value_and_grad(_loss, has_aux=True)(
        state.params, batch, rng, model_cfg)
    grads = jax.lax.pmean(grads, parallel.DATA_AXIS)
    loss = jax.lax.pmean(loss, parallel.DATA_AXIS)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return _update(state, grads, optimizer), metrics

  return jax.pmap(train_step, axis_name=parallel.DATA_AXIS, donate_argnums=0)


def steps_for(cfg: TrainConfig, model_cfg: ModelConfig, train_frames: int) -> int:
  """--num_epochs converted to steps: one epoch predicts about every training frame once."""
  if cfg.num_epochs > 0:
    return max(1, math.ceil(cfg.num_epochs * train_frames / (cfg.batch_size * model_cfg.seq_len)))
  return cfg.num_steps


def _append_metrics(workdir: str, record: dict) -> None:
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, METRICS_FILE), "a") as f:
    f.write(json.dumps(record) + "\n")


def _truncate_metrics(workdir: str, last_step: int) -> None:
  """On resume, drops records past the restored step (they will be logged again)."""
  path = os.path.join(workdir, METRICS_FILE)
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path) as f:
    kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= last_step]
  with open(path + ".tmp", "w") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)


def load_run_config(workdir: str) -> RunConfig:
  stored = ckpt_lib.load_config(workdir)
  if stored is None:
    raise FileNotFoundError(f"{workdir} has no {ckpt_lib.CONFIG_FILE}: train there first "
                            "(python -m musicgen_jax.train --workdir=...)")
  return RunConfig.from_json(stored)


def load_params(workdir: str, config: RunConfig, step: int | None = None):
  """The parameters of `step`, else the best-by-validation (or latest) checkpoint."""
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                       read_only=True)
  if not checkpointer.all_steps():
    raise ckpt_lib.CheckpointError(f"{workdir} has no checkpoint yet; train first or check "
                                   "--workdir")
  if step is None:
    step = checkpointer.best_step()
  optimizer = make_optimizer(config.train, max(config.train.num_steps, 1))
  target = jax.eval_shape(lambda: init_state(config.model, optimizer, config.train.seed))
  restored = checkpointer.restore(target, step=step)
  checkpointer.close()
  state, step = restored
  return state.params, step


def _load_dataset_once(data_cfg):
  """Process 0 encodes (and caches) first; the others then read its cache."""
  from musicgen_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return load_dataset(data_cfg)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  dataset = load_dataset(data_cfg) if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("musicgen_jax dataset cached")
  return dataset if dataset is not None else load_dataset(data_cfg)


def train_and_evaluate(config: RunConfig, workdir: str, *, dataset=None) -> dict:
  """Trains (resuming from W when it holds checkpoints) and returns final metrics.

  Args:
    config: model, data and training settings.
    workdir: W; gets config.json, metrics.jsonl and checkpoints/.
    dataset: an already loaded Dataset (else loaded from config.data).
  Returns:
    {'step', 'train_loss', 'valid_nll', ...} of the final step.
  """
  from musicgen_jax.data import BatchSampler  # pylint: disable=g-import-not-at-top
  model_cfg, tcfg = config.model, config.train
  ckpt_lib.ensure_writable_dir(workdir, "workdir")
  parallel.check_batch_size(tcfg.batch_size)
  if dataset is None:
    dataset = _load_dataset_once(config.data)
  if not dataset["train"]:
    raise ValueError("the train split is empty; add music or lower --valid_fraction/--test_fraction")
  train_frames = sum(len(p.frames) for p in dataset["train"])
  num_steps = steps_for(tcfg, model_cfg, train_frames)
  ckpt_lib.save_config(workdir, config.to_json())

  sampler = BatchSampler(dataset["train"], model_cfg.seq_len, tcfg.batch_size, tcfg.seed,
                         transpose_range=tcfg.transpose_range,
                         process_index=jax.process_index(), process_count=jax.process_count())
  optimizer = make_optimizer(tcfg, num_steps)
  mesh = parallel.make_mesh()
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=tcfg.keep_checkpoints)

  state = init_state(model_cfg, optimizer, tcfg.seed)
  restored = checkpointer.restore(state, set_aside_damaged=True)
  start_step = 0
  if restored is not None:
    state, start_step = restored
    logging.info("resuming from checkpoint %d in %s", start_step, checkpointer.directory)
  _truncate_metrics(workdir, start_step)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("%s: %d parameters, %d devices, global batch %d, steps %d..%d",
               model_cfg.model, num_params, jax.device_count(), tcfg.batch_size, start_step,
               num_steps)

  if tcfg.parallel == "pmap":
    step_fn = make_pmap_train_step(model_cfg, tcfg, num_steps)
    n = jax.local_device_count()
    state = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), state)
    put_batch = parallel.pmap_split
    unreplicate = lambda s: jax.tree.map(lambda x: x[0], s)
  else:
    step_fn = make_train_step(model_cfg, tcfg, num_steps, mesh)
    state = parallel.replicate(state, mesh)
    sharding = parallel.data_sharding(mesh)
    put_batch = lambda rows: parallel.global_batch(rows, sharding)
    unreplicate = lambda s: s

  valid = dataset["valid"]
  frames_per_step = tcfg.batch_size * model_cfg.seq_len
  last = {"step": start_step}
  pending = []  # (step, device metrics) not yet checked for finiteness
  window_start, window_steps = time.perf_counter(), 0
  run_start = time.perf_counter()
  valid_nll = None

  def check(entries):
    losses_ = []
    for step_index, metrics in entries:
      loss = float(np.asarray(metrics["loss"]).reshape(-1)[0])
      if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"non-finite training loss ({loss}) at step {step_index}; the last good "
            f"checkpoint is kept in {checkpointer.directory}. Lower --learning_rate or "
            "check the data")
      losses_.append(loss)
    return losses_

  recent_losses: list[float] = []
  for step in range(start_step, num_steps):
    batch = put_batch(sampler.batch(step))
    state, metrics = step_fn(state, batch)
    pending.append((step + 1, metrics))
    window_steps += 1
    if len(pending) > 1:  # check the previous step while this one runs
      recent_losses += check(pending[:-1])
      pending = pending[-1:]
    done = step + 1
    is_last = done == num_steps
    do_eval = is_last or (tcfg.eval_every and done % tcfg.eval_every == 0)
    do_ckpt = is_last or done % tcfg.checkpoint_every == 0
    do_log = is_last or done % tcfg.log_every == 0 or do_eval
    if not (do_log or do_ckpt):
      continue
    recent_losses += check(pending)
    pending = []
    record = {"step": done}
    if do_log:
      elapsed = time.perf_counter() - window_start
      fps = window_steps * frames_per_step / max(elapsed, 1e-9)
      train_loss = float(np.mean(recent_losses)) if recent_losses else float("nan")
      eta = (num_steps - done) * elapsed / max(window_steps, 1)
      record.update({"train_loss": train_loss, "frames_per_s": fps,
                     "steps_per_s": window_steps / max(elapsed, 1e-9)})
      recent_losses = []
    valid_nll = None
    if do_eval and valid:
      host_params = parallel.to_host(unreplicate(state).params)
      result = eval_lib.evaluate_pieces(model_cfg, host_params, valid)
      valid_nll = result["nll"]
      record.update({"valid_nll": valid_nll, "valid_nll_notes": result["nll_notes"],
                     "valid_note_accuracy": result["note_accuracy"]})
    if do_log:
      logging.info("step %d/%d  train_loss %.4f  %s%.0f frames/s  ETA %.0fs", done, num_steps,
                   record["train_loss"],
                   f"valid_nll {valid_nll:.4f}  " if valid_nll is not None else "",
                   record["frames_per_s"], eta)
      _append_metrics(workdir, record)
    if do_ckpt:
      checkpointer.save(done, unreplicate(state), valid_nll=valid_nll)
    if do_log:  # throughput windows exclude evaluation and checkpointing
      window_start, window_steps = time.perf_counter(), 0
    last = record
  checkpointer.close()
  last = dict(last)
  last["seconds"] = time.perf_counter() - run_start
  last["num_steps"] = num_steps
  return last


# The command line -----------------------------------------------------------------------

FLAGS = flags.FLAGS

# flag name -> (config section, field)
_MODEL_FLAGS = ("model", "hidden_size", "num_layers", "num_heads", "dropout", "dtype",
                "duration_head", "max_duration_steps", "seq_len")
_TRAIN_FLAGS = tuple(f.name for f in dataclasses.fields(TrainConfig))
# Data settings that change where or how fast data is read, never what is read.
_DATA_LOGISTICS = ("cache_dir", "num_workers")


def define_flags() -> None:
  """Model, training, data and multi-host flags, each with help text."""
  from musicgen_jax.data.flags import define_data_flags  # pylint: disable=g-import-not-at-top
  define_data_flags()
  m = ModelConfig()
  flags.DEFINE_enum("model", m.model, ["rnn", "lstm", "bilstm", "transformer"],
                    "Architecture: Elman RNN, LSTM, bidirectional LSTM or causal Transformer.")
  flags.DEFINE_integer("hidden_size", m.hidden_size, "Hidden units (model width).")
  flags.DEFINE_integer("num_layers", m.num_layers, "Stacked recurrent layers or Transformer blocks.")
  flags.DEFINE_integer("num_heads", m.num_heads, "Attention heads (transformer).")
  flags.DEFINE_float("dropout", m.dropout, "Dropout rate during training.")
  flags.DEFINE_enum("dtype", m.dtype, ["float32", "bfloat16", "float16"],
                    "Compute dtype (parameters stay float32); bfloat16 for accelerators.")
  flags.DEFINE_enum("duration_head", m.duration_head, ["categorical", "regression"],
                    "Duration output: classes of grid steps, or the study's scalar regression.")
  flags.DEFINE_integer("max_duration_steps", m.max_duration_steps,
                       "Duration classes (grid steps); longer durations go to the last class.")
  flags.DEFINE_integer("seq_len", m.seq_len, "Training window (frames); the Transformer's "
                       "context and the bidirectional LSTM's input length.")
  t = TrainConfig()
  flags.DEFINE_integer("batch_size", t.batch_size, "Global batch size (all devices, all hosts).")
  flags.DEFINE_integer("num_steps", t.num_steps, "Training steps (ignored if --num_epochs > 0).")
  flags.DEFINE_float("num_epochs", t.num_epochs, "Epochs (an epoch ~ every training frame "
                     "predicted once); overrides --num_steps when positive.")
  flags.DEFINE_float("learning_rate", t.learning_rate, "Peak AdamW learning rate.")
  flags.DEFINE_float("weight_decay", t.weight_decay, "AdamW weight decay.")
  flags.DEFINE_integer("warmup_steps", t.warmup_steps, "Linear warm-up steps before cosine decay.")
  flags.DEFINE_float("grad_clip", t.grad_clip, "Global gradient-norm clip (0 = none).")
  flags.DEFINE_integer("seed", t.seed, "Seed for initialisation, batches and dropout.")
  flags.DEFINE_integer("transpose_range", t.transpose_range,
                       "Random transposition of training windows by up to +-N semitones.")
  flags.DEFINE_enum("parallel", t.parallel, ["jit", "pmap"],
                    "Data parallelism: jit with NamedSharding (default) or legacy pmap.")
  flags.DEFINE_integer("log_every", t.log_every, "Log and write metrics every N steps.")
  flags.DEFINE_integer("eval_every", t.eval_every, "Validation NLL every N steps (0 = at the end).")
  flags.DEFINE_integer("checkpoint_every", t.checkpoint_every, "Checkpoint every N steps.")
  flags.DEFINE_integer("keep_checkpoints", t.keep_checkpoints,
                       "Latest checkpoints kept (the best by validation NLL is kept too).")
  flags.DEFINE_string("workdir", None, "Output folder: config.json, metrics.jsonl, checkpoints/.")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
  flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")


def config_from_flags(flag_values=FLAGS, workdir: str | None = None) -> RunConfig:
  """Builds the RunConfig; on resume, flags not given take W/config.json's values.

  A model or data flag given explicitly that contradicts W/config.json is an
  error: a resumed run must train the same model on the same data.
  """
  from musicgen_jax.data.flags import data_config_from_flags  # pylint: disable=g-import-not-at-top
  fresh = RunConfig(
      model=ModelConfig(**{k: flag_values[k].value for k in _MODEL_FLAGS},
                        steps_per_quarter=flag_values["steps_per_quarter"].value),
      data=data_config_from_flags(flag_values),
      train=TrainConfig(**{k: flag_values[k].value for k in _TRAIN_FLAGS}))
  stored_json = ckpt_lib.load_config(workdir) if workdir else None
  if stored_json is None:
    return fresh
  stored = RunConfig.from_json(stored_json)
  conflicts, merged = [], {}
  for section in ("model", "data", "train"):
    old, new = getattr(stored, section), getattr(fresh, section)
    values = {}
    for field in dataclasses.fields(old):
      name = field.name
      old_v, new_v = getattr(old, name), getattr(new, name)
      given = name in flag_values and flag_values[name].present
      if given and old_v != new_v:
        if section == "train" or name in _DATA_LOGISTICS:
          logging.warning("--%s=%s overrides %s from %s", name, new_v, old_v, workdir)
          values[name] = new_v
          continue
        conflicts.append(f"--{name}={new_v} (the run in {workdir} has {old_v})")
      values[name] = old_v
    merged[section] = type(old)(**values)
  if conflicts:
    raise ValueError("flags contradict " + os.path.join(workdir, ckpt_lib.CONFIG_FILE) + ": " +
                     "; ".join(conflicts) + ". Drop them to resume, or use a new --workdir")
  return RunConfig(**merged)


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required (where config, metrics and checkpoints go)")
  try:
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
    config = config_from_flags(FLAGS, FLAGS.workdir)
    result = train_and_evaluate(config, FLAGS.workdir)
  except (ValueError, OSError, ImportError, RuntimeError) as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")
  if jax.process_index() == 0:
    print(json.dumps({k: v for k, v in result.items()}))


def run():
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
